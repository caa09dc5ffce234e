"""The discriminator heads: unconditional and sentence-conditional logits from the 4x4 code."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.d_blocks import KINDS, DBlock

OUTPUTS = ("logits", "probability")


@keras.saving.register_keras_serializable(package="msmt_tf")
class DiscriminatorLogits(keras.layers.Layer):
    """One score per image: taoxugit/AttnGAN code/model.py:D_GET_LOGITS (commit 0d000e6) and
    MinfengZhu/DM-GAN code/model.py:D_GET_LOGITS (commit d515995).

    Unconditional (``conditional=False``): ``outlogits`` = Conv2D(8df -> 1, kernel 4, stride 4,
    bias, never spectral-normed) on the ``[B, 4, 4, 8df]`` image code.

    Conditional: the sentence feature ``[B, condition_dim]`` is tiled to ``[B, 4, 4,
    condition_dim]`` and concatenated *after* the image code (channel order
    ``[code | sentence]``, as ``torch.cat((h_code, c_code), 1)``), then ``jointConv`` =
    3x3 ``DBlock`` (8df + condition_dim -> 8df; spectral-normed with bias for ``dmgan``, plain
    conv + BN for ``attngan``), then ``outlogits``.

    These give the ``D_k(x)`` and ``D_k(x, s)`` of the paper's eqs 22-23. The references end in
    a sigmoid; here ``output="logits"`` (default) returns the pre-sigmoid value and the losses in
    ``msmt_tf.losses`` use sigmoid cross-entropy from logits, which equals the references'
    ``BCELoss(sigmoid(x))`` except where their log clamp at -100 bites (|x| > ~100).
    ``output="probability"`` applies the sigmoid (then pass ``from_logits=False`` to the
    losses). Outputs are float32 under mixed precision.

    Args:
        df_dim: discriminator width ``df``; the code has ``8 * df_dim`` channels.
        condition_dim: width of the sentence feature (256).
        conditional: True for the conditional head.
        kind: ``"dmgan"`` or ``"attngan"`` (only changes ``jointConv``).
        output: ``"logits"`` or ``"probability"``.
        kernel_initializer: initializer of the convolutions (orthogonal as ``weights_init``);
            the ``outlogits`` bias starts at zero.
        update_in_eval: spectral norm power iteration also in inference (``dmgan``).
        seed: int seed for the initializers, or None.

    Call arguments:
        code: ``[B, 4, 4, 8 * df_dim]``.
        sentence: ``[B, condition_dim]`` (required iff ``conditional``).
        training: bool.

    Returns:
        ``[B]`` float32 logits (or probabilities).
    """

    def __init__(
        self,
        df_dim,
        condition_dim=256,
        conditional=True,
        kind="dmgan",
        output="logits",
        kernel_initializer="orthogonal",
        update_in_eval=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"DiscriminatorLogits: kind={kind!r} must be one of {list(KINDS)}.")
        if output not in OUTPUTS:
            raise ValueError(
                f"DiscriminatorLogits: output={output!r} must be one of {list(OUTPUTS)}."
            )
        self.df_dim = int(df_dim)
        self.condition_dim = int(condition_dim)
        self.conditional = bool(conditional)
        self.kind = kind
        self.output_type = output
        self.kernel_initializer = bn.seeded(kernel_initializer, seed)
        self.update_in_eval = bool(update_in_eval)
        self.seed = seed
        if self.conditional:
            self.joint_conv = DBlock(
                8 * self.df_dim,
                kernel_size=3,
                strides=1,
                kind=kind,
                batch_norm=kind == "attngan",
                kernel_initializer=self.kernel_initializer,
                update_in_eval=self.update_in_eval,
                seed=bn.offset_seed(seed, 10),
                name="joint_conv",
                dtype=self.dtype_policy,
            )
        else:
            self.joint_conv = None
        self.out_conv = keras.layers.Conv2D(
            1,
            4,
            strides=4,
            padding="valid",
            use_bias=True,
            kernel_initializer=self.kernel_initializer,
            name="out_logits",
            dtype=self.dtype_policy,
        )

    def build(self, code_shape, sentence_shape=None):
        code_shape = tuple(code_shape)
        if code_shape[1:] != (4, 4, 8 * self.df_dim):
            raise ValueError(
                f"DiscriminatorLogits: code shape {code_shape} must be [B, 4, 4, {8 * self.df_dim}]"
                " (8 * df_dim); check --df_dim."
            )
        if self.conditional:
            joint = code_shape[:3] + (8 * self.df_dim + self.condition_dim,)
            self.joint_conv.build(joint)
        self.out_conv.build(code_shape)

    def call(self, code, sentence=None, training=None):
        x = code
        if self.conditional:
            if sentence is None:
                raise ValueError("DiscriminatorLogits: the conditional head needs `sentence`.")
            s = ops.cast(sentence, x.dtype)
            s = ops.tile(s[:, None, None, :], (1, ops.shape(x)[1], ops.shape(x)[2], 1))
            x = self.joint_conv(ops.concatenate([x, s], axis=-1), training=training)
        logits = ops.cast(ops.reshape(self.out_conv(x), (-1,)), "float32")
        if self.output_type == "probability":
            return ops.sigmoid(logits)
        return logits

    def compute_output_shape(self, code_shape, sentence_shape=None):
        return (code_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "df_dim": self.df_dim,
                "condition_dim": self.condition_dim,
                "conditional": self.conditional,
                "kind": self.kind,
                "output": self.output_type,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "update_in_eval": self.update_in_eval,
                "seed": self.seed,
            }
        )
        return config
