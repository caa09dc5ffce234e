"""DAMSM pretraining: the schedule, retrieval R@1, and overfitting a tiny fixture."""

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.models import damsm
from msmt_tf.training import checkpointing, damsm_trainer
from msmt_tf.training.damsm_config import DAMSMConfig
from tests.training import gan_fixtures as fx


def test_learning_rate_schedule_matches_the_references():
    cfg = DAMSMConfig()
    assert damsm_trainer.damsm_learning_rate(cfg, 0) == pytest.approx(0.002)
    assert damsm_trainer.damsm_learning_rate(cfg, 3) == pytest.approx(0.002 * 0.98**3)
    # 114 decays while lr > 2e-4, ending just below it (taoxugit/AttnGAN code/pretrain_DAMSM.py
    # (commit 0d000e6): `if lr > cfg.TRAIN.ENCODER_LR/10.: lr *= 0.98` after each epoch).
    assert damsm_trainer.damsm_learning_rate(cfg, 114) == pytest.approx(0.002 * 0.98**114)
    assert damsm_trainer.damsm_learning_rate(cfg, 10_000) == pytest.approx(0.002 * 0.98**114)
    assert damsm_trainer.damsm_learning_rate(cfg, 113) > 2e-4 > 0.002 * 0.98**114


def _r1(image_code, sentence, class_ids):
    """Validation's R@1 (``validation_means``) of one batch: hits of the rows with a negative."""
    counted = damsm_trainer.negatives_per_row(class_ids).numpy() > 0
    i2t, t2i = damsm_trainer.retrieval_hits(image_code, sentence, class_ids)
    sums = {k: 0.0 for k in damsm_trainer.LOSS_TERMS}
    sums.update(r1_image_to_text=float(np.sum(i2t.numpy() * counted)),
                r1_text_to_image=float(np.sum(t2i.numpy() * counted)),
                rows_counted=int(counted.sum()), rows_total=len(counted))
    val = damsm_trainer.validation_means(sums)
    return val["r1_image_to_text"], val["r1_text_to_image"]


def test_retrieval_r1_with_class_masking():
    img = tf.constant([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    sen = tf.constant([[1.0, 0.1], [0.1, 1.0], [0.0, 1.0]])
    i2t, t2i = _r1(img, sen, tf.constant([0, 1, 2]))
    # image 1 prefers caption 2 (cosine 1.0 > 0.995): a miss; images 0 and 2 hit.
    assert i2t == pytest.approx(2 / 3)
    np.testing.assert_array_equal(
        damsm_trainer.retrieval_hits(img, sen, tf.constant([0, 1, 2]))[0], [1, 0, 1])
    # same class ids: captions 1 and 2 no longer compete for images 1 and 2
    i2t, t2i = _r1(img, sen, tf.constant([0, 1, 1]))
    assert i2t == pytest.approx(1.0) and t2i == pytest.approx(1.0)
    # one class: every negative is masked, a "perfect" 1.0 would be by construction -> undefined
    i2t, t2i = _r1(img, sen, tf.constant([5, 5, 5]))
    assert np.isnan(i2t) and np.isnan(t2i)
    np.testing.assert_array_equal(damsm_trainer.negatives_per_row(tf.constant([5, 5, 5])), [0, 0, 0])
    np.testing.assert_array_equal(damsm_trainer.negatives_per_row(tf.constant([0, 1, 1])), [2, 1, 1])


def test_overfits_a_tiny_fixture(tmp_path, fid_weight_arrays):
    del fid_weight_arrays  # makes sure the Inception weights are cached (fetched once)
    cfgs = fx.configs()
    model = cfgs.model.replace(embedding_dim=32, word_embedding_dim=16)
    batch = fx.batch(cfgs.model, seed=4)
    # four plain images of clearly different colours
    colours = np.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, 1]], "float32")
    batch["images"] = (np.broadcast_to(colours[:, None, None, :], (fx.BATCH, 64, 64, 3)).copy(),)
    batch["class_id"] = np.arange(fx.BATCH, dtype="int32")
    ds = tf.data.Dataset.from_tensors(batch).repeat(1)
    trainer = damsm_trainer.DAMSMTrainer(
        cfgs.data, model, cfgs.train, DAMSMConfig(damsm_batch_size=fx.BATCH, damsm_max_steps=80,
                                                  damsm_lr=0.005),
        str(tmp_path / "damsm"), ds, ds, fx.vocab(), steps_per_epoch=1, load_trunk_weights=True)
    for _ in range(80):
        out = trainer._train_step(batch)
    final = trainer.evaluate()
    assert final["rows_counted"] == final["rows_total"] == fx.BATCH  # four classes: all count
    assert final["r1_image_to_text"] >= 0.95 and final["r1_text_to_image"] >= 0.95
    assert final["loss"] < float(out["loss"]) * 1.5
    # the trunk stayed frozen: only the text encoder and the two projections train
    trainable = {v.path.split("/")[0] for v in trainer.text_vars + trainer.image_vars}
    assert trainable == {"text_encoder", "image_encoder"}
    assert all("trunk" not in v.path for v in trainer.image_vars)


