"""``python -m msmt_tf.export`` and the SavedModel, loaded in a process with only TensorFlow.

One export of the tiny MSMT-GAN run (module fixture, through the CLI) and one subprocess that
loads it without ``msmt_tf``, calls every signature and runs ``saved_model_cli show --all``;
its outputs are compared here with the eager networks of the same run:

* ``generate_float`` (float32 before quantisation) to 1e-4;
* ``generate`` / ``generate_seeded`` (uint8) with the evaluation's quantisation of the eager
  images: equal up to one level, because a float difference of ~1e-6 may cross a truncation
  boundary; the seeded images equal ``sampling.generate`` for the same seed.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from msmt_tf import sampling
from msmt_tf.evaluation.evaluator import quantize
from msmt_tf.export import cli as export_cli
from msmt_tf.export import saved_model
from msmt_tf.testing.tiny_run import WORDS_NUM

CAPTIONS = ["A small RED bird, with BLUE wings!!", "a zzz bird",
            "this bird has a long tail and a yellow beak"]
TOKEN_CAPTIONS = CAPTIONS + ["naïve café \u0130 bird", "bird\x00red", "zzz qqq", ""]

SCRIPT = r'''
import contextlib, io, json, os, sys, time
import numpy as np
import tensorflow as tf

path, inputs, output = sys.argv[1:4]
ready = os.path.join(os.path.dirname(inputs), "ready")
while not os.path.exists(ready):  # the test writes it once the export is done
    time.sleep(0.05)
d = np.load(inputs)
caps = [c for c in json.loads(d["captions"].item())]
toks = [c for c in json.loads(d["token_captions"].item())]
m = tf.saved_model.load(path)
s = m.signatures
r = {"signatures": json.dumps(sorted(s))}
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
try:
    s["generate_seeded"](captions=tf.constant(["a bird", "zzz qqq"]), seed=seed(1))
    r["error"] = ""
except tf.errors.InvalidArgumentError as e:
    r["error"] = str(e)
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


def _export(run_dir, inference, out):
    """``python -m msmt_tf.export --run_dir=... --out=...`` (main, in process, reusing the
    loaded run)."""
    from msmt_tf.training import restore

    calls = []

    def load(run_dir=None, checkpoint=None, which="latest"):
        calls.append((run_dir, checkpoint, which))
        return inference

    fv = flags.FlagValues()
    export_cli.define_flags(fv)
    fv(["export", f"--run_dir={run_dir}", f"--out={out}"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(restore, "load_for_inference", load)
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
              "captions": json.dumps(CAPTIONS), "token_captions": json.dumps(TOKEN_CAPTIONS)}
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
    with open(os.path.join(exported, saved_model.INFO_FILE)) as f:
        info = json.load(f)
    assert (info["z_dim"], info["condition_dim"], info["image_size"], info["words_num"]) == (
        8, 6, 16, WORDS_NUM)
    assert info["preset"] == "msmt" and info["generator"] == "EMA weights"


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


def test_a_caption_without_known_words_fails_the_call(served):
    _, _, out = served
    assert "no word of the vocabulary" in out["error"].item()
    assert "zzz qqq" in out["error"].item()


def test_export_errors(tiny_run, tiny_inference, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(saved_model.ExportError, match="exists and is not empty.*--overwrite"):
        saved_model.export_saved_model(tiny_inference, str(tmp_path / "taken"))
    fv = flags.FlagValues()
    export_cli.define_flags(fv)
    fv(["export", f"--run_dir={tiny_run.run_dir}"])
    with pytest.raises(SystemExit, match="Error: give --out=DIR"):
        export_cli.main(["export"], fv)
