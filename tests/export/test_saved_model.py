"""``python -m msmt_tf.export`` and the SavedModel, loaded in a process with only TensorFlow.

One export of the tiny MSMT-GAN run (module fixture, through the CLI) and one subprocess that
loads it without ``msmt_tf``, calls every signature and runs ``saved_model_cli show --all``;
its outputs are compared here with the eager networks of the same run:

* ``generate_float`` (float32 before quantisation) to 1e-4;
* ``generate`` / ``generate_seeded`` (uint8) with ``inference.quantize`` of the eager
  images: equal up to one level, because a float difference of ~1e-6 may cross a truncation
  boundary; the seeded images equal ``sampling.generate`` for the same seed;
* the one inference path: for the same run, captions and seed, ``python -m msmt_tf.sample``'s
  PNG files, the evaluation's generator (``generation.generated_batches`` + ``quantize``) and
  ``generate_seeded`` give the same uint8 images (sample and evaluation bitwise, the
  SavedModel within one level, see the test);
* the invalid-caption contract (``saved_model`` module docstring) on a batch
  [valid, no known word, empty, valid] through every signature: ``valid``, blank rows, and the
  valid rows bitwise equal to a batch of the valid captions alone with the same noise. Bitwise,
  not within one level: the SavedModel gathers the valid rows and runs the same traced graph on
  the same inputs and batch size, so nothing may differ (float or uint8);
* a 5,000-character caption: generated from its first ``words_num`` known words, and the
  remaining error (a wrong noise row count) does not quote it.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from PIL import Image

from msmt_tf import errors, inference, sampling
from msmt_tf.evaluation import generation
from msmt_tf.export import cli as export_cli
from msmt_tf.export import saved_model
from msmt_tf.inference import quantize
from msmt_tf.inference_config import SampleConfig
from msmt_tf.testing.tiny_run import WORDS_NUM

CAPTIONS = ["A small RED bird, with BLUE wings!!", "a zzz bird",
            "this bird has a long tail and a yellow beak"]
TOKEN_CAPTIONS = CAPTIONS + ["naïve café \u0130 bird", "bird\x00red", "zzz qqq", ""]
# [valid, no known word, empty, valid]; VALID_ONLY are its valid rows, REPLACED has valid
# captions in place of the invalid ones.
MIXED = ["a small red bird with blue wings", "zzz qqq, !!", "", "this bird has a long tail"]
VALID_ROWS = [0, 3]
VALID_ONLY = [MIXED[i] for i in VALID_ROWS]
REPLACED = [MIXED[0], "a black bird", "the white beak", MIXED[3]]
LONG = ("the bird has a long yellow tail and zzz wings " * 120)[:5000]
LONG_HEAD = "the bird has a long yellow"  # its first WORDS_NUM (6) known words
SEED = 11

SCRIPT = r'''
import contextlib, io, json, os, sys, time
import numpy as np
import tensorflow as tf

path, inputs, output = sys.argv[1:4]
ready = os.path.join(os.path.dirname(inputs), "ready")
while not os.path.exists(ready):  # the test writes it once the export is done
    time.sleep(0.05)
d = np.load(inputs)
sets = json.loads(d["caption_sets"].item())
caps, toks = sets["captions"], sets["token_captions"]
m = tf.saved_model.load(path)
s = m.signatures
r = {"signatures": json.dumps(sorted(s)),
     "outputs": json.dumps({k: sorted(f.structured_outputs) for k, f in s.items()})}
c3, c1 = tf.constant(caps), tf.constant(caps[:1])
r["float3"] = s["generate_float"](captions=c3, noise=d["noise"], ca_eps=d["eps"])["images"]
r["float1"] = s["generate_float"](captions=c1, noise=d["noise"][:1], ca_eps=d["eps"][:1])["images"]
r["uint3"] = s["generate"](captions=c3, noise=d["noise"])["images"]
r["uint1"] = s["generate"](captions=c1, noise=d["noise"][:1])["images"]
seed = lambda v: tf.constant(v, tf.int64)
r["seeded_a"] = s["generate_seeded"](captions=c3, seed=seed(11))["images"]
r["seeded_b"] = s["generate_seeded"](captions=c3, seed=seed(11))["images"]
r["seeded_c"] = s["generate_seeded"](captions=c3, seed=seed(12))["images"]
r["seeded1"] = s["generate_seeded"](captions=c1, seed=seed(11))["images"]
t = s["tokenize"](captions=tf.constant(toks))
r["tok_ids"], r["tok_len"] = t["ids"], t["length"]
r["tok_unknown"] = json.dumps([[w.decode() for w in row] for row in t["unknown_words"].numpy()])

# The invalid-caption contract: every signature on MIXED, and the references.
mixed, valid = tf.constant(sets["mixed"]), list(d["valid_rows"])
only = tf.constant(sets["valid_only"])
n4, e4 = d["noise4"], d["eps4"]
def put(prefix, out):
    for k, v in out.items():
        v = v.numpy()
        if v.dtype == object:  # unknown_words: strings as JSON (npz keeps no objects)
            v = json.dumps([[w.decode() for w in row] for row in v])
        r[f"{prefix}/{k}"] = v
put("mixed/generate", s["generate"](captions=mixed, noise=n4))
put("mixed/serving_default", s["serving_default"](captions=mixed, noise=n4))
put("mixed/generate_seeded", s["generate_seeded"](captions=mixed, seed=seed(d["seed"])))
put("mixed/generate_float", s["generate_float"](captions=mixed, noise=n4, ca_eps=e4))
put("mixed/tokenize", s["tokenize"](captions=mixed))
put("only/generate", s["generate"](captions=only, noise=n4[valid]))
put("only/generate_float", s["generate_float"](captions=only, noise=n4[valid], ca_eps=e4[valid]))
put("only/generate_seeded", s["generate_seeded"](captions=only, seed=seed(d["seed"])))
put("replaced/generate_seeded",
    s["generate_seeded"](captions=tf.constant(sets["replaced"]), seed=seed(d["seed"])))
# generate_seeded's rule written out here: row r draws stateless_normal([Z + C], [seed, r]).
draws = np.stack([tf.random.stateless_normal([n4.shape[1] + e4.shape[1]], seed=[int(d["seed"]), i])
                  for i in range(len(sets["mixed"]))])
z, e = draws[:, : n4.shape[1]], draws[:, n4.shape[1]:]
x = s["generate_float"](captions=only, noise=z[valid], ca_eps=e[valid])["images"]
r["only/seeded_by_float"] = tf.cast(tf.clip_by_value((x + 1.0) * 127.5, 0.0, 255.0), tf.uint8)
put("invalid/generate_seeded",
    s["generate_seeded"](captions=tf.constant(["", "zzz"]), seed=seed(d["seed"])))
long_caps = tf.constant([sets["long"], sets["long_head"]])
put("long/generate", s["generate"](captions=long_caps, noise=np.repeat(n4[:1], 2, axis=0)))
put("long/tokenize", s["tokenize"](captions=long_caps))
try:
    s["generate"](captions=tf.constant([sets["long"], "a bird"]), noise=n4[:1])
    r["long_error"] = ""
except tf.errors.InvalidArgumentError as err:
    r["long_error"] = str(err)

r["msmt_tf_imported"] = "msmt_tf" in sys.modules
from tensorflow.python.tools import saved_model_cli
sys.argv = ["saved_model_cli", "show", "--dir", path, "--all"]
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    try:
        saved_model_cli.main()
    except SystemExit:
        pass
r["cli"] = buf.getvalue()
np.savez(output, **{k: np.asarray(v) for k, v in r.items()})
'''


def _export(run_dir, loaded, out):
    """``python -m msmt_tf.export --run_dir=... --out=...`` (main, in process, reusing the
    loaded run)."""
    calls = []

    def load(run_dir=None, checkpoint=None, which="latest"):
        calls.append((run_dir, checkpoint, which))
        return loaded

    fv = flags.FlagValues()
    export_cli.define_flags(fv)
    fv(["export", f"--run_dir={run_dir}", f"--out={out}"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inference, "load_for_inference", load)
        export_cli.main(["export"], fv)
    assert calls == [(run_dir, None, "latest")]


@pytest.fixture(scope="module")
def served(tiny_run, tiny_inference, tmp_path_factory):
    """Exports the tiny run, then computes the outputs of every signature in a Python process
    that imports only TensorFlow. The process starts first and waits for the export, so its
    TensorFlow import overlaps with the export. Returns ``(model dir, inputs, outputs)``."""
    work = tmp_path_factory.mktemp("served")
    model = str(work / "model")
    rng = np.random.default_rng(0)
    inputs = {"noise": rng.standard_normal((3, 8)).astype("float32"),
              "eps": rng.standard_normal((3, 6)).astype("float32"),
              "noise4": rng.standard_normal((4, 8)).astype("float32"),
              "eps4": rng.standard_normal((4, 6)).astype("float32"),
              "seed": SEED, "valid_rows": np.asarray(VALID_ROWS),
              "caption_sets": json.dumps({
                  "captions": CAPTIONS, "token_captions": TOKEN_CAPTIONS, "mixed": MIXED,
                  "valid_only": VALID_ONLY, "replaced": REPLACED, "long": LONG,
                  "long_head": LONG_HEAD})}
    np.savez(work / "inputs.npz", **inputs)
    (work / "script.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.Popen(
        [sys.executable, str(work / "script.py"), model, str(work / "inputs.npz"),
         str(work / "out.npz")], cwd=str(work), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        _export(tiny_run.run_dir, tiny_inference, model)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    (work / "ready").write_text("ok")
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    with np.load(work / "out.npz") as f:
        out = {k: f[k] for k in f.files}
    return model, inputs, out


def _eager(inference, captions, noise, eps):
    enc = sampling.encode_captions(inference.vocab, captions, WORDS_NUM)
    words, sentence = inference.text_encoder(enc.ids, training=False)
    out = inference.generator({"noise": noise, "sentence": sentence, "words": words,
                               "mask": enc.ids != 0, "ca_eps": eps}, training=False)
    return np.asarray(out["images"][-1], np.float32)


def _assert_uint8_close(got, float_images):
    expected = quantize(float_images)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_loads_without_msmt_tf_and_lists_the_signatures(served):
    exported, _, out = served
    assert not out["msmt_tf_imported"]
    assert json.loads(out["signatures"].item()) == [
        "generate", "generate_float", "generate_seeded", "serving_default", "tokenize"]
    cli = out["cli"].item()
    for name in ("generate", "generate_seeded", "generate_float", "tokenize", "serving_default"):
        assert f"signature_def['{name}']" in cli
    assert "inputs['noise'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 8)" in cli
    assert "inputs['seed'] tensor_info:\n        dtype: DT_INT64\n        shape: ()" in cli
    assert ("outputs['images'] tensor_info:\n        dtype: DT_UINT8\n"
            "        shape: (-1, 16, 16, 3)") in cli
    assert ("outputs['images'] tensor_info:\n        dtype: DT_FLOAT\n"
            "        shape: (-1, 16, 16, 3)") in cli
    assert cli.count("outputs['valid'] tensor_info:\n        dtype: DT_BOOL\n"
                     "        shape: (-1)") == 5  # every signature, serving_default included
    assert cli.count("outputs['known_words'] tensor_info:\n        dtype: DT_INT32") == 5
    with open(os.path.join(exported, saved_model.INFO_FILE)) as f:
        info = json.load(f)
    assert (info["z_dim"], info["condition_dim"], info["image_size"], info["words_num"]) == (
        8, 6, 16, WORDS_NUM)
    assert info["preset"] == "msmt" and info["generator"] == "EMA weights"
    assert info["outputs"]["generate_seeded"] == ["images", "valid", "length", "known_words"]
    expected = {k: sorted(v) for k, v in info["outputs"].items()}
    expected["serving_default"] = expected["generate"]
    assert json.loads(out["outputs"].item()) == expected
    assert expected["tokenize"] == ["ids", "known_words", "length", "unknown_words", "valid"]


def test_reproduces_the_eager_generator(tiny_inference, served):
    _, inputs, out = served
    noise, eps = inputs["noise"], inputs["eps"]
    expected = _eager(tiny_inference, CAPTIONS, noise, eps)
    assert out["float3"].shape == (3, 16, 16, 3)
    np.testing.assert_allclose(out["float3"], expected, atol=1e-4)
    np.testing.assert_allclose(out["float1"], expected[:1], atol=1e-4)
    # generate: the CA noise is 0 (the condition is the CA mean).
    zero = _eager(tiny_inference, CAPTIONS, noise, np.zeros_like(eps))
    assert np.abs(zero - expected).max() > 1e-2  # the CA noise matters, so this checks it is 0
    _assert_uint8_close(out["uint3"], zero)
    _assert_uint8_close(out["uint1"], zero[:1])


def test_generate_seeded_is_deterministic_and_equals_sampling(tiny_inference, served):
    _, _, out = served
    np.testing.assert_array_equal(out["seeded_a"], out["seeded_b"])
    assert np.abs(out["seeded_a"].astype(int) - out["seeded_c"].astype(int)).max() > 2
    np.testing.assert_array_equal(out["seeded1"], out["seeded_a"][:1])  # rows are independent
    s = sampling.generate(tiny_inference, CAPTIONS, num_per_caption=1, seed=11)
    _assert_uint8_close(out["seeded_a"], s.final)


def test_sample_evaluation_and_generate_seeded_draw_the_same_images(tiny_run, tiny_inference,
                                                                    served, tmp_path):
    """One inference path: same run, captions (caption i at position i) and seed -> the same
    uint8 images from ``python -m msmt_tf.sample`` (its PNG files), the evaluation's generator
    and the SavedModel's ``generate_seeded``.

    Sample and evaluation run the same traced forward pass on the same inputs here (same batch
    size), so they must agree bitwise. The SavedModel runs that forward pass inside another
    graph (tokenizer, gather of the valid rows, ``tf.cond``), which TensorFlow's graph
    optimiser may rewrite differently: a float difference of ~1e-6 can move a value across a
    truncation boundary, one uint8 level, so ``generate_seeded`` is allowed one level on a
    few pixels (under 1% of them) and nothing more.
    """
    _, _, out = served
    cfg = SampleConfig(run_dir=tiny_run.run_dir, text=tuple(CAPTIONS), num_per_caption=1,
                       seed=SEED, out=str(tmp_path / "samples"), batch_size=len(CAPTIONS))
    sampling.sample_run(cfg, load=lambda **kwargs: tiny_inference)
    sampled = np.stack([np.asarray(Image.open(tmp_path / "samples" / sampling.image_name(i, 0)))
                        for i in range(len(CAPTIONS))])
    ids = sampling.encode_captions(tiny_inference.vocab, CAPTIONS, WORDS_NUM).ids
    evaluated = np.concatenate([
        quantize(images) for images, _, _ in generation.generated_batches(
            tiny_inference.generator, tiny_inference.text_encoder, ids, len(CAPTIONS), SEED)])
    assert sampled.shape == evaluated.shape == (3, 16, 16, 3) and sampled.dtype == np.uint8
    np.testing.assert_array_equal(sampled, evaluated)
    seeded = out["seeded_a"]  # generate_seeded(CAPTIONS, SEED) in a TensorFlow-only process
    diff = np.abs(seeded.astype(int) - evaluated.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # Not a trivial agreement: other captions and another seed give other images.
    assert np.abs(evaluated[0].astype(int) - evaluated[2].astype(int)).max() > 2
    assert np.abs(out["seeded_c"].astype(int) - evaluated.astype(int)).max() > 2


def test_tokenize_signature_equals_the_python_tokenizer(tiny_inference, served):
    _, _, out = served
    vocab = tiny_inference.vocab
    for i, caption in enumerate(TOKEN_CAPTIONS):
        ids, unknown = vocab.encode(caption)
        expected = np.zeros(WORDS_NUM, np.int32)
        expected[: min(len(ids), WORDS_NUM)] = ids[:WORDS_NUM]
        np.testing.assert_array_equal(out["tok_ids"][i], expected, err_msg=repr(caption))
        assert out["tok_len"][i] == min(len(ids), WORDS_NUM)
        assert [w for w in json.loads(out["tok_unknown"].item())[i] if w] == unknown


ENDPOINTS = ("generate", "serving_default", "generate_seeded", "generate_float", "tokenize")


def test_every_signature_reports_the_invalid_captions(served):
    _, _, out = served
    for name in ENDPOINTS:
        assert out[f"mixed/{name}/valid"].tolist() == [True, False, False, True], name
        # "a small red bird with blue wings": 7 known words, 6 kept; the long-tail one: 6.
        assert out[f"mixed/{name}/known_words"].tolist() == [7, 0, 0, 6], name
        assert out[f"mixed/{name}/length"].tolist() == [WORDS_NUM, 0, 0, 6], name
    assert not out["mixed/tokenize/ids"][[1, 2]].any()
    unknown = json.loads(out["mixed/tokenize/unknown_words"].item())
    assert [[w for w in row if w] for row in unknown] == [[], ["zzz", "qqq"], [], []]


def test_invalid_rows_are_blank_and_valid_rows_equal_a_batch_without_them(served):
    _, _, out = served
    blank = {"generate": saved_model.BLANK_UINT8, "serving_default": saved_model.BLANK_UINT8,
             "generate_seeded": saved_model.BLANK_UINT8,
             "generate_float": saved_model.BLANK_FLOAT}
    for name, value in blank.items():
        images = out[f"mixed/{name}/images"]
        assert images.shape == (4, 16, 16, 3), name
        assert images.dtype == (np.float32 if name == "generate_float" else np.uint8), name
        assert (images[[1, 2]] == value).all(), name
        assert not (images[VALID_ROWS] == value).all(axis=(1, 2, 3)).any(), name  # not blank
    # The blank float image quantises to the blank uint8 image.
    assert quantize(np.full((1, 1, 1, 3), saved_model.BLANK_FLOAT, np.float32)).max() == 0
    # Same captions, same noise rows, without the invalid rows: bitwise equal.
    for name in ("generate", "generate_float"):
        np.testing.assert_array_equal(out[f"mixed/{name}/images"][VALID_ROWS],
                                      out[f"only/{name}/images"], err_msg=name)
    np.testing.assert_array_equal(out["mixed/serving_default/images"],
                                  out["mixed/generate/images"])
    # generate_seeded: row r keeps the noise of seed [SEED, r] (r counts the invalid rows).
    seeded = out["mixed/generate_seeded/images"]
    np.testing.assert_array_equal(seeded[VALID_ROWS], out["only/seeded_by_float"])
    np.testing.assert_array_equal(seeded[0], out["only/generate_seeded/images"][0])
    # ... so the invalid captions change no other row: valid captions in their place neither.
    replaced = out["replaced/generate_seeded/images"]
    np.testing.assert_array_equal(seeded[VALID_ROWS], replaced[VALID_ROWS])
    assert not (replaced[[1, 2]] == saved_model.BLANK_UINT8).all(axis=(1, 2, 3)).any()
    # Row 3 draws seed [SEED, 3], not [SEED, 1] as the second row of VALID_ONLY does.
    assert np.abs(seeded[3].astype(int)
                  - out["only/generate_seeded/images"][1].astype(int)).max() > 2


def test_a_batch_of_invalid_captions_is_blank(served):
    _, _, out = served
    assert out["invalid/generate_seeded/valid"].tolist() == [False, False]
    images = out["invalid/generate_seeded/images"]
    assert images.shape == (2, 16, 16, 3) and (images == saved_model.BLANK_UINT8).all()


def test_a_long_caption_is_cut_to_words_num_and_never_quoted(served):
    _, _, out = served
    assert len(LONG) == 5000
    assert out["long/tokenize/known_words"][0] > 600  # 9 known words per 46 characters
    assert out["long/tokenize/length"].tolist() == [WORDS_NUM, WORDS_NUM]
    np.testing.assert_array_equal(out["long/tokenize/ids"][0], out["long/tokenize/ids"][1])
    assert out["long/generate/valid"].tolist() == [True, True]
    images = out["long/generate/images"]  # same noise row: the image of its first 6 words
    np.testing.assert_array_equal(images[0], images[1])
    error = out["long_error"].item()
    assert "noise needs one row per caption" in error
    assert "yellow tail" not in error and "the bird has" not in error
def test_export_errors(tiny_run, tiny_inference, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(saved_model.ExportError, match="exists and is not empty.*--overwrite"):
        saved_model.export_saved_model(tiny_inference, str(tmp_path / "taken"))
    fv = flags.FlagValues()
    export_cli.define_flags(fv)
    fv(["export", f"--run_dir={tiny_run.run_dir}"])
    # A user error (printed as one "Error:" line by msmt_tf.cli.entry).
    with pytest.raises(errors.UserError, match="^give --out=DIR"):
        export_cli.main(["export"], fv)
