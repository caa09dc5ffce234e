"""``python -m msmt_tf.fid`` / ``tools/fid.py``: paths, flags, output format."""

import io
import os

import numpy as np
import pytest
from absl import flags

from msmt_tf import configlib
from msmt_tf import fid as fid_tool
from msmt_tf.cli import flagutil
from msmt_tf.evaluation import fid as fid_lib


def _stats(tmp_path, name, shift):
    rng = np.random.default_rng(len(name))
    mu, sigma = fid_lib.feature_statistics(rng.normal(shift, 1.0, size=(60, 5)))
    path = str(tmp_path / name)
    fid_lib.save_statistics(path, mu, sigma)
    return path, mu, sigma


def test_two_npz_files_print_fid_last(tmp_path):
    a, mu1, s1 = _stats(tmp_path, "a.npz", 0.0)
    b, mu2, s2 = _stats(tmp_path, "bb.npz", 1.0)
    out = io.StringIO()
    result = fid_tool.compute([a, b], fid_tool.FIDToolConfig(), stream=out)
    lines = out.getvalue().strip().splitlines()
    assert lines[-1] == f"FID: {fid_lib.frechet_distance(mu1, s1, mu2, s2):.6f}"
    assert "KID: skipped" in lines[-2]
    assert result["fid"] > 1.0


def test_flags_and_validation():
    fv = flags.FlagValues()
    flagutil.define_flags(fid_tool.FIDToolConfig, fv)
    fv(["prog", "--batch_size=7", "--save_stats=/tmp/x.npz", "--nokid"])
    config = flagutil.from_flags(fid_tool.FIDToolConfig, fv)
    assert (config.batch_size, config.save_stats, config.kid) == (7, "/tmp/x.npz", False)
    with pytest.raises(configlib.ConfigError, match="--batch_size=0"):
        fid_tool.FIDToolConfig(batch_size=0)
    with pytest.raises(configlib.ConfigError, match="exclusive"):
        fid_tool.FIDToolConfig(inception_weights="a.pt", inception_graph="b.pb")


def test_bad_path_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="nothing: no such file or directory"):
        fid_tool.compute([str(tmp_path / "nothing"), str(tmp_path)], fid_tool.FIDToolConfig())
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(SystemExit, match="x.txt: not an image folder or a TTUR .npz"):
        fid_tool.compute([str(tmp_path / "x.txt")], fid_tool.FIDToolConfig())


def test_folder_vs_folder_save_stats(tmp_path, fid_weight_arrays, monkeypatch):
    """Two tiny folders end to end (no XLA); KID and FID from the same features.

    ``frechet_distance`` itself is tested in tests/evaluation/test_fid.py; here it is
    replaced by a recorder because scipy's sqrtm of a rank-2 2048x2048 product takes ~100 s.
    """
    from PIL import Image

    calls = []

    def fake_distance(mu1, s1, mu2, s2):
        calls.append((mu1, s1, mu2, s2))
        return 123.5

    monkeypatch.setattr(fid_lib, "frechet_distance", fake_distance)

    fixtures = os.path.join(os.path.dirname(__file__), "fixtures", "inception")
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "nested").mkdir(parents=True)
    for i in range(2):
        Image.open(os.path.join(fixtures, f"img{i}_64.png")).save(tmp_path / "a" / f"{i}.png")
        Image.open(os.path.join(fixtures, f"img{i + 2}_64.png")).save(tmp_path / "b" / "nested" / f"{i}.png")
    out = io.StringIO()
    config = fid_tool.FIDToolConfig(
        batch_size=2, save_stats=str(tmp_path / "a.npz"), jit_compile=False, kid_subsets=2
    )
    result = fid_tool.compute([str(tmp_path / "a"), str(tmp_path / "b")], config, stream=out)
    feats = np.load(os.path.join(fixtures, "pool3_features.npy")).astype(np.float64)
    np.testing.assert_allclose(result["features"][0], feats[:2], atol=1e-4)
    mu, sigma = fid_lib.load_statistics(str(tmp_path / "a.npz"))
    np.testing.assert_allclose(mu, feats[:2].mean(0), atol=1e-4)
    (mu1, s1, mu2, s2), = calls
    np.testing.assert_allclose(mu2, feats[2:4].mean(0), atol=1e-4)
    np.testing.assert_allclose(s2, np.cov(feats[2:4], rowvar=False), atol=1e-3)
    assert result["fid"] == 123.5
    lines = out.getvalue().strip().splitlines()
    assert lines[-1] == "FID: 123.500000" and lines[-2].startswith("KID: ")


def test_inception_score_skip_and_kid_with_fake_network(tmp_path, monkeypatch):
    """Flag plumbing with a stand-in network: KID from the features, IS skipped with a reason."""
    from PIL import Image

    class FakeExtractor:
        weights_sha256 = "fake"

        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, batch):
            x = np.asarray(batch, np.float64).reshape(len(batch), -1)[:, :4]
            return np.concatenate([x, x ** 2 / 255.0], axis=1)

    monkeypatch.setattr(fid_lib, "FeatureExtractor", FakeExtractor)
    monkeypatch.setattr(fid_lib, "frechet_distance", lambda *a: 1.25)
    rng = np.random.default_rng(0)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / d / f"{i}.png")
    out = io.StringIO()
    config = fid_tool.FIDToolConfig(inception_score=True, kid_subsets=3, kid_subset_size=4, seed=5)
    result = fid_tool.compute([str(tmp_path / "a"), str(tmp_path / "b")], config, stream=out)
    from msmt_tf.evaluation import inception_score, kid

    text = out.getvalue()
    assert inception_score.SKIPPED_MESSAGE in text
    want = kid.kernel_inception_distance(result["features"][0], result["features"][1], 3, 4, seed=5)
    assert result["kid"] == want
    assert text.strip().splitlines()[-1] == "FID: 1.250000"
