"""2-D convolution with DM-GAN's spectral normalisation (one power iteration per call)."""

import keras
import numpy as np
from keras import ops

from msmt_tf.layers import batch_norm as bn


def _l2_normalize(x, epsilon):
    # DM-GAN's l2normalize: x / (||x|| + eps), not x / max(||x||, eps).
    return x / (ops.sqrt(ops.sum(ops.square(x))) + epsilon)


@keras.saving.register_keras_serializable(package="msmt_tf")
class SpectralNormConv2D(keras.layers.Layer):
    """Conv2D whose kernel is divided by its largest singular value, as DM-GAN does it.

    The discriminators of DM-GAN (and therefore MSMT-GAN, paper section 4 "Implementation
    Details") wrap every convolution of the image encoder, the down blocks and the 3x3 blocks
    in a spectral normalisation (Miyato et al. 2018) with these semantics:

    - the trainable kernel is the raw weight ``W`` (DM-GAN's ``weight_bar``);
    - two non-trainable vectors ``u`` (size ``out``) and ``v`` (size ``in * kh * kw``) hold the
      power-iteration state, initialised N(0, 1) and then L2-normalised (here followed by one
      power iteration at build, so that ``sigma = ||W v|| > 0`` even before the first training
      call; the reference starts from the raw random vectors);
    - ``W`` is viewed as the matrix ``W_mat = W.view(out, -1)`` **in PyTorch's OIHW flattening
      order** (column index = ``i * kh * kw + y * kw + x``), so ``u``/``v`` imported from a
      DM-GAN checkpoint can be used unchanged (see ``load_pytorch_state``);
    - per call in training mode, ``power_iterations`` times (DM-GAN: 1), without gradient:
      ``v = l2n(W_mat^T u)``, ``u = l2n(W_mat v)``, with ``l2n(x) = x / (||x|| + 1e-12)``;
      the new ``u``/``v`` are stored;
    - ``sigma = u . (W_mat v)`` is differentiable with respect to ``W`` (``u``, ``v`` are
      constants), and the convolution uses ``W / sigma`` plus the (unnormalised) bias.

    Inference (``training`` False or None) uses the stored ``u``/``v`` without updating them.
    The reference updates them on every call, also in eval mode; ``update_in_eval=True``
    reproduces that. Because the state advances once per call, a layer called three times
    in a step (e.g. the conditional head on real, fake and wrong pairs) advances three times,
    exactly like the reference.

    Keras' own ``keras.layers.SpectralNormalization`` keeps only ``u`` and flattens the kernel
    in HWIO order, so its state cannot be imported from PyTorch; hence this layer.

    The kernel is stored in Keras' HWIO layout ``[kh, kw, in, out]``; it equals the PyTorch
    ``weight_bar`` transposed by ``(2, 3, 1, 0)``. The power iteration and ``sigma`` are
    computed in float32 even under a mixed precision policy.

    Args:
        filters: output channels ``out``.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw).
        padding: ``"same"``, ``"valid"`` or an int ``p`` (PyTorch-style symmetric zero
            padding of ``p`` pixels, exact for any input size; k4 s2 p1 equals ``"same"``
            only for even sizes).
        use_bias: add a bias after the normalised convolution (DM-GAN: True).
        kernel_initializer: initializer of ``W`` (DM-GAN ``weights_init``: orthogonal, gain 1;
            Keras' orthogonal flattens HWIO, so draws differ from PyTorch's).
        bias_initializer: initializer of the bias (zeros here; PyTorch default is uniform
            +-1/sqrt(fan_in)).
        power_iterations: power iterations per updating call (DM-GAN: 1).
        update_in_eval: also advance ``u``/``v`` when ``training`` is False (reference
            behaviour).
        epsilon: the 1e-12 of ``l2n``.
        seed: int seed for the initial ``u``/``v`` draws (and the kernel initializer when it is
            given by name), or None.

    Call arguments:
        inputs: ``[B, H, W, in]``.
        training: bool; True advances the power iteration.

    Returns:
        ``[B, H', W', filters]``.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        use_bias=True,
        kernel_initializer="orthogonal",
        bias_initializer="zeros",
        power_iterations=1,
        update_in_eval=False,
        epsilon=1e-12,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"SpectralNormConv2D: filters={filters!r} must be >= 1.")
        if isinstance(padding, str):
            if padding.lower() not in ("same", "valid"):
                raise ValueError(
                    f"SpectralNormConv2D: padding={padding!r} must be 'same', 'valid' or an int."
                )
            padding = padding.lower()
        elif int(padding) < 0:
            raise ValueError(f"SpectralNormConv2D: padding={padding!r} must be >= 0.")
        else:
            padding = int(padding)
        if int(power_iterations) < 1:
            raise ValueError(
                f"SpectralNormConv2D: power_iterations={power_iterations!r} must be >= 1."
            )
        self.filters = int(filters)
        self.kernel_size = self._pair(kernel_size, "kernel_size")
        self.strides = self._pair(strides, "strides")
        self.padding = padding
        self.use_bias = bool(use_bias)
        self.kernel_initializer = bn.seeded(kernel_initializer, seed)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.power_iterations = int(power_iterations)
        self.update_in_eval = bool(update_in_eval)
        self.epsilon = float(epsilon)
        self.seed = seed

    @staticmethod
    def _pair(value, name):
        if isinstance(value, int):
            value = (value, value)
        value = tuple(int(v) for v in value)
        if len(value) != 2 or min(value) < 1:
            raise ValueError(f"SpectralNormConv2D: {name}={value!r} must be positive (h, w).")
        return value

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                "SpectralNormConv2D: the channel dimension of the input must be known."
            )
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(kh, kw, in_channels, self.filters),
            initializer=self.kernel_initializer,
            trainable=True,
            autocast=False,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                trainable=True,
            )
        else:
            self.bias = None
        # u/v depend only on W and themselves, so every replica computes the same update:
        # keep the first replica's value under tf.distribute.
        seed_u, seed_v = bn.offset_seed(self.seed, 1), bn.offset_seed(self.seed, 2)
        self.u = self.add_weight(
            name="u",
            shape=(self.filters,),
            initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed_u),
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        self.v = self.add_weight(
            name="v",
            shape=(kh * kw * in_channels,),
            initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed_v),
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        self.u.assign(_l2_normalize(self.u, self.epsilon))
        self.v.assign(_l2_normalize(self.v, self.epsilon))
        # One power iteration at build (not in the reference, where the state starts random):
        # it makes sigma = ||W v|| > 0 so that inference before any training call is sane
        # (a random u . W v can be ~0 or negative). Imported checkpoints overwrite u/v anyway.
        u, v = self._power_iteration(self.weight_matrix())
        self.u.assign(u)
        self.v.assign(v)

    def weight_matrix(self):
        """``W`` as PyTorch's ``weight_bar.view(out, -1)``: ``[out, in * kh * kw]`` float32."""
        kernel = ops.convert_to_tensor(self.kernel)
        # HWIO -> OIHW, then flatten: the column order of PyTorch's W.view(out, -1).
        return ops.reshape(ops.transpose(kernel, (3, 2, 0, 1)), (self.filters, -1))

    def _power_iteration(self, w_mat):
        u = ops.convert_to_tensor(self.u)
        v = ops.convert_to_tensor(self.v)
        w_const = ops.stop_gradient(w_mat)
        for _ in range(self.power_iterations):
            v = _l2_normalize(ops.matmul(u, w_const), self.epsilon)  # W^T u
            u = _l2_normalize(ops.matmul(w_const, v), self.epsilon)  # W v
        return ops.stop_gradient(u), ops.stop_gradient(v)

    def sigma(self, training=False):
        """The current ``sigma = u . (W v)``; advances ``u``/``v`` like ``call``."""
        w_mat = self.weight_matrix()
        if training or self.update_in_eval:
            u, v = self._power_iteration(w_mat)
            self.u.assign(u)
            self.v.assign(v)
        else:
            u = ops.convert_to_tensor(self.u)
            v = ops.convert_to_tensor(self.v)
        return ops.sum(u * ops.matmul(w_mat, v))

    def normalized_kernel(self, training=False):
        """``W / sigma`` in HWIO layout (advances ``u``/``v`` when ``call`` would)."""
        return ops.convert_to_tensor(self.kernel) / self.sigma(training=training)

    def call(self, inputs, training=None):
        kernel = ops.cast(self.normalized_kernel(training=bool(training)), self.compute_dtype)
        x = inputs
        padding = self.padding
        if isinstance(padding, int):
            if padding:
                x = ops.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
            padding = "valid"
        y = ops.conv(x, kernel, strides=self.strides, padding=padding)
        if self.use_bias:
            y = y + ops.cast(self.bias, y.dtype)
        return y

    def load_pytorch_state(self, weight_bar, weight_u, weight_v, bias=None):
        """Sets the weights from a DM-GAN ``SpectralNorm`` state (NumPy arrays).

        Args:
            weight_bar: ``[out, in, kh, kw]`` (OIHW).
            weight_u: ``[out]``; weight_v: ``[in * kh * kw]`` (used unchanged).
            bias: ``[out]`` or None.
        """
        weight_bar = np.asarray(weight_bar, dtype="float32")
        expected = (self.filters, self.kernel.shape[2]) + self.kernel_size
        if weight_bar.shape != expected:
            raise ValueError(
                f"SpectralNormConv2D {self.name}: weight_bar shape {weight_bar.shape} != "
                f"{expected} (OIHW); convert the matching DM-GAN module."
            )
        self.kernel.assign(np.transpose(weight_bar, (2, 3, 1, 0)))
        self.u.assign(np.asarray(weight_u, dtype="float32").reshape(self.u.shape))
        self.v.assign(np.asarray(weight_v, dtype="float32").reshape(self.v.shape))
        if bias is not None:
            if not self.use_bias:
                raise ValueError(f"SpectralNormConv2D {self.name}: bias given but use_bias=False.")
            self.bias.assign(np.asarray(bias, dtype="float32").reshape(self.bias.shape))

    def compute_output_shape(self, input_shape):
        size = []
        for dim, k, s in zip(input_shape[1:3], self.kernel_size, self.strides):
            if dim is None:
                size.append(None)
            elif self.padding == "same":
                size.append(-(-dim // s))
            elif self.padding == "valid":
                size.append((dim - k) // s + 1)
            else:
                size.append((dim + 2 * self.padding - k) // s + 1)
        return (input_shape[0], size[0], size[1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "power_iterations": self.power_iterations,
                "update_in_eval": self.update_in_eval,
                "epsilon": self.epsilon,
                "seed": self.seed,
            }
        )
        return config
