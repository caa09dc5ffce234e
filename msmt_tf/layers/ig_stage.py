"""The references' initial generation stage (IG, ``INIT_STAGE_G``) and its decoder stack."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.glu import GLU
from msmt_tf.layers.up_block import UpBlock


@keras.saving.register_keras_serializable(package="msmt_tf")
class SeedDecoder(keras.layers.Layer):
    """The stack shared by IG and MTWIG: a flat seed ``[N, 32 * ngf]`` -> ``[N, S, S, ngf/2^n]``.

    ``BN (1-D, over the 32 * ngf features) -> GLU -> 16 * ngf values -> reshape -> n UpBlocks``,
    each halving the channels and doubling the size, ``S = 4 * 2^n``. With the references'
    ``n = 4``: ngf -> ngf/2 -> ngf/4 -> ngf/8 -> ngf/16, 4 -> 8 -> 16 -> 32 -> 64 px
    (taoxugit/AttnGAN code/model.py:INIT_STAGE_G (commit 0d000e6), same in MinfengZhu/DM-GAN).

    Layout: the GLU output is reshaped to ``[N, ngf, 4, 4]`` (PyTorch's ``view(B, ngf, 4, 4)``,
    feature index ``c * 16 + h * 4 + w``) and transposed to NHWC, so the preceding dense / conv
    kernel of a PyTorch checkpoint maps column for column without permutation.

    Args:
        ngf: channels at 4x4 (16 * GF in the references); divisible by 2^upsamples.
        upsamples: n, the number of upsampling blocks (4 for 64x64 output).

    Call arguments:
        inputs: ``[N, 32 * ngf]``.
        training: BN mode.
        sample_mask: optional bool ``[N]``; BN batch statistics over the True rows only.

    Returns:
        ``[N, 4 * 2^n, 4 * 2^n, ngf / 2^n]``.
    """

    def __init__(self, ngf, upsamples=4, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(upsamples, int) or upsamples < 1:
            raise ValueError(f"SeedDecoder: upsamples must be an int >= 1, got {upsamples!r}.")
        if not isinstance(ngf, int) or ngf < 2**upsamples or ngf % 2**upsamples:
            raise ValueError(
                f"SeedDecoder: ngf must be a positive multiple of 2**upsamples = {2**upsamples}, "
                f"got {ngf!r}."
            )
        self.ngf = ngf
        self.upsamples = upsamples
        self.output_size = 4 * 2**upsamples
        self.norm = bn.batch_norm("bn", dtype=self.dtype_policy)
        self.glu = GLU(name="glu", dtype=self.dtype_policy)
        self.ups = [
            UpBlock(ngf // 2 ** (i + 1), name=f"upsample{i + 1}", dtype=self.dtype_policy)
            for i in range(upsamples)
        ]

    def build(self, input_shape):
        n = input_shape[0]
        self.norm.build((n, 32 * self.ngf))
        self.glu.build((n, 32 * self.ngf))
        channels, size = self.ngf, 4
        for up in self.ups:
            up.build((n, size, size, channels))
            channels, size = channels // 2, size * 2

    def call(self, inputs, training=None, sample_mask=None):
        x = self.norm(inputs, training=training, sample_mask=sample_mask)
        x = self.glu(x)
        x = ops.reshape(x, (-1, self.ngf, 4, 4))
        x = ops.transpose(x, (0, 2, 3, 1))
        for up in self.ups:
            x = up(x, training=training, sample_mask=sample_mask)
        return x

    def compute_output_shape(self, input_shape):
        size = self.output_size
        return (input_shape[0], size, size, self.ngf // 2**self.upsamples)

    def get_config(self):
        config = super().get_config()
        config.update({"ngf": self.ngf, "upsamples": self.upsamples})
        return config


def upsamples_for(output_size, owner):
    """n with ``output_size == 4 * 2**n``, n >= 1, or a ValueError naming ``--base_size``."""
    n = 0
    size = output_size if isinstance(output_size, int) else -1
    while size > 4 and size % 2 == 0:
        size //= 2
        n += 1
    if size != 4 or n < 1:
        raise ValueError(
            f"{owner}: output_size={output_size!r} must be 4 * 2**n with n >= 1 "
            "(--base_size; 64 in every reference config)."
        )
    return n


@keras.saving.register_keras_serializable(package="msmt_tf")
class IGStage(keras.layers.Layer):
    """Initial generation from the sentence only (AttnGAN / DM-GAN ``INIT_STAGE_G``).

    ``concat(c_code, z)`` (in that order) -> ``Dense(32 * ngf, no bias)`` -> ``SeedDecoder(ngf)``
    with ``ngf = 16 * gf_dim``: BN, GLU, reshape to 4x4xngf (NCHW index order, see
    ``SeedDecoder``) and four upsampling blocks to 64x64xgf_dim (taoxugit/AttnGAN
    code/model.py:INIT_STAGE_G and G_NET (commit 0d000e6)). This is the "IG" of
    the paper's Table 4 / §4.1 ablations; MTWIG (eqs 1-3) replaces it in MSMT-GAN.

    Other output sizes ``S = 4 * 2^n`` (``--base_size``, e.g. 32 for CPU runs) use n upsampling
    blocks that halve the channels down to GF, so ``ngf = GF * 2^n`` (= 16 GF for 64 px).

    Args:
        gf_dim: GF, channels of the output.
        z_dim: noise size N_z.
        condition_dim: size of the CA code s'.
        output_size: S, the output size (64 as the references).

    Call arguments:
        inputs: ``(c_code [B, condition_dim], z [B, z_dim])``.
        training: BN mode.

    Returns:
        ``[B, S, S, gf_dim]``.
    """

    def __init__(self, gf_dim, z_dim=100, condition_dim=100, output_size=64, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("gf_dim", gf_dim), ("z_dim", z_dim), ("condition_dim", condition_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"IGStage: {name} must be a positive int, got {value!r}.")
        self.gf_dim = gf_dim
        self.z_dim = z_dim
        self.condition_dim = condition_dim
        self.output_size = output_size
        upsamples = upsamples_for(output_size, "IGStage")
        self.ngf = gf_dim * 2**upsamples
        self.fc = keras.layers.Dense(
            32 * self.ngf,
            use_bias=False,
            kernel_initializer=bn.KERNEL_INITIALIZER,
            name="fc",
            dtype=self.dtype_policy,
        )
        self.decoder = SeedDecoder(
            self.ngf, upsamples=upsamples, name="decoder", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        c_shape, z_shape = input_shape
        if c_shape[-1] != self.condition_dim or z_shape[-1] != self.z_dim:
            raise ValueError(
                f"IGStage: got c_code {tuple(c_shape)} and z {tuple(z_shape)}; expected last "
                f"sizes condition_dim={self.condition_dim} and z_dim={self.z_dim}."
            )
        self.fc.build((c_shape[0], self.condition_dim + self.z_dim))
        self.decoder.build((c_shape[0], 32 * self.ngf))

    def call(self, inputs, training=None):
        c_code, z = inputs
        x = ops.concatenate(
            [ops.cast(c_code, self.compute_dtype), ops.cast(z, self.compute_dtype)], axis=-1
        )
        return self.decoder(self.fc(x), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.output_size, self.output_size, self.gf_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "gf_dim": self.gf_dim,
                "z_dim": self.z_dim,
                "condition_dim": self.condition_dim,
                "output_size": self.output_size,
            }
        )
        return config
