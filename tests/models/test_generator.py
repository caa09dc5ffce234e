"""The Generator wiring: presets, shapes, ranges, serialization and parameter counts."""

import keras
import numpy as np
import pytest

from msmt_tf.models.config import ModelConfig
from msmt_tf.models.generator import Generator, build_generator
from msmt_tf.models.param_count import count_parameters, dummy_generator_inputs
from msmt_tf.testing import layer_test

TINY = dict(gf_dim=4, n_m=8, df_dim=4, grid=4, heads=2, r_num=1, z_dim=8, condition_dim=6,
            embedding_dim=16)

PRESETS = {
    "attngan": dict(initial="ig", refinement="attn"),
    "dmgan": dict(initial="ig", refinement="memory"),
    "mtwig_memory": dict(initial="mtwig", refinement="memory", mtwig_kernel=3),
    "mtwig_sdm1": dict(initial="mtwig", refinement="sdm", heads=1),
    "msmt": dict(initial="mtwig", refinement="sdm"),
    "msmt_positional": dict(initial="mtwig", refinement="sdm", key_reading="positional",
                            fusion_gate="channel"),
    "msmt_paper_readings": dict(initial="mtwig", refinement="sdm", key_reading="positional",
                                sdm_trunk="2n_r"),
    "mtwig_sdm1_prev": dict(initial="mtwig", refinement="sdm", heads=1, sdm_trunk="2n_r_prev"),
}


def _inputs(cfg, batch=2, words_num=7, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([5, 3][:batch])
    mask = np.arange(words_num)[None] < lengths[:, None]
    words = rng.normal(size=(batch, words_num, cfg.embedding_dim)).astype("float32") * mask[..., None]
    return {
        "noise": rng.normal(size=(batch, cfg.z_dim)).astype("float32"),
        "sentence": rng.normal(size=(batch, cfg.embedding_dim)).astype("float32"),
        "words": words,
        "mask": mask,
        "ca_eps": rng.normal(size=(batch, cfg.condition_dim)).astype("float32"),
    }


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_forward_shapes_and_range(name):
    cfg = ModelConfig(stages=2, base_size=32, **{**TINY, **PRESETS[name]})
    gen = build_generator(cfg, seed=1)
    out = gen(_inputs(cfg), training=False)
    assert [tuple(x.shape) for x in out["images"]] == [(2, 32, 32, 3), (2, 64, 64, 3)]
    for img in out["images"]:
        img = np.asarray(img)
        assert np.all(np.abs(img) <= 1.0) and np.std(img) > 0
    assert [tuple(a.shape) for a in out["attention"]] == [(2, 32, 32, 7)]
    expected_heads = cfg.heads if cfg.refinement == "sdm" else 0
    assert [len(h) for h in out["head_features"]] == [expected_heads]
    # attention distributes over the real words only
    attn = np.asarray(out["attention"][0])
    np.testing.assert_allclose(attn[0].sum(-1), 1.0, atol=1e-4)
    assert np.all(attn[1, ..., 3:] == 0.0)
    assert out["mu"].shape == (2, cfg.condition_dim)


def test_padding_does_not_change_images():
    cfg = ModelConfig(stages=2, base_size=32, **TINY)
    gen = build_generator(cfg, seed=3)
    x = _inputs(cfg, words_num=7)
    longer = dict(x)
    longer["words"] = np.concatenate([x["words"], np.zeros((2, 4, cfg.embedding_dim), "float32")], 1)
    longer["mask"] = np.concatenate([x["mask"], np.zeros((2, 4), bool)], 1)
    a = gen(x, training=False)["images"][-1]
    b = gen(longer, training=False)["images"][-1]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_ca_eps_is_used_and_seeded_noise_is_deterministic():
    cfg = ModelConfig(stages=1, base_size=32, **TINY)
    gen = build_generator(cfg, seed=3)
    x = _inputs(cfg)
    a = np.asarray(gen(x, training=False)["images"][0])
    b = np.asarray(gen(x, training=False)["images"][0])
    np.testing.assert_array_equal(a, b)
    y = dict(x, ca_eps=x["ca_eps"] + 1.0)
    assert not np.allclose(a, gen(y, training=False)["images"][0])


def test_serialization_round_trip_non_default():
    cfg = ModelConfig(stages=2, base_size=32, key_reading="positional", mtwig_kernel=2,
                      sdm_kernel=1, sdm_trunk="2n_r", **TINY)
    gen = build_generator(cfg, seed=5)
    x = _inputs(cfg)
    out = gen(x, training=False)
    clone = Generator.from_config(gen.get_config())
    clone(x, training=False)
    clone.set_weights(gen.get_weights())
    np.testing.assert_allclose(out["images"][-1], clone(x, training=False)["images"][-1], atol=1e-6)
    assert clone.get_config() == gen.get_config()
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(gen))
    assert revived.get_config() == gen.get_config()
    layer_test.assert_config_covers_init(gen)


