"""The embedded default dataset: procedurally generated shapes with captions.

Each image has 1 to ``max_objects`` (at most 3) objects (``SHAPES`` x ``COLOURS`` x ``SIZES``)
placed in distinct cells of a 3 x 3 grid (with a small jitter; large objects may overlap their
neighbours and the border) on a plain or, with probability ``textured``, a textured background
(``BACKGROUNDS``). ``max_objects=3, textured=0.4, layout="grid"`` with all 7 shapes and 9
colours is the full set (``flags/shapes.flags``); the quickstart default ``1, 0.0, "centre"``
with ``shapes=("circle", "square", "triangle")`` and ``colours=("red", "green", "blue")`` (one
object, 1.5 times larger, in the centre cell, on a plain background) is learnable in minutes on
a CPU. Object 0 is the main object: drawn on top,
named by most captions, and it defines the class id ``shape_index * len(COLOURS) +
colour_index``. Ten captions per image come from templates that name the attributes in
different orders, give grid positions and spatial relations, e.g. "a small red circle above
a large blue square" or "a square that is blue and large in the top left".

``binding=True`` (``--shapes_binding``, ``flags/shapes_binding.flags``) is the word-level
binding set (``docs/shapes_binding.md``): exactly two objects of different shapes and
different colours in distinct grid cells, and every caption names both objects, each colour
bound to its shape, and their spatial relation ("a red circle to the left of a blue square",
"the blue square is below a circle that is red and small").

Written in the AttnGAN layout (``images/<key>.png``, ``text/<key>.txt``, pickles,
``class_info``) plus ``attributes/<split>.jsonl`` (one JSON object per line, in file-list
order: ``{"key", "class_id", "background", "objects": [{"shape", "colour", "size", "row",
"col", "position", "center": [x, y], "radius"}]}``; pixels, row/col 0..2 from the top left)
and ``meta.json`` (the generation parameters; written last). Every image is drawn from its
own random generator seeded by (seed, split, index), so the files are byte-identical for the
same seed whatever the number of processes.
"""

import io
import json
import logging
import multiprocessing
import os
import shutil
import sys

import numpy as np
from PIL import Image

from msmt_tf.data import attngan_format as fmt
from msmt_tf.data import shapes_options
from msmt_tf.data.errors import DataError
from msmt_tf.data.shapes_options import COLOURS, LAYOUTS, SHAPES

logger = logging.getLogger(__name__)

SIZES = ("small", "medium", "large")
PLAIN_BACKGROUNDS = ("grey", "white", "black", "beige")
TEXTURED_BACKGROUNDS = ("striped", "checkered", "dotted")
BACKGROUNDS = PLAIN_BACKGROUNDS + TEXTURED_BACKGROUNDS
# Grid cell (row, col) -> position words; row 0 is the top, col 0 the left.
POSITIONS = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "centre", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}
_POSITION_PHRASES = {
    "top left": "in the top left corner", "top": "at the top", "top right": "in the top right corner",
    "left": "on the left", "centre": "in the centre", "right": "on the right",
    "bottom left": "in the bottom left corner", "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}
NUM_CLASSES = len(SHAPES) * len(COLOURS)
FORMAT_VERSION = 1

_RGB = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
    "yellow": (240, 220, 30), "purple": (130, 40, 170), "orange": (250, 140, 20),
    "pink": (250, 130, 190), "cyan": (40, 210, 220), "brown": (120, 70, 30),
}
_BG_RGB = {"grey": (128, 128, 128), "white": (240, 240, 240), "black": (20, 20, 20),
           "beige": (225, 210, 175)}
_RADIUS = {"small": 0.25, "medium": 0.36, "large": 0.52}  # half-extent, in grid cells
# The centre layout's single object is drawn this much larger (a large one spans about half
# the image), so that the quickstart's generator has more than a few pixels per object.
_CENTRE_SCALE = 1.5
_COUNT_WORDS = ("one", "two", "three")
_SPLIT_IDS = {"train": 0, "test": 1}
_SUPERSAMPLE = 2


