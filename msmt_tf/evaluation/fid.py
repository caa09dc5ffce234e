"""Fréchet Inception Distance exactly as bioinf-jku/TTUR ``fid.py`` computes it.

* Features: ``pool_3`` (2048-d) of the 2015-12-05 graph (``FIDInception``: legacy TF1
  bilinear resize to 299, ``(x-128)/128``), accumulated in float64.
* Statistics: ``mu = np.mean(act, 0)``, ``sigma = np.cov(act, rowvar=False)`` (N - 1).
* Distance: ``|mu1-mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))`` with
  ``scipy.linalg.sqrtm``; if the root is not finite, retry with ``1e-6 * I``
  added to both covariances; a complex root whose diagonal imaginary part exceeds 1e-3 raises.
* ``.npz`` files hold ``mu`` (float64 [2048]) and ``sigma`` (float64 [2048, 2048]), TTUR's and
  DM-GAN's published format.

Any image source plugs in: ``compute_features`` takes an iterable of uint8 (or 0..255 float)
batches ``[B, H, W, 3]`` -- an image folder (``iter_image_folder``) or batches generated in
memory from a checkpoint (``msmt_tf.fid.generator_source``). One deviation from TTUR: the
last partial batch is used, not dropped (TTUR keeps ``N // batch_size * batch_size`` images).
"""

import logging
import os
import sys
import time
import warnings

import numpy as np
from scipy import linalg

from msmt_tf import errors

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MIN_SAMPLES_FULL_RANK = 2048
MIN_IMAGES = 2  # a covariance (N - 1 in the denominator) needs at least two samples

_log = logging.getLogger(__name__)


class FIDError(errors.UserError, ValueError):
    """Bad input to the FID computation; the message names the file and what to do."""


