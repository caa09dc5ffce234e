"""Inception-v3 trunks: the 2015-12-05 FID graph and torchvision's variant (DAMSM encoders).

Two variants of one builder (``InceptionV3Trunk(variant=...)``):

* ``"tf2015"`` -- the official ``inception-2015-12-05`` graph used by TTUR's FID: conv without
  bias + batch norm with beta only (no gamma, eps 1e-3) + ReLU; the average pools of the
  mixed blocks divide by the number of *valid* cells (TF ``SAME`` avg pool); ``mixed_10``'s
  pool branch is a 3x3 *max* pool (a quirk of that graph). Sub-layer names follow NVIDIA's
  TorchScript port (``conv``, ``conv_1``, ..., ``mixed``, ``mixed_1``, ..., ``mixed_10``).
* ``"torchvision"`` -- ``torchvision.models.inception_v3`` as used by the AttnGAN / DM-GAN
  image encoders: batch norm has gamma and beta (eps 1e-3), every mixed-block average pool
  COUNTS the zero padding (torch ``count_include_pad=True``, built here as an explicit
  ``ZeroPadding2D`` + ``valid`` average pool), both E blocks average-pool. Names follow
  torchvision (``Conv2d_1a_3x3`` ... ``Mixed_5b`` ... ``Mixed_7c``).

Both return the last 17x17 block (``mixed_7`` / ``Mixed_6e``, 768 channels) and the global
average of the last block (``pool_3``, 2048). At 299x299 the global average equals the 8x8
VALID pool of the graph.

``FIDInception`` wraps the 2015 trunk with the graph's own pre-processing: RGB 0..255 of any
size -> legacy TF1 bilinear resize to 299 (``align_corners=False, half_pixel_centers=False``;
the one documented direct TF op, since Keras' resize is half-pixel) -> ``(x-128)/128``.

``fold_batch_norm(trunk, merge_1x1=...)`` returns the same function with every BN folded into
its conv (a conv with bias), for faster inference. With ``merge_1x1`` the sibling 1x1 convs
that read a mixed block's input (and the 1x1 conv of an average-pool branch, moved before its
pool: both are linear, so ``pool(x) W = pool(x W)``; the bias is added after the pool) become
one wider 1x1 conv whose output is split by channel: one GEMM instead of three or four.
"""

import collections

import keras
import numpy as np
from keras import ops

VARIANTS = ("tf2015", "torchvision")
BN_EPSILON = 1e-3

# Stem: (tf2015 name, torchvision name, filters, kernel, strides, padding); "pool" = max 3x3/2.
_STEM = (
    ("conv", "Conv2d_1a_3x3", 32, (3, 3), 2, "valid"),
    ("conv_1", "Conv2d_2a_3x3", 32, (3, 3), 1, "valid"),
    ("conv_2", "Conv2d_2b_3x3", 64, (3, 3), 1, "same"),
    "pool",
    ("conv_3", "Conv2d_3b_1x1", 80, (1, 1), 1, "valid"),
    ("conv_4", "Conv2d_4a_3x3", 192, (3, 3), 1, "valid"),
    "pool",
)

# Mixed blocks: (tf2015 name, torchvision name, kind, argument).
_BLOCKS = (
    ("mixed", "Mixed_5b", "A", 32),
    ("mixed_1", "Mixed_5c", "A", 64),
    ("mixed_2", "Mixed_5d", "A", 64),
    ("mixed_3", "Mixed_6a", "B", None),
    ("mixed_4", "Mixed_6b", "C", 128),
    ("mixed_5", "Mixed_6c", "C", 160),
    ("mixed_6", "Mixed_6d", "C", 160),
    ("mixed_7", "Mixed_6e", "C", 192),
    ("mixed_8", "Mixed_7a", "D", None),
    ("mixed_9", "Mixed_7b", "E", None),
    ("mixed_10", "Mixed_7c", "E", None),
)
LOCAL_BLOCK = {"tf2015": "mixed_7", "torchvision": "Mixed_6e"}


