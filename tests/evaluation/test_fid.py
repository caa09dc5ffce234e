"""FID statistics and distance (TTUR semantics), the .npz format, folder reading."""

import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from msmt_tf.evaluation import fid
from msmt_tf.models import inception_weights

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "inception")


def _gaussian(rng, n, d, shift=0.0, scale=1.0):
    a = rng.normal(size=(d, d)) * 0.3
    return rng.normal(size=(n, d)) @ a * scale + shift


def _independent_fid(mu1, s1, mu2, s2):
    """tr sqrt(S1 S2) from the eigenvalues of S1 S2 (real, >= 0 for PSD S1, S2)."""
    eig = np.linalg.eigvals(s1 @ s2)
    tr_sqrt = np.sum(np.sqrt(np.clip(eig.real, 0, None)))
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt


def test_hand_computed_1d():
    # |0-3|^2 + 4 + 1 - 2*sqrt(4*1) = 10
    assert fid.frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(10.0, abs=1e-12)


def test_against_independent_computation_and_symmetry():
    rng = np.random.default_rng(0)
    x = _gaussian(rng, 400, 16)
    y = _gaussian(rng, 300, 16, shift=0.7, scale=1.5)
    mx, sx = fid.feature_statistics(x)
    my, sy = fid.feature_statistics(y)
    np.testing.assert_allclose(mx, x.mean(0))
    np.testing.assert_allclose(sx, np.cov(x, rowvar=False))  # unbiased, N - 1
    value = fid.frechet_distance(mx, sx, my, sy)
    assert value == pytest.approx(_independent_fid(mx, sx, my, sy), rel=1e-8)
    assert value == pytest.approx(fid.frechet_distance(my, sy, mx, sx), rel=1e-8)
    assert value > 1.0
    assert abs(fid.frechet_distance(mx, sx, mx, sx)) < 1e-6


def test_singular_product_retries_with_eps(monkeypatch):
    calls = []
    real = fid._sqrtm

    def flaky(m):
        calls.append(m.copy())
        if len(calls) == 1:
            return np.full_like(m, np.nan)
        return real(m)

    monkeypatch.setattr(fid, "_sqrtm", flaky)
    s1, s2 = np.diag([1.0, 0.0]), np.diag([0.0, 4.0])
    value = fid.frechet_distance(np.zeros(2), s1, np.zeros(2), s2, eps=1e-6)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(2)) @ (s2 + 1e-6 * np.eye(2)))
    expected = 5.0 - 2 * np.trace(np.sqrt(np.diag([1 + 1e-6, 1e-6]) * np.diag([1e-6, 4 + 1e-6])))
    assert value == pytest.approx(expected, abs=1e-9)


def test_imaginary_component_check(monkeypatch):
    s = np.eye(2)
    monkeypatch.setattr(fid, "_sqrtm", lambda m: np.eye(2) + 1j * np.diag([2e-3, 0.0]))
    with pytest.raises(ValueError, match="Imaginary component"):
        fid.frechet_distance(np.zeros(2), s, np.zeros(2), s)
    monkeypatch.setattr(fid, "_sqrtm", lambda m: np.eye(2) + 1j * np.diag([5e-4, 0.0]))
    assert fid.frechet_distance(np.zeros(2), s, np.zeros(2), s) == pytest.approx(0.0)


def test_npz_round_trip_keeps_ttur_keys_and_dtypes(tmp_path):
    rng = np.random.default_rng(1)
    mu, sigma = fid.feature_statistics(rng.normal(size=(50, 4)).astype(np.float32))
    path = tmp_path / "stats.npz"
    fid.save_statistics(str(path), mu, sigma)
    with np.load(path) as f:
        assert sorted(f.files) == ["mu", "sigma"]
        assert f["mu"].dtype == np.float64 and f["sigma"].dtype == np.float64
    mu2, sigma2 = fid.load_statistics(str(path))
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    np.savez(tmp_path / "bad.npz", m=mu)
    with pytest.raises(fid.FIDError, match="bad.npz: a FID statistics file needs arrays 'mu' and 'sigma'"):
        fid.load_statistics(str(tmp_path / "bad.npz"))


def test_small_n_warning(caplog):
    with caplog.at_level(logging.WARNING):
        fid.feature_statistics(np.random.default_rng(0).normal(size=(10, 3)))
    assert "only 10 samples" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fid.feature_statistics(np.random.default_rng(0).normal(size=(2048, 2)))
    assert "samples" not in caplog.text


