"""``python -m msmt_tf.fid`` / ``tools/fid.py``: paths, flags, output format."""

import io
import os

import numpy as np
import pytest
from absl import flags

from msmt_tf import configlib, errors
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
    with pytest.raises(fid_lib.FIDError,
                       match="nothing: no such file or directory .expected an image"):
        fid_tool.compute([str(tmp_path / "nothing"), str(tmp_path)], fid_tool.FIDToolConfig())
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(
        fid_lib.FIDError,
        match=r"x.txt: not an image folder, a TTUR .npz statistics file, a run directory "
        r"\(with config.json\) or a checkpoint prefix",
    ):
        fid_tool.compute([str(tmp_path / "x.txt")], fid_tool.FIDToolConfig())
    # A checkpoint prefix whose .index does not exist is a missing path, not a folder.
    with pytest.raises(fid_lib.FIDError, match="ckpt-99: no such file or directory"):
        fid_tool.compute([str(tmp_path / "checkpoints" / "ckpt-99")], fid_tool.FIDToolConfig())


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


# --------------------------------------------------------------------------- generator paths
# A real run directory (config.json, DAMSM encoders, EMA checkpoint) of a tiny 8 -> 16 px
# MSMT-GAN with a 6-image shapes dataset (``msmt_tf.testing.tiny_run``), read through the real
# ``load_for_inference``; the real FID Inception (merged + folded, no XLA: the default) on
# 20 generated images. ``frechet_distance`` of full 2048-d rank-deficient covariances takes
# ~100 s here, so it is replaced by the real function on the first 32 feature dimensions:
# still a number that changes with every feature of every image.
N_GEN, GEN_BATCH, SMALL_D = 20, 10, 32


@pytest.fixture(scope="module")
def run_with_data(tmp_path_factory):
    from msmt_tf.testing.tiny_run import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("fid_run"), with_data=True)


@pytest.fixture(scope="module")
def extractor():
    return fid_lib.FeatureExtractor()


@pytest.fixture(scope="module")
def _loaded_runs():
    return {}


@pytest.fixture(autouse=True)
def cached_load(monkeypatch, _loaded_runs):
    """The real ``load_for_inference``, run once per argument set in this module (each load
    builds the DAMSM image encoder's Inception trunk)."""
    from msmt_tf import inference

    real = inference.load_for_inference

    def load(**kwargs):
        key = tuple(sorted(kwargs.items()))
        if key not in _loaded_runs:
            _loaded_runs[key] = real(**kwargs)
        return _loaded_runs[key]

    monkeypatch.setattr(inference, "load_for_inference", load)


@pytest.fixture
def small_fid(monkeypatch, extractor):
    """Shared extractor (built once) and the 32-d Fréchet distance (see above)."""
    real = fid_lib.frechet_distance
    monkeypatch.setattr(fid_lib, "FeatureExtractor", lambda *a, **k: extractor)
    monkeypatch.setattr(
        fid_lib, "frechet_distance",
        lambda m1, s1, m2, s2: real(m1[:SMALL_D], s1[:SMALL_D, :SMALL_D], m2[:SMALL_D],
                                    s2[:SMALL_D, :SMALL_D]),
    )


def _reference_npz(tmp_path):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(2048, 40)) * 0.3
    path = str(tmp_path / "ref.npz")
    fid_lib.save_statistics(path, rng.normal(0.3, 0.2, 2048), a @ a.T + 0.01 * np.eye(2048))
    return path


def test_path_kinds(run_with_data, tmp_path):
    run = run_with_data
    grids = os.path.join(run.run_dir, "grids")
    os.makedirs(grids, exist_ok=True)
    from PIL import Image

    Image.new("RGB", (4, 4)).save(os.path.join(grids, "samples.png"))
    assert fid_tool._kind(run.run_dir) == "generator"  # PNG grids inside: config.json wins
    assert fid_tool._kind(run.checkpoint) == "generator"
    assert fid_tool._kind(run.checkpoint + ".index") == "generator"
    assert fid_tool._kind(os.path.join(run.run_dir, "checkpoints")) == "generator"
    assert fid_tool._kind(grids) == "folder"
    assert fid_tool._kind(_reference_npz(tmp_path)) == "stats"


