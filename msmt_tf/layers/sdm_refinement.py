"""MSMT-GAN refinement stage: IMHM -> residual blocks -> upsampling block (section 3.3)."""

import keras
from keras import ops

from msmt_tf.layers.imhm import IMHM
from msmt_tf.layers.res_block import ResBlock
from msmt_tf.layers.up_block import UpBlock


@keras.saving.register_keras_serializable(package="msmt_tf")
class SDMRefinement(keras.layers.Layer):
    """One MSMT-GAN refinement stage k: ``R_k = Up(Res^{r_num}(IMHM(R_{k-1}, W)))``.

    The IMHM response (eqs 15-16, T SDM heads of eqs 4-14) "is passed through several
    residual blocks and an upsampling block" (section 3.3): ``r_num`` ``ResBlock(gf_dim)``
    then ``UpBlock(gf_dim)`` (nearest x2, 3x3 conv, BN, GLU). Unlike DM-GAN there is no
    channel duplication before the residual blocks: the response already has ``gf_dim``
    channels. The stage's image is predicted from ``features`` by a separate image head.

    Args:
        gf_dim: N_r, width of the input and output image features (48 in the paper).
        r_num: number of residual blocks (2 CUB, 3 COCO).
        heads: T, refinement heads (6; 1 is the single-headed SDM ablation).
        memory_dim: N_m (96).
        grid: h (8); the input size s must be divisible by it.
        kernel_size: kernel of the SDM convs the paper leaves unspecified (M_c, phi_K, phi_V,
            phi_Q).
        key_reading: ``"concat"`` or ``"positional"`` (see ``SpatialDynamicMemory``).
        gate: ``"pixel"`` or ``"channel"`` gates of the IMHM fusions.
        word_dim: N_w, width of the word features (256).

    Call arguments:
        inputs: tuple ``(h, words, mask)``: ``h`` ``[B, s, s, gf_dim]`` (R_{k-1}), ``words``
            ``[B, L, N_w]`` (zero at padding), ``mask`` bool ``[B, L]`` True at real words.
        training: BN mode of the residual and upsampling blocks.

    Returns:
        dict with ``"features"`` ``[B, 2s, 2s, gf_dim]`` (R_k), ``"attention"``
        ``[B, s, s, L]`` float32 = the mean over the T heads of their addressing maps alpha
        (still a distribution over the real words per pixel), and ``"head_features"`` = the
        list ``[O_1, ..., O_T]`` of ``[B, s, s, gf_dim]`` for the redundancy loss (eqs 20-21).
    """

    def __init__(
        self,
        gf_dim,
        r_num=2,
        heads=6,
        memory_dim=96,
        grid=8,
        kernel_size=3,
        key_reading="concat",
        gate="pixel",
        word_dim=256,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(r_num, int) or isinstance(r_num, bool) or r_num < 0:
            raise ValueError(f"SDMRefinement: r_num={r_num!r} must be an integer >= 0 (--r_num).")
        self.gf_dim = gf_dim
        self.r_num = r_num
        self.heads = heads
        self.memory_dim = memory_dim
        self.grid = grid
        self.kernel_size = kernel_size
        self.key_reading = key_reading
        self.gate = gate
        self.word_dim = word_dim
        self.imhm = IMHM(
            gf_dim,
            heads=heads,
            memory_dim=memory_dim,
            grid=grid,
            kernel_size=kernel_size,
            key_reading=key_reading,
            gate=gate,
            word_dim=word_dim,
            name="imhm",
            dtype=self.dtype_policy,
        )
        self.res_blocks = [
            ResBlock(gf_dim, name=f"res_{i}", dtype=self.dtype_policy) for i in range(r_num)
        ]
        self.upsample = UpBlock(gf_dim, name="upsample", dtype=self.dtype_policy)

    def build(self, input_shape):
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
            raise ValueError(
                "SDMRefinement: call it with a tuple (h, words, mask); "
                f"got input shapes {input_shape!r}."
            )
        h_shape = tuple(input_shape[0])
        self.imhm.build(input_shape)
        for block in self.res_blocks:
            block.build(h_shape)
        self.upsample.build(h_shape)
        self.built = True

    def compute_output_spec(self, inputs, training=None):
        h, words, _ = inputs
        batch, size = h.shape[0], h.shape[1]
        big = None if size is None else 2 * size
        head = keras.KerasTensor((batch, size, size, self.gf_dim), dtype=self.compute_dtype)
        return {
            "features": keras.KerasTensor((batch, big, big, self.gf_dim), dtype=self.compute_dtype),
            "attention": keras.KerasTensor((batch, size, size, words.shape[1]), dtype="float32"),
            "head_features": [
                keras.KerasTensor(head.shape, dtype=head.dtype) for _ in range(self.heads)
            ],
        }

    def call(self, inputs, training=None):
        response, head_outputs, alphas = self.imhm(inputs, training=training)
        x = response
        for block in self.res_blocks:
            x = block(x, training=training)
        features = self.upsample(x, training=training)
        attention = ops.mean(ops.stack(alphas, axis=0), axis=0)
        return {"features": features, "attention": attention, "head_features": head_outputs}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "gf_dim": self.gf_dim,
                "r_num": self.r_num,
                "heads": self.heads,
                "memory_dim": self.memory_dim,
                "grid": self.grid,
                "kernel_size": self.kernel_size,
                "key_reading": self.key_reading,
                "gate": self.gate,
                "word_dim": self.word_dim,
            }
        )
        return config
