"""One GAN step: every trainable weight of G and every D moves, the encoders do not."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from msmt_tf import losses
from msmt_tf.data import pipeline
from msmt_tf.training import ema as ema_lib, precision
from msmt_tf.training.gan_step import GANStep
from msmt_tf.training.gan_trainer import build_networks, make_optimizer
from tests.training import gan_fixtures as fx


def _build(cfgs):
    m, t = cfgs.model, cfgs.train
    text, image = fx.encoders(m)
    gen, ema_gen, ds = build_networks(m, t, fx.WORDS, fx.BATCH)
    g_opt = make_optimizer(t.g_lr, t, gen.trainable_variables)
    d_opts = [make_optimizer(t.d_lr, t, d.trainable_variables) for d in ds]
    step = GANStep(gen, ds, text, image, g_opt, d_opts,
                   ema_lib.ExponentialMovingAverage(gen, ema_gen, t.ema_decay),
                   tf.random.Generator.from_seed(0), t, m.z_dim)
    return step, gen, ema_gen, ds, text, image


def _snapshot(layers):
    return [[np.array(v) for v in layer.weights] for layer in layers]


LAMBDAS = dict(lambda1=2.0, lambda2=0.25, lambda3=3.0, damsm_stages="all")


@pytest.fixture(scope="module")
def first_step():
    """One step of a tiny MSMT-style model (weights before and after, and its logs)."""
    cfgs = fx.configs(**LAMBDAS)
    step, gen, ema_gen, ds, text, image = _build(cfgs)
    before_g = [np.array(v) for v in gen.trainable_variables]
    before_d = [[np.array(v) for v in d.trainable_variables] for d in ds]
    before_enc = _snapshot([text, image])
    before_ema = [np.array(v) for v in ema_gen.trainable_variables]
    logs = {k: float(v) for k, v in tf.function(step)(fx.batch(cfgs.model)).items()}
    return dict(logs=logs, gen=gen, ema_gen=ema_gen, ds=ds, text=text, image=image,
                before_g=before_g, before_d=before_d, before_enc=before_enc, before_ema=before_ema)


def test_one_step_moves_every_trainable_weight_and_no_encoder_weight(first_step):
    f = first_step
    logs, gen, ema_gen, ds, text, image = (f[k] for k in ("logs", "gen", "ema_gen", "ds", "text",
                                                           "image"))
    before_g, before_d, before_enc, before_ema = (f[k] for k in ("before_g", "before_d",
                                                                 "before_enc", "before_ema"))
    assert logs["finite"] == 1.0
    for name in ("g_loss", "g_kl", "g_adv/stage0", "g_adv/stage1", "g_damsm_word/stage0",
                 "g_damsm_sent/stage1", "g_redundancy/stage1", "d_loss/stage0", "d_loss/stage1"):
        assert np.isfinite(logs[name]), name
    unchanged = [v.path for v, b in zip(gen.trainable_variables, before_g)
                 if np.array_equal(np.array(v), b)]
    assert not unchanged, f"generator weights without gradient: {unchanged}"
    for d, before in zip(ds, before_d):
        unchanged = [v.path for v, b in zip(d.trainable_variables, before)
                     if np.array_equal(np.array(v), b)]
        assert not unchanged, f"{d.name} weights without gradient: {unchanged}"
    for layer_before, layer in zip(before_enc, [text, image]):
        for b, v in zip(layer_before, layer.weights):
            np.testing.assert_array_equal(b, np.array(v), err_msg=v.path)
    # EMA: decay * old + (1 - decay) * new, not the new weights
    decay = fx.configs().train.ema_decay
    v0, e0 = gen.trainable_variables[0], ema_gen.trainable_variables[0]
    np.testing.assert_allclose(np.array(e0), decay * before_ema[0] + (1 - decay) * np.array(v0),
                               rtol=1e-5, atol=1e-7)


def test_total_generator_loss_is_the_weighted_sum_of_its_terms(first_step):
    logs = first_step["logs"]
    expected = (logs["g_adv/stage0"] + logs["g_adv/stage1"]
                + 3.0 * sum(logs[f"g_damsm_{w}/stage{k}"] for w in ("word", "sent") for k in (0, 1))
                + 2.0 * logs["g_kl"] + 0.25 * logs["g_redundancy/stage1"])
    assert logs["g_loss"] == pytest.approx(expected, rel=1e-5)


def test_mixed_float16_step_is_finite_with_float32_master_weights():
    policy = keras.mixed_precision.dtype_policy()
    try:
        precision.set_precision("mixed_float16")
        cfgs = fx.configs(precision="mixed_float16")
        step, gen, _, ds, _, _ = _build(cfgs)
        fn = tf.function(step)
        scales, finite = [], []
        for _ in range(20):  # the dynamic scale starts at 2**15 and halves on overflow
            logs = fn(fx.batch(cfgs.model))
            assert np.isfinite(float(logs["g_loss"]))
            scales.append(float(logs["loss_scale"]))
            finite.append(float(logs["finite"]))
            if finite[-1] == 1.0:
                break
        assert finite[-1] == 1.0, (scales, finite)
        assert scales[-1] >= 1.0
        assert all(v.dtype == "float32" for v in gen.trainable_variables)
        assert all(v.dtype == "float32" for d in ds for v in d.trainable_variables)
        assert gen.compute_dtype == "float16"
    finally:
        keras.mixed_precision.set_dtype_policy(policy)


def test_damsm_terms_follow_damsm_stages_and_lambda3_zero_skips_them():
    for lambdas, expected in ((dict(lambda3=1.0, damsm_stages="last"), ["stage1"]),
                              (dict(lambda3=0.0, damsm_stages="all"), [])):
        cfgs = fx.configs(**lambdas)
        step, *_ = _build(cfgs)
        calls = []
        encoder = step.image_encoder
        step.image_encoder = lambda x, training=None: calls.append(1) or encoder(x, training=training)
        logs = step(fx.batch(cfgs.model))
        stages = sorted(k.split("/")[1] for k in logs if k.startswith("g_damsm_word/"))
        assert stages == expected, lambdas
        assert len(calls) == len(expected), lambdas


def test_discriminator_warmup_learns_matching_and_touches_nothing_else():
    """--d_warmup_steps: the conditional heads (and trunks) learn the batch's matched vs
    mismatched pairs; the unconditional heads, the generator and the encoders do not move."""
    keras.utils.set_random_seed(0)  # the same initial weights whatever ran before
    cfgs = fx.configs(d_lr=5e-3)
    step, gen, _, ds, text, image = _build(cfgs)
    batch = fx.batch(cfgs.model)
    for d in ds:  # build every head (the GAN step would)
        d.uncond_logits(d(batch["images"][ds.index(d)]))
    before_g = [np.array(v) for v in gen.weights]
    before_uncond = [[np.array(v) for v in d.uncond_head.weights] for d in ds]
    before_cond = [[np.array(v) for v in d.cond_head.trainable_variables] for d in ds]
    before_enc = _snapshot([text, image])
    warm = tf.function(step.matching_warmup)
    logs = [{k: float(v) for k, v in warm(batch).items()} for _ in range(60)]
    for k in range(len(ds)):
        loss = [log[f"d_warmup_loss/stage{k}"] for log in logs]
        assert loss[0] == pytest.approx(2 * np.log(2), abs=0.01)  # untrained: chance
        assert np.mean(loss[-10:]) < 0.9 * np.mean(loss[:10])
        assert max(log[f"d_warmup_accuracy/stage{k}"] for log in logs) == 1.0
    for d, unc, cond in zip(ds, before_uncond, before_cond):
        for b, v in zip(unc, d.uncond_head.weights):
            np.testing.assert_array_equal(b, np.array(v), err_msg=v.path)
        assert all(not np.array_equal(b, np.array(v))
                   for b, v in zip(cond, d.cond_head.trainable_variables))
    for b, v in zip(before_g, gen.weights):
        np.testing.assert_array_equal(b, np.array(v), err_msg=v.path)
    for layer_before, layer in zip(before_enc, [text, image]):
        for b, v in zip(layer_before, layer.weights):
            np.testing.assert_array_equal(b, np.array(v), err_msg=v.path)


def _bce(logits, label):
    """Per-example BCE of logits against a constant label, float64 (independent of losses)."""
    x = np.asarray(logits, "float64")
    return np.log1p(np.exp(-x)) if label else np.log1p(np.exp(x))


def _paired_batch(model_cfg, pairing):
    """The fixture batch with the pipeline's wrong captions and ``wrong_mask`` of ``pairing``."""
    b = fx.batch(model_cfg)
    partner, mask = (x.numpy() for x in pipeline.mismatch_partner(tf.constant(b["class_id"]),
                                                                   pairing))
    return dict(b, wrong_captions=b["captions"][partner],
                wrong_caption_len=b["caption_len"][partner], wrong_mask=mask)


