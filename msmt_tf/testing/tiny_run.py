"""A tiny but real run directory for inference tests (sampling, export, evaluation).

``make_tiny_run(root)`` writes what ``python -m msmt_tf.train`` leaves behind and
``inference.load_for_inference`` reads, without training:

* ``<root>/run/config.json`` (``run_dir.prepare_run_dir``) of an MSMT-GAN generator (MTWIG
  initial stage, 2-head SDM refinement) with 2 stages, 8 -> 16 px, ``words_num`` 6;
* ``<root>/damsm/``: DAMSM encoders saved by ``damsm.save_encoders`` with ``VOCAB_WORDS``;
* ``<root>/run/checkpoints/ckpt-1``: the ``ema_generator`` and ``generator`` keys in the
  ``checkpointing.VariableMap`` layout of ``TrainCheckpoint``, with different random weights
  (so a test can tell which one was loaded) and random BatchNorm moving statistics (so
  inference-mode BN is exercised).

``make_tiny_run(root, with_data=True)`` also generates a tiny synthetic shapes dataset in
``<root>/shapes`` (``DATA_TRAIN`` + ``DATA_TEST`` images of 16 px, about 1 s), records it as
the run's ``--data_dir`` and gives the DAMSM encoders the dataset's vocabulary instead of
``VOCAB_WORDS``, so code that reads the run's test/train captions (``tools/fid.py
--captions=test``, the evaluator) works on it.
"""

import dataclasses
import os

import numpy as np

VOCAB_WORDS = ("<end>", "a", "bird", "red", "small", "with", "blue", "wings", "the", "this",
               "has", "yellow", "black", "white", "beak", "long", "tail", "and", "is", "nave",
               "caf", "i", "k", "x")
WORDS_NUM = 6
DATA_TRAIN, DATA_TEST, DATA_SIZE = 4, 6, 16  # the optional shapes dataset (with_data=True)


@dataclasses.dataclass
class TinyRun:
    run_dir: str
    damsm_dir: str
    checkpoint: str
    configs: object


def tiny_configs(damsm_dir, data_dir=None):
    from msmt_tf.cli import common
    from msmt_tf.data.config import DataConfig
    from msmt_tf.evaluation.config import EvalConfig
    from msmt_tf.models.config import ModelConfig
    from msmt_tf.training.config import TrainConfig
    from msmt_tf.training.damsm_config import DAMSMConfig

    model = ModelConfig(initial="mtwig", refinement="sdm", stages=2, base_size=8, gf_dim=4, n_m=8,
                        heads=2, grid=4, r_num=1, z_dim=8, condition_dim=6, embedding_dim=16,
                        word_embedding_dim=8)
    data = DataConfig(dataset="shapes", words_num=WORDS_NUM)
    if data_dir:
        data = data.replace(data_dir=data_dir, shapes_num_train=DATA_TRAIN,
                            shapes_num_test=DATA_TEST, shapes_size=DATA_SIZE)
    return common.Configs(data=data, model=model, train=TrainConfig(seed=3),
                          damsm=DAMSMConfig(damsm_dir=damsm_dir), eval=EvalConfig())


def _randomize(model, rng):
    for v in model.variables:
        name = str(v.path).rsplit("/", 1)[-1]
        shape = tuple(v.shape)
        if name == "moving_variance":
            v.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
        elif name == "moving_mean":
            v.assign(rng.normal(0.0, 0.2, shape).astype("float32"))
        elif v.trainable:
            v.assign(np.asarray(v.numpy()) + rng.normal(0.0, 0.05, shape).astype("float32"))


def make_tiny_run(root, seed=0, with_data=False):
    """Writes the tiny run under ``root`` (see the module docstring); returns ``TinyRun``.

    ``with_data``: also generate the tiny shapes dataset and use its vocabulary.
    """
    import tensorflow as tf

    from msmt_tf.data.vocabulary import Vocabulary
    from msmt_tf.models import damsm
    from msmt_tf.models.generator import build_generator
    from msmt_tf.models.param_count import dummy_generator_inputs
    from msmt_tf.training import checkpointing
    from msmt_tf.training import run_dir as run_dir_lib

    root = str(root)
    damsm_dir = os.path.join(root, "damsm")
    run_dir = os.path.join(root, "run")
    configs = tiny_configs(damsm_dir, os.path.join(root, "shapes") if with_data else None)
    model = configs.model
    run_dir_lib.prepare_run_dir(run_dir, configs.to_dict())
    if with_data:
        from msmt_tf.data import load_split

        vocab = load_split(configs.data, "test").vocab  # generates the dataset
    else:
        vocab = Vocabulary(dict(enumerate(VOCAB_WORDS)))
    text = damsm.build_text_encoder(model, len(vocab))
    image = damsm.build_image_encoder(model, load_trunk_weights=False, seed=seed + 1)
    damsm.save_encoders(damsm_dir, text, image, vocab, damsm.encoder_meta(model, configs.damsm))
    rng = np.random.default_rng(seed)
    nets = {}
    for key in ("generator", "ema_generator"):
        g = build_generator(model, seed=configs.train.seed, name=key)
        g(dummy_generator_inputs(model, words_num=WORDS_NUM), training=False)
        _randomize(g, rng)
        nets[key] = checkpointing.VariableMap(g)
    prefix = tf.train.Checkpoint(**nets).save(os.path.join(run_dir, "checkpoints", "ckpt"))
    return TinyRun(run_dir=run_dir, damsm_dir=damsm_dir, checkpoint=prefix, configs=configs)
