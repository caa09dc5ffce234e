"""Scalars and images to TensorBoard and ``metrics.jsonl``; captioned image grids.

``MetricsLogger`` writes every scalar twice with the same tag: to a ``tf.summary`` event file
under ``<run_dir>/tensorboard`` and as one JSON line ``{"step": s, "time": t, tag: value...}``
per call to ``metrics.jsonl``. On resume from step N, lines with a step > N (written after the
last checkpoint) are moved to ``metrics.orphaned.jsonl`` so the file again describes one run, and
a ``SessionLog.START`` event at step N + 1 makes TensorBoard's Python loader
(``--load_fast=false``) drop the orphaned events at once. Its default Rust loader ignores that
event: it drops a tag's points at steps >= s when the resumed run logs that tag at step s, so an
orphaned point stays visible until the resumed run logs its tag again.

``caption_grid(images, captions, ncols)`` renders a grid with each caption wrapped under its
image in PIL's default font and returns it as a uint8 ``[H, W, 3]`` array; ``save_png`` writes
it (``MetricsLogger.grid`` does both and logs it to TensorBoard).
"""

import json
import logging
import math
import os
import time
from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont
from tensorflow.core.framework import summary_pb2
from tensorflow.core.util import event_pb2

from msmt_tf.io import atomic


def _metadata(plugin_name, data_class):
    md = summary_pb2.SummaryMetadata()
    md.plugin_data.plugin_name = plugin_name
    md.data_class = data_class
    return md


# The ``tensorboard`` package is not a dependency of tensorflow-cpu 2.21 (``tf.summary.scalar``
# and ``tf.summary.image`` raise TBNotInstalledError without it), so the events are written
# with the core ``tf.summary.write`` and the metadata TensorBoard's own scalar/image
# summaries use; TensorBoard (an install requirement, only to view) reads them as usual.
_SCALAR_METADATA = _metadata("scalars", summary_pb2.DATA_CLASS_SCALAR)
_IMAGE_METADATA = _metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE)


def summary_scalar(tag, value, step):
    """A TensorBoard scalar event in the default writer (core TF only)."""
    return tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=_SCALAR_METADATA)


def summary_image(tag, images_uint8, step, max_outputs=3):
    """A TensorBoard image event ``[width, height, png, ...]`` in the default writer."""
    x = np.asarray(images_uint8)[:max_outputs]
    h, w = x.shape[1], x.shape[2]
    parts = [tf.as_string(w), tf.as_string(h)] + [tf.io.encode_png(img) for img in x]
    return tf.summary.write(tag, tf.stack(parts), step=step, metadata=_IMAGE_METADATA)