def test_checkpoint_route_equals_png_folder_route(run_with_data, tmp_path, small_fid):
    """Generated in memory == the same images saved as PNG by DM-GAN's rule, then read back."""
    import tensorflow as tf
    from PIL import Image

    from msmt_tf import inference
    from msmt_tf.data import load_split
    from msmt_tf.evaluation import generation
    from msmt_tf.inference import load_for_inference

    ref = _reference_npz(tmp_path)
    config = fid_tool.FIDToolConfig(num_images=N_GEN, batch_size=GEN_BATCH, kid=False,
                                    save_stats=str(tmp_path / "gen.npz"))
    out = io.StringIO()
    mem = fid_tool.compute([run_with_data.run_dir, ref], config, stream=out)
    assert mem["sources"][0]["num_images"] == N_GEN
    assert mem["sources"][0]["checkpoint"] == run_with_data.checkpoint

    # The PNG route, written here from the documented protocol: image i uses test image
    # i mod 6 and a caption drawn from stream [seed, 1]; [z | ca_eps] of image i is
    # stateless_normal([Z + C], seed=[seed, i]); the EMA generator in inference mode; uint8 by
    # truncation as DM-GAN saves its PNGs.
    loaded = load_for_inference(run_dir=run_with_data.run_dir)
    split = load_split(loaded.configs.data, "test")
    cpi, words_num = split.captions_per_image, loaded.configs.data.words_num
    g = loaded.generator
    pick = np.random.default_rng([100, 1]).integers(0, cpi, N_GEN)
    draws = np.stack([tf.random.stateless_normal([g.z_dim + g.condition_dim], seed=[100, i])
                      for i in range(N_GEN)])
    z, eps = draws[:, : g.z_dim], draws[:, g.z_dim :]
    forward = tf.function(lambda inputs: g(inputs, training=False)["images"][-1])
    folder = tmp_path / "png"
    folder.mkdir()
    for start in range(0, N_GEN, GEN_BATCH):
        idx = np.arange(start, start + GEN_BATCH)
        tok = np.zeros((GEN_BATCH, words_num), np.int32)
        for row, i in enumerate(idx):
            ids = split.captions[(i % len(split)) * cpi + pick[i]][:words_num]
            tok[row, : len(ids)] = ids
        words, sentence = loaded.text_encoder(tok, training=False)
        fake = np.asarray(forward({"noise": z[idx], "sentence": np.asarray(sentence),
                                   "words": np.asarray(words), "mask": tok != 0,
                                   "ca_eps": eps[idx]}))
        assert fake.shape == (GEN_BATCH, 16, 16, 3)
        for row, i in enumerate(idx):
            Image.fromarray(((fake[row] + 1.0) * 127.5).astype(np.uint8)).save(folder / f"{i:03d}.png")
    png = fid_tool.compute([str(folder), ref], config.replace(save_stats=None), stream=io.StringIO())

    np.testing.assert_array_equal(mem["features"][0], png["features"][0])
    assert mem["fid"] == pytest.approx(png["fid"], rel=1e-6)
    assert out.getvalue().strip().splitlines()[-1] == f"FID: {png['fid']:.6f}"
    mu, _ = fid_lib.load_statistics(str(tmp_path / "gen.npz"))
    np.testing.assert_allclose(mu, png["features"][0].mean(0), rtol=1e-12)
    # The shared generation path (what python -m msmt_tf.evaluate scores with the same seed
    # and count) gives exactly the images of the PNG files.
    _, _, tokens = generation.split_captions(split, N_GEN, 100, words_num)
    again = np.concatenate([inference.quantize(x) for x, _, _ in generation.generated_batches(
        g, loaded.text_encoder, tokens, GEN_BATCH, 100)])
    read = np.stack([np.asarray(Image.open(folder / f"{i:03d}.png")) for i in range(N_GEN)])
    np.testing.assert_array_equal(again, read)


class _CountingExtractor:
    """Cheap stand-in: 6 statistics of each uint8 image; records every batch."""

    weights_sha256 = "fake"

    def __init__(self):
        self.batches = []

    def __call__(self, batch):
        self.batches.append(np.asarray(batch))
        x = np.asarray(batch, np.float64) / 255.0
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)


