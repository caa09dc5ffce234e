"""The word-level binding set of the shapes data (``--shapes_binding``, docs/shapes_binding.md).

The captions are checked by a parser written here, independent of the generator's templates
and of ``attribute_classifier.parse_caption``: a binding caption is split at its relation
phrase; each side must name exactly one shape and one colour, which must be one object of the
ground-truth record, and the relation must hold between the two objects' cells.
"""

import filecmp
import hashlib
import json
import os
import re

import pytest

from msmt_tf.configlib import ConfigError
from msmt_tf.data import shapes
from msmt_tf.data.config import DataConfig
from msmt_tf.data.errors import DataError

NAMES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "green", "blue", "yellow")
KW = dict(max_objects=2, textured=0.0, layout="grid", shapes=NAMES, colours=COLOURS, binding=True)
FLAGS = os.path.join(os.path.dirname(__file__), "..", "..", "flags", "shapes_binding.flags")
# Relation phrase -> sign of (row of the first object - row of the second, same for columns);
# None: that axis is not constrained.
RELATIONS = {"above": (-1, None), "below": (1, None), "to the left of": (None, -1),
             "to the right of": (None, 1)}
_SPLIT = re.compile(r" (above|below|to the left of|to the right of) ")


def _sign(x):
    return (x > 0) - (x < 0)


def _side(text):
    """(shape, colour) named by one side of a binding caption."""
    words = text.split()
    named = [w for w in words if w in shapes.SHAPES], [w for w in words if w in shapes.COLOURS]
    assert len(named[0]) == 1 and len(named[1]) == 1, text
    return named[0][0], named[1][0]


def parse_binding_caption(caption):
    """``((shape, colour), relation phrase, (shape, colour))`` of a binding caption."""
    parts = _SPLIT.split(caption)
    assert len(parts) == 3, caption
    return _side(parts[0]), parts[1], _side(parts[2])


def check_caption(caption, objects):
    """Asserts that the caption names the two objects, each colour on its own shape, and a
    relation that holds between their cells; returns (relation, index of the first object)."""
    first, rel, second = parse_binding_caption(caption)
    by_name = {(o["shape"], o["colour"]): i for i, o in enumerate(objects)}
    assert first in by_name and second in by_name and first != second, (caption, objects)
    a, b = objects[by_name[first]], objects[by_name[second]]
    want_row, want_col = RELATIONS[rel]
    if want_row is not None:
        assert _sign(a["row"] - b["row"]) == want_row, (caption, objects)
    if want_col is not None:
        assert _sign(a["col"] - b["col"]) == want_col, (caption, objects)
    return rel, by_name[first]


def test_checker_rejects_wrong_captions():
    objects = [{"shape": "circle", "colour": "red", "row": 0, "col": 0},
               {"shape": "square", "colour": "blue", "row": 0, "col": 2}]
    assert check_caption("a red circle to the left of a blue square", objects) == (
        "to the left of", 0)
    assert check_caption("the blue square is to the right of a circle that is red and small",
                         objects) == ("to the right of", 1)
    for bad in ("a blue circle to the left of a red square",  # colours swapped
                "a red circle to the right of a blue square",  # relation reversed
                "a red circle above a blue square",  # same row: not above
                "a red circle to the left of a blue star"):  # no such object
        with pytest.raises(AssertionError):
            check_caption(bad, objects)


def test_every_caption_binds_both_objects_and_states_a_true_relation():
    relations, first_object, kinds, longest = set(), set(), set(), 0
    cells = set()
    for i in range(150):
        image, captions, record = shapes.make_example(7, "train", i, 48, 10, **KW)
        objects = record["objects"]
        assert len(objects) == 2
        (s0, c0), (s1, c1) = ((o["shape"], o["colour"]) for o in objects)
        assert s0 != s1 and c0 != c1, objects
        assert {s0, s1} <= set(NAMES) and {c0, c1} <= set(COLOURS)
        assert (objects[0]["row"], objects[0]["col"]) != (objects[1]["row"], objects[1]["col"])
        assert record["class_id"] == shapes.class_id(s0, c0)
        assert record["background"] in shapes.PLAIN_BACKGROUNDS and image.shape == (48, 48, 3)
        cells.update((o["row"], o["col"]) for o in objects)
        for caption in captions:
            rel, first = check_caption(caption, objects)
            relations.add(rel)
            first_object.add(first)
            kinds.add(caption.split()[0])
            longest = max(longest, len(caption.split()))
    # Every relation, both orders and both openings ("a ...", "the ... is") occur; every cell
    # is used; captions fit --words_num=18 of flags/shapes_binding.flags (7 + 4 + 7 words).
    assert relations == set(RELATIONS) and first_object == {0, 1}
    assert kinds == {"a", "the"} and len(cells) == 9
    assert longest == 18