def _block_convs(kind, arg):
    """Conv specs of a mixed block: branch -> [(tf2015 key, torchvision key, filters, kernel,
    strides, padding)], branches in concatenation order; "pool" marks the pool position."""
    if kind == "A":
        return [
            [("conv", "branch1x1", 64, (1, 1), 1, "same")],
            [
                ("tower.conv", "branch5x5_1", 48, (1, 1), 1, "same"),
                ("tower.conv_1", "branch5x5_2", 64, (5, 5), 1, "same"),
            ],
            [
                ("tower_1.conv", "branch3x3dbl_1", 64, (1, 1), 1, "same"),
                ("tower_1.conv_1", "branch3x3dbl_2", 96, (3, 3), 1, "same"),
                ("tower_1.conv_2", "branch3x3dbl_3", 96, (3, 3), 1, "same"),
            ],
            ["pool", ("tower_2.conv", "branch_pool", arg, (1, 1), 1, "same")],
        ]
    if kind == "B":
        return [
            [("conv", "branch3x3", 384, (3, 3), 2, "valid")],
            [
                ("tower.conv", "branch3x3dbl_1", 64, (1, 1), 1, "same"),
                ("tower.conv_1", "branch3x3dbl_2", 96, (3, 3), 1, "same"),
                ("tower.conv_2", "branch3x3dbl_3", 96, (3, 3), 2, "valid"),
            ],
            ["maxpool"],
        ]
    if kind == "C":
        c7 = arg
        return [
            [("conv", "branch1x1", 192, (1, 1), 1, "same")],
            [
                ("tower.conv", "branch7x7_1", c7, (1, 1), 1, "same"),
                ("tower.conv_1", "branch7x7_2", c7, (1, 7), 1, "same"),
                ("tower.conv_2", "branch7x7_3", 192, (7, 1), 1, "same"),
            ],
            [
                ("tower_1.conv", "branch7x7dbl_1", c7, (1, 1), 1, "same"),
                ("tower_1.conv_1", "branch7x7dbl_2", c7, (7, 1), 1, "same"),
                ("tower_1.conv_2", "branch7x7dbl_3", c7, (1, 7), 1, "same"),
                ("tower_1.conv_3", "branch7x7dbl_4", c7, (7, 1), 1, "same"),
                ("tower_1.conv_4", "branch7x7dbl_5", 192, (1, 7), 1, "same"),
            ],
            ["pool", ("tower_2.conv", "branch_pool", 192, (1, 1), 1, "same")],
        ]
    if kind == "D":
        return [
            [
                ("tower.conv", "branch3x3_1", 192, (1, 1), 1, "same"),
                ("tower.conv_1", "branch3x3_2", 320, (3, 3), 2, "valid"),
            ],
            [
                ("tower_1.conv", "branch7x7x3_1", 192, (1, 1), 1, "same"),
                ("tower_1.conv_1", "branch7x7x3_2", 192, (1, 7), 1, "same"),
                ("tower_1.conv_2", "branch7x7x3_3", 192, (7, 1), 1, "same"),
                ("tower_1.conv_3", "branch7x7x3_4", 192, (3, 3), 2, "valid"),
            ],
            ["maxpool"],
        ]
    # E: a shared 1x1 stem splits into a 1x3 and a 3x1 conv in both towers.
    return [
        [("conv", "branch1x1", 320, (1, 1), 1, "same")],
        [
            ("tower_conv", "branch3x3_1", 384, (1, 1), 1, "same"),
            "split",
            ("tower_mixed_conv", "branch3x3_2a", 384, (1, 3), 1, "same"),
            ("tower_mixed_conv_1", "branch3x3_2b", 384, (3, 1), 1, "same"),
        ],
        [
            ("tower_1_conv", "branch3x3dbl_1", 448, (1, 1), 1, "same"),
            ("tower_1_conv_1", "branch3x3dbl_2", 384, (3, 3), 1, "same"),
            "split",
            ("tower_1_mixed_conv", "branch3x3dbl_3a", 384, (1, 3), 1, "same"),
            ("tower_1_mixed_conv_1", "branch3x3dbl_3b", 384, (3, 1), 1, "same"),
        ],
        ["pool", ("tower_2_conv", "branch_pool", 192, (1, 1), 1, "same")],
    ]