def test_embedding_gradient_is_summed_per_token_before_adam(tmp_path):
    """A token seen twice in a batch: Adam's second moment of its embedding row is
    ``(1 - beta_2) * (g_1 + g_2)**2`` after one step, as with the references' dense PyTorch
    gradient, not ``(1 - beta_2) * (g_1**2 + g_2**2)`` (Keras 3's Adam on ``tf.IndexedSlices``);
    the gradient is computed here independently, dense, by summing one row per occurrence."""
    cfgs = fx.configs()
    batch = fx.batch(cfgs.model, seed=3)
    ids = batch["captions"][batch["captions"] > 0]
    assert np.bincount(ids).max() >= 2  # some token occurs more than once
    ds = tf.data.Dataset.from_tensors(batch).repeat(1)
    trainer = damsm_trainer.DAMSMTrainer(
        cfgs.data, cfgs.model, cfgs.train,
        DAMSMConfig(damsm_batch_size=fx.BATCH, damsm_max_steps=1, damsm_clip=0.0),
        str(tmp_path / "damsm"), ds, ds, fx.vocab(), steps_per_epoch=1, load_trunk_weights=False)
    trainer.text.embedding_dropout.rate = 0.0
    table = trainer.text.embedding.embeddings
    with tf.GradientTape() as tape:
        rows, _ = trainer._rows(batch, training=True)
        loss = tf.add_n([tf.reduce_mean(rows[k]) for k in damsm_trainer.LOSS_TERMS])
    sparse = tape.gradient(loss, table)
    assert isinstance(sparse, tf.IndexedSlices)
    dense = np.zeros(table.shape, np.float64)
    np.add.at(dense, sparse.indices.numpy(), sparse.values.numpy().astype(np.float64))
    trainer._train_step(batch)
    velocity = next(np.asarray(v) for v in trainer.optimizer.variables
                    if "velocity" in v.path and "embedding" in v.path)
    beta_2 = trainer.optimizer.beta_2
    np.testing.assert_allclose(velocity, (1 - beta_2) * dense**2, rtol=1e-4,
                               atol=1e-6 * (1 - beta_2) * np.max(dense**2))
    counts = np.bincount(sparse.indices.numpy())
    counts[0] = 0  # <end>, the padding: no gradient
    repeated = counts.argmax()
    assert counts[repeated] >= 2 and np.abs(dense[repeated]).max() > 0
    per_value = (1 - beta_2) * np.sum(np.asarray(sparse.values)[
        sparse.indices.numpy() == repeated] ** 2, axis=0)
    assert not np.allclose(velocity[repeated], per_value, rtol=1e-2)


def test_saved_encoders_reload_and_check_the_vocabulary(tmp_path):
    cfgs = fx.configs()
    text, image = fx.encoders(cfgs.model)
    directory = str(tmp_path / "enc")
    damsm.save_encoders(directory, text, image, fx.vocab(),
                        damsm.encoder_meta(cfgs.model, cfgs.damsm))
    text2, image2, vocab, _ = damsm.load_encoders(directory, cfgs.model, fx.vocab())
    caps = fx.batch(cfgs.model)["captions"]
    np.testing.assert_allclose(text(caps)[1], text2(caps)[1], atol=1e-6)
    assert len(vocab) == fx.VOCAB
    other = type(vocab)({i: ("<end>" if i == 0 else f"x{i}") for i in range(12)})
    with pytest.raises(damsm.DAMSMLoadError, match="30-word vocabulary but the dataset has 12"):
        damsm.load_encoders(directory, cfgs.model, other)


