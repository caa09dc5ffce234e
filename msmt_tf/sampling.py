"""Images from your own captions: encoding, generation and the PNG files.

The library behind ``python -m msmt_tf.sample``:

* ``encode_captions(vocab, captions, words_num, unknown)``: the training rules
  (``vocabulary.tokenize``, unknown words dropped, the first ``words_num`` ids zero-padded as
  the pipeline's evaluation rule); unknown words are listed per caption; ``unknown="error"``
  rejects them, and a caption with no known word is always an error naming it. Messages show
  at most ``QUOTE_LIMIT`` characters of a caption and ``WORDS_LIMIT`` of a word list
  (``shorten``), so a message stays one short line whatever the caption.
* ``generate(inference, captions, ...)``: the EMA generator and the DAMSM text encoder of a
  run loaded by ``inference.load_for_inference``, through the one inference path
  (``inference.generate_batches``): image ``j`` of caption ``i`` draws
  ``inference.seeded_noise(seed, i, j)``, so it depends neither on the batch size, nor on the
  other captions, nor on ``num_per_caption``; sample 0 of caption ``i`` is the image the
  evaluation and the SavedModel's ``generate_seeded`` draw for caption index ``i`` and the
  same seed.
* ``write_samples(samples, out_dir)``: one PNG per image at the final stage
  (``caption{i:03d}_sample{j:02d}.png``), ``contact_sheet.png`` (a row per caption with the
  caption printed under it), ``samples.json``; optionally the intermediate stages
  (``..._stage{k}.png``) and the attention/addressing maps (``..._maps.png``).
* ``sample_run(cfg)``: all of the above for a ``SampleConfig``.

Images are quantised by ``inference.quantize`` ("truncate": ``uint8((x + 1) * 127.5)``,
DM-GAN's PNG saving), as in the evaluation and the SavedModel.
"""

import dataclasses
import json
import os
from typing import List

import numpy as np

from msmt_tf import errors
from msmt_tf.data import vocabulary as vocab_lib
from msmt_tf.inference import NOISE_RULE, QUANTIZE_RULES, generate_batches, quantize
from msmt_tf.training.logger import wrap_text

SHEET_FILE = "contact_sheet.png"
RECORD_FILE = "samples.json"
MIN_SHEET_WIDTH = 320  # px: room for the caption text under small images
MIN_TILE = 64  # px: attention tiles are enlarged to at least this, so the word fits under it


class SamplingError(errors.UserError, ValueError):
    """Captions or options that cannot be sampled; the message names the caption or option."""


@dataclasses.dataclass
class EncodedCaptions:
    """Captions as the generator's text input.

    Attributes:
        captions: the N caption strings.
        ids: int32 ``[N, words_num]``, zero-padded.
        lengths: int32 ``[N]``, real words kept (at most ``words_num``).
        unknown: per caption, the tokens not in the vocabulary (dropped).
        truncated: per caption, the known words after the first ``words_num`` (dropped).
        words: per caption, the words of ``ids`` (the ones the generator sees).
    """

    captions: List[str]
    ids: np.ndarray
    lengths: np.ndarray
    unknown: List[List[str]]
    truncated: List[List[str]]
    words: List[List[str]]


QUOTE_LIMIT = 64  # characters of a caption a message shows (shorten)
WORDS_LIMIT = 32  # characters of a list of words a message shows


def shorten(text, limit=QUOTE_LIMIT, quote=False):
    """``text`` (its ``repr`` with ``quote``) for a message, at most ``limit`` characters.

    Longer text is cut to its start + ``"... (N characters)"``, N the length of ``text``:
    every message that shows a caption or its words goes through here, so a
    5,000-character caption is never echoed in full.
    """
    text = str(text)
    shown = repr(text) if quote else text
    if len(shown) <= limit:
        return shown
    suffix = f"... ({len(text)} characters)"
    return shown[: max(limit - len(suffix), 1)] + suffix