@keras.saving.register_keras_serializable(package="msmt_tf")
class ConvBN(keras.layers.Layer):
    """Conv (no bias) -> batch norm (eps 1e-3) -> ReLU, or the folded conv(+bias) -> ReLU.

    ``y = relu(gamma * (conv(x, W) - mean) / sqrt(var + eps) + beta)``; ``gamma`` exists only
    with ``scale=True`` (torchvision), the 2015 graph has beta only. With ``folded=True`` the
    layer holds ``W' = W * gamma / sqrt(var + eps)`` and ``b = beta - mean * gamma /
    sqrt(var + eps)`` instead (inference only; see ``fold_batch_norm``).

    Args:
      filters, kernel_size, strides, padding: as ``keras.layers.Conv2D``.
      scale: whether the batch norm has a gamma.
      folded: build the folded inference form.

    Call: ``[B, H, W, C]`` -> ``[B, H', W', filters]``.
    """

    def __init__(
        self, filters, kernel_size, strides=1, padding="valid", scale=False, folded=False, **kwargs
    ):
        super().__init__(**kwargs)
        if padding not in ("valid", "same"):
            raise ValueError(f"ConvBN: padding={padding!r} must be 'valid' or 'same'.")
        self.filters = int(filters)
        self.kernel_size = tuple(kernel_size)
        self.strides = int(strides)
        self.padding = padding
        self.scale = bool(scale)
        self.folded = bool(folded)
        self.conv = keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding=padding,
            use_bias=self.folded,
            name="conv",
            dtype=self.dtype_policy,
        )
        self.bn = None
        if not self.folded:
            self.bn = keras.layers.BatchNormalization(
                epsilon=BN_EPSILON, scale=self.scale, center=True, name="bn", dtype=self.dtype_policy
            )

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.bn is not None:
            self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        x = self.conv(inputs)
        if self.bn is not None:
            x = self.bn(x, training=training)
        return ops.relu(x)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            scale=self.scale,
            folded=self.folded,
        )
        return config


