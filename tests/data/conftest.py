"""Fixtures written in the real on-disk formats (tiny CUB-like and COCO-like trees, py2 pickles)."""

import os
import pickle
import struct
import types

import numpy as np
import pytest
from PIL import Image

CUB_CAPTIONS = [
    "this bird has a red crown and a short beak.",
    "a small bird with red and white wings",
    "",
    "The Bird is RED, with black eyes!",
    "a bird",
]


def write_image(path, array, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(np.asarray(array, np.uint8))
    if (fmt or os.path.splitext(path)[1].lower()) in (".jpg", ".jpeg", "JPEG"):
        img.save(path, format="JPEG", quality=95)
    else:
        img.save(path, format="PNG")


def gradient_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(1, w - 1), yy * 255 / max(1, h - 1),
                     np.full((h, w), rng.integers(0, 255))], axis=-1)
    return base.astype(np.uint8)


def py2_pickle(obj):
    """Serialises lists/dicts/ints/str the way Python 2 ``pickle.dump(obj, f, 2)`` does.

    Python 2 ``str`` objects become SHORT_BINSTRING/BINSTRING opcodes (raw bytes), which
    Python 3 can only read with an ``encoding``; str here is encoded as latin1 bytes.
    """
    out = [b"\x80\x02"]

    def emit(o):
        if isinstance(o, bool):
            out.append(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            if 0 <= o < 256:
                out.append(b"K" + bytes([o]))
            else:
                out.append(b"J" + struct.pack("<i", o))
        elif isinstance(o, str):
            raw = o.encode("latin1")
            if len(raw) < 256:
                out.append(b"U" + bytes([len(raw)]) + raw)
            else:
                out.append(b"T" + struct.pack("<i", len(raw)) + raw)
        elif isinstance(o, list):
            out.append(b"]")
            if o:
                out.append(b"(")
                for x in o:
                    emit(x)
                out.append(b"e")
        elif isinstance(o, dict):
            out.append(b"}")
            if o:
                out.append(b"(")
                for k, v in o.items():
                    emit(k)
                    emit(v)
                out.append(b"u")
        else:
            raise TypeError(type(o))

    emit(obj)
    out.append(b".")
    return b"".join(out)


def write_pickle(path, obj, py2=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        if py2:
            f.write(py2_pickle(obj))
        else:
            pickle.dump(obj, f, protocol=2)


def make_cub_tree(root, num_train=4, num_test=2, captions=None, sizes=None, boxes=None):
    """CUB_200_2011/{images/,images.txt,bounding_boxes.txt}, file lists, class_info, text/."""
    cub = os.path.join(root, "CUB_200_2011")
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    keys, lines_img, lines_box = [], [], []
    n = num_train + num_test
    for i in range(n):
        cls = classes[i % 2]
        key = f"{cls}/{cls.split('.')[1]}_{i:04d}_{100 + i}"
        h, w = (sizes[i] if sizes else (60 + 4 * i, 80))
        write_image(os.path.join(cub, "images", key + ".jpg"), gradient_image(h, w, i))
        box = boxes[i] if boxes else (10.0 + i, 8.0, 30.0, 20.0 + i)
        lines_img.append(f"{i + 1} {key}.jpg")
        lines_box.append(f"{i + 1} " + " ".join(f"{v:.1f}" for v in box))
        keys.append(key)
        with_caps = captions[i] if captions else CUB_CAPTIONS
        os.makedirs(os.path.join(root, "text", os.path.dirname(key)), exist_ok=True)
        with open(os.path.join(root, "text", key + ".txt"), "w") as f:
            f.write("\n".join(with_caps) + "\n")
    with open(os.path.join(cub, "images.txt"), "w") as f:
        f.write("\n".join(lines_img) + "\n")
    with open(os.path.join(cub, "bounding_boxes.txt"), "w") as f:
        f.write("\n".join(lines_box) + "\n")
    splits = {"train": keys[:num_train], "test": keys[num_train:]}
    for s, ks in splits.items():
        write_pickle(os.path.join(root, s, "filenames.pickle"), ks)
        write_pickle(os.path.join(root, s, "class_info.pickle"),
                     [int(k.split(".")[0]) for k in ks])
    return splits


def make_coco_tree(root, num_train=3, num_test=2):
    """images/train2014 + images/val2014 JPEGs, file lists (no class_info), text/."""
    splits = {"train": [], "test": []}
    for s, n, sub in (("train", num_train, "train2014"), ("test", num_test, "val2014")):
        for i in range(n):
            key = f"COCO_{sub}_{i + 1:012d}"
            write_image(os.path.join(root, "images", sub, key + ".jpg"),
                        gradient_image(40 + i, 50, i))
            os.makedirs(os.path.join(root, "text"), exist_ok=True)
            with open(os.path.join(root, "text", key + ".txt"), "w") as f:
                f.write(f"a man riding a horse number {i}\na dog on the beach\n"
                        "two people at a table\na red bus\na cat sleeping\nextra sixth caption\n")
            splits[s].append(key)
        write_pickle(os.path.join(root, s, "filenames.pickle"), splits[s])
    return splits


@pytest.fixture
def helpers():
    return types.SimpleNamespace(
        write_image=write_image, gradient_image=gradient_image, py2_pickle=py2_pickle,
        write_pickle=write_pickle, make_cub_tree=make_cub_tree, make_coco_tree=make_coco_tree,
        CUB_CAPTIONS=CUB_CAPTIONS)
