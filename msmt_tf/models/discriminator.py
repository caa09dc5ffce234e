"""Per-stage discriminators of AttnGAN and DM-GAN (the latter is MSMT-GAN's)."""

import keras

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.d_blocks import KINDS, DBlock
from msmt_tf.layers.d_logits import OUTPUTS, DiscriminatorLogits

STAGE_SIZES = (32, 64, 128, 256)


@keras.saving.register_keras_serializable(package="msmt_tf")
class Discriminator(keras.Model):
    """``D_NET64`` / ``D_NET128`` / ``D_NET256`` of taoxugit/AttnGAN code/model.py (commit 0d000e6)
    and MinfengZhu/DM-GAN code/model.py (commit d515995); ``D_k`` of eqs 22-23.

    Image code (``call``), all blocks ``DBlock`` (conv -> [BN] -> LeakyReLU 0.2):

    - ``encode_image_by_16times``: k4 s2 convs 3 -> df -> 2df -> 4df -> 8df (``[B, S/16, S/16,
      8df]``; AttnGAN: no BN on the first);
    - 64: nothing more (4x4);
    - 128: down(8df -> 16df) to 4x4, 3x3 block(16df -> 8df);
    - 256: down(8df -> 16df), down(16df -> 32df) to 4x4, 3x3(32df -> 16df), 3x3(16df -> 8df).

    ``kind="dmgan"``: every block conv spectral-normed (``SpectralNormConv2D``) with bias, no BN.
    ``kind="attngan"``: plain convs without bias, BN after every conv but the first.
    Heads (``DiscriminatorLogits``): ``uncond_logits(code)`` and ``cond_logits(code,
    sentence)`` -> ``[B]`` float32 logits by default (``output="logits"``; the losses in
    ``msmt_tf.losses`` take logits).

    Trainable parameters (CUB): DM-GAN df 32: 1,878,242 / 5,155,810 / 18,264,546 for 64 / 128 /
    256 (cond head 1,184,001, uncond head 4,097; the u/v vectors are non-trainable);
    AttnGAN df 64: 6,313,730 / 19,424,002 / 71,858,946.

    Args:
        stage_size: input resolution, 64, 128 or 256.
        df_dim: base width ``df`` (DM-GAN 32, AttnGAN 64 on CUB).
        condition_dim: width of the sentence feature (256).
        kind: ``"dmgan"`` or ``"attngan"``.
        output: ``"logits"`` or ``"probability"`` (head outputs).
        kernel_initializer: convolution initializer (orthogonal, gain 1, as ``weights_init``).
        update_in_eval: spectral norm power iteration also when ``training`` is False
            (the reference's behaviour).
        seed: int seed for every initializer (each block offsets it), or None.

    Call arguments:
        images: ``[B, stage_size, stage_size, 3]`` in [-1, 1].
        training: bool (advances spectral norm state, BN batch statistics).

    Returns:
        ``call``: image code ``[B, 4, 4, 8 * df_dim]``.
    """

    def __init__(
        self,
        stage_size,
        df_dim=32,
        condition_dim=256,
        kind="dmgan",
        output="logits",
        kernel_initializer="orthogonal",
        update_in_eval=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if stage_size not in STAGE_SIZES:
            raise ValueError(
                f"Discriminator: stage_size={stage_size!r} must be one of {list(STAGE_SIZES)}; "
                "check --base_size / --stages."
            )
        if kind not in KINDS:
            raise ValueError(f"Discriminator: kind={kind!r} must be one of {list(KINDS)}.")
        if output not in OUTPUTS:
            raise ValueError(f"Discriminator: output={output!r} must be one of {list(OUTPUTS)}.")
        if int(df_dim) < 1:
            raise ValueError(f"Discriminator: --df_dim={df_dim!r} must be >= 1.")
        self.stage_size = int(stage_size)
        self.df_dim = int(df_dim)
        self.condition_dim = int(condition_dim)
        self.kind = kind
        self.output_type = output
        self.kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )
        self.update_in_eval = bool(update_in_eval)
        self.seed = seed

        df = self.df_dim
        # (filters, kernel, strides, batch_norm) for each block, in order.
        plan = [(df, 4, 2, False), (2 * df, 4, 2, True), (4 * df, 4, 2, True), (8 * df, 4, 2, True)]
        if self.stage_size == 32:
            # Not in the references (their first stage is 64 px): for small CPU runs, encode by 8
            # (32 -> 4) and lift 4df to 8df with a 3x3 block, so the heads are unchanged.
            plan = plan[:3] + [(8 * df, 3, 1, True)]
        if self.stage_size >= 128:
            plan.append((16 * df, 4, 2, True))
        if self.stage_size == 256:
            plan.append((32 * df, 4, 2, True))
            plan.append((16 * df, 3, 1, True))
        if self.stage_size >= 128:
            plan.append((8 * df, 3, 1, True))
        names = ["encode_%d" % i for i in range(4)]
        if self.stage_size == 32:
            names = names[:3] + ["block3x3_0"]
        names += {32: [], 64: [], 128: ["down_0", "block3x3_0"]}.get(
            self.stage_size, ["down_0", "down_1", "block3x3_0", "block3x3_1"]
        )
        self.blocks = [
            DBlock(
                filters,
                kernel_size=kernel,
                strides=strides,
                kind=kind,
                batch_norm=batch_norm and kind == "attngan",
                kernel_initializer=self._initializer(),
                update_in_eval=self.update_in_eval,
                seed=bn.offset_seed(seed, 100 * i),
                name=name,
                dtype=self.dtype_policy,
            )
            for i, ((filters, kernel, strides, batch_norm), name) in enumerate(zip(plan, names))
        ]
        head_kwargs = dict(
            df_dim=df,
            condition_dim=self.condition_dim,
            kind=kind,
            output=output,
            kernel_initializer=self._initializer(),
            update_in_eval=self.update_in_eval,
            dtype=self.dtype_policy,
        )
        self.uncond_head = DiscriminatorLogits(
            conditional=False,
            seed=bn.offset_seed(seed, 1000),
            name="uncond_head",
            **head_kwargs,
        )
        self.cond_head = DiscriminatorLogits(
            conditional=True,
            seed=bn.offset_seed(seed, 2000),
            name="cond_head",
            **head_kwargs,
        )

    def _initializer(self):
        return keras.initializers.deserialize(self.kernel_initializer)

    def build(self, images_shape):
        images_shape = tuple(images_shape)
        if images_shape[1:] != (self.stage_size, self.stage_size, 3):
            raise ValueError(
                f"Discriminator(stage_size={self.stage_size}): images must be "
                f"[B, {self.stage_size}, {self.stage_size}, 3], got {list(images_shape)}; "
                "feed each stage's images to the discriminator of the same size."
            )
        shape = images_shape
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.uncond_head.build(shape)
        self.cond_head.build(shape, (images_shape[0], self.condition_dim))

    def call(self, images, training=None):
        x = images
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def uncond_logits(self, code, training=None):
        """Unconditional score ``D_k(x)``: ``[B, 4, 4, 8df]`` -> ``[B]`` float32."""
        return self.uncond_head(code, training=training)

    def cond_logits(self, code, sentence, training=None):
        """Conditional score ``D_k(x, s)``: code and sentence ``[B, condition_dim]`` -> ``[B]``."""
        return self.cond_head(code, sentence, training=training)

    def compute_output_shape(self, images_shape):
        return (images_shape[0], 4, 4, 8 * self.df_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "stage_size": self.stage_size,
                "df_dim": self.df_dim,
                "condition_dim": self.condition_dim,
                "kind": self.kind,
                "output": self.output_type,
                "kernel_initializer": self.kernel_initializer,
                "update_in_eval": self.update_in_eval,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
