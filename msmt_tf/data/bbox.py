"""CUB bounding boxes and AttnGAN's square crop around them.

AttnGAN ``get_imgs``: with ``bbox = [x, y, w, h]`` truncated to ints,
``r = int(max(w, h) * 0.75)``, centre ``(int((2x + w) / 2), int((2y + h) / 2))`` and the crop
``[max(0, cx - r), max(0, cy - r), min(W, cx + r), min(H, cy + r)]`` (non-square at borders).
``raw_crop_box`` is the part that needs no image size (precomputed in Python for every image);
``clip_box`` applies the image borders (done in the tf.data map function after reading the
image header). ``crop_box`` = both.
"""

import os

import numpy as np

from msmt_tf.data.errors import DataError

NO_BOX = (-1, -1, -1, -1)


def raw_crop_box(bbox):
    """(x1, y1, x2, y2) of the crop before clipping to the image, from bbox [x, y, w, h]."""
    x, y, w, h = (int(v) for v in bbox)
    r = int(max(w, h) * 0.75)
    cx = int((2 * x + w) / 2)
    cy = int((2 * y + h) / 2)
    return (cx - r, cy - r, cx + r, cy + r)


def clip_box(box, width, height):
    x1, y1, x2, y2 = box
    return (max(0, x1), max(0, y1), min(width, x2), min(height, y2))


def crop_box(bbox, width, height):
    """The AttnGAN crop (x1, y1, x2, y2) of an image of size width x height."""
    return clip_box(raw_crop_box(bbox), width, height)


def load_cub_bboxes(cub_dir):
    """Reads ``images.txt`` + ``bounding_boxes.txt``; returns {key: [x, y, w, h]} (floats).

    The key is the image path in ``images.txt`` without its extension, as in AttnGAN
    ``load_bbox``.
    """
    images_txt = os.path.join(cub_dir, "images.txt")
    boxes_txt = os.path.join(cub_dir, "bounding_boxes.txt")
    hint = ("Expected the CUB_200_2011 release files (images.txt, bounding_boxes.txt, images/); "
            "download CUB_200_2011.tgz and extract it into the dataset directory.")
    for p in (images_txt, boxes_txt):
        if not os.path.isfile(p):
            raise DataError(f"{p}: not found. {hint}")
    names = {}
    for lineno, line, parts in _fields(images_txt):
        if len(parts) != 2:
            raise DataError(f"{images_txt}:{lineno}: expected '<id> <path>', got {line.strip()!r}.")
        names[parts[0]] = os.path.splitext(parts[1])[0]
    boxes = {}
    for lineno, line, parts in _fields(boxes_txt):
        try:
            if len(parts) != 5:
                raise ValueError
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise DataError(
                f"{boxes_txt}:{lineno}: expected '<id> <x> <y> <w> <h>', got {line.strip()!r}."
            ) from None
        if parts[0] not in names:
            raise DataError(f"{boxes_txt}:{lineno}: image id {parts[0]} is not in {images_txt}.")
        boxes[names[parts[0]]] = vals
    return boxes


def _fields(path):
    """``(line number, line, its whitespace-separated fields)`` of each non-blank line."""
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if parts:
                yield lineno, line, parts


def raw_boxes_for(keys, boxes, source):
    """int32 [N, 4] raw crop boxes for ``keys``; a key without a box raises ``DataError``."""
    out = np.empty((len(keys), 4), np.int32)
    for i, k in enumerate(keys):
        if k not in boxes:
            raise DataError(f"{source}: no bounding box for image {k!r}; the file list and "
                            "CUB_200_2011/images.txt disagree.")
        out[i] = raw_crop_box(boxes[k])
    return out