def test_dummy_inputs_match_config():
    cfg = ModelConfig(**TINY)
    d = dummy_generator_inputs(cfg, batch=3, words_num=5)
    assert d["words"].shape == (3, 5, 16) and d["mask"].sum() == 12


# --- parameter counts (paper Table 2; the MSMT-GAN rows are in test_table2.py) ------------

def _counts(**kw):
    # The reference architectures: 3 stages from 64 px (the dataclass defaults are the CPU
    # quickstart), paper/reference widths given per test.
    base = dict(stages=3, base_size=64, z_dim=100, condition_dim=100, embedding_dim=256,
                word_embedding_dim=300)
    return count_parameters(ModelConfig(**{**base, **kw}), 5450, with_image_encoder=False)


def test_attngan_cub_counts_exact():
    rows = _counts(initial="ig", refinement="attn", gf_dim=32, df_dim=64, r_num=2,
                   discriminator="attngan")
    assert rows["generator"][0] == 7_084_592
    assert rows["generator/refine_1"][0] == 267_136
    assert rows["discriminators"][0] == 97_596_678
    # Keras LSTM: one bias per gate, PyTorch two (b_ih + b_hh): 1,024 fewer.
    assert rows["text_encoder"][0] == 2_075_320 - 1_024


def test_dmgan_cub_counts_exact():
    rows = _counts(initial="ig", refinement="memory", gf_dim=64, df_dim=32, r_num=2,
                   discriminator="dmgan")
    assert rows["generator"][0] == 21_449_042
    assert rows["generator/initial"][0] == 19_156_736
    assert rows["discriminators"][0] == 25_298_598


@pytest.mark.parametrize("name", ["attngan", "dmgan", "msmt_paper_readings", "mtwig_sdm1_prev"])
def test_shape_built_counts_equal_forward_built_counts(name):
    # count_parameters builds the generator from shapes without initialising it
    # (Generator.build_variables in a StatelessScope); a forward pass must create exactly the
    # same variables.
    cfg = ModelConfig(stages=2, base_size=32, **{**TINY, **PRESETS[name]})
    rows = count_parameters(cfg, 50, with_image_encoder=False, with_discriminators=False)
    gen = build_generator(cfg)
    gen(dummy_generator_inputs(cfg), training=False)
    forward = {w.path: tuple(w.shape) for w in gen.weights}
    shaped = build_generator(cfg)
    shaped.build_variables()
    assert {w.path: tuple(w.shape) for w in shaped.weights} == forward
    assert rows["generator"] == (
        sum(int(np.prod(w.shape)) for w in gen.trainable_weights),
        sum(int(np.prod(w.shape)) for w in gen.non_trainable_weights))
    assert "discriminators" not in rows and rows["text_encoder"][0] > 0
    # A shape-built (and initialised) generator runs.
    out = shaped(_inputs(cfg), training=False)
    assert [tuple(x.shape) for x in out["images"]] == [(2, 32, 32, 3), (2, 64, 64, 3)]


@pytest.mark.parametrize("kind", ["dmgan", "attngan"])
def test_shape_built_discriminator_equals_forward_built(kind):
    # count_parameters builds the discriminators by `Discriminator.build` in a StatelessScope.
    from msmt_tf.models.discriminator import Discriminator

    cfg = ModelConfig(stages=1, base_size=64, df_dim=4, embedding_dim=16, discriminator=kind,
                      gf_dim=4, n_m=8, z_dim=8, condition_dim=6)
    d = Discriminator(64, df_dim=4, condition_dim=16, kind=kind)
    code = d(np.zeros((1, 64, 64, 3), "float32"), training=False)
    d.uncond_logits(code)
    d.cond_logits(code, np.zeros((1, 16), "float32"))
    rows = count_parameters(cfg, 50, with_image_encoder=False)
    assert rows["discriminator_64"] == (
        sum(int(np.prod(w.shape)) for w in d.trainable_weights),
        sum(int(np.prod(w.shape)) for w in d.non_trainable_weights))
    with keras.StatelessScope(initialize_variables=False):
        shaped = Discriminator(64, df_dim=4, condition_dim=16, kind=kind)
        shaped.build((1, 64, 64, 3))
    assert sorted((w.path, tuple(w.shape)) for w in shaped.weights) == sorted(
        (w.path, tuple(w.shape)) for w in d.weights)
    keras.backend.clear_session()
