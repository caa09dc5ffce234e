"""The shapes attribute classifier, the caption parser and the attribute-accuracy score."""

import json
import os

import numpy as np
import pytest

from msmt_tf.data import shapes as shapes_lib
from msmt_tf.evaluation import attribute_classifier as ac
from msmt_tf.testing.layer_test import run_serialization_test

TRAIN, TEST = 2000, 300


def _perfect_reading(record):
    return ac.Reading({(o["row"], o["col"]): (o["shape"], o["colour"], o["size"])
                       for o in record["objects"]}, record["background"])


def test_parse_caption_by_hand():
    st = ac.parse_caption("a small red circle above a square that is blue and large")
    assert st.mentions == [ac.Mention("circle", "red", "small"), ac.Mention("square", "blue", "large")]
    assert st.relations == [(0, "above", 1)] and st.count is None and st.background is None

    st = ac.parse_caption("the green star is in the bottom left corner")
    assert st.mentions == [ac.Mention("star", "green", None, (2, 0))]

    st = ac.parse_caption("two shapes: a hexagon coloured pink and a medium cyan cross")
    assert st.count == 2
    assert st.mentions == [ac.Mention("hexagon", "pink"), ac.Mention("cross", "cyan", "medium")]

    st = ac.parse_caption("an image with a diamond that is small and brown on a striped background")
    assert st.mentions == [ac.Mention("diamond", "brown", "small")] and st.background == "striped"

    st = ac.parse_caption("the red circle is to the left of a blue square")
    assert st.relations == [(0, "left_of", 1)]
    # Truncated (words_num) captions state only complete phrases.
    st = ac.parse_caption(["there", "is", "a", "red", "circle", "in", "the", "top"])
    assert st.mentions == [ac.Mention("circle", "red")]
    st = ac.parse_caption(["a", "red", "circle", "to", "the", "right", "of", "a", "blue"])
    assert st.relations == [] and len(st.mentions) == 1


def test_score_caption_by_hand():
    reading = ac.Reading({(0, 0): ("circle", "red", "small"), (2, 2): ("square", "green", "large")},
                         "grey")
    st = ac.parse_caption("a large red circle above a blue square on a grey background")
    # circle: shape, colour found, size missed; square: shape found, colour missed;
    # relation: (0,0) above (2,2) holds; background found.
    assert ac.score_caption(st, reading) == {
        "shape": (2, 2), "colour": (1, 2), "size": (0, 1), "relation": (1, 1), "background": (1, 1)}
    st = ac.parse_caption("three shapes: a red circle and a green square and a red star")
    scores = ac.score_caption(st, reading)
    assert scores["count"] == (0, 1)
    assert scores["shape"] == (2, 3) and scores["colour"] == (3, 3)
    empty = ac.Reading({}, "white")
    assert ac.score_caption(ac.parse_caption("the red circle is in the centre"), empty) == {
        "shape": (0, 1), "colour": (0, 1), "position": (0, 1)}


def test_parser_recovers_every_statement_of_generated_captions():
    # A reading equal to the ground truth must make every statement of every caption true,
    # and the templates must be exercised (every kind of statement occurs).
    totals = {}
    for i in range(300):
        _, captions, record = shapes_lib.make_example(11, "train", i, 32)
        reading = _perfect_reading(record)
        for caption in captions:
            for kind, (found, stated) in ac.score_caption(ac.parse_caption(caption), reading).items():
                assert found == stated, (caption, record)
                totals[kind] = totals.get(kind, 0) + stated
    assert set(totals) == {"shape", "colour", "size", "position", "relation", "count", "background"}
    assert totals["shape"] > 3000


