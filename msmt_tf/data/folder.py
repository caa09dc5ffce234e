"""Custom caption folders -> the AttnGAN layout in ``<dir>/prepared/``.

Input (``--dataset=folder --data_dir=DIR``): JPEG/PNG images anywhere under DIR with captions
either in a sibling ``name.txt`` (one caption per line) or in ``DIR/captions.jsonl``
(``{"image": "<path relative to DIR>", "captions": ["...", ...]}`` per line; it wins over
.txt files). Keys are image paths relative to DIR without the extension. Classes come from
the top-level sub-folder (``--folder_classes``). The split is deterministic for ``--seed``
and stable when images are added: an image is in the test split when
``sha1(f"{seed}:{key}")`` as a fraction of 2**160 is below ``--test_fraction`` (at least one
test image when there are two or more images and the fraction is positive).

Output in ``DIR/prepared/``: ``text/<key>.txt``, ``train|test/filenames.pickle``,
``train|test/class_info.pickle``, ``captions.pickle`` (built like AttnGAN, or with a given
vocabulary), ``classes.json`` and ``manifest.json`` (key -> image path relative to DIR).
"""

import hashlib
import json
import logging
import os
import shutil

from msmt_tf.data import attngan_format as fmt
from msmt_tf.data.dataset import FOLDER_MANIFEST, FOLDER_PREPARED
from msmt_tf.data.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CAPTIONS_JSONL = "captions.jsonl"
_IGNORED_DIRS = (FOLDER_PREPARED, "tfrecords")


def scan_images(data_dir):
    """Returns {key: relative image path}; other files are counted and logged."""
    files, skipped = {}, 0
    for dirpath, dirnames, filenames in os.walk(data_dir):
        rel_dir = os.path.relpath(dirpath, data_dir)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in _IGNORED_DIRS]
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                if ext.lower() not in (".txt", ".jsonl", ".json", ".md"):
                    skipped += 1
                continue
            key = os.path.splitext(rel)[0].replace(os.sep, "/")
            if key in files:
                raise DataError(f"{os.path.join(data_dir, rel)}: two images share the name "
                                f"{key!r} ({files[key]}); rename one of them.")
            files[key] = rel
    if skipped:
        logger.warning("%s: ignored %d files that are not .jpg/.jpeg/.png images or captions.",
                       data_dir, skipped)
    return files


def _read_jsonl(path, files):
    captions = {}
    by_rel = {rel.replace(os.sep, "/"): key for key, rel in files.items()}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                image, caps = rec["image"], rec["captions"]
                if not isinstance(caps, list):
                    raise TypeError("captions is not a list")
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{lineno}: expected {{\"image\": ..., \"captions\": "
                                f"[...]}} ({e}).") from None
            key = by_rel.get(str(image).replace("\\", "/"))
            if key is None:
                raise DataError(f"{path}:{lineno}: image {image!r} not found under "
                                f"{os.path.dirname(path)} (paths are relative to that folder).")
            captions.setdefault(key, []).extend(str(c) for c in caps)
    return captions


def _classes(files, mode):
    tops = {key: (key.split("/")[0] if "/" in key else None) for key in files}
    names = sorted({t for t in tops.values() if t is not None})
    if mode == "auto":
        mode = "subfolders" if len(names) >= 2 and all(t is not None for t in tops.values()) else "none"
    if mode == "none":
        return {key: i for i, key in enumerate(sorted(files))}, []
    if any(t is None for t in tops.values()):
        top = next(k for k, t in tops.items() if t is None)
        raise DataError(f"{files[top]}: image outside a class sub-folder with "
                        "--folder_classes=subfolders; move it or use --folder_classes=auto|none.")
    index = {n: i for i, n in enumerate(names)}
    return {key: index[t] for key, t in tops.items()}, names


def _key_hash(key, seed):
    return int(hashlib.sha1(f"{seed}:{key}".encode("utf-8")).hexdigest(), 16)


def split_of(key, seed, test_fraction):
    return "test" if _key_hash(key, seed) / 2.0**160 < test_fraction else "train"


def prepare_folder(cfg, seed, vocab=None):
    """Converts the custom folder of ``cfg`` into ``<data_dir>/prepared``; returns that path.

    ``seed`` draws the train/test split (``--seed``, ``TrainConfig.seed``); ``vocab`` (a
    ``Vocabulary``) is used instead of building one from the captions.
    """
    data_dir = cfg.resolved_data_dir
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: folder not found (--data_dir); it should hold images with "
                        "captions in sibling .txt files or in captions.jsonl.")
    files = scan_images(data_dir)
    if not files:
        raise DataError(f"{data_dir}: no .jpg/.jpeg/.png images found (--data_dir).")
    jsonl = os.path.join(data_dir, CAPTIONS_JSONL)
    if os.path.isfile(jsonl):
        captions = _read_jsonl(jsonl, files)
        missing = [k for k in sorted(files) if k not in captions]
        if missing:
            raise DataError(f"{jsonl}: no captions for image {files[missing[0]]!r} "
                            f"({len(missing)} images without captions); add a line for it or "
                            "remove the image.")
    else:
        captions = {}
        for key, rel in sorted(files.items()):
            txt = os.path.join(data_dir, os.path.splitext(rel)[0] + ".txt")
            if not os.path.isfile(txt):
                raise DataError(f"{txt}: caption file not found for {rel}; write one caption per "
                                f"line there, or provide {jsonl}.")
            with open(txt, "rb") as f:
                captions[key] = f.read().decode("utf-8", errors="replace").split("\n")
    class_of, class_names = _classes(files, cfg.folder_classes)
    keys = sorted(files)
    splits = {"train": [], "test": []}
    for key in keys:
        splits[split_of(key, seed, cfg.test_fraction)].append(key)
    if cfg.test_fraction > 0 and not splits["test"] and len(keys) >= 2:
        first = min(keys, key=lambda k: _key_hash(k, seed))
        splits["train"].remove(first)
        splits["test"].append(first)
    if not splits["train"]:
        raise DataError(f"{data_dir}: no training images left; lower --test_fraction.")
    root = os.path.join(data_dir, FOLDER_PREPARED)
    shutil.rmtree(os.path.join(root, "text"), ignore_errors=True)
    for key in keys:
        path = fmt.caption_file(root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(c.strip() for c in captions[key]) + "\n")
    for s, ks in splits.items():
        fmt.write_pickle(fmt.filenames_path(root, s), ks)
        fmt.write_pickle(fmt.class_info_path(root, s), [class_of[k] for k in ks])
    with open(os.path.join(root, "classes.json"), "w") as f:
        json.dump(class_names, f, indent=1)
    if os.path.isfile(os.path.join(root, fmt.CAPTIONS_PICKLE)):
        os.remove(os.path.join(root, fmt.CAPTIONS_PICKLE))
    fmt.build_captions_pickle(root, cfg.captions_per_image, vocab=vocab,
                              hint=f"(converted from {data_dir})")
    with open(os.path.join(root, FOLDER_MANIFEST), "w") as f:
        json.dump({"source": os.path.abspath(data_dir), "num_train": len(splits["train"]),
                   "num_test": len(splits["test"]), "seed": seed,
                   "test_fraction": cfg.test_fraction, "image_files": files}, f, indent=1,
                  sort_keys=True)
    logger.info("%s: %d train / %d test images, %d classes.", root, len(splits["train"]),
                len(splits["test"]), len(class_names) or len(keys))
    return root
