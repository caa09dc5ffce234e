"""The synthetic shapes dataset: determinism, captions agree with the attribute file."""

import filecmp
import json
import os

import numpy as np
import pytest
from PIL import Image

from msmt_tf.configlib import ConfigError
from msmt_tf.data import shapes
from msmt_tf.data.config import DataConfig
from msmt_tf.data.dataset import load_split
from msmt_tf.data.errors import DataError
from msmt_tf.data.vocabulary import tokenize

ATTR = set(shapes.SIZES) | set(shapes.COLOURS)
POSITION_WORDS = {"top", "bottom", "left", "right", "centre"}
RELATIONS = {"above": (-1, 0), "below": (1, 0), "left": (0, -1), "right": (0, 1)}


def _all_files(root):
    out = []
    for d, _, fs in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in fs]
    return sorted(out)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    a = str(root / "a")
    shapes.generate(a, seed=3, num_train=40, num_test=10, size=48, processes=1)
    return root, a


def test_constants():
    assert len(shapes.SHAPES) >= 6 and len(shapes.COLOURS) >= 8 and len(shapes.SIZES) == 3
    assert len(set(shapes.COLOURS) & set(shapes.BACKGROUNDS)) == 0
    assert shapes.class_id("circle", "red") == 0
    assert shapes.class_id(shapes.SHAPES[-1], shapes.COLOURS[-1]) == shapes.NUM_CLASSES - 1


def test_same_seed_byte_identical_regardless_of_processes(generated):
    root, a = generated
    b = str(root / "b")
    shapes.generate(b, seed=3, num_train=40, num_test=10, size=48, processes=2, chunk_size=7)
    files = _all_files(a)
    assert files == _all_files(b) and len(files) == 2 * 50 + 8
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == []
    c = str(root / "c")
    shapes.generate(c, seed=4, num_train=40, num_test=10, size=48, processes=1)
    _, mismatch, _ = filecmp.cmpfiles(a, c, [f for f in files if f.startswith("images")],
                                      shallow=False)
    assert len(mismatch) > 40


def _parse_mentions(tokens):
    """(shape index, shape word, attribute words) for every shape word of a caption."""
    out = []
    for p, t in enumerate(tokens):
        if t not in shapes.SHAPES:
            continue
        attrs, q = [], p - 1
        while q >= 0 and tokens[q] in ATTR:
            attrs.append(tokens[q])
            q -= 1
        q = p + 1
        if tokens[q:q + 2] == ["that", "is"]:
            q += 2
            while q < len(tokens) and tokens[q] in ATTR | {"and"}:
                if tokens[q] != "and":
                    attrs.append(tokens[q])
                q += 1
        elif tokens[q:q + 1] == ["coloured"]:
            attrs.append(tokens[q + 1])
        out.append((p, t, attrs))
    return out


def _matches(obj, shape, attrs):
    return obj["shape"] == shape and all(a in (obj["colour"], obj["size"]) for a in attrs)