@keras.saving.register_keras_serializable(package="msmt_tf")
class InceptionBlock(keras.layers.Layer):
    """One mixed block of Inception-v3 (kinds A-E of Szegedy et al. 2016, Fig. 5-7).

    Branches are concatenated on the channel axis in the order of the reference
    implementations. The pool branch of A, C and E blocks is a 3x3/1 pool chosen by
    ``pool``: ``"avg_valid"`` (TF SAME average: divide by valid cells -- the 2015 graph),
    ``"avg_pad"`` (zero padding counted -- torchvision) or ``"max"`` (the 2015 graph's
    ``mixed_10``). B and D blocks reduce with a 3x3/2 max pool.

    Args:
      kind: ``"A"`` .. ``"E"``.
      arg: pool-branch width of A blocks, or the 7x7 width ``c7`` of C blocks (else None).
      pool: pool type of the A/C/E pool branch.
      variant: ``"tf2015"`` or ``"torchvision"``; selects sub-layer names and BN gamma.
      folded: batch norm folded into the convs.
      merge_1x1: (folded only) compute the branch-leading 1x1 convs that read the block
        input, and the 1x1 conv of an average-pool branch (moved before its pool), as one
        1x1 conv ``pointwise`` split by channel. Same function up to float summation order.

    Call: ``[B, H, W, C_in]`` -> ``[B, H', W', C_out]`` (C_out 256/288/768/768/1280/2048).
    """

    def __init__(self, kind, arg=None, pool="avg_valid", variant="tf2015", folded=False,
                 merge_1x1=False, **kwargs):
        super().__init__(**kwargs)
        if merge_1x1 and not folded:
            raise ValueError("InceptionBlock: merge_1x1=True needs folded=True (the merged "
                             "conv has a bias and no batch norm).")
        if kind not in ("A", "B", "C", "D", "E"):
            raise ValueError(f"InceptionBlock: kind={kind!r} must be one of A, B, C, D, E.")
        if pool not in ("avg_valid", "avg_pad", "max"):
            raise ValueError(f"InceptionBlock: pool={pool!r} must be avg_valid, avg_pad or max.")
        if variant not in VARIANTS:
            raise ValueError(f"InceptionBlock: variant={variant!r} must be one of {VARIANTS}.")
        self.kind, self.arg, self.pool = kind, arg, pool
        self.variant, self.folded = variant, bool(folded)
        index = 0 if variant == "tf2015" else 1
        self.branches = []
        self.convs = collections.OrderedDict()  # torch key -> ConvBN
        # merge_1x1: (torch key, filters, pooled) of each part of ``pointwise``, in channel
        # order; a branch starts with ("part", i) instead of its first conv (and pool).
        self.parts = []
        specs = _block_convs(kind, arg)
        merged = {}
        if merge_1x1:
            for b, branch in enumerate(specs):
                first = branch[0]
                if first == "pool" and pool != "max":
                    merged[b] = (branch[1], True)
                elif not isinstance(first, str) and first[3] == (1, 1) and first[4] == 1:
                    merged[b] = (first, False)
            if len(merged) < 2:
                merged = {}
        self.merge_1x1 = bool(merged)
        for b, branch in enumerate(specs):
            steps = []
            if b in merged:
                spec, pooled = merged[b]
                steps.append(("part", len(self.parts)))
                self.parts.append((spec[index], int(spec[2]), pooled))
                branch = branch[2:] if pooled else branch[1:]
            for step in branch:
                if isinstance(step, str):
                    steps.append(step)
                    continue
                key = step[index]
                layer = ConvBN(
                    step[2],
                    step[3],
                    strides=step[4],
                    padding=step[5],
                    scale=variant == "torchvision",
                    folded=folded,
                    name=key.replace(".", "_"),
                    dtype=self.dtype_policy,
                )
                self.convs[key] = layer
                steps.append(layer)
            self.branches.append(steps)
        self.pointwise = None
        if self.parts:
            self.pointwise = keras.layers.Conv2D(
                sum(f for _, f, _ in self.parts), 1, use_bias=True, name="pointwise",
                dtype=self.dtype_policy,
            )

    def set_pointwise_weights(self, folded):
        """Loads ``pointwise`` from ``{torch key: (HWIO kernel, bias)}`` of folded convs."""
        kernels, biases = [], []
        for i, (key, _, pooled) in enumerate(self.parts):
            kernel, bias = folded[key]
            kernels.append(kernel)
            if pooled:
                # Added after the pool: a zero-padded average pool would scale it at borders.
                self.pool_biases[i].assign(bias)
                bias = np.zeros_like(bias)
            biases.append(bias)
        self.pointwise.kernel.assign(np.concatenate(kernels, axis=-1))
        self.pointwise.bias.assign(np.concatenate(biases))

    def _pool(self, x):
        if self.pool == "max":
            return ops.max_pool(x, 3, strides=1, padding="same")
        if self.pool == "avg_valid":
            # TF/Keras SAME average pooling divides by the number of valid cells.
            return ops.average_pool(x, 3, strides=1, padding="same")
        x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        return ops.average_pool(x, 3, strides=1, padding="valid")

    def build(self, input_shape):
        self.pool_biases = {}
        if self.pointwise is not None:
            self.pointwise.build(tuple(input_shape))
            for i, (key, filters, pooled) in enumerate(self.parts):
                if pooled:
                    self.pool_biases[i] = self.add_weight(
                        shape=(filters,), initializer="zeros", trainable=False,
                        name=key.replace(".", "_") + "_bias",
                    )
        for steps in self.branches:
            shape = tuple(input_shape)
            split_input = None
            for step in steps:
                if isinstance(step, tuple):
                    shape = shape[:-1] + (self.parts[step[1]][1],)
                elif step == "split":
                    split_input = shape
                elif isinstance(step, ConvBN):
                    step.build(split_input or shape)
                    shape = step.compute_output_shape(split_input or shape)

    def _pointwise_parts(self, inputs):
        y = self.pointwise(inputs)
        sizes = [f for _, f, _ in self.parts]
        cuts = np.cumsum(sizes)[:-1].tolist()
        parts = ops.split(y, cuts, axis=-1) if cuts else [y]
        out = []
        for i, (part, (_, _, pooled)) in enumerate(zip(parts, self.parts)):
            if pooled:
                part = self._pool(part) + self.pool_biases[i]
            out.append(ops.relu(part))
        return out

    def call(self, inputs, training=None):
        outputs = []
        parts = self._pointwise_parts(inputs) if self.pointwise is not None else None
        for steps in self.branches:
            x = inputs
            split = None
            for step in steps:
                if isinstance(step, tuple):
                    x = parts[step[1]]
                elif step == "pool":
                    x = self._pool(x)
                elif step == "maxpool":
                    x = ops.max_pool(x, 3, strides=2, padding="valid")
                elif step == "split":
                    split = []
                elif split is not None:
                    split.append(step(x, training=training))
                else:
                    x = step(x, training=training)
            outputs.extend(split if split is not None else [x])
        return ops.concatenate(outputs, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            kind=self.kind, arg=self.arg, pool=self.pool, variant=self.variant, folded=self.folded,
            merge_1x1=self.merge_1x1,
        )
        return config