def class_id(shape, colour):
    """Class id of an image whose main object has this shape and colour."""
    return SHAPES.index(shape) * len(COLOURS) + COLOURS.index(colour)


def _shape_mask(shape, u, v):
    """Inside test on coordinates normalised by the object's radius (v points down)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "triangle":  # apex up
        return (v <= 0.75) & (np.abs(u) <= 0.95 * (v + 1.0) / 1.75)
    if shape == "hexagon":
        return (np.abs(v) <= 0.866) & (np.abs(u) + np.abs(v) / np.sqrt(3.0) <= 1.0)
    if shape == "star":
        rho = np.sqrt(u * u + v * v)
        a = np.mod(np.arctan2(v, u) + np.pi / 2, 2 * np.pi / 5) / (2 * np.pi / 5)
        return rho <= 0.42 + 0.58 * np.abs(2.0 * a - 1.0) ** 1.5
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    raise ValueError(shape)


def _background(rng, name, n):
    if name in _BG_RGB:
        img = np.empty((n, n, 3), np.float32)
        img[:] = _BG_RGB[name]
    else:
        yy, xx = np.ogrid[0:n, 0:n]
        period = n / rng.choice([6.0, 8.0, 10.0])
        light, dark = float(rng.integers(150, 190)), float(rng.integers(70, 110))
        if name == "striped":
            t = (xx + yy) if rng.random() < 0.5 else yy + 0 * xx
            on = np.mod(t, period) < period / 2
        elif name == "checkered":
            on = (np.floor(xx / period) + np.floor(yy / period)) % 2 == 0
        else:  # dotted
            cy = np.mod(yy, period) - period / 2
            cx = np.mod(xx, period) - period / 2
            on = cx * cx + cy * cy > (period * 0.22) ** 2
        img = np.repeat(np.where(on, light, dark).astype(np.float32)[..., None], 3, axis=2)
    return img


_COUNT_PROBS = {1: [1.0], 2: [0.5, 0.5], 3: [0.35, 0.35, 0.3]}


def _sample_objects(rng, size, max_objects=3, layout="grid", shapes=SHAPES, colours=COLOURS,
                    binding=False):
    if binding:  # exactly two objects, of different shapes and different colours
        count = 2
        picked = (rng.choice(len(shapes), 2, replace=False),
                  rng.choice(len(colours), 2, replace=False))
    else:
        p = _COUNT_PROBS[max_objects]
        count = int(rng.choice(np.arange(1, max_objects + 1), p=p))
    cells = rng.choice(9, size=count, replace=False)
    if layout == "centre":  # after the draw, so the "grid" stream of draws is unchanged
        cells = [4]
    cell = size / 3.0
    scale = _CENTRE_SCALE if layout == "centre" else 1.0
    objects = []
    for k, c in enumerate(cells):
        row, col = int(c) // 3, int(c) % 3
        if binding:
            shape, colour = shapes[int(picked[0][k])], colours[int(picked[1][k])]
        else:
            shape = shapes[rng.integers(len(shapes))]
            colour = colours[rng.integers(len(colours))]
        size_name = SIZES[rng.integers(len(SIZES))]
        jx, jy = rng.uniform(-0.08, 0.08, size=2) * cell
        objects.append({
            "shape": shape, "colour": colour, "size": size_name, "row": row, "col": col,
            "position": POSITIONS[(row, col)],
            "center": [round((col + 0.5) * cell + float(jx), 2),
                       round((row + 0.5) * cell + float(jy), 2)],
            "radius": round(_RADIUS[size_name] * scale * cell, 2),
        })
    return objects


def render(rng, size, background, objects):
    """Draws the objects (object 0 on top); returns uint8 [size, size, 3].

    Edges are antialiased: each object's coverage of a pixel is the fraction of its 2 x 2
    sub-pixel samples inside the shape.
    """
    s = _SUPERSAMPLE
    img = _background(rng, background, size)
    for obj in reversed(objects):
        cx, cy, r = obj["center"][0], obj["center"][1], obj["radius"]
        x0, x1 = max(0, int(cx - r) - 1), min(size, int(cx + r) + 2)
        y0, y1 = max(0, int(cy - r) - 1), min(size, int(cy + r) + 2)
        sub = (np.arange(s, dtype=np.float32) + 0.5) / s
        ys = (np.arange(y0, y1, dtype=np.float32)[:, None] + sub[None, :]).reshape(-1)
        xs = (np.arange(x0, x1, dtype=np.float32)[:, None] + sub[None, :]).reshape(-1)
        mask = _shape_mask(obj["shape"], (xs[None, :] - cx) / r, (ys[:, None] - cy) / r)
        cover = mask.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3), dtype=np.float32)[..., None]
        rgb = np.array(_RGB[obj["colour"]], np.float32) + rng.uniform(-12, 12, size=3)
        region = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = region + cover * (rgb - region)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _np(rng, obj):
    """A noun phrase naming ``obj``; the attribute order varies."""
    sh, co, si = obj["shape"], obj["colour"], obj["size"]
    form = int(rng.integers(5))
    if form == 0:
        return f"a {si} {co} {sh}"
    if form == 1:
        return f"a {co} {sh}"
    if form == 2:
        return f"a {sh} that is {co} and {si}"
    if form == 3:
        return f"a {si} {sh} coloured {co}"
    return f"a {sh} that is {si} and {co}"


def relation(a, b):
    """Spatial relation words of object a with respect to b ("above", "to the left of", ...)."""
    options = []
    if a["row"] < b["row"]:
        options.append("above")
    if a["row"] > b["row"]:
        options.append("below")
    if a["col"] < b["col"]:
        options.append("to the left of")
    if a["col"] > b["col"]:
        options.append("to the right of")
    return options


def _relation_caption(rng, a, b, kind):
    """``a`` related to ``b``: "a red circle above a blue square" (``kind="relation"``) or "the
    red circle is above a blue square" (``"is_relation"``); the relation is drawn from those
    that hold."""
    rels = relation(a, b)
    rel = rels[int(rng.integers(len(rels)))]
    if kind == "is_relation":
        return f"the {a['colour']} {a['shape']} is {rel} {_np(rng, b)}"
    return f"{_np(rng, a)} {rel} {_np(rng, b)}"


def _binding_caption(rng, objects):
    """A caption of the binding set: both objects (in a random order), each named with its
    colour and shape, and a relation between them; at most 18 words (7 + 4 + 7)."""
    a, b = objects if rng.random() < 0.5 else objects[::-1]
    kind = "relation" if rng.random() < 0.5 else "is_relation"
    return _relation_caption(rng, a, b, kind)


def _caption(rng, objects, background, binding=False):
    if binding:
        return _binding_caption(rng, objects)
    main = objects[0]
    bg = f"{background} background"
    kinds = ["plain", "bg", "position", "list", "the_is", "image_with", "bg_with"]
    if len(objects) > 1:
        kinds += ["relation", "relation", "is_relation"]
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "plain":
        return _np(rng, main)
    if kind == "bg":
        return f"{_np(rng, main)} on a {bg}"
    if kind == "position":
        return f"there is {_np(rng, main)} {_POSITION_PHRASES[main['position']]}"
    if kind == "list":
        names = [_np(rng, o) for o in objects]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        noun = "shape" if len(objects) == 1 else "shapes"
        return f"{_COUNT_WORDS[len(objects) - 1]} {noun}: {listed}"
    if kind == "the_is":
        return f"the {main['colour']} {main['shape']} is {_POSITION_PHRASES[main['position']]}"
    if kind == "image_with":
        return f"an image with {_np(rng, main)} on a {bg}"
    if kind == "bg_with":
        return f"a {bg} with {_np(rng, main)}"
    a = main if rng.random() < 0.7 else objects[int(rng.integers(1, len(objects)))]
    b = objects[int(rng.integers(len(objects)))]
    while b is a:
        b = objects[int(rng.integers(len(objects)))]
    return _relation_caption(rng, a, b, kind)


def make_example(seed, split, index, size, captions_per_image=10, max_objects=3, textured=0.4,
                 layout="grid", shapes=SHAPES, colours=COLOURS, binding=False):
    """Draws image ``index`` of ``split``; returns (uint8 image, captions, attribute record).

    ``shapes`` / ``colours``: the names objects are drawn from (subsets of ``SHAPES`` /
    ``COLOURS``; class ids stay those of the full lists). ``binding``: the binding set (module
    docstring; needs ``max_objects=2``, ``layout="grid"``)."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    if rng.random() >= textured:
        background = PLAIN_BACKGROUNDS[int(rng.integers(len(PLAIN_BACKGROUNDS)))]
    else:
        background = TEXTURED_BACKGROUNDS[int(rng.integers(len(TEXTURED_BACKGROUNDS)))]
    objects = _sample_objects(rng, size, max_objects, layout, shapes, colours, binding)
    image = render(rng, size, background, objects)
    captions = [_caption(rng, objects, background, binding) for _ in range(captions_per_image)]
    key = f"{split}_{index:06d}"
    record = {"key": key, "class_id": class_id(objects[0]["shape"], objects[0]["colour"]),
              "background": background, "objects": objects}
    return image, captions, record