def test_captions_agree_with_attribute_file(generated):
    _, a = generated
    attributes = shapes.load_attributes(a, "train")
    records = shapes.load_records(a, "train")
    counts = {"relation": 0, "position": 0, "background": 0}
    for rec in records:
        objects = attributes[rec["key"]]
        assert objects == rec["objects"] and 1 <= len(objects) <= 3
        assert rec["class_id"] == shapes.class_id(objects[0]["shape"], objects[0]["colour"])
        assert len({(o["row"], o["col"]) for o in objects}) == len(objects)
        with open(os.path.join(a, "text", rec["key"] + ".txt")) as f:
            captions = [line for line in f.read().split("\n") if line]
        assert len(captions) == 10
        for cap in captions:
            tokens = tokenize(cap)
            mentions = _parse_mentions(tokens)
            assert mentions, cap
            for _, shape, attrs in mentions:
                assert any(_matches(o, shape, attrs) for o in objects), (cap, objects)
            for word in set(tokens) & set(shapes.BACKGROUNDS):
                assert word == rec["background"], cap
                counts["background"] += 1
            for r, word in enumerate(tokens):
                if word in RELATIONS and r + 1 < len(tokens) and tokens[r + 1] in ("of", "a"):
                    before = [m for m in mentions if m[0] < r][-1]
                    after = [m for m in mentions if m[0] > r][0]
                    drow, dcol = RELATIONS[word]
                    ok = any(
                        _matches(x, before[1], before[2]) and _matches(y, after[1], after[2])
                        and (drow == 0 or np.sign(x["row"] - y["row"]) == drow)
                        and (dcol == 0 or np.sign(x["col"] - y["col"]) == dcol)
                        for x in objects for y in objects if x is not y)
                    assert ok, (cap, objects)
                    counts["relation"] += 1
            for r in range(len(tokens) - 2):
                if tokens[r] in ("in", "at", "on") and tokens[r + 1] == "the" and \
                        tokens[r + 2] in POSITION_WORDS:
                    words = []
                    for w in tokens[r + 2:]:
                        if w not in POSITION_WORDS:
                            break
                        words.append(w)
                    shape = [m for m in mentions if m[0] < r][-1]
                    assert any(_matches(o, shape[1], shape[2]) and o["position"] == " ".join(words)
                               for o in objects), (cap, objects)
                    counts["position"] += 1
    assert min(counts.values()) > 10, counts


def test_main_object_colour_is_drawn(generated):
    _, a = generated
    for rec in shapes.load_records(a, "test"):
        img = np.asarray(Image.open(os.path.join(a, "images", rec["key"] + ".png")))
        assert img.shape == (48, 48, 3) and img.dtype == np.uint8
        main = rec["objects"][0]
        x, y = (int(v) for v in main["center"])
        want = np.array(shapes._RGB[main["colour"]])
        if main["shape"] != "star":  # the centre pixel of every other shape is inside it
            assert np.abs(img[y, x].astype(int) - want).max() <= 13, (rec, img[y, x])


def test_layout_and_split(generated):
    _, a = generated
    cfg = DataConfig(data_dir=a, shapes_seed=3, shapes_num_train=40, shapes_num_test=10, shapes_size=48,
                     shapes_max_objects=3, shapes_textured=0.4, shapes_layout="grid",
                     shapes_names=",".join(shapes.SHAPES), shapes_colours=",".join(shapes.COLOURS))
    train = load_split(cfg, "train")
    recs = shapes.load_records(a, "train")
    assert train.keys == [r["key"] for r in recs]
    assert train.class_ids.tolist() == [r["class_id"] for r in recs]
    assert train.image_paths[0] == os.path.join(a, "images", "train_000000.png")
    with open(os.path.join(a, "meta.json")) as f:
        assert json.load(f)["seed"] == 3
    with pytest.raises(DataError, match=r"generated with other parameters \(seed: 3 \(requested 5\)\)"):
        load_split(cfg.replace(shapes_seed=5), "train")


def test_first_use_generates_and_refuses_foreign_dirs(tmp_path):
    cfg = DataConfig(data_dir=str(tmp_path / "s"), shapes_num_train=6, shapes_num_test=2,
                     shapes_size=32)
    assert len(load_split(cfg, "test")) == 2
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(DataError, match="not empty but has no meta.json"):
        load_split(cfg.replace(data_dir=str(tmp_path / "other")), "train")