@keras.saving.register_keras_serializable(package="msmt_tf")
class InceptionV3Trunk(keras.layers.Layer):
    """The Inception-v3 convolutional trunk (no resize, no normalisation, no classifier).

    Args:
      variant: ``"tf2015"`` (the 2015-12-05 FID graph) or ``"torchvision"`` (the DAMSM
        encoders' backbone); see the module docstring for the differences.
      folded: batch norm folded into the convolutions (inference only).
      merge_1x1: (folded only) merge each mixed block's sibling 1x1 convs into one conv
        (``InceptionBlock``); inference speed, same function up to float rounding.

    Call: images ``[B, H, W, 3]`` already normalised (``(x-128)/128`` for tf2015, [-1, 1]
    for the DAMSM encoders), H, W >= 75. Returns a dict:
      ``"local"``: ``[B, h, w, 768]``, the last 17x17 block (17x17 at 299 input);
      ``"pool_3"``: ``[B, 2048]``, the spatial mean of the last block (the graph's pool_3).
    """

    def __init__(self, variant="tf2015", folded=False, merge_1x1=False, **kwargs):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"InceptionV3Trunk: variant={variant!r} must be one of {VARIANTS}.")
        if merge_1x1 and not folded:
            raise ValueError("InceptionV3Trunk: merge_1x1=True needs folded=True.")
        self.variant = variant
        self.folded = bool(folded)
        self.merge_1x1 = bool(merge_1x1)
        index = 0 if variant == "tf2015" else 1
        scale = variant == "torchvision"
        self.stem = []
        self.convs = collections.OrderedDict()  # torch key prefix -> ConvBN, in torch order
        for spec in _STEM:
            if spec == "pool":
                self.stem.append("pool")
                continue
            layer = ConvBN(
                spec[2], spec[3], spec[4], spec[5], scale=scale, folded=folded,
                name=spec[index], dtype=self.dtype_policy,
            )
            self.stem.append(layer)
            self.convs[spec[index]] = layer
        self.blocks = []
        for spec in _BLOCKS:
            name, kind, arg = spec[index], spec[2], spec[3]
            if variant == "torchvision":
                pool = "avg_pad"
            else:
                pool = "max" if name == "mixed_10" else "avg_valid"
            block = InceptionBlock(
                kind, arg, pool=pool, variant=variant, folded=folded, merge_1x1=merge_1x1,
                name=name, dtype=self.dtype_policy,
            )
            self.blocks.append(block)
            for key, conv in block.convs.items():
                self.convs[f"{name}.{key}"] = conv
        self.local_block = LOCAL_BLOCK[variant]

    def build(self, input_shape):
        # Sub-layers build lazily on the first call; a symbolic pass fixes every shape.
        shape = tuple(input_shape)
        for step in self.stem:
            if isinstance(step, ConvBN):
                step.build(shape)
                shape = step.compute_output_shape(shape)
            else:
                shape = (shape[0], _pooled(shape[1]), _pooled(shape[2]), shape[3])
        channels = [256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048]
        for block, out_c in zip(self.blocks, channels):
            block.build(shape)
            block.built = True
            if block.kind in ("B", "D"):
                shape = (shape[0], _pooled(shape[1]), _pooled(shape[2]), out_c)
            else:
                shape = (shape[0], shape[1], shape[2], out_c)
        for conv in self.convs.values():
            if not conv.built:
                raise RuntimeError(f"InceptionV3Trunk: {conv.name} was not built.")

    def call(self, inputs, training=None):
        x = inputs
        for step in self.stem:
            if step == "pool":
                x = ops.max_pool(x, 3, strides=2, padding="valid")
            else:
                x = step(x, training=training)
        local = None
        for block in self.blocks:
            x = block(x, training=training)
            if block.name == self.local_block:
                local = x
        # At 299 input this is the graph's 8x8 VALID average pool (pool_3).
        pooled = ops.mean(x, axis=(1, 2))
        return {"local": local, "pool_3": pooled}

    def compute_output_shape(self, input_shape):
        def local_size(n):
            if n is None:
                return None
            n = _pooled(n) - 2  # conv (3x3/2), conv_1 (3x3 valid); conv_2 is same
            n = _pooled(n) - 2  # pool0, conv_4 (3x3 valid)
            return _pooled(_pooled(n))  # pool1, mixed_3

        h, w = local_size(input_shape[1]), local_size(input_shape[2])
        return {"local": (input_shape[0], h, w, 768), "pool_3": (input_shape[0], 2048)}

    def get_config(self):
        config = super().get_config()
        config.update(variant=self.variant, folded=self.folded, merge_1x1=self.merge_1x1)
        return config