def _to_uint8(images):
    """``[N, H, W, C]`` float in [-1, 1] or uint8 -> uint8 with 3 channels."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {x.shape}")
    if x.dtype != np.uint8:
        x = np.clip((x.astype(np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if x.shape[-1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got shape {x.shape}")
    return x


def wrap_text(text, font, width, draw):
    """Greedy word wrap to ``width`` pixels; over-long words are cut by characters."""
    lines, line = [], ""
    for word in str(text).split():
        trial = word if not line else f"{line} {word}"
        if draw.textlength(trial, font=font) <= width:
            line = trial
            continue
        if line:
            lines.append(line)
        while draw.textlength(word, font=font) > width and len(word) > 1:
            cut = len(word)
            while cut > 1 and draw.textlength(word[:cut], font=font) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    return lines


def caption_grid(images, captions: Optional[Sequence[str]] = None, ncols: Optional[int] = None,
                 max_lines: int = 4, pad: int = 2):
    """A grid of images with captions written under each, as uint8 ``[H, W, 3]``.

    Args:
        images: ``[N, H, W, C]`` float in [-1, 1] (generator side) or uint8.
        captions: N strings (None: no caption band).
        ncols: images per row (default ``ceil(sqrt(N))``).
        max_lines: caption lines kept per image (the last kept line ends with "...").
        pad: pixels between cells.
    """
    x = _to_uint8(images)
    n, h, w, _ = x.shape
    if captions is not None and len(captions) != n:
        raise ValueError(f"caption_grid: {len(captions)} captions for {n} images")
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    font = ImageFont.load_default()
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    asc, desc = font.getmetrics()
    line_h = asc + desc + 1
    wrapped = []
    if captions is not None:
        for c in captions:
            lines = wrap_text(c, font, w, scratch)
            if len(lines) > max_lines:
                lines = lines[:max_lines]
                lines[-1] = lines[-1][: max(0, len(lines[-1]) - 3)] + "..."
            wrapped.append(lines)
    band = (max((len(l) for l in wrapped), default=0) * line_h + pad) if captions is not None else 0
    cell_h, cell_w = h + band + pad, w + pad
    canvas = Image.new("RGB", (ncols * cell_w + pad, nrows * cell_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, ncols)
        x0, y0 = pad + c * cell_w, pad + r * cell_h
        canvas.paste(Image.fromarray(x[i]), (x0, y0))
        if captions is not None:
            for k, line in enumerate(wrapped[i]):
                draw.text((x0, y0 + h + 1 + k * line_h), line, fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def save_png(array, path: str):
    """Writes a uint8 ``[H, W, 3]`` array as PNG (directories are created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def _scalar(v):
    if isinstance(v, (tf.Tensor, tf.Variable)) or hasattr(v, "numpy"):
        v = v.numpy()
    return float(np.asarray(v, dtype=np.float64).reshape(()))


class MetricsLogger:
    """Scalars to TensorBoard and ``metrics.jsonl`` (same tags); images to TensorBoard.

    Args:
        run_dir: the run directory (``tensorboard/`` and ``metrics.jsonl`` go there).
        resume_step: the step restored from the checkpoint; jsonl lines after it are moved
            to ``metrics.orphaned.jsonl``. None for a new run.
        enabled: False on non-chief workers (nothing is written).
    """

    def __init__(self, run_dir: str, resume_step: Optional[int] = None, enabled: bool = True):
        self.run_dir = run_dir
        self.enabled = enabled
        self.tensorboard_dir = os.path.join(run_dir, "tensorboard")
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.grids_dir = os.path.join(run_dir, "grids")
        self._writer = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        if resume_step is not None:
            self._drop_after(int(resume_step))
        self._writer = tf.summary.create_file_writer(self.tensorboard_dir)
        self._write_session_start(0 if resume_step is None else int(resume_step) + 1)
        self._jsonl = open(self.metrics_path, "a", encoding="utf-8")

    def _write_session_start(self, step):
        """A ``SessionLog.START`` event: TensorBoard's Python loader treats every START after the
        first as a restart and drops the events with a step >= ``step`` seen before it (the
        orphans); its Rust loader ignores it (see the module docstring)."""
        event = event_pb2.Event(step=step, wall_time=time.time())
        event.session_log.status = event_pb2.SessionLog.START
        try:
            from tensorflow.python.ops import summary_ops_v2  # no public API writes an Event

            with self._writer.as_default():
                summary_ops_v2.import_event(tf.constant(event.SerializeToString()))
        except (ImportError, AttributeError) as e:  # pragma: no cover - TF internals moved
            logging.warning("TensorBoard restart marker not written (%s); orphaned events stay visible.", e)

    def _drop_after(self, step):
        if not os.path.exists(self.metrics_path):
            return
        keep, orphaned = [], []
        with open(self.metrics_path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    s = json.loads(line).get("step", -1)
                except json.JSONDecodeError:
                    s = -1
                (orphaned if s > step else keep).append(line)
        if orphaned:
            with open(os.path.join(self.run_dir, "metrics.orphaned.jsonl"), "a", encoding="utf-8") as f:
                f.writelines(orphaned)
            with atomic.replacing(self.metrics_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.writelines(keep)
            logging.info(
                "metrics.jsonl: moved %d lines after step %d to metrics.orphaned.jsonl", len(orphaned), step
            )

    def scalars(self, step: int, values: Mapping[str, object]):
        """Writes ``{tag: scalar}`` at ``step`` to both sinks."""
        if not self.enabled:
            return
        step = int(step)
        record = {"step": step, "time": round(time.time(), 3)}
        with self._writer.as_default():
            for tag, v in values.items():
                v = _scalar(v)
                summary_scalar(tag, v, step)
                record[tag] = v
        self._jsonl.write(json.dumps(record, sort_keys=True) + "\n")
        self._jsonl.flush()

    def images(self, step: int, values: Mapping[str, object], max_outputs: int = 3):
        """Writes ``{tag: [N, H, W, C] (float in [-1, 1] or uint8) or [H, W, C]}``."""
        if not self.enabled:
            return
        with self._writer.as_default():
            for tag, img in values.items():
                x = _to_uint8(img)
                summary_image(tag, x, int(step), max_outputs)

    def grid(self, step: int, tag: str, images, captions=None, ncols=None):
        """Captioned grid -> ``grids/<tag>_<step>.png`` and TensorBoard image ``tag``."""
        g = caption_grid(images, captions, ncols)
        if not self.enabled:
            return g, None
        safe = tag.replace("/", "_")
        path = save_png(g, os.path.join(self.grids_dir, f"{safe}_{int(step):08d}.png"))
        self.images(step, {tag: g[None]})
        return g, path

    def flush(self):
        if self.enabled:
            self._writer.flush()
            self._jsonl.flush()

    def close(self):
        if self.enabled and self._writer is not None:
            self._writer.close()
            self._jsonl.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
