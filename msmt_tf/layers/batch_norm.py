"""Batch-normalisation and initializer defaults shared by the blocks, and seeded initializers.

The references use PyTorch ``BatchNorm`` defaults (eps 1e-5, momentum 0.1, i.e. Keras
``momentum=0.9``) and re-initialise every BN weight with N(1, 0.02) and bias 0, and every conv /
linear weight with ``orthogonal_``: ``nn.BatchNorm2d(n)`` without arguments in
taoxugit/AttnGAN code/model.py:upBlock and ResBlock (commit 0d000e6), the same in
MinfengZhu/DM-GAN code/model.py (commit d515995); the initialisation is
code/miscc/utils.py:weights_init of both. The helpers below are the one place these numbers live.

A layer with a ``seed`` argument seeds its initializers with ``seeded`` and gives each sublayer
or weight its own ``offset_seed`` (deterministic builds).
"""

import keras

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # Keras convention: moving = momentum * moving + (1 - momentum) * batch.
KERNEL_INITIALIZER = "orthogonal"


def gamma_initializer(seed=None):
    """N(1, 0.02) as code/miscc/utils.py:weights_init of both references (module docstring)."""
    return keras.initializers.RandomNormal(mean=1.0, stddev=0.02, seed=seed)


def offset_seed(seed, offset):
    """``seed + offset`` (the seed of a sublayer or weight), or None for an unseeded layer."""
    return None if seed is None else seed + offset


def seeded(initializer, seed):
    """``keras.initializers.get(initializer)``, given ``seed`` if it takes one and has none."""
    initializer = keras.initializers.get(initializer)
    if seed is not None:
        config = initializer.get_config()
        if "seed" in config and config["seed"] is None:
            config["seed"] = seed
            initializer = type(initializer).from_config(config)
    return initializer


@keras.saving.register_keras_serializable(package="msmt_tf")
class BatchNorm(keras.layers.BatchNormalization):
    """Keras ``BatchNormalization`` whose batch statistics can skip whole samples.

    ``call(inputs, training=None, sample_mask=None)``: ``sample_mask`` is a bool ``[N]`` (or any
    prefix of ``inputs.shape[:-1]``); in training mode the mean / variance are computed over the
    rows where it is True only (and only those rows move the running statistics). Rows where it
    is False are still normalised, with the statistics of the others. MTWIG's all-tails test
    reference keeps its padded tails out of BN this way (MTWIG itself decodes the valid tails
    only). Unlike passing Keras' ``mask=``, nothing is attached to the output,
    so downstream layers see no Keras mask.

    Keras BN upcasts float16 inputs to float32 for its statistics, so it is safe under
    ``mixed_float16``.

    Under ``tf.distribute`` the batch statistics are per replica (not synchronized), and the
    moving mean / variance are created with ``aggregation="mean"``: each update is averaged
    over the replicas (and workers), as ``tf.keras`` 2 did. Keras 3's default (``"none"``)
    lets every replica keep its own moving statistics in one mirrored variable, so the
    copies silently diverge (checkpoints and the EMA copy then hold replica 0's only, and
    the workers of a multi-worker run end with different weights).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = False

    def add_weight(self, *args, **kwargs):
        if kwargs.get("name") in ("moving_mean", "moving_variance"):
            kwargs["aggregation"] = "mean"
        return super().add_weight(*args, **kwargs)

    def call(self, inputs, training=None, sample_mask=None):
        return super().call(
            inputs, training=training, mask=broadcast_sample_mask(sample_mask, inputs)
        )


def batch_norm(name, dtype=None, axis=-1, seed=None):
    """A ``BatchNorm`` with the reference epsilon / momentum / init (see module docstring)."""
    return BatchNorm(
        axis=axis,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        gamma_initializer=gamma_initializer(seed),
        name=name,
        dtype=dtype,
    )


def broadcast_sample_mask(sample_mask, x):
    """Broadcasts a per-sample bool mask ``[N]`` to ``x.shape[:-1]`` (for BN's ``mask=``)."""
    if sample_mask is None:
        return None
    m = keras.ops.cast(sample_mask, "bool")
    extra = len(x.shape) - 1 - len(m.shape)
    for _ in range(extra):
        m = keras.ops.expand_dims(m, -1)
    return keras.ops.broadcast_to(m, keras.ops.shape(x)[:-1])
