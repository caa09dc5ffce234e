"""Spatial Dynamic Memory: one MSMT-GAN refinement head (paper section 3.2, eqs 4-14)."""

import math

import keras
from keras import ops

from msmt_tf.layers import batch_norm as bn

KEY_READINGS = ("concat", "positional")

# Logit given to padded words before the softmax over words (eq 8). Finite so that a caption
# with no real word gives no NaN; such a caption gets all-zero weights (see `call`).
_MASKED_LOGIT = -1e9


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"SpatialDynamicMemory: {name}={value!r} must be a positive integer."
        )


@keras.saving.register_keras_serializable(package="msmt_tf")
class SpatialDynamicMemory(keras.layers.Layer):
    """Spatial Dynamic Memory (SDM): region-contextualised word memory read per pixel.

    One refinement head of MSMT-GAN (paper section 3.2). With p = s / h:

    * Memory writing (eqs 5-7). ``C = grid_mean_p(R_mem)`` is the h x h grid of cell means
      (eq 5, ``[B, h, h, N_r]``). Each word l and cell (i, j) gets a scalar gate
      ``g_{l,i,j} = sigmoid(A . w_l + B_{i,j} . C_{i,j})`` (eq 6) with ``A`` a ``1 x N_w``
      vector shared by all slots and a separate ``1 x N_r`` vector ``B_{i,j}`` per cell
      (weights ``[h, h, N_r]``), and the slot
      ``m_{l,i,j} = M_w(w_l) * g + M_c(C)_{i,j} * (1 - g)`` (eq 7, ``[B, L, h, h, N_m]``),
      where ``M_w`` is a 1x1 conv (Dense) on words and ``M_c`` a ``kernel_size`` 2-D conv
      over the grid.
    * Key addressing (eqs 8-12). ``phi_K`` and ``phi_V`` are ``kernel_size`` 2-D convs
      applied to each word's h x h map of slots (the L words are batched as
      ``[B*L, h, h, N_m]``). Three ``kernel_size`` convs of ``Q_src`` give
      ``Q^global, Q^grid, Q^pixel`` (eq 9); the query of pixel (a, b) of cell (i, j) has a
      global part (mean of ``Q^global``, eq 10), a grid part (cell mean of ``Q^grid``,
      eq 11) and a pixel part (``Q^pixel`` at that pixel, eq 12). ``alpha`` is a softmax over
      the words l (eq 8) of ``phi_K(m_l)_{i,j} . q_{i,j,a,b}``; padded words get weight 0.
      ``key_reading`` resolves the paper's width mismatch (``phi_K`` has ``N_r + p^2``
      filters but the concatenated query has ``3 N_r``):
      ``"concat"``: ``phi_K`` has ``3 N_r`` filters, dotted with ``[global | grid | pixel]``;
      ``"positional"``: the query is ``global + grid + pixel`` (width ``N_r``), ``phi_K`` has
      ``N_r + p^2`` filters as printed, the first ``N_r`` are dotted with the query and filter
      ``N_r + a * p + b`` is added as a learned logit for pixel (a, b) of the cell (so a
      positional layer only works at the size s it was built for). Those ``p^2`` filters are
      logits of eq 8 themselves, so they are linear (no ReLU): a word's positional logit can
      be negative as well as positive.
    * Value reading (eqs 13-14). ``e_{i,j,a,b} = sum_l alpha_{l,i,j,a,b} phi_V(m_l)_{i,j}``,
      scattered back to pixel ``((i-1) p + a, (j-1) p + b)``.

    M_w, M_c, phi_K and phi_V are followed by a ReLU as DM-GAN's M_w / M_r / key / value,
    except the ``p^2`` positional filters of phi_K; the query convs are linear (DM-GAN's query
    is the raw image feature). All convs have a bias; A and B_{i,j} have none (eq 6). See
    ``docs/decisions.md`` "SDM key reading".

    Args:
        channels: N_r, width of the image features, queries, values and output.
        memory_dim: N_m, width of the memory slots (96 in the paper).
        grid: h, the memory grid is h x h; the image size s must be divisible by h.
        kernel_size: odd kernel of the 2-D convs the paper leaves unspecified
            (M_c, phi_K, phi_V and the three phi_Q), 'same' padding.
        key_reading: ``"concat"`` or ``"positional"`` (see above).
        word_dim: N_w, width of the word features.

    Call arguments:
        inputs: tuple ``(R_mem, Q_src, words, mask)``: ``R_mem`` ``[B, s, s, N_r]`` writes the
            memory (eqs 5-7), ``Q_src`` ``[B, s, s, N_r]`` gives the queries (eq 9; equal to
            ``R_mem`` for a single head), ``words`` ``[B, L, N_w]``, ``mask`` bool ``[B, L]``
            True at real words (or None: every word is real).
        training: unused (accepted for a uniform call signature).

    Returns:
        ``(O, alpha)``: refinement features ``O`` ``[B, s, s, N_r]`` (eq 14) and the
        addressing weights ``alpha`` ``[B, s, s, L]`` (float32; per pixel a distribution over
        the real words, zero at padding).
    """

    def __init__(
        self,
        channels,
        memory_dim=96,
        grid=8,
        kernel_size=3,
        key_reading="concat",
        word_dim=256,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("channels", channels),
            ("memory_dim", memory_dim),
            ("grid", grid),
            ("kernel_size", kernel_size),
            ("word_dim", word_dim),
        ):
            _check_positive_int(name, value)
        if kernel_size % 2 != 1:
            raise ValueError(
                f"SpatialDynamicMemory: kernel_size={kernel_size} must be odd "
                "('same' padding is then symmetric); use 1 or 3."
            )
        if key_reading not in KEY_READINGS:
            raise ValueError(
                f"SpatialDynamicMemory: key_reading={key_reading!r} must be one of "
                f"{list(KEY_READINGS)}."
            )
        self.channels = channels
        self.memory_dim = memory_dim
        self.grid = grid
        self.kernel_size = kernel_size
        self.key_reading = key_reading
        self.word_dim = word_dim

        def conv(filters, name, activation=None):
            return keras.layers.Conv2D(
                filters,
                kernel_size,
                padding="same",
                activation=activation,
                kernel_initializer=bn.KERNEL_INITIALIZER,
                name=name,
                dtype=self.dtype_policy,
            )

        self.memory_word = keras.layers.Dense(
            memory_dim,
            activation="relu",
            kernel_initializer=bn.KERNEL_INITIALIZER,
            name="memory_word",
            dtype=self.dtype_policy,
        )
        self.memory_cell = conv(memory_dim, "memory_cell", "relu")
        # phi_K's width depends on p = s / h for the positional reading: created in build().
        self.key_conv = None
        self.value_conv = conv(channels, "value", "relu")
        self.query_global = conv(channels, "query_global")
        self.query_grid = conv(channels, "query_grid")
        self.query_pixel = conv(channels, "query_pixel")
        self.size = None

    # ------------------------------------------------------------------ shapes
    def _check_shapes(self, input_shape):
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 4:
            raise ValueError(
                "SpatialDynamicMemory: call it with a tuple (R_mem, Q_src, words, mask); "
                f"got input shapes {input_shape!r}."
            )
        r_shape, q_shape, w_shape, _ = input_shape
        for name, shape in (("R_mem", r_shape), ("Q_src", q_shape)):
            if len(shape) != 4 or shape[-1] != self.channels:
                raise ValueError(
                    f"SpatialDynamicMemory: {name} must be [B, s, s, {self.channels}]; "
                    f"got {tuple(shape)}."
                )
        if tuple(r_shape[1:]) != tuple(q_shape[1:]):
            raise ValueError(
                f"SpatialDynamicMemory: R_mem {tuple(r_shape)} and Q_src {tuple(q_shape)} "
                "must have the same spatial size."
            )
        size, width = r_shape[1], r_shape[2]
        if size is None or width is None or size != width:
            raise ValueError(
                "SpatialDynamicMemory: image features must have a static square size "
                f"[B, s, s, C]; got {tuple(r_shape)}."
            )
        if size % self.grid != 0:
            raise ValueError(
                f"SpatialDynamicMemory: image size s={size} is not divisible by "
                f"grid={self.grid}; pick a --grid that divides every refinement "
                "stage's input size (e.g. 8 for 64/128)."
            )
        if len(w_shape) != 3 or w_shape[-1] != self.word_dim:
            raise ValueError(
                f"SpatialDynamicMemory: words must be [B, L, {self.word_dim}] "
                f"(word_dim); got {tuple(w_shape)}."
            )
        return size

    @property
    def cell_size(self):
        """p = s / h (known after build)."""
        return None if self.size is None else self.size // self.grid

    def build(self, input_shape):
        self.size = self._check_shapes(input_shape)
        p = self.size // self.grid
        h, c, m = self.grid, self.channels, self.memory_dim
        if self.key_reading == "concat":
            key_dim = 3 * c
        else:
            key_dim = c + p * p
        # Linear conv: the ReLU goes on the filters dotted with the query only (see `call`).
        self.key_conv = keras.layers.Conv2D(
            key_dim,
            self.kernel_size,
            padding="same",
            kernel_initializer=bn.KERNEL_INITIALIZER,
            name="key",
            dtype=self.dtype_policy,
        )
        # A (1 x N_w) and B_{i,j} (1 x N_r per cell) of eq 6. The references initialise such
        # Linear(N, 1) rows orthogonally, i.e. as a random unit vector; N(0, 1/N) entries give
        # the same scale.
        self.word_gate = self.add_weight(
            shape=(self.word_dim,),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(self.word_dim)),
            name="word_gate",
            autocast=False,  # the gate logits of eq 6 are computed in float32
        )
        self.cell_gate = self.add_weight(
            shape=(h, h, c),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(c)),
            name="cell_gate",
            autocast=False,
        )
        self.memory_word.build((None, None, self.word_dim))
        self.memory_cell.build((None, h, h, c))
        self.key_conv.build((None, h, h, m))
        self.value_conv.build((None, h, h, m))
        for layer in (self.query_global, self.query_grid, self.query_pixel):
            layer.build((None, self.size, self.size, c))
        self.built = True

    def compute_output_spec(self, inputs, training=None):
        r_mem, _, words, _ = inputs
        batch, size = r_mem.shape[0], r_mem.shape[1]
        return (
            keras.KerasTensor((batch, size, size, self.channels), dtype=self.compute_dtype),
            keras.KerasTensor((batch, size, size, words.shape[1]), dtype="float32"),
        )

    # ------------------------------------------------------------------ grid helpers
    def _grid_mean(self, x):
        """[B, s, s, C] -> [B, h, h, C], mean over each p x p cell (eqs 5 and 11)."""
        h, p = self.grid, self.cell_size
        x = ops.reshape(x, (-1, h, p, h, p, x.shape[-1]))
        return ops.mean(x, axis=(2, 4))

    def _to_cells(self, x):
        """[B, s, s, C] -> [B, h, h, p, p, C]: pixel (a, b) of cell (i, j) (eq 12)."""
        h, p = self.grid, self.cell_size
        x = ops.reshape(x, (-1, h, p, h, p, x.shape[-1]))
        return ops.transpose(x, (0, 1, 3, 2, 4, 5))

    def _from_cells(self, x):
        """[B, h, h, p, p, C] -> [B, s, s, C], the inverse of `_to_cells` (eq 14)."""
        s = self.size
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, s, s, x.shape[-1]))

    # ------------------------------------------------------------------ forward
    def call(self, inputs, training=None):
        r_mem, q_src, words, mask = inputs
        h, p, c = self.grid, self.cell_size, self.channels
        num_words = ops.shape(words)[1]
        if mask is None:
            mask = ops.ones(ops.shape(words)[:2], dtype="bool")
        mask = ops.cast(mask, "bool")

        # Memory writing, eqs 5-7. Gates are computed in float32.
        cells = self._grid_mean(r_mem)  # C: [B, h, h, N_r]
        word_logit = ops.einsum(
            "blw,w->bl", ops.cast(words, "float32"), ops.cast(self.word_gate, "float32")
        )
        cell_logit = ops.einsum(
            "bijc,ijc->bij", ops.cast(cells, "float32"), ops.cast(self.cell_gate, "float32")
        )
        gate = ops.sigmoid(word_logit[:, :, None, None] + cell_logit[:, None])
        gate = ops.cast(gate, self.compute_dtype)[..., None]  # [B, L, h, h, 1]
        word_mem = self.memory_word(words)[:, :, None, None, :]  # [B, L, 1, 1, N_m]
        cell_mem = self.memory_cell(cells)[:, None]  # [B, 1, h, h, N_m]
        memory = word_mem * gate + cell_mem * (1.0 - gate)  # [B, L, h, h, N_m]

        # phi_K / phi_V over each word's h x h map of slots, words batched; then the word
        # axis is moved last ([B, h, h, L, .]) so that the softmax over words (eq 8) and the
        # returned [B, s, s, L] map need no large transposes.
        slots = ops.reshape(memory, (-1, h, h, self.memory_dim))
        keys = self.key_conv(slots)
        keys = ops.reshape(keys, (-1, num_words, h, h, keys.shape[-1]))
        keys = ops.cast(ops.transpose(keys, (0, 2, 3, 1, 4)), "float32")  # [B, h, h, L, K]
        values = ops.reshape(self.value_conv(slots), (-1, num_words, h, h, c))
        values = ops.transpose(values, (0, 2, 3, 1, 4))  # [B, h, h, L, N_r]

        # Queries, eqs 9-12, in float32 for the logits.
        q_global = ops.mean(ops.cast(self.query_global(q_src), "float32"), axis=(1, 2))
        q_grid = self._grid_mean(ops.cast(self.query_grid(q_src), "float32"))
        q_pixel = self._to_cells(ops.cast(self.query_pixel(q_src), "float32"))

        # Logits of eq 8, [B, h, h, p, p, L]. The query parts that are constant over a cell
        # are dotted once per cell and broadcast over its p x p pixels.
        if self.key_reading == "concat":
            keys = ops.relu(keys)
            k_global, k_grid, k_pixel = keys[..., :c], keys[..., c : 2 * c], keys[..., 2 * c :]
            per_cell = ops.einsum("bijlc,bc->bijl", k_global, q_global) + ops.einsum(
                "bijlc,bijc->bijl", k_grid, q_grid
            )
            logits = ops.einsum("bijxyc,bijlc->bijxyl", q_pixel, k_pixel)
            logits = logits + per_cell[:, :, :, None, None, :]
        else:
            k_query = ops.relu(keys[..., :c])
            per_cell = ops.einsum(
                "bijlc,bijc->bijl", k_query, q_grid + q_global[:, None, None, :]
            )
            logits = ops.einsum("bijxyc,bijlc->bijxyl", q_pixel, k_query)
            # Filter N_r + a * p + b of the key is the logit of pixel (a, b) of the cell; linear,
            # so it can lower a word's weight as well as raise it.
            position = ops.reshape(keys[..., c:], (-1, h, h, num_words, p, p))
            position = ops.transpose(position, (0, 1, 2, 4, 5, 3))
            logits = logits + per_cell[:, :, :, None, None, :] + position

        word_mask = mask[:, None, None, None, None, :]
        logits = ops.where(word_mask, logits, _MASKED_LOGIT)
        # Softmax over words on a 2-D view: TensorFlow's oneDNN Softmax kernel (the default on
        # AVX-512 VNNI/AMX CPUs, and switched on by tools/fid.py and evaluate) rejects rank > 5.
        alpha = ops.reshape(
            ops.softmax(ops.reshape(logits, (-1, num_words)), axis=-1), ops.shape(logits)
        )
        # Exact zeros at padding, also for a caption with no real word.
        alpha = alpha * ops.cast(word_mask, "float32")

        # Value reading, eqs 13-14.
        read = ops.einsum("bijxyl,bijlc->bijxyc", ops.cast(alpha, self.compute_dtype), values)
        return self._from_cells(read), self._from_cells(alpha)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "memory_dim": self.memory_dim,
                "grid": self.grid,
                "kernel_size": self.kernel_size,
                "key_reading": self.key_reading,
                "word_dim": self.word_dim,
            }
        )
        return config