def test_caption_file_source(run_with_data, tmp_path, monkeypatch):
    """Image i uses non-blank line i mod 3, tokenised with the run's vocabulary; KID too."""
    from msmt_tf.data import load_split
    from msmt_tf.evaluation import generation

    split = load_split(run_with_data.configs.data, "test")
    vocab = split.vocab  # = the run's DAMSM vocabulary (checked by the tool)
    caps = [vocab.decode(split.captions[0]).upper(), vocab.decode(split.captions[11]) + ", zzz!",
            vocab.decode(split.captions[23])]
    path = tmp_path / "captions.txt"
    path.write_text(f"{caps[0]}\n\n{caps[1]}\n{caps[2]}\n")
    seen = []
    real = generation.generated_batches

    def spy(generator, text_encoder, tokens, batch_size, seed):
        seen.append((np.array(tokens), batch_size, seed))
        return real(generator, text_encoder, tokens, batch_size, seed)

    monkeypatch.setattr(generation, "generated_batches", spy)
    fake = _CountingExtractor()
    monkeypatch.setattr(fid_lib, "FeatureExtractor", lambda *a, **k: fake)
    monkeypatch.setattr(fid_lib, "frechet_distance", lambda *a: 2.5)
    config = fid_tool.FIDToolConfig(captions=str(path), num_images=7, batch_size=3, seed=9,
                                    quantize="round", kid_subsets=2, kid_subset_size=3)
    out = io.StringIO()
    result = fid_tool.compute([run_with_data.run_dir, run_with_data.checkpoint], config, stream=out)

    words_num = run_with_data.configs.data.words_num
    want = np.zeros((3, words_num), np.int32)
    for row, caption in enumerate(caps):
        ids = vocab.encode(caption)[0][:words_num]
        want[row, : len(ids)] = ids
    assert len(seen) == 2
    tokens, batch, seed = seen[0]
    np.testing.assert_array_equal(tokens, want[np.arange(7) % 3])
    assert (batch, seed) == (3, 9)
    assert [len(b) for b in fake.batches] == [3, 3, 1, 3, 3, 1]
    assert fake.batches[0].dtype == np.uint8 and fake.batches[0].shape[1:] == (16, 16, 3)
    # Same source and seed: the run directory and its checkpoint prefix give the same images.
    np.testing.assert_array_equal(result["features"][0], result["features"][1])
    assert result["sources"][0]["captions"] == f"3 captions of {path}"
    text = out.getvalue().strip().splitlines()
    assert text[-2].startswith("KID: ") and text[-1] == "FID: 2.500000"


def test_generator_source_errors(run_with_data, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(fid_lib, "FeatureExtractor", lambda *a, **k: _CountingExtractor())
    run = run_with_data.run_dir
    bad = tmp_path / "bad.txt"
    bad.write_text("a red circle\n\nzzz qqq!\n")
    with pytest.raises(fid_lib.FIDError, match=r"bad.txt, line 3: 'zzz qqq!' has no word of the "
                                               r"run's .*unknown words: zzz, qqq"):
        fid_tool.compute([run], fid_tool.FIDToolConfig(captions=str(bad), save_stats="x.npz"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(fid_lib.FIDError, match="empty.txt: no caption in it"):
        fid_tool.compute([run], fid_tool.FIDToolConfig(captions=str(empty)))
    with pytest.raises(fid_lib.FIDError,
                       match="--captions=valid: not 'test', 'train' or an existing caption file"):
        fid_tool.compute([run], fid_tool.FIDToolConfig(captions="valid"))
    # --data_dir with other captions (one edited word, pickle rebuilt): the run's encoders do
    # not fit that vocabulary.
    other = tmp_path / "other"
    shutil.copytree(run_with_data.configs.data.data_dir, other)
    os.remove(other / "captions.pickle")
    text_file = sorted((other / "text").rglob("*.txt"))[0]
    text_file.write_text("zebra " + text_file.read_text())
    with pytest.raises(fid_lib.FIDError, match="vocabulary .* differs from the dataset's"):
        fid_tool.compute([run], fid_tool.FIDToolConfig(data_dir=str(other), num_images=4))


def test_cli_errors_are_one_line(run_with_data, tmp_path, monkeypatch):
    """``main`` raises user errors (``msmt_tf.cli.entry`` prints them as one ``Error:`` line)."""
    import shutil

    bad = tmp_path / "bad.txt"
    bad.write_text("qqq\n")
    monkeypatch.setattr(fid_lib, "FeatureExtractor", lambda *a, **k: _CountingExtractor())
    monkeypatch.setattr(flagutil, "from_flags", lambda cls: cls(captions=str(bad)))
    run = run_with_data.run_dir
    with pytest.raises(errors.UserError, match=r"^--captions=.*bad.txt, line 1: 'qqq'"):
        fid_tool.main(["prog", run, run])
    fresh = tmp_path / "fresh_run"
    fresh.mkdir()
    shutil.copy(os.path.join(run, "config.json"), fresh / "config.json")
    with pytest.raises(errors.UserError, match=r"^--run_dir=.*fresh_run has no checkpoint yet"):
        fid_tool.main(["prog", str(fresh), run])
