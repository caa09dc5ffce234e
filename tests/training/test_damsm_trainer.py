"""DAMSM pretraining: the schedule, retrieval R@1, and overfitting a tiny fixture."""

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.models import damsm
from msmt_tf.training import damsm_trainer
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


def test_retrieval_r1_with_class_masking():
    img = tf.constant([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    sen = tf.constant([[1.0, 0.1], [0.1, 1.0], [0.0, 1.0]])
    i2t, t2i = damsm_trainer.retrieval_r1(img, sen, tf.constant([0, 1, 2]))
    # image 1 prefers caption 2 (cosine 1.0 > 0.995): a miss; images 0 and 2 hit.
    assert float(i2t) == pytest.approx(2 / 3)
    # same class ids: captions 1 and 2 no longer compete for images 1 and 2
    i2t, t2i = damsm_trainer.retrieval_r1(img, sen, tf.constant([0, 1, 1]))
    assert float(i2t) == pytest.approx(1.0) and float(t2i) == pytest.approx(1.0)
    # one class: every negative is masked, a "perfect" 1.0 would be by construction -> undefined
    i2t, t2i = damsm_trainer.retrieval_r1(img, sen, tf.constant([5, 5, 5]))
    assert np.isnan(float(i2t)) and np.isnan(float(t2i))
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