def _quote(caption):
    return shorten(caption, QUOTE_LIMIT, quote=True)


def _words(words):
    return shorten(", ".join(words), WORDS_LIMIT)


def encode_captions(vocab, captions, words_num, unknown="drop"):
    """Encodes captions with the training rules (see the module docstring).

    Raises:
        SamplingError: no caption; a caption with no known word (always); a caption with an
            unknown word when ``unknown="error"``.
    """
    if unknown not in ("drop", "error"):
        raise SamplingError(f"unknown={unknown!r}: use 'drop' or 'error'.")
    captions = [str(c) for c in captions]
    if not captions:
        raise SamplingError("no caption to sample.")
    ids = np.zeros((len(captions), words_num), np.int32)
    lengths = np.zeros((len(captions),), np.int32)
    unknown_words, truncated, kept_words = [], [], []
    for i, caption in enumerate(captions):
        tokens = vocab_lib.tokenize(caption)
        known, missing = vocab.encode_tokens(tokens)
        if not known:
            reason = f"unknown words: {_words(missing)}" if missing else "it has no word token"
            raise SamplingError(
                f"caption {i} {_quote(caption)} has no word of the vocabulary ({reason}).")
        if missing and unknown == "error":
            raise SamplingError(
                f"caption {i} {_quote(caption)} has words not in the vocabulary: "
                f"{_words(missing)} (--unknown=error; --unknown=drop skips them).")
        kept = known[:words_num]  # the pipeline's evaluation rule: the first words_num ids
        ids[i, : len(kept)] = kept
        lengths[i] = len(kept)
        unknown_words.append(missing)
        truncated.append([vocab.ixtoword[k] for k in known[words_num:]])
        kept_words.append([vocab.ixtoword[k] for k in kept])
    return EncodedCaptions(captions=captions, ids=ids, lengths=lengths, unknown=unknown_words,
                           truncated=truncated, words=kept_words)


@dataclasses.dataclass
class Samples:
    """Generated images. Image ``j`` of caption ``i`` is row ``i * num_per_caption + j``.

    Attributes:
        encoded: the ``EncodedCaptions``.
        num_per_caption: images per caption.
        seed: the noise seed.
        images: list over stages of float32 ``[N * num_per_caption, S_k, S_k, 3]`` in
            [-1, 1], lowest first (only the final stage unless ``stages=True``).
        stage_indices: the stage index of each entry of ``images``.
        attention: list over refinement stages of float32 ``[N * K, s, s, words_num]`` maps
            (empty unless ``maps=True``).
    """

    encoded: EncodedCaptions
    num_per_caption: int
    seed: int
    images: list
    stage_indices: list
    attention: list

    @property
    def final(self):
        return self.images[-1]


def generate(inference, captions, num_per_caption=1, seed=0, unknown="drop", stages=False,
             maps=False, batch_size=16):
    """Generates ``num_per_caption`` images for each caption.

    Args:
        inference: ``inference.Inference`` (``generator`` = the EMA generator as
            ``load_for_inference`` loads it by default, ``text_encoder``, ``vocab``,
            ``configs.data.words_num``).
        captions: list of caption strings.
        num_per_caption: images per caption.
        seed: noise seed (``inference.seeded_noise``): same seed, same images.
        unknown: "drop" or "error" (see ``encode_captions``).
        stages: keep the images of every stage, not only the last.
        maps: keep the attention/addressing maps of the refinement stages.
        batch_size: images per forward pass (the images do not depend on it).

    Returns:
        ``Samples``.
    """
    if num_per_caption < 1:
        raise SamplingError(f"num_per_caption={num_per_caption}: must be >= 1.")
    if batch_size < 1:
        raise SamplingError(f"batch_size={batch_size}: must be >= 1.")
    words_num = int(inference.configs.data.words_num)
    encoded = encode_captions(inference.vocab, captions, words_num, unknown=unknown)
    n, k = len(encoded.captions), int(num_per_caption)
    batches = list(generate_batches(
        inference.text_encoder, inference.generator, np.repeat(encoded.ids, k, axis=0), seed,
        batch_size, caption_index=np.repeat(np.arange(n), k),
        sample_index=np.tile(np.arange(k), n), stages=stages, maps=maps))
    return Samples(
        encoded=encoded, num_per_caption=k, seed=int(seed),
        images=[np.concatenate(x) for x in zip(*(b.images for b in batches))],
        stage_indices=batches[0].stage_indices,
        attention=[np.concatenate(a) for a in zip(*(b.attention for b in batches))])


