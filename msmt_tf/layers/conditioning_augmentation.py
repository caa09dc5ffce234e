"""Conditioning augmentation (StackGAN's CA; the references' ``CA_NET``)."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.glu import GLU


@keras.saving.register_keras_serializable(package="msmt_tf")
class ConditioningAugmentation(keras.layers.Layer):
    """Resamples the sentence vector: ``s' = mu + eps * exp(logvar / 2)`` (paper §3.1, eq. 1-2's
    s'; taoxugit/AttnGAN code/model.py:CA_NET (commit 0d000e6), same in MinfengZhu/DM-GAN).

    ``Dense(4 * condition_dim, bias) -> GLU`` gives ``2 * condition_dim`` values; the first
    ``condition_dim`` are ``mu``, the rest ``logvar``. ``eps ~ N(0, 1)`` is drawn from the layer's
    own ``keras.random.SeedGenerator`` on every call, in training and at evaluation alike (the
    references sample at eval too); pass ``eps`` to inject it (equivalence tests). ``mu`` and
    ``logvar`` feed the KL term ``-0.5 * mean(1 + logvar - mu^2 - exp(logvar))``.

    Everything after the dense layer is computed in float32 and returned as float32.

    Args:
        condition_dim: size of ``s'`` (100 in every reference config).
        seed: int or None, seed of the noise generator.

    Call arguments:
        inputs: sentence features ``[B, N_s]`` (256).
        training: unused (the sampling is the same in both modes).
        eps: optional ``[B, condition_dim]`` noise.

    Returns:
        ``(c_code, mu, logvar)``, each ``[B, condition_dim]`` float32.
    """

    def __init__(self, condition_dim=100, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(condition_dim, int) or condition_dim < 1:
            raise ValueError(
                f"ConditioningAugmentation: condition_dim must be a positive int, got "
                f"{condition_dim!r}."
            )
        self.condition_dim = condition_dim
        self.seed = seed
        self.fc = keras.layers.Dense(
            4 * condition_dim,
            use_bias=True,
            kernel_initializer=bn.KERNEL_INITIALIZER,
            name="fc",
            dtype=self.dtype_policy,
        )
        self.glu = GLU(name="glu", dtype=self.dtype_policy)
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

    def build(self, input_shape):
        self.fc.build(input_shape)
        self.glu.build(tuple(input_shape[:-1]) + (4 * self.condition_dim,))

    def call(self, inputs, training=None, eps=None):
        x = ops.cast(self.glu(self.fc(inputs)), "float32")
        mu = x[:, : self.condition_dim]
        logvar = x[:, self.condition_dim :]
        if eps is None:
            eps = keras.random.normal(ops.shape(mu), dtype="float32", seed=self.seed_generator)
        c_code = ops.cast(eps, "float32") * ops.exp(0.5 * logvar) + mu
        return c_code, mu, logvar

    def compute_output_spec(self, inputs, training=None, eps=None):
        spec = keras.KerasTensor((inputs.shape[0], self.condition_dim), dtype="float32")
        return spec, spec, spec

    def get_config(self):
        config = super().get_config()
        config.update({"condition_dim": self.condition_dim, "seed": self.seed})
        return config