# ----------------------------------------------------------------------------- undefined validation
@pytest.fixture(scope="module")
def small_trainer(tmp_path_factory):
    """A DAMSM trainer of the fixture networks (untrained trunk, 75 px) whose test split has
    a single class, trained for one step."""
    cfgs = fx.configs()
    one_class = fx.batch(cfgs.model, seed=2)
    one_class["class_id"] = np.full(fx.BATCH, 7, "int32")
    test_ds = tf.data.Dataset.from_tensors(one_class).repeat(2)
    trainer = damsm_trainer.DAMSMTrainer(
        cfgs.data, cfgs.model, cfgs.train,
        DAMSMConfig(damsm_batch_size=fx.BATCH, damsm_max_steps=1),
        str(tmp_path_factory.mktemp("damsm") / "enc"), fx.dataset(cfgs.model, repeats=1), test_ds,
        fx.vocab(), steps_per_epoch=1, load_trunk_weights=False)
    return trainer, trainer.train()


def test_single_class_validation_is_undefined_and_the_encoders_are_kept(small_trainer):
    trainer, best = small_trainer
    # every row of the two one-class batches has no negative: loss 0 / R@1 1 by construction
    assert best["rows_counted"] == 0 and best["rows_total"] == 2 * fx.BATCH
    for k in ("loss", "w_loss0", "s_loss1", "r1_image_to_text", "r1_text_to_image"):
        assert np.isnan(best[k]), k
    # no validation can select encoders: the latest are kept so the GAN can train on them
    assert damsm.exists(trainer.out_dir)
    meta = damsm.load_encoders(trainer.out_dir, trainer.model_cfg, fx.vocab())[3]
    assert np.isnan(meta["validation"]["loss"]) and meta["validation"]["rows_counted"] == 0


class _CodeInPixel:
    """Image-encoder stand-in: the 2x2x2 image is the region map, its pixel (0, 0) the code."""

    def __call__(self, images, training=False):
        images = tf.convert_to_tensor(images, tf.float32)
        return images, images[:, 0, 0, :]


class _TableText:
    """Text-encoder stand-in: caption token t -> a fixed word vector; sentence = first word's."""

    table = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])

    def __call__(self, captions, training=False):
        words = tf.gather(self.table, captions)
        return words, words[:, 0, :]


def test_mixed_validation_counts_only_rows_with_negatives(small_trainer, monkeypatch):
    from msmt_tf import losses

    trainer, _ = small_trainer
    monkeypatch.setattr(trainer, "text", _TableText())
    monkeypatch.setattr(trainer, "image", _CodeInPixel())
    monkeypatch.setattr(trainer, "_eval_step", trainer._eval_step_fn)

    def batch(codes, first_words, class_ids):
        images = np.zeros((2, 2, 2, 2), "float32")
        images[:, 0, 0] = codes
        images[:, 1, 1] = [[0.5, 0.5], [0.2, -0.4]]
        captions = np.array([[w, 3, 0] for w in first_words], "int32")
        return {"images": (images,), "captions": captions,
                "class_id": np.array(class_ids, "int32")}

    # B: two classes, both image codes (1, 0), sentences (1, 0) and (0, 1).
    mixed = batch([[1, 0], [1, 0]], [1, 2], [0, 1])
    # A: one class: no negatives (would add loss 0 and R@1 1 per row if counted).
    same = batch([[0, 1], [1, 0]], [2, 1], [4, 4])
    monkeypatch.setattr(trainer, "test_ds", [same, mixed])
    val = trainer.evaluate()
    assert val["rows_counted"] == 2 and val["rows_total"] == 4
    # By hand (gamma3 = 10, cosines 1 and 0): image 0 scores (10, 0), image 1 (10, 0) with
    # its caption second: s_loss0 = (log(1 + e^-10) + log(1 + e^10)) / 2 = 5 + log(1 + e^-10);
    # each caption column is a tie (10, 10) or (0, 0): s_loss1 = log 2.
    assert val["s_loss0"] == pytest.approx(5 + np.log1p(np.exp(-10)), rel=1e-5)
    assert val["s_loss1"] == pytest.approx(np.log(2), rel=1e-5)
    # R@1: image 1 prefers caption 0 (a miss); caption 1 ties at cosine 0, argmax takes
    # image 0 (a miss) -> 0.5 each way (counting the one-class rows would give 0.75).
    assert val["r1_image_to_text"] == 0.5 and val["r1_text_to_image"] == 0.5
    # the word terms equal the library's batch losses of B alone
    words, _ = trainer.text(mixed["captions"])
    w0, w1, _ = losses.damsm_word_loss(mixed["images"][0], words, mixed["captions"] != 0,
                                       mixed["class_id"])
    assert val["w_loss0"] == pytest.approx(float(w0), rel=1e-5)
    assert val["w_loss1"] == pytest.approx(float(w1), rel=1e-5)
    assert val["loss"] == pytest.approx(val["w_loss0"] + val["w_loss1"] + val["s_loss0"]
                                        + val["s_loss1"])


