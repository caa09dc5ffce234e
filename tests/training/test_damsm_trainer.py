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
    # 114 decays while lr > 2e-4, ending just below it (facts §1.3).
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
    final = trainer._eval_step(batch)
    assert float(final["r1_image_to_text"]) >= 0.95 and float(final["r1_text_to_image"]) >= 0.95
    assert float(final["loss"]) < float(out["loss"]) * 1.5
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