# (--d_mismatch_term, --g_adv_factor, --mismatch_pairing, the rows whose wrong pair counts)
OBJECTIVES = [
    ("on", 1.0, "next_row", [0, 1, 2]),  # the references: B - 1 pairs, rows 0..B-2
    ("off", 0.5, "next_row", None),  # eqs 22-23 as printed: no wrong-pair term
    ("on", 0.5, "other_class", [0, 1, 2, 3]),  # the quickstart's B pairs
]


def test_step_objective_follows_the_flags(monkeypatch):
    """Every flag combination: the logged D and G losses of a step equal the hand formulas on
    the logits the step scored (captured on their way into the loss functions)."""
    cfgs = fx.configs(lambda3=0.0)
    step, gen, _, ds, text, image = _build(cfgs)
    seen = []

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            seen.append((name, [None if a is None else np.array(a) for a in args]))
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(losses, "discriminator_loss", spy("d", losses.discriminator_loss))
    monkeypatch.setattr(losses, "generator_adversarial_loss",
                        spy("g", losses.generator_adversarial_loss))
    for term, factor, pairing, rows in OBJECTIVES:
        cfg = cfgs.train.replace(d_mismatch_term=term, g_adv_factor=factor)
        variant = GANStep(gen, ds, text, image, step.g_optimizer, step.d_optimizers, step.ema,
                          step.noise_rng, cfg, cfgs.model.z_dim)
        seen.clear()
        logs = {k: float(v) for k, v in variant(_paired_batch(cfgs.model, pairing)).items()}
        d_calls = [a for n, a in seen if n == "d"]
        g_calls = [a for n, a in seen if n == "g"]
        assert len(d_calls) == len(g_calls) == len(ds)
        for k, (ru, rc, fu, fc, wc) in enumerate(d_calls):
            real, cond_real = _bce(ru, 1).mean(), _bce(rc, 1).mean()
            fake, cond_fake = _bce(fu, 0).mean(), _bce(fc, 0).mean()
            if term == "on":
                cond_wrong = _bce(wc, 0)[rows].mean()
                expected = (real + cond_real) / 2 + (fake + cond_fake + cond_wrong) / 3
                assert logs[f"d_cond_wrong/stage{k}"] == pytest.approx(cond_wrong, rel=1e-5)
            else:
                expected = (real + fake) / 2 + (cond_real + cond_fake) / 2
            assert logs[f"d_loss/stage{k}"] == pytest.approx(expected, rel=1e-5), (term, k)
        for k, (fu, fc) in enumerate(g_calls):
            expected = factor * (_bce(fu, 1).mean() + _bce(fc, 1).mean())
            assert logs[f"g_adv/stage{k}"] == pytest.approx(expected, rel=1e-5), (factor, k)
