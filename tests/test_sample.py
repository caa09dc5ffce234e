"""Sampling from captions (``msmt_tf.sampling``) and ``python -m msmt_tf.sample``.

The generator is the tiny MSMT-GAN run of ``msmt_tf.testing.tiny_run`` loaded through the real
``load_for_inference`` (session fixtures in ``tests/conftest.py``).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

from msmt_tf import errors, inference
from msmt_tf import sample as sample_cli
from msmt_tf import sampling
from msmt_tf.data import pipeline
from msmt_tf.data.vocabulary import Vocabulary
from msmt_tf.inference import quantize
from msmt_tf.testing.tiny_run import VOCAB_WORDS, WORDS_NUM
from msmt_tf.training import checkpointing

VOCAB = Vocabulary(dict(enumerate(VOCAB_WORDS)))


def _pipeline_ids(caption, words_num=WORDS_NUM):
    """The ids the evaluation pipeline feeds for a caption (choose_caption, training=False)."""
    ids, _ = VOCAB.encode(caption)
    cap, n = pipeline.choose_caption(tf.constant(ids, tf.int32), tf.constant([len(ids)]),
                                     words_num, False, tf.constant(0, tf.int64))
    return cap.numpy(), int(n)


# ---------------------------------------------------------------------- captions
def test_encoding_follows_the_pipeline_and_lists_unknown_words():
    captions = ["This bird has a RED, long tail!", "a zzz bird with qqq wings",
                "a small red bird with blue wings and a long tail"]  # 11 known > words_num
    enc = sampling.encode_captions(VOCAB, captions, WORDS_NUM, unknown="drop")
    for i, c in enumerate(captions):
        ids, n = _pipeline_ids(c)
        np.testing.assert_array_equal(enc.ids[i], ids)
        assert enc.lengths[i] == n
    assert enc.unknown == [[], ["zzz", "qqq"], []]
    assert enc.words[0] == ["this", "bird", "has", "a", "red", "long"]
    assert enc.truncated[0] == ["tail"]
    assert enc.truncated[2] == ["wings", "and", "a", "long", "tail"]


def test_unknown_error_policy_and_captions_without_known_words():
    with pytest.raises(sampling.SamplingError, match=r"caption 1 'a zzz bird'.*zzz.*unknown=error"):
        sampling.encode_captions(VOCAB, ["a bird", "a zzz bird"], WORDS_NUM, unknown="error")
    for policy in ("drop", "error"):
        with pytest.raises(sampling.SamplingError,
                           match=r"caption 1 'Zzz, QQQ!' has no word of the vocabulary.*zzz, qqq"):
            sampling.encode_captions(VOCAB, ["a bird", "Zzz, QQQ!"], WORDS_NUM, unknown=policy)
    with pytest.raises(sampling.SamplingError, match=r"caption 0 '\?\?\?'.*no word token"):
        sampling.encode_captions(VOCAB, ["???"], WORDS_NUM)
    with pytest.raises(sampling.SamplingError, match="no caption"):
        sampling.encode_captions(VOCAB, [], WORDS_NUM)


def test_seeded_noise_is_one_stateless_draw_per_caption_and_sample():
    z, eps = inference.seeded_noise(7, [0, 1, 2, 3, 4], z_dim=8, condition_dim=6)
    assert z.shape == (5, 8) and eps.shape == (5, 6)
    z2, eps2 = inference.seeded_noise(7, [3, 4], z_dim=8, condition_dim=6)
    np.testing.assert_array_equal(z[3:], z2)  # a row depends on its own index only
    np.testing.assert_array_equal(eps[3:], eps2)
    # The rule written out: [z | ca_eps] = stateless_normal([Z + C], seed=[seed, i + j * 2**32]).
    row = tf.random.stateless_normal([14], seed=tf.constant([7, 4], tf.int64))
    np.testing.assert_array_equal(np.concatenate([z[4], eps[4]]), row)
    zj, ej = inference.seeded_noise(7, [4, 4], [0, 2], z_dim=8, condition_dim=6)
    np.testing.assert_array_equal(zj[0], z[4])  # sample 0 is the caption's default draw
    row = tf.random.stateless_normal([14], seed=tf.constant([7, 4 + 2 * 2**32], tf.int64))
    np.testing.assert_array_equal(np.concatenate([zj[1], ej[1]]), row)
    assert not np.allclose(z, inference.seeded_noise(8, range(5), z_dim=8, condition_dim=6)[0])


# ---------------------------------------------------------------------- generation
def _as_checkpointed(generator, prefix, name, model_cfg):
    """A copy of ``generator`` holding the weights checkpoint ``prefix`` stores under ``name``
    (``read_checkpoint`` first checks that every key and shape matches), by variable key."""
    from msmt_tf.models.param_count import dummy_generator_inputs
    from msmt_tf.training import ema as ema_lib

    copy = ema_lib.clone_model(
        generator, dummy_generator_inputs(model_cfg, batch=1, words_num=WORDS_NUM), training=False)
    checkpointing.read_checkpoint(prefix, {name: copy})
    return dict(checkpointing.layer_variable_keys(copy))


def test_sampling_uses_the_ema_generator_of_the_checkpoint(tiny_run, tiny_inference):
    keys = dict(checkpointing.layer_variable_keys(tiny_inference.generator))
    for name in ("ema_generator", "generator"):
        stored = _as_checkpointed(tiny_inference.generator, tiny_run.checkpoint, name,
                                  tiny_run.configs.model)
        assert sorted(stored) == sorted(keys)
        same = all(np.array_equal(stored[k].numpy(), v.numpy()) for k, v in keys.items())
        assert same == (name == "ema_generator")


def test_generate_is_seeded_and_matches_the_eager_generator(tiny_inference):
    captions = ["a red bird", "a small bird with blue wings zzz"]
    s = sampling.generate(tiny_inference, captions, num_per_caption=2, seed=5, batch_size=3)
    again = sampling.generate(tiny_inference, captions, num_per_caption=2, seed=5, batch_size=16)
    other = sampling.generate(tiny_inference, captions, num_per_caption=2, seed=6)
    assert s.final.shape == (4, 16, 16, 3) and s.stage_indices == [1]
    np.testing.assert_allclose(s.final, again.final, atol=1e-5)  # batch size changes nothing
    assert np.abs(s.final - other.final).max() > 1e-2
    assert s.encoded.unknown == [[], ["zzz"]]
    # Row i * K + j: caption i, the noise of (caption i, sample j), through the eager networks.
    ids = np.repeat(s.encoded.ids, 2, axis=0)
    z, eps = inference.seeded_noise(5, [0, 0, 1, 1], [0, 1, 0, 1], z_dim=8, condition_dim=6)
    words, sentence = tiny_inference.text_encoder(ids, training=False)
    out = tiny_inference.generator({"noise": z, "sentence": sentence, "words": words,
                                    "mask": ids != 0, "ca_eps": eps}, training=False)
    np.testing.assert_allclose(s.final, out["images"][-1], atol=1e-5)
    assert np.abs(s.final[0] - s.final[1]).max() > 1e-2  # two samples of one caption differ
    # More samples per caption keep the earlier ones (sample j of caption i: its own noise).
    three = sampling.generate(tiny_inference, captions, num_per_caption=3, seed=5)
    np.testing.assert_allclose(three.final[[0, 1, 3, 4]], s.final, atol=1e-5)


def test_stages_and_maps(tiny_inference):
    s = sampling.generate(tiny_inference, ["a red bird"], num_per_caption=1, seed=0,
                          stages=True, maps=True)
    assert [x.shape[1] for x in s.images] == [8, 16] and s.stage_indices == [0, 1]
    assert len(s.attention) == 1 and s.attention[0].shape[-1] == WORDS_NUM
    sheet = sampling.attention_sheet(s, 0, s.images)
    assert sheet.dtype == np.uint8 and sheet.shape[1] > 3 * sampling.MIN_TILE  # image + 3 words


# ---------------------------------------------------------------------- the CLI
def _run_cli(args, monkeypatch, loaded=None):
    """Runs ``sample.main`` with private flag values; optionally reuses a loaded run."""
    calls = []
    if loaded is not None:
        def load(run_dir=None, checkpoint=None, which="latest"):
            calls.append((run_dir, checkpoint, which))
            return loaded

        monkeypatch.setattr(inference, "load_for_inference", load)
    fv = flags.FlagValues()
    sample_cli.define_flags(fv)
    fv(["sample", *args])
    sample_cli.main(["sample"], fv)
    return calls


def test_cli_writes_the_expected_files(tiny_run, tiny_inference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    caps = tmp_path / "caps.txt"
    caps.write_text("\n  a small bird, with black wings  \n\n", encoding="utf-8")
    calls = _run_cli([f"--run_dir={tiny_run.run_dir}", "--text=A red bird, zzz!",
                      f"--captions_file={caps}", "--num_per_caption=2", "--seed=4",
                      f"--out={out}", "--stages", "--maps"], monkeypatch, tiny_inference)
    assert calls == [(tiny_run.run_dir, None, "latest")]
    expected = {"contact_sheet.png", "samples.json"}
    for i in range(2):
        for j in range(2):
            stem = f"caption{i:03d}_sample{j:02d}"
            expected |= {f"{stem}.png", f"{stem}_stage0.png", f"{stem}_maps.png"}
    assert set(os.listdir(out)) == expected
    assert Image.open(out / "caption000_sample00.png").size == (16, 16)
    assert Image.open(out / "caption000_sample00_stage0.png").size == (8, 8)
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] >= sampling.MIN_SHEET_WIDTH and sheet.size[1] > 2 * 16
    # The PNGs are the EMA generator's images for this seed, quantised as the evaluation does.
    s = sampling.generate(tiny_inference, ["A red bird, zzz!", "a small bird, with black wings"],
                          num_per_caption=2, seed=4)
    png = np.asarray(Image.open(out / "caption001_sample01.png"))
    assert np.abs(png.astype(int) - quantize(s.final[3]).astype(int)).max() <= 1
    record = json.loads((out / "samples.json").read_text())
    assert [c["text"] for c in record["captions"]] == ["A red bird, zzz!",
                                                      "a small bird, with black wings"]
    assert record["captions"][0]["unknown_dropped"] == ["zzz"]
    assert record["seed"] == 4 and record["checkpoint"] == tiny_inference.checkpoint
    captured = capsys.readouterr()
    assert "unknown words dropped: zzz" in captured.err
    assert "Wrote 4 images" in captured.out


def test_cli_checkpoint_and_default_out(tiny_run, tiny_inference, monkeypatch):
    calls = _run_cli([f"--checkpoint={tiny_run.checkpoint}", "--which=best", "--text=a bird",
                      "--num_per_caption=1"], monkeypatch, tiny_inference)
    assert calls == [(None, tiny_run.checkpoint, "best")]
    samples_dir = os.path.join(tiny_inference.run_dir, "samples")  # default --out
    assert sorted(os.listdir(samples_dir)) == ["caption000_sample00.png", "contact_sheet.png",
                                               "samples.json"]


@pytest.mark.parametrize("args,message", [
    (["--text=a zzz bird", "--unknown=error"], r"^caption 0 'a zzz bird' has words not "
                                                r"in the vocabulary: zzz"),
    (["--text=a bird", "--text=zzz qqq"], r"^caption 1 'zzz qqq' has no word of the "
                                          r"vocabulary \(unknown words: zzz, qqq\)"),
    ([], r"^give at least one --text"),
    (["--captions_file=/nonexistent/caps.txt"], r"^--captions_file=/nonexistent/caps.txt: "
                                                "no such file"),
])
def test_cli_errors(args, message, tiny_run, tiny_inference, monkeypatch):
    """User errors (printed as one ``Error:`` line by ``msmt_tf.cli.entry``)."""
    with pytest.raises(errors.UserError, match=message):
        _run_cli([f"--run_dir={tiny_run.run_dir}", *args], monkeypatch, tiny_inference)


def test_cli_run_dir_errors(tmp_path, monkeypatch):
    with pytest.raises(errors.UserError, match=r"^give --run_dir"):
        _run_cli(["--text=a bird"], monkeypatch)
    with pytest.raises(errors.UserError, match=rf"^--run_dir={tmp_path} has no config.json"):
        _run_cli([f"--run_dir={tmp_path}", "--text=a bird"], monkeypatch)
