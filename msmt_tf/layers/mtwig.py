"""Multi-Tailed Word-level Initial Generation (MTWIG), paper §3.1, eqs 1-3."""

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn
from msmt_tf.layers.gated_fusion import GatedFusion
from msmt_tf.layers.ig_stage import SeedDecoder, upsamples_for


@keras.saving.register_keras_serializable(package="msmt_tf")
class MTWIG(keras.layers.Layer):
    """Word-n-gram initial stage: one image-feature "tail" per n-gram, fused in order.

    Eq. 2: ``F = V({concat(s', z, w_l)})`` — a 1-D convolution V (kernel ``kernel_size``,
    stride 1, 'valid', no bias: BN follows) over the per-word vectors ``concat(s', z, w_l)``
    gives ``T = L - ks + 1`` seeds ``f_t`` of width ``32 * ngf`` (ngf = 16 * GF), the width of
    IG's dense layer. Each seed goes through the same BN / GLU / reshape / 4 x UpBlock stack as
    IG (``SeedDecoder``), giving tails ``S_t`` ``[S, S, GF]`` (S = 64). Eq. 3:
    ``S_{1:t} = fuse(S_{1:t-1}, S_t)`` with ONE shared ``GatedFusion`` (eqs 17-18),
    ``R_1 = S_{1:T}``.

    Padding (docs/decisions.md, "MTWIG"): the input vector of a padded word is all zero (s' and
    z included), so the convolution sees zero padding there. Tail t of a caption of length n
    is valid iff it covers real words only (``t < n - ks + 1``); tail 0 is always valid, so a
    caption shorter than ks gets exactly one tail, the conv applied to its words followed by
    zeros. Invalid tails are skipped by the fusion (``S_{1:t} = S_{1:t-1}``), so neither
    outputs nor BN running statistics depend on how much padding follows a caption, in
    training or inference mode.

    Only the valid tails are computed: the input windows of the valid tails are gathered into
    one compact batch ``[N, ks * width_in]`` (``N = sum_b max(n_b - ks + 1, 1)``, a dynamic
    size) and V is applied to them as one matmul with its kernel flattened (the same function
    as the Conv1D; oneDNN's Conv1D filter gradient ran at about a tenth of the matmul's speed
    at this shape, docs/performance.md). So the decoder's BN batch statistics are over the valid
    tails exactly, and the fusion reads tail t of each caption from that batch by index;
    invalid tails are never materialised.

    Width of V (docs/decisions.md): by default V outputs ``32 * ngf`` channels directly (the
    reading consistent with the paper's Table 2 count). ``conv_filters=N`` instead makes V
    output N channels, followed by a shared ``Dense(32 * ngf, no bias)`` per tail.

    Other output sizes ``S = 4 * 2^n`` (``--base_size``) follow ``IGStage``: n upsampling
    blocks halving the channels down to GF, ``ngf = GF * 2^n`` (16 GF for 64 px).

    Args:
        gf_dim: GF = N_r, channels of the output (ngf = 16 * GF at 4x4 for 64 px).
        kernel_size: ks of V (1, 2 or 3 in the paper).
        z_dim: N_z.
        condition_dim: size of s'.
        word_dim: N_w.
        gate: ``"pixel"`` or ``"channel"``, the fusion gate.
        conv_filters: None (V outputs 32 * ngf) or an int (V's width before a dense layer).
        output_size: S, the output size (64 in the paper).

    Call arguments:
        inputs: ``(c_code [B, condition_dim], z [B, z_dim], words [B, L, word_dim],
            mask bool [B, L])``; words are zero and mask False at padded positions
            (padding at the end only).
        training: BN mode.

    Returns:
        ``[B, S, S, gf_dim]``.
    """

    def __init__(
        self,
        gf_dim,
        kernel_size=3,
        z_dim=100,
        condition_dim=100,
        word_dim=256,
        gate="pixel",
        conv_filters=None,
        output_size=64,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("gf_dim", gf_dim),
            ("kernel_size", kernel_size),
            ("z_dim", z_dim),
            ("condition_dim", condition_dim),
            ("word_dim", word_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MTWIG: {name} must be a positive int, got {value!r}.")
        if conv_filters is not None and (not isinstance(conv_filters, int) or conv_filters < 1):
            raise ValueError(
                f"MTWIG: conv_filters must be None or a positive int, got {conv_filters!r}."
            )
        self.gf_dim = gf_dim
        self.kernel_size = kernel_size
        self.z_dim = z_dim
        self.condition_dim = condition_dim
        self.word_dim = word_dim
        self.gate = gate
        self.conv_filters = conv_filters
        self.output_size = output_size
        upsamples = upsamples_for(output_size, "MTWIG")
        self.ngf = gf_dim * 2**upsamples
        seed_width = 32 * self.ngf
        self.conv = keras.layers.Conv1D(
            seed_width if conv_filters is None else conv_filters,
            kernel_size,
            padding="valid",
            use_bias=False,
            kernel_initializer=bn.KERNEL_INITIALIZER,
            name="conv",
            dtype=self.dtype_policy,
        )
        self.project = None
        if conv_filters is not None:
            self.project = keras.layers.Dense(
                seed_width,
                use_bias=False,
                kernel_initializer=bn.KERNEL_INITIALIZER,
                name="project",
                dtype=self.dtype_policy,
            )
        self.decoder = SeedDecoder(
            self.ngf, upsamples=upsamples, name="decoder", dtype=self.dtype_policy
        )
        self.fusion = GatedFusion(gate, name="fusion", dtype=self.dtype_policy)

    def build(self, input_shape):
        c_shape, z_shape, w_shape, _ = input_shape
        if (
            c_shape[-1] != self.condition_dim
            or z_shape[-1] != self.z_dim
            or w_shape[-1] != self.word_dim
        ):
            raise ValueError(
                f"MTWIG: got c_code {tuple(c_shape)}, z {tuple(z_shape)}, words "
                f"{tuple(w_shape)}; expected last sizes condition_dim={self.condition_dim}, "
                f"z_dim={self.z_dim}, word_dim={self.word_dim}."
            )
        in_width = self.condition_dim + self.z_dim + self.word_dim
        self.conv.build((None, None, in_width))
        if self.project is not None:
            self.project.build((None, self.conv_filters))
        self.decoder.build((None, 32 * self.ngf))
        out = (None, self.output_size, self.output_size, self.gf_dim)
        self.fusion.build((out, out))

    def call(self, inputs, training=None):
        c_code, z, words, mask = inputs
        dtype = self.compute_dtype
        words = ops.cast(words, dtype)
        mask = ops.cast(mask, "bool")
        seq_len = words.shape[1]
        if seq_len is None:
            raise ValueError(
                "MTWIG needs a static caption length: pad captions to --words_num so that "
                "words have shape [B, L, N_w] with L known."
            )
        batch = ops.shape(words)[0]

        # Eq. 2 input: concat(s', z, w_l) per word, all-zero at padded words.
        sz = ops.concatenate([ops.cast(c_code, dtype), ops.cast(z, dtype)], axis=-1)
        sz = ops.broadcast_to(ops.expand_dims(sz, 1), (batch, seq_len, ops.shape(sz)[-1]))
        x = ops.concatenate([sz, words], axis=-1) * ops.cast(ops.expand_dims(mask, -1), dtype)
        if seq_len < self.kernel_size:
            # A sequence shorter than the kernel is zero-padded to one full window.
            x = ops.pad(x, ((0, 0), (0, self.kernel_size - seq_len), (0, 0)))
            seq_len = self.kernel_size
        num_tails = seq_len - self.kernel_size + 1

        lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
        counts = ops.maximum(lengths - self.kernel_size + 1, 1)  # valid tails per caption
        tail_valid = ops.arange(num_tails, dtype="int32")[None, :] < counts[:, None]

        # Only the valid tails are computed: their windows, caption-major ([N, ks * width_in],
        # N = sum(counts), dynamic), so tail t of caption b is row offsets[b] + t. V (the
        # 'valid' conv, no bias) is then one matmul of the windows with its kernel flattened to
        # [ks * width_in, width] (row k * width_in + d is tap k, channel d, as the windows):
        # the same function as ``self.conv(x)``, but its filter gradient is one large GEMM,
        # which oneDNN's conv backward-filter kernel is not at B*T = 160 outputs and 24,576
        # filters (docs/performance.md).
        windows = ops.stack(
            [x[:, t : t + self.kernel_size] for t in range(num_tails)], axis=1
        )  # [B, T, ks, width_in]
        width_in = x.shape[-1]
        windows = ops.reshape(windows, (-1, self.kernel_size * width_in))
        valid_rows = ops.nonzero(ops.reshape(tail_valid, (-1,)))[0]
        windows = ops.take(windows, valid_rows, axis=0)
        kernel = ops.reshape(
            ops.cast(self.conv.kernel, dtype), (self.kernel_size * width_in, self.conv.filters)
        )
        seeds = ops.matmul(windows, kernel)
        if self.project is not None:
            seeds = self.project(seeds)
        tails = self.decoder(seeds, training=training)  # [N, S, S, GF]
        offsets = ops.cumsum(counts) - counts

        # Eq. 3, tails in order; a caption without a tail t keeps its running fusion (the
        # gather then reads its own last tail, a candidate that is discarded).
        fused = ops.take(tails, offsets, axis=0)
        for t in range(1, num_tails):
            tail = ops.take(tails, offsets + ops.minimum(t, counts - 1), axis=0)
            candidate = self.fusion((fused, tail), training=training)
            keep = ops.reshape(tail_valid[:, t], (-1, 1, 1, 1))
            fused = ops.where(keep, candidate, fused)
        return fused

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.output_size, self.output_size, self.gf_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "gf_dim": self.gf_dim,
                "kernel_size": self.kernel_size,
                "z_dim": self.z_dim,
                "condition_dim": self.condition_dim,
                "word_dim": self.word_dim,
                "gate": self.gate,
                "conv_filters": self.conv_filters,
                "output_size": self.output_size,
            }
        )
        return config