def _write_chunk(args):
    (out_dir, seed, split, start, stop, size, cpi, max_objects, textured, layout, names,
     binding) = args
    records = []
    for i in range(start, stop):
        image, captions, record = make_example(seed, split, i, size, cpi, max_objects, textured,
                                               layout, *names, binding=binding)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
        with open(os.path.join(out_dir, "images", record["key"] + ".png"), "wb") as f:
            f.write(buf.getvalue())
        with open(os.path.join(out_dir, "text", record["key"] + ".txt"), "w") as f:
            f.write("\n".join(captions) + "\n")
        records.append(record)
    return records


def _params(seed, num_train, num_test, size, captions_per_image, max_objects, textured, layout,
            shapes, colours, binding=False):
    return {"format_version": FORMAT_VERSION, "seed": seed, "num_train": num_train,
            "num_test": num_test, "size": size, "captions_per_image": captions_per_image,
            "max_objects": max_objects, "textured": textured, "layout": layout,
            "shapes": list(shapes), "colours": list(colours), "binding": bool(binding)}


def _meta_file_params(params):
    """What ``meta.json`` stores: ``binding`` only when set, so that the other sets' files
    (and the caches keyed by them: the attribute classifier, the FID statistics) stay as they
    were before the option."""
    return {k: v for k, v in params.items() if k != "binding" or v}


