"""One dataset abstraction over the four kinds: ``ensure_dataset`` and ``load_split``.

``ensure_dataset(cfg)`` resolves the directory, generates the synthetic shapes data on first
use, validates the AttnGAN layout of CUB/COCO/prepared folders (building ``captions.pickle``
from ``text/`` when it is missing) and raises ``DataError`` with the expected layout and the
command that builds it. ``load_split(cfg, split)`` returns a ``Split`` with keys, captions
(AttnGAN order), class ids, the vocabulary, image paths and CUB crop boxes.
"""

import dataclasses
import json
import logging
import os
from typing import List, Optional

import numpy as np

from msmt_tf.data import attngan_format as fmt
from msmt_tf.data import bbox as bbox_lib
from msmt_tf.data.errors import DataError
from msmt_tf.data.vocabulary import Vocabulary

logger = logging.getLogger(__name__)

FOLDER_PREPARED = "prepared"
FOLDER_MANIFEST = "manifest.json"


@dataclasses.dataclass
class Split:
    """One split of a dataset, in AttnGAN order.

    Attributes:
        name: "train" or "test".
        data_dir: the dataset directory.
        keys: image keys (list of N str).
        captions: N * captions_per_image word-id lists; caption j of image k at
            k * captions_per_image + j.
        class_ids: int64 [N].
        vocab: the dataset's Vocabulary.
        image_paths: N image file paths.
        bboxes: int32 [N, 4] raw AttnGAN crop boxes (x1, y1, x2, y2) before clipping to the
            image (CUB), or None.
        captions_per_image: captions per image.
    """

    name: str
    data_dir: str
    keys: List[str]
    captions: List[List[int]]
    class_ids: np.ndarray
    vocab: Vocabulary
    image_paths: List[str]
    bboxes: Optional[np.ndarray]
    captions_per_image: int

    def __len__(self):
        return len(self.keys)


def _layout_hint(cfg, root):
    if cfg.dataset == "cub":
        return (f"Expected the AttnGAN birds layout in {root}: train|test/filenames.pickle, "
                "optional class_info.pickle and captions.pickle, text/<key>.txt, "
                "CUB_200_2011/{images/,images.txt,bounding_boxes.txt} (AttnGAN's birds.zip "
                "metadata + CUB_200_2011.tgz); see docs/data.md.")
    if cfg.dataset == "coco":
        return (f"Expected the AttnGAN coco layout in {root}: train|test/filenames.pickle, "
                "optional captions.pickle, text/<key>.txt, images/<key>.jpg or "
                "images/train2014|val2014/<key>.jpg (AttnGAN's coco.zip + COCO 2014 images); "
                "see docs/data.md.")
    if cfg.dataset == "folder":
        return (f"Build the layout with: python -m msmt_tf.prepare_data --dataset=folder "
                f"--data_dir={cfg.resolved_data_dir}")
    return (f"Delete {root} to regenerate it, or run: python -m msmt_tf.prepare_data "
            f"--dataset=shapes --data_dir={cfg.resolved_data_dir}")


def layout_root(cfg):
    """Directory that holds the pickles and ``text/`` (``<dir>/prepared`` for folders)."""
    root = cfg.resolved_data_dir
    return os.path.join(root, FOLDER_PREPARED) if cfg.dataset == "folder" else root


def ensure_dataset(cfg):
    """Makes sure the dataset of ``cfg`` is usable; returns the resolved data directory."""
    data_dir = cfg.resolved_data_dir
    if cfg.dataset == "shapes":
        from msmt_tf.data import shapes  # local import: shapes imports PIL drawing code

        shapes.ensure_generated(
            data_dir, seed=cfg.shapes_seed, num_train=cfg.shapes_num_train,
            num_test=cfg.shapes_num_test, size=cfg.shapes_size,
            captions_per_image=cfg.captions_per_image, max_objects=cfg.shapes_max_objects,
            textured=cfg.shapes_textured, layout=cfg.shapes_layout,
            shapes=cfg.shapes_name_list, colours=cfg.shapes_colour_list,
            binding=cfg.shapes_binding)
        return data_dir
    root = layout_root(cfg)
    hint = _layout_hint(cfg, root)
    if not os.path.isdir(data_dir):
        flag = "--data_dir" if cfg.data_dir else "--data_dir (default data/<dataset>)"
        raise DataError(f"{data_dir}: dataset directory not found ({flag}). {hint}")
    if cfg.dataset == "folder" and not os.path.isfile(os.path.join(root, FOLDER_MANIFEST)):
        raise DataError(f"{os.path.join(root, FOLDER_MANIFEST)}: custom folder not prepared. {hint}")
    for s in fmt.SPLITS:
        if not os.path.isfile(fmt.filenames_path(root, s)):
            raise DataError(f"{fmt.filenames_path(root, s)}: file list not found. {hint}")
    if cfg.dataset == "cub":
        cub = os.path.join(data_dir, "CUB_200_2011")
        for p in ("images.txt", "bounding_boxes.txt", "images"):
            if not os.path.exists(os.path.join(cub, p)):
                raise DataError(f"{os.path.join(cub, p)}: not found. {hint}")
    if cfg.dataset == "coco" and not os.path.isdir(os.path.join(data_dir, "images")):
        raise DataError(f"{os.path.join(data_dir, 'images')}: image directory not found. {hint}")
    if not os.path.isfile(os.path.join(root, fmt.CAPTIONS_PICKLE)):
        fmt.load_or_build_captions(root, cfg.captions_per_image, hint)
    return data_dir