def test_same_seed_same_files_other_seed_other_images(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    shapes.generate(a, seed=2, num_train=12, num_test=4, size=32, processes=1, **KW)
    shapes.generate(b, seed=2, num_train=12, num_test=4, size=32, processes=2, chunk_size=5, **KW)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == [] and len(files) == 2 * 16 + 8
    shapes.generate(c, seed=3, num_train=12, num_test=4, size=32, processes=1, **KW)
    images = [f for f in files if f.startswith("images")]
    assert len(filecmp.cmpfiles(a, c, images, shallow=False)[1]) > 12
    with open(os.path.join(a, "meta.json")) as f:
        assert json.load(f)["binding"] is True
    for rec in shapes.load_records(a, "train"):
        with open(os.path.join(a, "text", rec["key"] + ".txt")) as f:
            for caption in f.read().splitlines():
                check_caption(caption, rec["objects"])
    # The same seed without --shapes_binding is another set; its meta.json has no "binding" key
    # (files of the other sets, and the caches keyed by them, are as before the option).
    d = str(tmp_path / "d")
    shapes.generate(d, seed=2, num_train=12, num_test=4, size=32, processes=1,
                    **{**KW, "binding": False})
    with open(os.path.join(d, "meta.json")) as f:
        assert "binding" not in json.load(f)
    with pytest.raises(DataError, match=r"binding: True \(requested False\).*--shapes_binding"):
        shapes.ensure_generated(a, 2, 12, 4, 32, **{**KW, "binding": False})
    assert shapes.ensure_generated(a, 2, 12, 4, 32, **KW)["binding"] is True


def test_the_other_sets_draw_what_they_drew_before():
    # The option leaves the random stream of the existing sets alone: the captions and records
    # of the full set, a subset and the quickstart hash as with the code before the option.
    h = hashlib.sha1()
    for i in range(30):
        for args in ((4, "test", i, 32),
                     (5, "train", i, 32, 10, 2, 0.0, "grid", ("circle", "square", "star"),
                      ("red", "blue")),
                     (6, "train", i, 32, 10, 1, 0.0, "centre", ("circle", "square", "triangle"),
                      ("red", "green", "blue"))):
            _, captions, record = shapes.make_example(*args)
            h.update(json.dumps([captions, record], sort_keys=True).encode())
    assert h.hexdigest() == "fe42bf979a03afbd8e48564759642cac39577cca"


def test_binding_needs_two_objects_on_the_grid(tmp_path):
    base = dict(dataset="shapes", shapes_binding=True, shapes_layout="grid",
                shapes_max_objects=2, shapes_names="circle,square", shapes_colours="red,blue")
    assert DataConfig(**base).shapes_binding
    for change, flag in ((dict(shapes_max_objects=3), "--shapes_max_objects=3"),
                         (dict(shapes_layout="centre", shapes_max_objects=1),
                          "--shapes_layout=centre"),
                         (dict(shapes_names="circle"), "--shapes_names=circle"),
                         (dict(shapes_colours="red"), "--shapes_colours=red")):
        with pytest.raises(ConfigError, match=f"--shapes_binding.*{flag}"):
            DataConfig(**{**base, **change})
    with pytest.raises(DataError, match="--shapes_binding draws exactly two objects"):
        shapes.generate(str(tmp_path / "x"), 0, 2, 2, 32, **{**KW, "max_objects": 3})
    with pytest.raises(DataError, match="--shapes_binding gives the two objects different"):
        shapes.generate(str(tmp_path / "y"), 0, 2, 2, 32, **{**KW, "colours": ("red",)})


def test_flagfile_is_the_binding_set(monkeypatch):
    from absl import flags

    from msmt_tf.cli import common, entry, flagutil

    monkeypatch.chdir(os.path.dirname(FLAGS))
    fv = flags.FlagValues()
    for _, cls in common.config_classes():
        flagutil.define_flags(cls, fv)
    entry.parse(["prog", "--preset=shapes_binding"], fv)
    cfg = flagutil.from_flags(DataConfig, fv)
    assert (cfg.dataset, cfg.shapes_binding, cfg.shapes_max_objects, cfg.shapes_layout) == (
        "shapes", True, 2, "grid")
    assert (cfg.shapes_name_list, cfg.shapes_colour_list) == (NAMES, COLOURS)
    assert cfg.shapes_textured == 0.0 and cfg.words_num == 18
