"""The DAMSM image encoder (AttnGAN / DM-GAN ``CNN_ENCODER``) on a frozen Inception-v3 trunk."""

import keras
import numpy as np
from keras import ops

from msmt_tf.layers import batch_norm as bn
from msmt_tf.models import inception

RESIZE_METHODS = ("bilinear", "align_corners", "legacy")


def _resize(images, size, method):
    if method == "bilinear":
        # Half-pixel centres: torch ``F.interpolate(align_corners=False)`` (AttnGAN >= torch 0.4).
        return ops.image.resize(images, size, interpolation="bilinear", antialias=False)
    import tensorflow as tf

    # Keras only offers half-pixel resizing; these two TF1 kernels need the raw op
    # (the documented exception, docs/conventions.md "Style").
    return tf.raw_ops.ResizeBilinear(
        images=images, size=list(size), align_corners=method == "align_corners",
        half_pixel_centers=False,
    )


@keras.saving.register_keras_serializable(package="msmt_tf")
class DAMSMImageEncoder(keras.layers.Layer):
    """Image encoder of the Deep Attentional Multimodal Similarity Model (AttnGAN Sec. 3.3).

    ``v = W_local f`` (region features, f = the last 17x17 Inception block, 768 channels ->
    ``embedding_dim`` by a 1x1 conv without bias) and ``v_bar = W_global f_bar + b`` (global
    code, ``f_bar`` = the 2048-d average pool of the last block), the image side of the DAMSM
    matching score (AttnGAN Eq. 7-10; MSMT-GAN reuses it unchanged for its DAMSM loss).

    The trunk is frozen and always runs in inference mode (BN uses the stored statistics);
    only the two projections train: 768*256 + (2048*256 + 256) = 721,152 parameters. Both
    projection kernels start from U(-0.1, 0.1) as ``init_trainable_weights`` in the
    references; the Dense bias from torch's default U(-1/sqrt(2048), 1/sqrt(2048)).

    Input normalisation: images in [-1, 1] go into the trunk unchanged, exactly as the
    reference encoders do (their ``forward`` skips torchvision's ``transform_input``). With
    ``variant="tf2015"`` this differs from the FID preprocessing ``(x255 - 128) / 128`` by
    at most 0.4% of scale and 0.004 of offset; we keep the references' choice so that a
    released ``image_encoder*.pth`` sees the inputs it was trained on.

    Args:
      embedding_dim: ``nef`` (256 in every reference config).
      image_size: side the input is resized to (299 as the references; smaller sizes >= 75
        are allowed for CPU tests; the region grid is then smaller than 17x17).
      variant: trunk variant, ``"torchvision"`` (released DAMSM encoders) or ``"tf2015"``.
      resize: ``"bilinear"`` (half-pixel, AttnGAN with torch >= 0.4), ``"align_corners"``
        (DM-GAN's released encoders), or ``"legacy"`` (TF1 asymmetric, the FID graph's).
      seed: seed of the projection initialisers.

    Call: ``images [B, H, W, 3]`` in [-1, 1] -> ``(region_features [B, h, w, embedding_dim],
    global_code [B, embedding_dim])`` with h = w = 17 at ``image_size=299``.
    """

    def __init__(
        self, embedding_dim=256, image_size=299, variant="torchvision", resize="bilinear", seed=None,
        **kwargs
    ):
        super().__init__(**kwargs)
        if int(embedding_dim) < 1:
            raise ValueError(f"DAMSMImageEncoder: embedding_dim={embedding_dim} must be >= 1.")
        if int(image_size) < 75:
            raise ValueError(f"DAMSMImageEncoder: image_size={image_size} must be >= 75 (Inception-v3).")
        if resize not in RESIZE_METHODS:
            raise ValueError(f"DAMSMImageEncoder: resize={resize!r} must be one of {RESIZE_METHODS}.")
        if variant not in inception.VARIANTS:
            raise ValueError(f"DAMSMImageEncoder: variant={variant!r} must be one of {inception.VARIANTS}.")
        self.embedding_dim = int(embedding_dim)
        self.image_size = int(image_size)
        self.variant = variant
        self.resize = resize
        self.seed = seed
        self.trunk = inception.InceptionV3Trunk(variant, name="trunk", dtype=self.dtype_policy)
        self.trunk.trainable = False
        s1, s2, s3 = (bn.offset_seed(seed, i) for i in range(3))
        self.emb_features = keras.layers.Conv2D(
            self.embedding_dim, 1, use_bias=False, name="emb_features",
            kernel_initializer=keras.initializers.RandomUniform(-0.1, 0.1, seed=s1),
            dtype=self.dtype_policy,
        )
        bound = 1.0 / np.sqrt(2048.0)
        self.emb_cnn_code = keras.layers.Dense(
            self.embedding_dim, name="emb_cnn_code",
            kernel_initializer=keras.initializers.RandomUniform(-0.1, 0.1, seed=s2),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound, seed=s3),
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        size = (input_shape[0], self.image_size, self.image_size, 3)
        self.trunk.build(size)
        local = self.trunk.compute_output_shape(size)["local"]
        self.emb_features.build(local)
        self.emb_cnn_code.build((input_shape[0], 2048))

    def call(self, images, training=None):
        x = ops.cast(images, self.compute_dtype)
        if tuple(x.shape[1:3]) != (self.image_size, self.image_size):
            x = _resize(x, (self.image_size, self.image_size), self.resize)
        # The trunk is frozen and never updates its BN statistics.
        features = self.trunk(x, training=False)
        region = self.emb_features(features["local"])
        code = self.emb_cnn_code(features["pool_3"])
        return region, code

    def compute_output_shape(self, input_shape):
        size = (input_shape[0], self.image_size, self.image_size, 3)
        local = self.trunk.compute_output_shape(size)["local"]
        return (local[:3] + (self.embedding_dim,), (input_shape[0], self.embedding_dim))

    def get_config(self):
        config = super().get_config()
        config.update(
            embedding_dim=self.embedding_dim,
            image_size=self.image_size,
            variant=self.variant,
            resize=self.resize,
            seed=self.seed,
        )
        return config


def load_torch_image_encoder(encoder, state_dict, source="image encoder"):
    """Loads a reference ``image_encoder*.pth`` state dict (torchvision names) into ``encoder``.

    ``state_dict``: name -> array as returned by
    ``msmt_tf.io.torch_serialization.load_state_dict``; keys ``Conv2d_1a_3x3.conv.weight`` ...
    ``Mixed_7c...``, ``emb_features.weight`` [nef, 768, 1, 1], ``emb_cnn_code.weight``
    [nef, 2048] and ``emb_cnn_code.bias``.
    """
    if encoder.variant != "torchvision":
        raise ValueError(f"{source}: reference encoders use variant='torchvision', not {encoder.variant!r}.")
    if not encoder.built:
        encoder.build((None, encoder.image_size, encoder.image_size, 3))
    inception.set_trunk_weights(encoder.trunk, state_dict, source=source)
    for key in ("emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias"):
        if key not in state_dict:
            raise ValueError(f"{source}: missing tensor {key!r}; is this a DAMSM image encoder?")
    w = np.asarray(state_dict["emb_features.weight"], np.float32)
    encoder.emb_features.kernel.assign(np.transpose(w, (2, 3, 1, 0)))
    encoder.emb_cnn_code.kernel.assign(np.asarray(state_dict["emb_cnn_code.weight"], np.float32).T)
    encoder.emb_cnn_code.bias.assign(np.asarray(state_dict["emb_cnn_code.bias"], np.float32))