def test_crops_cover_their_cells():
    net = ac.CellAttributeNet(cell_size=4, margin=2, width=2, hidden=4)
    img = np.zeros((1, 12, 12, 3), np.float32)
    for cell in range(9):
        r, c = divmod(cell, 3)
        img[0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 10.0 * cell
    crops = np.asarray(net.extract_crops(img))
    assert crops.shape == (1, 9, 8, 8, 3)
    for cell in range(9):
        # The centre 4x4 of crop k is cell k; the margin shows the neighbours (or padding 0 -> -1).
        np.testing.assert_allclose(crops[0, cell, 2:6, 2:6], 10.0 * cell / 127.5 - 1.0, rtol=1e-6)
    assert crops[0, 0, 0, 0, 0] == 0.0  # zero padding in [-1, 1] units
    np.testing.assert_allclose(crops[0, 0, 2, 6, 0], 10.0 / 127.5 - 1.0, rtol=1e-6)  # right neighbour


def test_net_serialization_and_shapes():
    net = ac.CellAttributeNet(cell_size=6, margin=1, width=2, hidden=5, seed=3)
    images = np.random.default_rng(0).integers(0, 256, (2, 30, 30, 3)).astype(np.float32)
    out = run_serialization_test(net, images)
    assert out["shape"].shape == (2, 9, 8) and out["colour"].shape == (2, 9, 9)
    assert out["size"].shape == (2, 9, 3) and out["background"].shape == (2, 7)
    # The background logits are the mean of the 9 crops' logits.
    k = net.crop_size
    crops = np.asarray(net.extract_crops(images)).reshape(-1, k, k, 3)
    per_crop = np.asarray(net.crop_logits(crops)["background"]).reshape(2, 9, 7)
    np.testing.assert_allclose(np.asarray(out["background"]), per_crop.mean(axis=1), atol=1e-5)


def test_record_labels_and_heldout_report():
    records = [{"background": "grey", "objects": [
        {"shape": "star", "colour": "blue", "size": "large", "row": 1, "col": 2}]}]
    labels = ac.record_labels(records)
    assert labels["shape"][0, 5] == 1 + shapes_lib.SHAPES.index("star")
    assert labels["shape"].sum() == labels["shape"][0, 5]
    assert labels["colour"][0, 5] == shapes_lib.COLOURS.index("blue")
    pred = {k: v.copy() for k, v in labels.items()}
    pred["size"][0, 5] = 0  # wrong size
    pred["shape"][0, 0] = 2  # a phantom object in an empty cell
    rep = ac.heldout_report(pred, labels)
    assert rep["object_shape"] == 1.0 and rep["object_size"] == 0.0
    assert rep["object_attributes"] == pytest.approx(2 / 3)
    assert rep["empty_cell"] == pytest.approx(7 / 8) and rep["minimum"] == 0.0


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("shapes_attr") / "shapes")
    shapes_lib.generate(directory, seed=5, num_train=TRAIN, num_test=TEST, size=64, processes=2)
    return directory


@pytest.fixture(scope="module")
def classifier(shapes_dir):
    return ac.load_or_train(shapes_dir, train_images=TRAIN, epochs=8)


def test_classifier_heldout_accuracy(classifier, shapes_dir):
    held = classifier.report["heldout"]
    assert held["images"] == TEST
    assert classifier.heldout_accuracy >= 0.95, held
    assert held["object_colour"] >= 0.97 and held["background"] >= 0.97, held
    classifier.check(0.95)
    with pytest.raises(ac.AttributeClassifierError, match="held-out accuracy"):
        classifier.check(1.01)
    # Cached beside the data and keyed by meta.json: a second call loads the same weights.
    directory = classifier.report["directory"]
    assert directory.startswith(os.path.join(shapes_dir, "attribute_classifier"))
    again = ac.load_or_train(shapes_dir, train_images=TRAIN, epochs=8)
    for a, b in zip(classifier.model.weights, again.model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert again.report["heldout"] == held
    with open(os.path.join(shapes_dir, "meta.json")) as f:
        meta = json.load(f)
    assert ac.cache_dir_for(shapes_dir, TRAIN, 0, 8) == directory
    meta["seed"] = 6
    with open(os.path.join(shapes_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    try:
        assert ac.cache_dir_for(shapes_dir, TRAIN, 0, 8) != directory
    finally:
        meta["seed"] = 5
        with open(os.path.join(shapes_dir, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)


def test_attribute_accuracy_real_high_shuffled_low(classifier, shapes_dir):
    images, records = ac.read_split_images(shapes_dir, "test")
    captions = []
    for rec in records:
        with open(os.path.join(shapes_dir, "text", rec["key"] + ".txt")) as f:
            captions.append(f.read().splitlines()[0])
    real = classifier.attribute_accuracy(images, captions)
    order = np.random.default_rng(0).permutation(len(images))
    shuffled = classifier.attribute_accuracy(images[order], captions)
    assert real["stated"] == shuffled["stated"] > 3 * len(images)
    assert real["accuracy"] >= 0.9, real
    assert shuffled["accuracy"] <= 0.6, shuffled
    assert real["per_attribute"]["colour"] > shuffled["per_attribute"]["colour"] + 0.3
    with pytest.raises(ac.AttributeClassifierError, match="captions"):
        classifier.attribute_accuracy(images[:2], captions[:3])