def test_folder_reading_recursive_and_mixed_sizes(tmp_path):
    rng = np.random.default_rng(2)
    imgs = {
        "a.png": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
        "sub/b.png": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
        "sub/deeper/c.png": rng.integers(0, 256, (40, 10, 3), dtype=np.uint8),
    }
    for name, im in imgs.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("ignored")
    paths = fid.list_images(str(tmp_path))
    assert [os.path.relpath(p, tmp_path) for p in paths] == ["a.png", "sub/b.png", "sub/deeper/c.png"]
    batches = list(fid.iter_image_folder(str(tmp_path), batch_size=2))
    np.testing.assert_array_equal(batches[0], np.stack([imgs["a.png"], imgs["sub/b.png"]]))
    assert batches[1].shape == (1, 40, 10, 3)
    # a batch of mixed sizes is resized per image to 299 with the network's legacy resize
    mixed = list(fid.iter_image_folder(str(tmp_path), batch_size=3))
    assert mixed[0].shape == (3, 299, 299, 3)
    from msmt_tf.models.inception import legacy_resize_bilinear

    np.testing.assert_array_equal(
        mixed[0][2], np.asarray(legacy_resize_bilinear(imgs["sub/deeper/c.png"][None].astype(np.float32), (299, 299)))[0]
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(fid.FIDError, match="empty: no .png/.jpg images"):
        fid.list_images(str(tmp_path / "empty"))
    with pytest.raises(fid.FIDError, match="missing: not a directory"):
        fid.list_images(str(tmp_path / "missing"))


def test_compute_features_with_in_memory_source():
    def source():  # e.g. batches generated from a checkpoint
        for k in range(3):
            yield np.full((2 if k < 2 else 1, 4, 4, 3), k, np.uint8)

    stream = io.StringIO()
    feats = fid.compute_features(source(), lambda b: b.reshape(len(b), -1)[:, :2].astype(np.float32), progress=True, stream=stream)
    assert feats.dtype == np.float64
    np.testing.assert_array_equal(feats[:, 0], [0, 0, 1, 1, 2])
    assert "5 images" in stream.getvalue() and "images/s" in stream.getvalue()
    with pytest.raises(fid.FIDError, match="no images"):
        fid.compute_features(iter([]), lambda b: b)


@pytest.mark.parametrize("kwargs", [{}, {"merge_1x1": False, "jit_compile": True}],
                         ids=["default_merged", "folded_xla"])
def test_feature_extractor_matches_fixture(fid_weight_arrays, kwargs):
    """The default extractor (folded + merged 1x1, no XLA) and folded + XLA on the committed
    images vs the TorchScript features."""
    extractor = fid.FeatureExtractor(weights=None, **kwargs)
    assert extractor.layer.merge_1x1 == kwargs.get("merge_1x1", True)
    images = [np.asarray(Image.open(os.path.join(FIXTURES, f"img{i}_64.png"))) for i in range(4)]
    got = extractor(np.stack(images[:3]))
    got_last = extractor(np.stack(images[3:]))  # short batch: padded, same compiled shape
    expected = np.load(os.path.join(FIXTURES, "pool3_features.npy"))[:4]
    np.testing.assert_allclose(np.concatenate([got, got_last]), expected, atol=1e-4, rtol=0)
    assert extractor.weights_sha256 == inception_weights.WEIGHTS_SHA256


ONEDNN_SCRIPT = """
import json, os, sys
import numpy as np
from PIL import Image
from msmt_tf.training import onednn
set_here = onednn.enable_onednn()
from msmt_tf.evaluation import fid
print(json.dumps({"env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "set": set_here,
                  "on": onednn.onednn_enabled()}))
images = np.stack([np.asarray(Image.open(os.path.join(sys.argv[1], f"img{i}_64.png")))
                   for i in range(2)])
np.save(sys.argv[2], fid.FeatureExtractor()(images))
"""


def test_onednn_is_enabled_by_the_entry_points_and_keeps_parity(tmp_path, fid_weight_arrays):
    """``enable_onednn`` before TensorFlow's import (as ``tools/fid.py`` and ``evaluate`` do)
    switches the oneDNN kernels on; the default extractor still matches the fixture. A fresh
    process, since TensorFlow reads the switch once, at import."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "features.npy"
    proc = subprocess.run([sys.executable, "-c", ONEDNN_SCRIPT, FIXTURES, str(out)], env=env,
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert status == {"env": "1", "set": True, "on": True}
    expected = np.load(os.path.join(FIXTURES, "pool3_features.npy"))[:2]
    np.testing.assert_allclose(np.load(out), expected, atol=1e-4, rtol=0)