def feature_statistics(features):
    """TTUR statistics of ``[N, 2048]`` features: (mu, sigma) in float64, sigma with N - 1.

    Warns when N < 2048 (the covariance is then rank-deficient and FID is biased upward).
    """
    act = np.asarray(features, dtype=np.float64)
    if act.ndim != 2 or act.shape[0] < MIN_IMAGES:
        raise FIDError(f"feature_statistics: need [N >= {MIN_IMAGES}, D] features, got shape {act.shape}.")
    if act.shape[0] < MIN_SAMPLES_FULL_RANK:
        _log.warning(
            "FID statistics from only %d samples (< %d): the covariance is rank-deficient; "
            "values are only comparable at the same N (use >= 10,000).",
            act.shape[0],
            MIN_SAMPLES_FULL_RANK,
        )
    mu = np.mean(act, axis=0)
    sigma = np.cov(act, rowvar=False)
    return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Fréchet distance between two Gaussians, TTUR's ``calculate_frechet_distance``."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape:
        raise FIDError(f"frechet_distance: mean shapes differ: {mu1.shape} vs {mu2.shape}.")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise FIDError(
            f"frechet_distance: covariance shapes {sigma1.shape} / {sigma2.shape} do not match "
            f"the mean size {mu1.size}."
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        _log.warning(
            "fid calculation produces singular product; adding %s to diagonal of cov estimates", eps
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"Imaginary component {m}")
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def _sqrtm(matrix):
    # TTUR calls sqrtm(..., disp=False) and ignores the error estimate; ``disp`` is deprecated
    # since SciPy 1.16 and the returned root is the same without it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        root = linalg.sqrtm(matrix)
    return root[0] if isinstance(root, tuple) else root


def save_statistics(path, mu, sigma):
    """Writes TTUR's ``.npz`` (keys ``mu``, ``sigma``; float64)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    np.savez(path, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))


def load_statistics(path):
    """Reads ``mu``, ``sigma`` from a TTUR-format ``.npz`` (float64)."""
    if not os.path.isfile(path):
        raise FIDError(f"{path}: no such statistics file.")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "mu" not in f.files or "sigma" not in f.files:
                raise FIDError(
                    f"{path}: a FID statistics file needs arrays 'mu' and 'sigma' (TTUR format); "
                    f"it has {f.files}."
                )
            mu, sigma = f["mu"][:], f["sigma"][:]
    except (OSError, ValueError) as e:
        if isinstance(e, FIDError):
            raise
        raise FIDError(f"{path}: not a readable .npz file ({e}).") from None
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise FIDError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together.")
    return mu.astype(np.float64), sigma.astype(np.float64)


def list_images(folder):
    """Sorted paths of every png/jpg under ``folder`` (recursive)."""
    if not os.path.isdir(folder):
        raise FIDError(f"{folder}: not a directory of images.")
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(root, name))
    if not paths:
        raise FIDError(f"{folder}: no .png/.jpg images found (searched recursively).")
    return paths


def _read_image(path):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - PIL raises many types
        raise FIDError(f"{path}: cannot read image ({e}); delete or fix it.") from None


def iter_image_folder(folder, batch_size=50, paths=None):
    """Yields uint8 batches ``[B, H, W, 3]`` of the folder's images (any size, RGB).

    Images of one batch that differ in size are each resized to 299x299 first with the
    same legacy resize the network applies (per image, so the result is identical).
    """
    from msmt_tf.models.inception import legacy_resize_bilinear

    paths = list_images(folder) if paths is None else paths
    for start in range(0, len(paths), batch_size):
        images = [_read_image(p) for p in paths[start : start + batch_size]]
        if len({im.shape for im in images}) == 1:
            yield np.stack(images)
        else:
            yield np.stack(
                [
                    np.asarray(legacy_resize_bilinear(im[None].astype(np.float32), (299, 299)))[0]
                    for im in images
                ]
            )


class FeatureExtractor:
    """Callable ``[B, H, W, 3]`` 0..255 -> ``[B, 2048]`` float32 pool_3 features.

    The defaults are the fastest variant measured on a 2-core AVX2 CPU that keeps parity
    with the TorchScript fixture (``benchmarks/inception_throughput.py``): BN folded into
    the convs, sibling 1x1 convs merged, no XLA (XLA's CPU convolutions do not use oneDNN
    and were slower), plus oneDNN kernels when the entry point enabled them
    (``msmt_tf.training.onednn``).

    Args:
      weights, cache_dir, download: see ``inception_weights.load_fid_weights``.
      folded: fold BN into the convs (faster; features differ by ~1e-5).
      merge_1x1: with ``folded``, merge each mixed block's sibling 1x1 convs into one.
      jit_compile: compile the network with XLA.
      layer: an already-built ``FIDInception`` (skips weight loading; for tests).
    """

    def __init__(
        self, weights=None, cache_dir=None, download=True, folded=True, merge_1x1=True,
        jit_compile=False, layer=None,
    ):
        import tensorflow as tf

        from msmt_tf.models import inception_weights

        if layer is None:
            layer, self.weights_sha256 = inception_weights.build_fid_inception(
                weights, cache_dir=cache_dir, download=download, folded=folded,
                merge_1x1=merge_1x1 and folded,
            )
        else:
            self.weights_sha256 = None
        self.layer = layer
        trunk = layer.trunk

        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def network(x):
            return trunk(x, training=False)["pool_3"]

        self._network = network
        self._batch_size = None

    def __call__(self, images):
        from msmt_tf.models.inception import legacy_resize_bilinear

        x = np.asarray(images)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise FIDError(f"FeatureExtractor: expected [B, H, W, 3] images, got {x.shape}.")
        x = x.astype(np.float32)
        # The resize stays outside XLA: it must be the exact TF1 kernel.
        if x.shape[1:3] != (299, 299):
            x = legacy_resize_bilinear(x, (299, 299))
        x = (x - 128.0) * 0.0078125
        n = x.shape[0]
        if self._batch_size is None:
            self._batch_size = n
        if n < self._batch_size:
            # Pad a short final batch so the compiled network is not re-traced for it.
            pad = np.zeros((self._batch_size - n,) + tuple(x.shape[1:]), np.float32)
            x = np.concatenate([np.asarray(x), pad], axis=0)
        return np.asarray(self._network(x))[:n]


def compute_features(batches, extractor, progress=False, total=None, stream=None):
    """Runs ``extractor`` over an iterable of image batches -> float64 ``[N, 2048]``.

    ``progress`` prints ``images, images/s`` to ``stream`` (stderr) after every batch.
    """
    stream = stream or sys.stderr
    chunks, n = [], 0
    start = time.perf_counter()
    for batch in batches:
        chunks.append(np.asarray(extractor(batch), dtype=np.float64))
        n += chunks[-1].shape[0]
        if progress:
            rate = n / max(time.perf_counter() - start, 1e-9)
            of = f"/{total}" if total else ""
            stream.write(f"\r  {n}{of} images, {rate:.1f} images/s")
            stream.flush()
    if progress:
        stream.write("\n")
    if not chunks:
        raise FIDError("compute_features: the image source yielded no images.")
    return np.concatenate(chunks, axis=0)