def _pooled(n):
    """Output size of a 3x3/2 VALID pool or conv."""
    return None if n is None else (n - 3) // 2 + 1


def legacy_resize_bilinear(images, size):
    """TF1 ``ResizeBilinear`` with ``align_corners=False, half_pixel_centers=False``.

    This is the 2015 graph's own resize (source pixel ``dst * in / out``, floor, upper
    neighbour clamped). ``tf.image.resize`` / ``keras.ops.image.resize`` are half-pixel and
    would shift FID; hence the one documented direct TF op in model code.
    ``[B, H, W, C]`` -> float32 ``[B, size[0], size[1], C]``.
    """
    import tensorflow as tf

    return tf.raw_ops.ResizeBilinear(
        images=images, size=list(size), align_corners=False, half_pixel_centers=False
    )


@keras.saving.register_keras_serializable(package="msmt_tf")
class FIDInception(keras.layers.Layer):
    """The FID feature extractor: the 2015-12-05 graph from ``ExpandDims`` to ``pool_3``.

    ``x (RGB 0..255, any H x W) -> legacy bilinear resize to 299x299 -> (x - 128) / 128 ->
    InceptionV3Trunk("tf2015")``; images already at 299 skip the resize (it is the identity).

    Args:
      folded: use the BN-folded trunk (inference speed; differences ~1e-5).
      merge_1x1: also merge sibling 1x1 convs (needs ``folded``; see ``InceptionBlock``).
      dtype: float32 unless given, whatever the global Keras policy: FID is defined on the
        float32 graph (a ``mixed_bfloat16`` training process must not change its features).

    Call: ``[B, H, W, 3]`` uint8 or float in 0..255 -> dict ``"pool_3"`` ``[B, 2048]`` and
    ``"local"`` ``[B, 17, 17, 768]`` (the ``mixed_7`` output).
    """

    def __init__(self, folded=False, merge_1x1=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.folded = bool(folded)
        self.merge_1x1 = bool(merge_1x1)
        self.trunk = InceptionV3Trunk(
            "tf2015", folded=folded, merge_1x1=merge_1x1, name="trunk", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        self.trunk.build((input_shape[0], 299, 299, 3))

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        if tuple(x.shape[1:3]) != (299, 299):
            x = legacy_resize_bilinear(x, (299, 299))
        x = (x - 128.0) * 0.0078125
        return self.trunk(x, training=False)

    def get_config(self):
        config = super().get_config()
        config.update(folded=self.folded, merge_1x1=self.merge_1x1)
        return config


def trunk_weights_numpy(trunk):
    """Returns OrderedDict torch-style key -> numpy array for every conv/BN weight.

    Keys are ``<prefix>.weight`` (OIHW) plus ``beta/mean/var`` (tf2015) or
    ``bn.weight/bn.bias/bn.running_mean/bn.running_var`` (torchvision, conv key
    ``<prefix>.conv.weight``); the inverse of ``set_trunk_weights``.
    """
    out = collections.OrderedDict()
    for prefix, conv in trunk.convs.items():
        if conv.folded:
            raise ValueError("trunk_weights_numpy: the trunk is folded; export the unfolded trunk.")
        kernel = np.transpose(keras.ops.convert_to_numpy(conv.conv.kernel), (3, 2, 0, 1))
        bn = conv.bn
        beta = keras.ops.convert_to_numpy(bn.beta)
        mean = keras.ops.convert_to_numpy(bn.moving_mean)
        var = keras.ops.convert_to_numpy(bn.moving_variance)
        if trunk.variant == "tf2015":
            out.update(
                {f"{prefix}.weight": kernel, f"{prefix}.beta": beta, f"{prefix}.mean": mean,
                 f"{prefix}.var": var}
            )
        else:
            gamma = keras.ops.convert_to_numpy(bn.gamma)
            out.update(
                {f"{prefix}.conv.weight": kernel, f"{prefix}.bn.weight": gamma,
                 f"{prefix}.bn.bias": beta, f"{prefix}.bn.running_mean": mean,
                 f"{prefix}.bn.running_var": var}
            )
    return out


def set_trunk_weights(trunk, arrays, prefix="", source="weights"):
    """Loads torch-layout arrays (name -> np.ndarray) into a trunk.

    ``prefix`` is prepended to every key (``"net.layers."`` for NVIDIA's TorchScript port,
    ``""`` for a torchvision-style encoder state dict). A folded trunk receives folded
    weights. Extra arrays (e.g. ``num_batches_tracked``, projection heads) are ignored; a
    missing or mis-shaped one raises naming ``source`` and the key.
    """
    if not trunk.built:
        trunk.build((None, 299, 299, 3))

    def get(key, shape=None):
        name = prefix + key
        if name not in arrays:
            raise ValueError(f"{source}: missing tensor {name!r}; is this the right weights file?")
        value = np.asarray(arrays[name], dtype=np.float32)
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"{source}: tensor {name!r} has shape {value.shape}, expected {tuple(shape)}."
            )
        return value

    def params(key, kshape):
        """(HWIO kernel, gamma, beta, mean, var) of one conv/BN pair."""
        oihw = (kshape[3], kshape[2], kshape[0], kshape[1])
        if trunk.variant == "tf2015":
            kernel = get(f"{key}.weight", oihw)
            gamma = np.ones(kshape[3], np.float32)
            beta, mean, var = (get(f"{key}.{n}", (kshape[3],)) for n in ("beta", "mean", "var"))
        else:
            kernel = get(f"{key}.conv.weight", oihw)
            gamma, beta, mean, var = (
                get(f"{key}.bn.{n}", (kshape[3],))
                for n in ("weight", "bias", "running_mean", "running_var")
            )
        return np.transpose(kernel, (2, 3, 1, 0)), gamma, beta, mean, var  # OIHW -> HWIO

    for key, conv in trunk.convs.items():
        kernel, gamma, beta, mean, var = params(key, tuple(conv.conv.kernel.shape))
        if conv.folded:
            kernel, bias = _fold(kernel, gamma, beta, mean, var)
            conv.conv.kernel.assign(kernel)
            conv.conv.bias.assign(bias)
        else:
            conv.conv.kernel.assign(kernel)
            if conv.scale:
                conv.bn.gamma.assign(gamma)
            conv.bn.beta.assign(beta)
            conv.bn.moving_mean.assign(mean)
            conv.bn.moving_variance.assign(var)
    for block in trunk.blocks:
        if block.pointwise is None:
            continue
        c_in = int(block.pointwise.kernel.shape[2])
        block.set_pointwise_weights({
            key: _fold(*params(f"{block.name}.{key}", (1, 1, c_in, filters)))
            for key, filters, _ in block.parts
        })


def _fold(kernel, gamma, beta, mean, var):
    """BN folded into the conv before it: ``W g / sqrt(v + eps)``, ``b - m g / sqrt(v + eps)``."""
    inv = gamma / np.sqrt(var.astype(np.float64) + BN_EPSILON)
    return (kernel * inv).astype(np.float32), (beta - mean * inv).astype(np.float32)


def fold_batch_norm(trunk, merge_1x1=False):
    """Returns a new trunk computing the same function with BN folded into the convs.

    ``merge_1x1`` also merges each mixed block's sibling 1x1 convs into one (see
    ``InceptionBlock``). The features agree with the unfolded trunk to float rounding
    (~1e-5 on pool_3, tested to 1e-4).
    """
    folded = InceptionV3Trunk(
        trunk.variant, folded=True, merge_1x1=merge_1x1, name=trunk.name + "_folded",
        dtype=trunk.dtype_policy,
    )
    folded.build((None, 299, 299, 3))
    set_trunk_weights(folded, trunk_weights_numpy(trunk), source="fold_batch_norm")
    return folded