# ----------------------------------------------------------------------------- the loop
def _damsm_trainer(out_dir, max_steps, log_every=1):
    """DAMSM pretraining of the fixture networks: epochs of 2 steps on one repeated batch
    (the data order of a resumed epoch is not replayed, so only a constant batch makes a
    resumed run comparable to a straight one), validation on one batch after each epoch."""
    cfgs = fx.configs(log_every=log_every, checkpoint_every=1000)
    return damsm_trainer.DAMSMTrainer(
        cfgs.data, cfgs.model, cfgs.train,
        DAMSMConfig(damsm_batch_size=fx.BATCH, damsm_max_steps=max_steps),
        str(out_dir), fx.dataset(cfgs.model, repeats=2), fx.dataset(cfgs.model, repeats=1),
        fx.vocab(), steps_per_epoch=2, load_trunk_weights=False)


def _state(trainer):
    """Every encoder and optimizer variable and the text encoder's dropout seed state."""
    variables = trainer.text.variables + trainer.image.variables + trainer.optimizer.variables
    return [np.array(v) for v in variables]


@pytest.fixture(scope="module")
def damsm_runs(tmp_path_factory):
    """A 4-step pretraining run straight, and the same run stopped by SIGTERM after step 3
    (mid-epoch) and run again."""
    import os
    import signal

    from tensorflow.python.framework import config as tf_config

    root = tmp_path_factory.mktemp("damsm_loop")
    tf_config.enable_op_determinism()  # the same bits in both runs (see test_gan_trainer.py)
    try:
        straight = _damsm_trainer(root / "straight", 4)
        straight_best = straight.train(progress_stream=open(os.devnull, "w"))
        first = _damsm_trainer(root / "resumed", 4)
        inner, calls = first._train_step, [0]

        def step(batch):
            out = inner(batch)
            calls[0] += 1
            if calls[0] == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # caught by the loop's StopSignal
            return out

        first._train_step = step
        first.train(progress_stream=open(os.devnull, "w"))
        stopped = dict(first.result, interrupted=damsm_trainer.interrupted(first.out_dir),
                       checkpoint=first.checkpoint.manager.latest_checkpoint)
        resumed = _damsm_trainer(root / "resumed", 4)
        resumed_best = resumed.train(progress_stream=open(os.devnull, "w"))
    finally:
        tf_config.disable_op_determinism()
    return root, straight, straight_best, stopped, resumed, resumed_best


def test_sigterm_saves_and_the_resumed_pretraining_equals_a_straight_one(damsm_runs):
    root, straight, straight_best, stopped, resumed, resumed_best = damsm_runs
    assert stopped["stopped"] and stopped["step"] == 3 and stopped["interrupted"]
    assert stopped["checkpoint"].endswith("ckpt-3")
    assert resumed.result["step"] == 4 and not resumed.stopped
    assert not damsm_trainer.interrupted(resumed.out_dir)
    assert int(resumed.step.numpy()) == int(straight.step.numpy()) == 4
    assert int(resumed.epoch.numpy()) == int(straight.epoch.numpy()) == 2
    # bitwise: weights, Adam moments and iterations (the epoch-1 learning rate 0.002 * 0.98
    # after the restore too), and the dropout seed states
    assert float(resumed.optimizer.learning_rate.numpy()) == pytest.approx(0.002 * 0.98)
    for a, b in zip(_state(resumed), _state(straight)):
        np.testing.assert_array_equal(a, b)
    timing = {"epoch_seconds"}
    assert {k: v for k, v in resumed_best.items() if k not in timing} == {
        k: v for k, v in straight_best.items() if k not in timing}
    assert np.isfinite(straight_best["loss"]) and straight_best["epoch"] == 2
    assert float(resumed.best.numpy()) == float(straight.best.numpy())


