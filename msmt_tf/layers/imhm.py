"""Iterative Multi-Headed Mechanism of MSMT-GAN (paper section 3.3, eqs 15-16)."""

import keras

from msmt_tf.layers.gated_fusion import GATES, GatedFusion
from msmt_tf.layers.sdm import KEY_READINGS, SpatialDynamicMemory


@keras.saving.register_keras_serializable(package="msmt_tf")
class IMHM(keras.layers.Layer):
    """T refinement heads applied in sequence, each with its own SDM and fusion weights.

    With ``U_0 = R`` (the previous stage's features ``R_{k-1}``), for t = 1..T:
    ``O_t = SDM_t(memory from R and W, queries from U_{t-1})`` (section 3.3: every head's
    memory is written from ``R_{k-1}`` and ``W`` by eqs 5-7; only eq 9's query source is
    replaced by ``U_{t-1}``), ``U_t = fuse_t(U_{t-1}, O_t)`` (eq 15), and, for T > 1,
    ``response = fuse_skip(U_T, R)`` (eq 16). ``fuse(a, b) = a * g + b * (1 - g)`` with
    ``g = sigmoid(P concat(a, b) + rho)`` (appendix eqs 17-18); every fusion has its own
    ``P, rho``. With T = 1 (the single-headed SDM refinement) ``U_1 = fuse_1(R, O_1)`` itself
    is the response: section 3.3, "If we use only a single refinement head, then this becomes
    our response for the refinement stage k"; the skip connection of eq 16 belongs to the
    multi-headed case, so there is no ``fuse_skip`` layer (``skip_fusion`` is None).

    Args:
        channels: N_r, width of the image features.
        heads: T, number of refinement heads (6 in the paper).
        memory_dim: N_m of every SDM.
        grid: h of every SDM.
        kernel_size: kernel of the SDM convs the paper leaves unspecified.
        key_reading: ``"concat"`` or ``"positional"`` (see ``SpatialDynamicMemory``).
        gate: ``"pixel"`` (one gate per pixel) or ``"channel"`` for every fusion.
        word_dim: N_w, width of the word features.

    Call arguments:
        inputs: tuple ``(R, words, mask)``: ``R`` ``[B, s, s, N_r]``, ``words`` ``[B, L, N_w]``,
            ``mask`` bool ``[B, L]`` True at real words.
        training: unused (no BN or dropout here).

    Returns:
        ``(response, head_outputs, alphas)``: ``response`` ``[B, s, s, N_r]`` (``U_1`` for
        T = 1, eq 16's ``fuse_skip(U_T, R)`` otherwise); the T refinement
        features ``O_t`` ``[B, s, s, N_r]`` (inputs of the redundancy loss, eqs 20-21); the T
        addressing maps ``[B, s, s, L]`` (float32).
    """

    def __init__(
        self,
        channels,
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
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
            raise ValueError(f"IMHM: heads={heads!r} must be a positive integer (--heads).")
        if gate not in GATES:
            raise ValueError(f"IMHM: gate={gate!r} must be one of {list(GATES)}.")
        if key_reading not in KEY_READINGS:
            raise ValueError(
                f"IMHM: key_reading={key_reading!r} must be one of {list(KEY_READINGS)}."
            )
        self.channels = channels
        self.heads = heads
        self.memory_dim = memory_dim
        self.grid = grid
        self.kernel_size = kernel_size
        self.key_reading = key_reading
        self.gate = gate
        self.word_dim = word_dim
        self.sdms = [
            SpatialDynamicMemory(
                channels,
                memory_dim=memory_dim,
                grid=grid,
                kernel_size=kernel_size,
                key_reading=key_reading,
                word_dim=word_dim,
                name=f"sdm_{t}",
                dtype=self.dtype_policy,
            )
            for t in range(heads)
        ]
        self.fusions = [
            GatedFusion(gate=gate, name=f"fuse_{t}", dtype=self.dtype_policy)
            for t in range(heads)
        ]
        # Eq 16 only with more than one head (section 3.3).
        self.skip_fusion = (
            GatedFusion(gate=gate, name="fuse_skip", dtype=self.dtype_policy)
            if heads > 1
            else None
        )

    def build(self, input_shape):
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
            raise ValueError(
                f"IMHM: call it with a tuple (R, words, mask); got input shapes {input_shape!r}."
            )
        r_shape, w_shape, m_shape = (tuple(s) for s in input_shape)
        for sdm in self.sdms:
            sdm.build((r_shape, r_shape, w_shape, m_shape))
        skip = [] if self.skip_fusion is None else [self.skip_fusion]
        for fusion in self.fusions + skip:
            fusion.build((r_shape, r_shape))
        self.built = True

    def compute_output_spec(self, inputs, training=None):
        r, words, _ = inputs
        batch, size = r.shape[0], r.shape[1]
        feature = keras.KerasTensor((batch, size, size, self.channels), dtype=self.compute_dtype)
        alpha = keras.KerasTensor((batch, size, size, words.shape[1]), dtype="float32")
        return (
            feature,
            [keras.KerasTensor(feature.shape, dtype=feature.dtype) for _ in range(self.heads)],
            [keras.KerasTensor(alpha.shape, dtype="float32") for _ in range(self.heads)],
        )

    def call(self, inputs, training=None):
        r, words, mask = inputs
        updated = r
        head_outputs, alphas = [], []
        # The heads are sequential by definition (U_t depends on U_{t-1}).
        for sdm, fusion in zip(self.sdms, self.fusions):
            refinement, alpha = sdm((r, updated, words, mask))
            updated = fusion((updated, refinement))  # eq 15
            head_outputs.append(refinement)
            alphas.append(alpha)
        if self.skip_fusion is None:
            return updated, head_outputs, alphas  # T = 1: U_1 is the response
        response = self.skip_fusion((updated, r))  # eq 16
        return response, head_outputs, alphas

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
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
