"""MSMT-GAN refinement stage: IMHM response -> residual blocks -> upsampling (section 3.3)."""

import keras
from keras import ops

from msmt_tf.layers.imhm import IMHM
from msmt_tf.layers.refinement_trunk import build_trunk, make_trunk, run_trunk

# Trunk after the IMHM response (see the class docstring and docs/decisions.md).
TRUNKS = ("n_r", "2n_r", "2n_r_prev")


@keras.saving.register_keras_serializable(package="msmt_tf")
class SDMRefinement(keras.layers.Layer):
    """One MSMT-GAN refinement stage k: ``R_k = Up(Res^{r_num}(widen(IMHM(R_{k-1}, W))))``.

    The IMHM response (eqs 15-16, T SDM heads of eqs 4-14) "is passed through several
    residual blocks and an upsampling block" (section 3.3); the text leaves the width of those
    blocks open, ``trunk`` chooses it:

    * ``"2n_r"``: DM-GAN's trunk (MinfengZhu/DM-GAN ``code/model.py`` ``NEXT_STAGE_G``): the
      response concatenated with itself, ``cat(response, response)`` (2 N_r channels), then
      ``r_num`` ``ResBlock(2 N_r)`` and ``UpBlock(2 N_r -> N_r)``. Only the response enters
      the blocks, as the text says. With the ``positional`` key reading this fits Table 2's
      CUB and COCO counts (the MSMT presets).
    * ``"2n_r_prev"``: the same blocks on ``cat(R_{k-1}, response)``.
    * ``"n_r"``: no widening, ``r_num`` ``ResBlock(N_r)`` and ``UpBlock(N_r -> N_r)``.

    Every block is nearest x2 / 3x3 conv / BN / GLU as the references'. The stage's image is
    predicted from ``features`` by a separate image head. See ``docs/decisions.md``
    "Refinement trunk" for the parameter counts that decide between the readings.

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
        trunk: ``"n_r"``, ``"2n_r"`` or ``"2n_r_prev"`` (see above).

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
        trunk="n_r",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(r_num, int) or isinstance(r_num, bool) or r_num < 0:
            raise ValueError(f"SDMRefinement: r_num={r_num!r} must be an integer >= 0 (--r_num).")
        if trunk not in TRUNKS:
            raise ValueError(
                f"SDMRefinement: trunk={trunk!r} must be one of {list(TRUNKS)} (--sdm_trunk)."
            )
        self.gf_dim = gf_dim
        self.r_num = r_num
        self.heads = heads
        self.memory_dim = memory_dim
        self.grid = grid
        self.kernel_size = kernel_size
        self.key_reading = key_reading
        self.gate = gate
        self.word_dim = word_dim
        self.trunk = trunk
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
        self.res_blocks, self.upsample = make_trunk(
            gf_dim, r_num, self.trunk_width, self.dtype_policy, "res_{}"
        )

    @property
    def trunk_width(self):
        """Channels of the residual blocks: N_r, or 2 N_r for the DM-GAN-style trunks."""
        return self.gf_dim if self.trunk == "n_r" else 2 * self.gf_dim

    def build(self, input_shape):
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
            raise ValueError(
                "SDMRefinement: call it with a tuple (h, words, mask); "
                f"got input shapes {input_shape!r}."
            )
        h_shape = tuple(input_shape[0])
        self.imhm.build(input_shape)
        build_trunk(self.res_blocks, self.upsample, h_shape[:-1] + (self.trunk_width,))
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

    def _widen(self, response, h):
        """The trunk input: the response, or a 2 N_r concatenation (see the class docstring)."""
        if self.trunk == "n_r":
            return response
        first = response if self.trunk == "2n_r" else ops.cast(h, self.compute_dtype)
        return ops.concatenate([first, response], axis=-1)

    def call(self, inputs, training=None):
        response, head_outputs, alphas = self.imhm(inputs, training=training)
        x = self._widen(response, inputs[0])
        features = run_trunk(x, self.res_blocks, self.upsample, training)
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
                "trunk": self.trunk,
            }
        )
        return config
