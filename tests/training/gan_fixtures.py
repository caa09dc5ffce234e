"""Tiny GAN networks and batches shared by the GAN step/trainer tests (not collected)."""

import numpy as np
import tensorflow as tf

from msmt_tf.cli import common
from msmt_tf.data.config import DataConfig
from msmt_tf.data.vocabulary import Vocabulary
from msmt_tf.evaluation.config import EvalConfig
from msmt_tf.models import damsm
from msmt_tf.models.config import ModelConfig
from msmt_tf.training.config import TrainConfig
from msmt_tf.training.damsm_config import DAMSMConfig

VOCAB = 30
WORDS = 6
BATCH = 4


def configs(**train):
    model = ModelConfig(gf_dim=4, df_dim=4, n_m=8, heads=2, grid=4, r_num=1, z_dim=8,
                        condition_dim=6, embedding_dim=16, word_embedding_dim=8)
    data = DataConfig(words_num=WORDS)
    # lambda3 5 (the CUB presets', not the quickstart's 0) so the DAMSM term is exercised;
    # float32 pinned: the default (auto) would follow the test machine's hardware.
    kw = dict(batch_size=BATCH, max_steps=4, log_every=1, image_every=2, checkpoint_every=2,
              eval_every=0, seed=3, lambda3=5.0, d_warmup_steps=0, precision="float32")
    kw.update(train)
    return common.Configs(data=data, model=model, train=TrainConfig(**kw), damsm=DAMSMConfig(),
                          eval=EvalConfig())


def vocab():
    return Vocabulary({i: ("<end>" if i == 0 else f"w{i}") for i in range(VOCAB)})


def encoders(model_cfg):
    text = damsm.build_text_encoder(model_cfg, VOCAB)
    image = damsm.build_image_encoder(model_cfg, load_trunk_weights=False, seed=1)
    text.trainable = False
    image.trainable = False
    return text, image


def batch(model_cfg, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([6, 4, 3, 2])
    caps = rng.integers(1, VOCAB, size=(BATCH, WORDS)).astype("int32")
    caps[np.arange(WORDS)[None] >= lengths[:, None]] = 0
    images = tuple(rng.uniform(-1, 1, size=(BATCH, s, s, 3)).astype("float32")
                   for s in model_cfg.image_sizes)
    return {"images": images, "captions": caps, "caption_len": lengths.astype("int32"),
            "class_id": np.array([0, 1, 1, 2], "int32"), "key": np.array(["a", "b", "c", "d"]),
            "wrong_captions": np.roll(caps, 1, axis=0),
            "wrong_caption_len": np.roll(lengths, 1).astype("int32")}


def dataset(model_cfg, repeats=2):
    """The same batch `repeats` times: the data order cannot differ between runs."""
    b = batch(model_cfg)
    return tf.data.Dataset.from_tensors(b).repeat(repeats)