def test_object_count_and_background_options(tmp_path):
    def records(max_objects, textured, n=60):
        recs = [shapes.make_example(4, "train", i, 32, 1, max_objects, textured)[2]
                for i in range(n)]
        counts = {len(r["objects"]) for r in recs}
        textured_share = np.mean([r["background"] in shapes.TEXTURED_BACKGROUNDS for r in recs])
        return counts, textured_share

    counts, share = records(1, 0.0)  # the quickstart default
    assert counts == {1} and share == 0.0
    counts, share = records(3, 0.4)  # the full set of flags/shapes.flags
    assert counts == {1, 2, 3} and 0.2 < share < 0.6
    counts, share = records(2, 1.0)
    assert counts == {1, 2} and share == 1.0
    # centre: the one object in cell (1, 1) whatever the draw; the grid layout varies the cell.
    cells = {(o["row"], o["col"]) for i in range(30)
             for o in shapes.make_example(4, "train", i, 32, 1, 1, 0.0, "centre")[2]["objects"]}
    assert cells == {(1, 1)}
    # ... and 1.5 times larger than on the grid (radius in cells of 32 / 3 px, rounded to 0.01 px).
    radii = {round(o["radius"] / (32 / 3), 2) for i in range(30)
             for o in shapes.make_example(4, "train", i, 32, 1, 1, 0.0, "centre")[2]["objects"]}
    assert radii == {0.38, 0.54, 0.78}
    cells = {(o["row"], o["col"]) for i in range(30)
             for o in shapes.make_example(4, "train", i, 32, 1, 1, 0.0, "grid")[2]["objects"]}
    assert len(cells) > 4
    # The full-set defaults of the library reproduce the images drawn before these options.
    assert np.array_equal(shapes.make_example(4, "test", 7, 32)[0],
                          shapes.make_example(4, "test", 7, 32, 10, 3, 0.4)[0])
    cfg = DataConfig(data_dir=str(tmp_path / "s"), shapes_num_train=4, shapes_num_test=2,
                     shapes_size=32)
    assert (cfg.shapes_max_objects, cfg.shapes_textured) == (1, 0.0)
    load_split(cfg, "test")
    with pytest.raises(DataError, match=r"max_objects: 1 \(requested 3\).*--shapes_max_objects"):
        load_split(cfg.replace(shapes_max_objects=3, shapes_layout="grid"), "test")
    with pytest.raises(ConfigError, match="--shapes_layout=centre holds one object"):
        cfg.replace(shapes_max_objects=2)
    with pytest.raises(DataError, match="--shapes_layout=centre holds one object"):
        shapes.generate(str(tmp_path / "u"), 0, 2, 2, 32, max_objects=2, layout="centre")
    with pytest.raises(DataError, match="--shapes_max_objects=4"):
        shapes.generate(str(tmp_path / "t"), 0, 2, 2, 32, max_objects=4)


def test_shape_and_colour_subsets(tmp_path):
    d = str(tmp_path / "sub")
    meta = shapes.generate(d, 2, 30, 5, 32, processes=1, max_objects=3,
                           shapes=("circle", "star"), colours=("blue", "red"))
    assert (meta["shapes"], meta["colours"]) == (["circle", "star"], ["blue", "red"])
    records = shapes.load_records(d, "train")
    seen = {(o["shape"], o["colour"]) for r in records for o in r["objects"]}
    assert seen == {(s, c) for s in ("circle", "star") for c in ("blue", "red")}
    for r in records:  # class ids stay those of the full lists
        assert r["class_id"] == shapes.class_id(r["objects"][0]["shape"], r["objects"][0]["colour"])
    # Data written before these options (no names in meta.json) is the full set.
    full = str(tmp_path / "full")
    shapes.generate(full, 2, 3, 2, 32, processes=1)
    with open(os.path.join(full, "meta.json")) as f:
        old = json.load(f)
    del old["shapes"], old["colours"]
    with open(os.path.join(full, "meta.json"), "w") as f:
        json.dump(old, f)
    shapes.ensure_generated(full, 2, 3, 2, 32)
    with pytest.raises(DataError, match=r"shapes: \['circle'.*\(requested \['star'\]\).*--shapes_names"):
        shapes.ensure_generated(full, 2, 3, 2, 32, shapes=("star",))
    with pytest.raises(ConfigError, match=r"--shapes_names=circle,oval: .*\(oval unknown\)"):
        DataConfig(shapes_names="circle,oval")
    with pytest.raises(ConfigError, match=r"--shapes_colours=red,red: give distinct names"):
        DataConfig(shapes_colours="red,red")
    with pytest.raises(DataError, match="--shapes_colours=: give distinct names"):
        shapes.generate(str(tmp_path / "none"), 0, 2, 2, 32, colours=())