# ---------------------------------------------------------------------- files
def image_name(caption_index, sample_index, suffix=""):
    return f"caption{caption_index:03d}_sample{sample_index:02d}{suffix}.png"


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _caption_text(samples, i):
    enc = samples.encoded
    text = f"{i}: {enc.captions[i]}"
    if enc.unknown[i]:
        text += f"  [dropped: {' '.join(enc.unknown[i])}]"
    if enc.truncated[i]:
        text += f"  [after word {enc.ids.shape[1]}: {' '.join(enc.truncated[i])}]"
    return text


def contact_sheet(samples, pad=2):
    """uint8 ``[H, W, 3]``: a row of images per caption, the caption wrapped under the row."""
    from PIL import Image, ImageDraw

    images = quantize(samples.final)
    k = samples.num_per_caption
    n = len(samples.encoded.captions)
    size = images.shape[1]
    width = max(pad + k * (size + pad), MIN_SHEET_WIDTH)
    font = _font()
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    asc, desc = font.getmetrics()
    line_h = asc + desc + 1
    texts = [wrap_text(_caption_text(samples, i), font, width - 2 * pad, scratch) for i in range(n)]
    heights = [size + pad + len(t) * line_h + pad for t in texts]
    sheet = Image.new("RGB", (width, pad + sum(heights)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = pad
    for i in range(n):
        for j in range(k):
            sheet.paste(Image.fromarray(images[i * k + j]), (pad + j * (size + pad), y))
        for m, line in enumerate(texts[i]):
            draw.text((pad, y + size + 1 + m * line_h), line, fill=(0, 0, 0), font=font)
        y += heights[i]
    return np.asarray(sheet, np.uint8)


def _resize(image_uint8, size, resample):
    from PIL import Image

    return np.asarray(Image.fromarray(image_uint8).resize((size, size), resample), np.uint8)


def attention_sheet(samples, row, stage_images=None, pad=2):
    """uint8 maps of image ``row``: a line per refinement stage, an image then one tile per
    kept word (that image dimmed where the word's map is low, each map scaled by its maximum
    and resized to the final size), the word written under each tile. The image is the
    stage's own (resized) when ``stage_images`` holds every stage, else the final one."""
    from PIL import Image, ImageDraw

    caption = row // samples.num_per_caption
    enc = samples.encoded
    length = int(enc.lengths[caption])
    words = enc.words[caption]
    size = max(samples.final.shape[1], MIN_TILE)
    final = _resize(quantize(samples.final[row]), size, Image.NEAREST)
    font = _font()
    asc, desc = font.getmetrics()
    line_h = asc + desc + 1
    cell = size + pad
    sheet = Image.new("RGB", (pad + (1 + length) * cell, pad + len(samples.attention)
                              * (size + line_h + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, maps in enumerate(samples.attention):
        y = pad + k * (size + line_h + pad)
        base = final
        if stage_images is not None and k + 1 < len(stage_images):
            base = _resize(quantize(stage_images[k + 1][row]), size, Image.NEAREST)
        sheet.paste(Image.fromarray(base), (pad, y))
        draw.text((pad, y + size + 1), f"stage {k + 1}", fill=(0, 0, 0), font=font)
        a = maps[row][..., :length]
        a = a / np.maximum(a.max(axis=(0, 1), keepdims=True), 1e-8)
        for w in range(length):
            m = np.clip(a[..., w] * 255.0, 0, 255).astype(np.uint8)
            m = _resize(m, size, Image.BILINEAR).astype(np.float32)[..., None] / 255.0
            tile = (base.astype(np.float32) * (0.15 + 0.85 * m)).astype(np.uint8)
            x = pad + (1 + w) * cell
            sheet.paste(Image.fromarray(tile), (x, y))
            label = words[w]
            while len(label) > 1 and draw.textlength(label, font=font) > size:
                label = label[:-1]
            draw.text((x, y + size + 1), label, fill=(0, 0, 0), font=font)
    return np.asarray(sheet, np.uint8)


def _save(array, path):
    from PIL import Image

    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


def write_samples(samples, out_dir, record=None):
    """Writes the PNG files and ``samples.json`` (see the module docstring); returns the
    paths written, the contact sheet last."""
    os.makedirs(out_dir, exist_ok=True)
    k = samples.num_per_caption
    paths = []
    final = quantize(samples.final)
    stage_images = samples.images if len(samples.images) > 1 else None
    for row in range(len(final)):
        i, j = divmod(row, k)
        paths.append(_save(final[row], os.path.join(out_dir, image_name(i, j))))
        if stage_images is not None:
            for s, images in zip(samples.stage_indices[:-1], samples.images[:-1]):
                paths.append(_save(quantize(images[row]),
                                   os.path.join(out_dir, image_name(i, j, f"_stage{s}"))))
        if samples.attention:
            paths.append(_save(attention_sheet(samples, row, stage_images),
                               os.path.join(out_dir, image_name(i, j, "_maps"))))
    enc = samples.encoded
    info = dict(record or {})
    info.update({
        "seed": samples.seed,
        "num_per_caption": k,
        "image_size": int(final.shape[1]),
        "noise": NOISE_RULE,
        "quantize": QUANTIZE_RULES["truncate"],
        "captions": [
            {"index": i, "text": enc.captions[i], "ids": [int(v) for v in enc.ids[i] if v],
             "unknown_dropped": enc.unknown[i], "truncated": enc.truncated[i],
             "files": [image_name(i, j) for j in range(k)]}
            for i in range(len(enc.captions))],
    })
    with open(os.path.join(out_dir, RECORD_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, ensure_ascii=False)
    paths.append(_save(contact_sheet(samples), os.path.join(out_dir, SHEET_FILE)))
    return paths


# ---------------------------------------------------------------------- entry
def read_captions(cfg):
    """``--text`` captions, then the non-blank lines of ``--captions_file``."""
    captions = [t for t in cfg.text]
    if cfg.captions_file:
        if not os.path.isfile(cfg.captions_file):
            raise SamplingError(f"--captions_file={cfg.captions_file}: no such file.")
        with open(cfg.captions_file, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise SamplingError(f"--captions_file={cfg.captions_file}: no caption in it "
                                "(one caption per line).")
        captions.extend(lines)
    return captions


def sample_run(cfg, load=None):
    """Library entry of ``python -m msmt_tf.sample``: loads the run, generates, writes.

    Args:
        cfg: ``SampleConfig``.
        load: ``load_for_inference`` replacement (tests); default the real one.

    Returns:
        ``(out_dir, samples, paths)``.
    """
    captions = read_captions(cfg)
    if load is None:
        from msmt_tf.inference import load_for_inference as load
    inference = load(run_dir=cfg.run_dir, checkpoint=cfg.checkpoint, which=cfg.which)
    samples = generate(inference, captions, num_per_caption=cfg.num_per_caption, seed=cfg.seed,
                       unknown=cfg.unknown, stages=cfg.stages, maps=cfg.maps,
                       batch_size=cfg.batch_size)
    out_dir = cfg.out or os.path.join(inference.run_dir, "samples")
    record = {"checkpoint": inference.checkpoint, "run_dir": inference.run_dir,
              "generator": "EMA weights"}
    paths = write_samples(samples, out_dir, record)
    return out_dir, samples, paths