def _coco_paths(data_dir, keys):
    images = os.path.join(data_dir, "images")
    listing = {}
    for sub in ("", "train2014", "val2014"):
        d = os.path.join(images, sub)
        listing[sub] = set(os.listdir(d)) if os.path.isdir(d) else set()
    paths = []
    for k in keys:
        name = k + ".jpg"
        for sub in ("", "train2014", "val2014"):
            if name in listing[sub] or ("/" in k and os.path.isfile(os.path.join(images, sub, name))):
                paths.append(os.path.join(images, sub, name) if sub else os.path.join(images, name))
                break
        else:
            paths.append(os.path.join(images, name))  # reported as missing by the image check
    return paths


def _image_paths(cfg, data_dir, root, keys, hint):
    if cfg.dataset == "cub":
        return [os.path.join(data_dir, "CUB_200_2011", "images", k + ".jpg") for k in keys]
    if cfg.dataset == "coco":
        return _coco_paths(data_dir, keys)
    if cfg.dataset == "shapes":
        return [os.path.join(data_dir, "images", k + ".png") for k in keys]
    manifest_path = os.path.join(root, FOLDER_MANIFEST)
    with open(manifest_path) as f:
        files = json.load(f)["image_files"]
    missing = [k for k in keys if k not in files]
    if missing:
        raise DataError(f"{manifest_path}: no image for key {missing[0]!r}. {hint}")
    return [os.path.join(data_dir, files[k]) for k in keys]


def check_image_file(path):
    """Cheap integrity check (exists, known signature, end marker present); None if fine.

    A truncated JPEG lacks its end-of-image marker FFD9 and a truncated PNG its IEND chunk;
    both are looked for in the last 4 KiB (JPEG data cannot contain FFD9 elsewhere).
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 4096))
            tail = f.read()
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    if head[:3] == b"\xff\xd8\xff":
        return None if b"\xff\xd9" in tail else "truncated JPEG (no end-of-image marker)"
    if head == b"\x89PNG\r\n\x1a\n":
        return None if b"IEND" in tail else "truncated PNG (no IEND chunk)"
    if size == 0:
        return "empty file"
    return "not a JPEG or PNG file"


def _drop_bad_images(cfg, split):
    bad = []
    for i, p in enumerate(split.image_paths):
        reason = check_image_file(p)
        if reason is not None:
            if not cfg.skip_bad_images:
                raise DataError(
                    f"{p}: {reason}; replace the file, or pass --skip_bad_images to skip it.")
            logger.warning("%s: %s; skipped (--skip_bad_images).", p, reason)
            bad.append(i)
    if not bad:
        return split
    logger.warning("%s split: skipped %d bad images of %d.", split.name, len(bad), len(split))
    keep = np.setdiff1d(np.arange(len(split)), bad)
    cpi = split.captions_per_image
    return dataclasses.replace(
        split,
        keys=[split.keys[i] for i in keep],
        captions=[split.captions[i * cpi + j] for i in keep for j in range(cpi)],
        class_ids=split.class_ids[keep],
        image_paths=[split.image_paths[i] for i in keep],
        bboxes=None if split.bboxes is None else split.bboxes[keep],
    )


def load_split(cfg, split, check_images=True):
    """Loads ``split`` ("train" or "test") of the dataset described by ``cfg``."""
    if split not in fmt.SPLITS:
        raise DataError(f"split {split!r}: use one of {list(fmt.SPLITS)}.")
    data_dir = ensure_dataset(cfg)
    root = layout_root(cfg)
    hint = _layout_hint(cfg, root)
    keys = fmt.load_keys(root, split, hint)
    train_caps, test_caps, vocab = fmt.load_or_build_captions(root, cfg.captions_per_image, hint)
    captions = train_caps if split == "train" else test_caps
    cpi = cfg.captions_per_image
    if len(captions) != len(keys) * cpi:
        per = len(captions) / max(1, len(keys))
        raise DataError(
            f"{os.path.join(root, fmt.CAPTIONS_PICKLE)}: {len(captions)} {split} captions for "
            f"{len(keys)} images, not {len(keys)} x --captions_per_image={cpi} "
            f"(the file has {per:g} per image): set --captions_per_image accordingly, or delete the "
            "pickle to rebuild it from text/.")
    empty = sum(1 for c in captions if not c)
    if empty:
        logger.warning("%s: %d empty %s captions (caption_len 0).",
                       os.path.join(root, fmt.CAPTIONS_PICKLE), empty, split)
    class_ids = fmt.load_class_ids(root, split, len(keys))
    boxes = None
    if cfg.dataset == "cub":
        cub = os.path.join(data_dir, "CUB_200_2011")
        boxes = bbox_lib.raw_boxes_for(keys, bbox_lib.load_cub_bboxes(cub),
                                       os.path.join(cub, "bounding_boxes.txt"))
    out = Split(name=split, data_dir=data_dir, keys=keys, captions=captions, class_ids=class_ids,
                vocab=vocab, image_paths=_image_paths(cfg, data_dir, root, keys, hint),
                bboxes=boxes, captions_per_image=cpi)
    if check_images:
        out = _drop_bad_images(cfg, out)
    if not len(out):
        logger.warning("%s: the %s split is empty.", fmt.filenames_path(root, split), split)
    return out