def test_pretraining_logs_to_tensorboard_and_metrics_jsonl(damsm_runs):
    import glob
    import json

    root = damsm_runs[0]
    for run in ("straight", "resumed"):
        lines = [json.loads(x) for x in open(root / run / "metrics.jsonl")]
        # every step (log_every=1), and the validation after each epoch of 2 steps; the
        # resumed run's lines after its checkpoint (none) are moved aside, none doubled
        assert [x["step"] for x in lines] == [1, 2, 2, 3, 4, 4], run
        train, val = lines[0], lines[2]
        assert {"damsm_train/loss", "damsm_train/w_loss0", "damsm_train/s_loss1",
                "damsm_train/lr", "step_seconds", "examples_per_second"} <= set(train)
        assert train["damsm_train/lr"] == pytest.approx(0.002)
        assert lines[3]["damsm_train/lr"] == pytest.approx(0.002 * 0.98)
        assert {"damsm_val/loss", "damsm_val/r1_image_to_text", "damsm_val/epoch"} <= set(val)
    straight = [json.loads(x) for x in open(root / "straight" / "metrics.jsonl")]
    resumed = [json.loads(x) for x in open(root / "resumed" / "metrics.jsonl")]
    assert [x["damsm_train/loss"] for x in resumed if "damsm_train/loss" in x] == [
        x["damsm_train/loss"] for x in straight if "damsm_train/loss" in x]
    tags = set()
    for path in glob.glob(str(root / "straight" / "tensorboard" / "events.*")):
        for raw in tf.data.TFRecordDataset(path):
            tags.update(v.tag for v in tf.compat.v1.Event.FromString(raw.numpy()).summary.value)
    assert {"damsm_train/loss", "damsm_train/w_loss1", "damsm_train/lr", "damsm_val/loss",
            "damsm_val/s_loss0"} <= tags


def test_a_checkpoint_of_the_loop_before_the_split_resumes(damsm_runs, tmp_path):
    """The DAMSM checkpoints written before the shared loop (``ckpt/ckpt-<epoch>``: text,
    image, optimizer, step, epoch, best; no ``rng``) still restore."""
    straight = damsm_runs[1]
    objects = {**checkpointing.wrap_all(dict(text=straight.text, image=straight.image,
                                             optimizer=straight.optimizer)),
               "epoch": straight.epoch, "step": straight.step, "best": straight.best}
    old_dir = tmp_path / "old"
    tf.train.CheckpointManager(tf.train.Checkpoint(**objects), str(old_dir / "ckpt"),
                               max_to_keep=1).save(checkpoint_number=2)
    trainer = _damsm_trainer(old_dir, 4)
    assert trainer.checkpoint.restore_latest() == 4
    assert int(trainer.epoch.numpy()) == 2 and float(trainer.best.numpy()) == float(straight.best.numpy())
    for a, b in zip(_state(trainer), _state(straight)):
        np.testing.assert_array_equal(a, b)


def test_mirrored_pretraining_equals_one_device_on_each_replicas_batch(tmp_path):
    """2 replicas on ``[a, b, a, b]`` == one device on ``[a, b]`` after one step (see
    ``damsm_driver.py``: the per-row negatives are the replica's): the loss is divided by the
    global batch and the gradients summed over the replicas, one Adam update, in the shared
    loop (epoch end, validation and save under the strategy), the text gradients clipped by
    the global batch's norm. A loss scaled by the replica's batch would double every Adam first
    moment; gradients not summed would halve them; a clip by a replica's own norm or an
    embedding gradient left sparse would change the second moments."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ, PYTHONPATH=repo, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, os.path.join(here, "damsm_driver.py"), "--dir",
                           str(tmp_path), "--out", str(tmp_path / "w.npz")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    d = np.load(tmp_path / "w.npz")
    assert int(d["mirrored/replicas"]) == 2 and int(d["default/replicas"]) == 1
    assert int(d["mirrored/step"]) == int(d["default/step"]) == 1
    losses = [l.split("loss=")[1].split()[0] for l in proc.stdout.splitlines() if "loss=" in l]
    assert len(losses) == 2 and losses[0] == losses[1], proc.stdout
    checked = 0
    for group in ("w", "opt"):
        names = d[f"mirrored/names/{group}"]
        # the same variables in the same order (Keras numbers the second run's adam_1, ...)
        assert [("embedding" in n) for n in names] == [
            ("embedding" in n) for n in d[f"default/names/{group}"]]
        for i, name in enumerate(names):
            a = d[f"mirrored/{group}/{i:03d}"].astype(np.float64)
            b = d[f"default/{group}/{i:03d}"].astype(np.float64)
            if group == "w":  # the update: both start from the same seeded weights
                np.testing.assert_array_equal(d[f"mirrored/init/{i:03d}"], d[f"default/init/{i:03d}"])
                a, b = a - d[f"mirrored/init/{i:03d}"], b - d[f"default/init/{i:03d}"]
            # float32 summation order only (2-row sums + an all-reduce vs 2-row sums)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * max(np.abs(b).max(), 1e-12),
                                       err_msg=name)
            checked += 1
    assert checked >= 20 and any("embedding" in n for n in d["mirrored/names/w"])