def generate(out_dir, seed, num_train, num_test, size, captions_per_image=10, processes=None,
             chunk_size=250, max_objects=3, textured=0.4, layout="grid", shapes=SHAPES,
             colours=COLOURS, binding=False):
    """Writes the shapes dataset into ``out_dir`` (created); returns the meta dict.

    ``processes``: worker processes (default: the number of CPUs, at most 8; 1 = in-process);
    each task draws ``chunk_size`` consecutive images.
    """
    if not 16 <= size <= 256:
        raise DataError(f"--shapes_size={size}: must be within 16..256.")
    if max_objects not in _COUNT_PROBS:
        raise DataError(f"--shapes_max_objects={max_objects}: must be 1, 2 or 3.")
    if not 0.0 <= textured <= 1.0:
        raise DataError(f"--shapes_textured={textured}: must be a probability in [0, 1].")
    if layout not in LAYOUTS:
        raise DataError(f"--shapes_layout={layout!r}: must be one of {', '.join(LAYOUTS)}.")
    problem = shapes_options.problem(layout, max_objects, shapes, colours, binding)
    if problem:
        raise DataError(problem)
    names = (tuple(shapes), tuple(colours))
    for sub in ("images", "text", "attributes", "train", "test"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    if processes is None:  # small sets are faster without starting processes
        processes = max(1, min(8, os.cpu_count() or 1, (num_train + num_test) // 500 + 1))
    chunk = chunk_size
    tasks = {}
    for split, n in (("train", num_train), ("test", num_test)):
        tasks[split] = [(out_dir, seed, split, s, min(n, s + chunk), size, captions_per_image,
                         max_objects, textured, layout, names, bool(binding))
                        for s in range(0, n, chunk)]
    records = {"train": [], "test": []}
    if processes == 1:
        for split in records:
            for t in tasks[split]:
                records[split].extend(_write_chunk(t))
    else:
        # fork is cheap, but forking a process that runs TensorFlow thread pools is unsafe:
        # then spawn (which needs an importable __main__, as any script or `python -m`).
        method = "spawn" if "tensorflow" in sys.modules else "fork"
        with multiprocessing.get_context(method).Pool(processes) as pool:
            for split in records:
                for recs in pool.imap(_write_chunk, tasks[split]):
                    records[split].extend(recs)
    for split, recs in records.items():
        fmt.write_pickle(fmt.filenames_path(out_dir, split), [r["key"] for r in recs])
        fmt.write_pickle(fmt.class_info_path(out_dir, split), [r["class_id"] for r in recs])
        with open(os.path.join(out_dir, "attributes", f"{split}.jsonl"), "w") as f:
            for r in recs:
                f.write(json.dumps(r, sort_keys=True) + "\n")
    fmt.build_captions_pickle(out_dir, captions_per_image)
    meta = _params(seed, num_train, num_test, size, captions_per_image, max_objects, textured,
                   layout, shapes, colours, binding)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(_meta_file_params(meta), f, indent=1, sort_keys=True)
    return meta


def ensure_generated(data_dir, seed, num_train, num_test, size, captions_per_image=10,
                     processes=None, max_objects=3, textured=0.4, layout="grid", shapes=SHAPES,
                     colours=COLOURS, binding=False):
    """Generates the dataset on first use; checks the parameters of an existing one."""
    meta_file = os.path.join(data_dir, "meta.json")
    want = _params(seed, num_train, num_test, size, captions_per_image, max_objects, textured,
                   layout, shapes, colours, binding)
    if os.path.isfile(meta_file):
        with open(meta_file) as f:  # defaults of data written before these options
            have = {"layout": "grid", "shapes": list(SHAPES), "colours": list(COLOURS),
                    "binding": False, **json.load(f)}
        if have != want:
            diff = ", ".join(f"{k}: {have.get(k)} (requested {want[k]})"
                             for k in want if have.get(k) != want[k])
            raise DataError(
                f"{meta_file}: the shapes data there was generated with other parameters ({diff}); "
                "pass matching --shapes_seed/--shapes_num_train/--shapes_num_test/--shapes_size/"
                "--shapes_max_objects/--shapes_textured/--shapes_layout/--shapes_names/"
                "--shapes_colours/--shapes_binding/--captions_per_image, another --data_dir, "
                "or delete the directory.")
        return have
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        raise DataError(
            f"{data_dir}: not empty but has no meta.json, so it is not a complete shapes dataset; "
            "delete it (an interrupted generation) or choose another --data_dir.")
    tmp = f"{data_dir.rstrip(os.sep)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Generating the shapes dataset in %s (%d train + %d test, %d px, seed %d, "
                "%s objects, %s layout, %.0f%% textured backgrounds).", data_dir, num_train,
                num_test, size, seed, "2 binding" if binding else f"1-{max_objects}", layout,
                100 * textured)
    meta = generate(tmp, seed, num_train, num_test, size, captions_per_image, processes,
                    max_objects=max_objects, textured=textured, layout=layout, shapes=shapes,
                    colours=colours, binding=binding)
    if os.path.isdir(data_dir):
        os.rmdir(data_dir)
    os.makedirs(os.path.dirname(os.path.abspath(data_dir)), exist_ok=True)
    os.replace(tmp, data_dir)
    return meta


def load_attributes(data_dir, split):
    """Reads ``attributes/<split>.jsonl``; returns {key: [object dict, ...]} (object 0 = main)."""
    path = os.path.join(data_dir, "attributes", f"{split}.jsonl")
    if not os.path.isfile(path):
        raise DataError(f"{path}: attribute file not found; it is written with the shapes data "
                        "(python -m msmt_tf.prepare_data --dataset=shapes).")
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out[r["key"]] = r["objects"]
    return out


def load_records(data_dir, split):
    """Like ``load_attributes`` but the whole records (key, class_id, background, objects)."""
    path = os.path.join(data_dir, "attributes", f"{split}.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
