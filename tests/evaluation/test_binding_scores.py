"""The binding-set scores (``attribute_classifier.score_binding``) and their evaluator path.

Hand-made readings check each score's definition; real rendered images (the stated scene, the
same objects with their colours swapped, the same objects in swapped cells) go through an
oracle classifier (a lookup of each image's ground truth by its pixels) and the evaluator's
generation path, so everything but the trained network is the code the evaluation runs.
"""

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.data import DataConfig, load_split
from msmt_tf.data import shapes as shapes_lib
from msmt_tf.evaluation import attribute_classifier as ac
from msmt_tf.evaluation.config import EvalConfig
from msmt_tf.evaluation.evaluator import Evaluator
from msmt_tf.models.config import ModelConfig

CAPTION = "a red circle to the left of a blue square"
ALL_ONE = {name: 1 for name in ac.BINDING_METRICS}


def _reading(*objects):
    """``(row, col, shape, colour)`` tuples -> ``Reading`` (size medium, grey background)."""
    return ac.Reading({(r, c): (shape, colour, "medium") for r, c, shape, colour in objects},
                      "grey")


def _score(caption, reading):
    return ac.score_binding(ac.parse_caption(caption), reading)


def test_hand_made_readings():
    stated = _reading((1, 0, "circle", "red"), (1, 2, "square", "blue"))
    assert _score(CAPTION, stated) == ALL_ONE
    # Another template and object order for the same scene.
    assert _score("the blue square is to the right of a circle that is red and small",
                  stated) == ALL_ONE
    swapped_colours = _reading((1, 0, "circle", "blue"), (1, 2, "square", "red"))
    assert _score(CAPTION, swapped_colours) == {
        "binding_accuracy": 0, "objects_present": 1, "relation_accuracy": 1,
        "scene_accuracy": 0, "object_count_accuracy": 1}
    reversed_relation = _reading((1, 2, "circle", "red"), (1, 0, "square", "blue"))
    assert _score(CAPTION, reversed_relation) == {
        "binding_accuracy": 1, "objects_present": 1, "relation_accuracy": 0,
        "scene_accuracy": 0, "object_count_accuracy": 1}
    # "above" needs the row, whatever the columns.
    assert _score("a red circle above a blue square", reversed_relation)["relation_accuracy"] == 0
    diagonal = _reading((0, 2, "circle", "red"), (2, 0, "square", "blue"))
    assert _score("a red circle above a blue square", diagonal) == ALL_ONE
    missing = _reading((1, 0, "circle", "red"))
    assert _score(CAPTION, missing) == {name: 0 for name in ac.BINDING_METRICS}
    wrong_shape = _reading((1, 0, "circle", "red"), (1, 2, "star", "blue"))
    assert _score(CAPTION, wrong_shape)["objects_present"] == 0
    extra = _reading((1, 0, "circle", "red"), (1, 2, "square", "blue"), (0, 0, "star", "green"))
    assert _score(CAPTION, extra) == {**ALL_ONE, "object_count_accuracy": 0}
    # The colours hold for one pair of cells, the relation for another: the scene is wrong.
    split = _reading((0, 2, "circle", "red"), (0, 1, "square", "blue"), (0, 0, "circle", "green"))
    assert _score(CAPTION, split) == {
        "binding_accuracy": 1, "objects_present": 1, "relation_accuracy": 1,
        "scene_accuracy": 0, "object_count_accuracy": 0}


def test_captions_the_scores_cannot_judge():
    stated = _reading((1, 0, "circle", "red"), (1, 2, "square", "blue"))
    # Cut by words_num: one object, or the second without its colour.
    assert _score(["a", "red", "circle", "to", "the", "left", "of", "a"], stated) is None
    assert _score(["a", "red", "circle", "to", "the", "left", "of", "a", "square"], stated) is None
    # No relation stated: only the relation-free scores.
    assert _score("two shapes: a red circle and a blue square", stated) == {
        "binding_accuracy": 1, "objects_present": 1, "object_count_accuracy": 1}
    totals = ac.add_binding_scores({}, [stated, stated, stated],
                                   [CAPTION, "a red circle", "a blue circle left of a square"])
    assert totals["unscored"] == 2 and totals["binding_accuracy"] == (1, 1)
    summary = ac.binding_summary(ac.add_binding_scores(
        {}, [stated, _reading((1, 0, "circle", "blue"), (1, 2, "square", "red"))],
        [CAPTION, CAPTION]))
    assert summary["binding_accuracy"] == 0.5 and summary["objects_present"] == 1.0
    assert np.isnan(ac.binding_summary({})["relation_accuracy"])


class OracleClassifier:
    """Reads an image by looking its pixels up among images of known content."""

    def __init__(self, table):
        self.table = table  # image bytes -> Reading
        self.report = {"heldout": {"object_attributes": 1.0}, "train_images": 0,
                       "directory": None}

    def check(self, min_accuracy):
        pass

    def read(self, images, batch_size=256):
        return [self.table[np.ascontiguousarray(im).tobytes()] for im in images]


def _truth(objects, background):
    return ac.Reading({(o["row"], o["col"]): (o["shape"], o["colour"], o["size"])
                       for o in objects}, background)


def _variants(record, size, seed):
    """Real renderings of the record's scene: as stated, colours swapped, cells swapped."""
    a, b = record["objects"]
    swapped_colours = [dict(a, colour=b["colour"]), dict(b, colour=a["colour"])]
    keys = ("row", "col", "position", "center")
    swapped_cells = [dict(a, **{k: b[k] for k in keys}), dict(b, **{k: a[k] for k in keys})]
    out = {}
    for name, objects in (("stated", record["objects"]), ("colours", swapped_colours),
                          ("cells", swapped_cells)):
        image = shapes_lib.render(np.random.default_rng(seed), size, record["background"], objects)
        out[name] = (image, _truth(objects, record["background"]))
    return out


def test_real_images_through_the_oracle():
    table, images, captions = {}, {"stated": [], "colours": [], "cells": []}, []
    for i in range(8):
        _, caps, record = shapes_lib.make_example(1, "test", i, 48, 2, 2, 0.0, "grid",
                                                  ("circle", "square", "star"),
                                                  ("red", "blue", "green"), binding=True)
        for name, (image, truth) in _variants(record, 48, i).items():
            table[image.tobytes()] = truth
            images[name].append(image)
        captions.append(caps[0])
    oracle = OracleClassifier(table)
    assert len(table) == 24  # every variant is another image
    scores = {name: ac.AttributeClassifier.binding_scores(oracle, np.stack(ims), captions)
              for name, ims in images.items()}
    assert scores["stated"] == {**{k: 1.0 for k in ac.BINDING_METRICS}, "scored": 8,
                                "unscored": 0}
    assert scores["colours"]["binding_accuracy"] == 0.0
    assert scores["colours"]["objects_present"] == scores["colours"]["relation_accuracy"] == 1.0
    assert scores["cells"]["relation_accuracy"] == 0.0
    assert scores["cells"]["binding_accuracy"] == scores["cells"]["objects_present"] == 1.0


# ----------------------------------------------------------------------------- evaluator

NUM_TEST = 12


class TableGenerator:
    """Generator stand-in: image i of the evaluation is ``images[i mod N]`` (the test image
    whose caption it got), as floats that quantise back to the same uint8 pixels."""

    z_dim = 4
    condition_dim = 4

    def __init__(self, images):
        self.images = tf.constant((np.asarray(images, np.float32) + 0.5) / 127.5 - 1.0)
        self.done = tf.Variable(0)

    def __call__(self, inputs, training=None):
        b = tf.shape(inputs["noise"])[0]
        idx = (self.done + tf.range(b)) % self.images.shape[0]
        self.done.assign_add(b)
        return {"images": [tf.gather(self.images, idx)]}


class BagOfWords:
    def __init__(self, vocab_size):
        self.table = np.random.default_rng(0).standard_normal((vocab_size, 8)).astype(np.float32)

    def __call__(self, tokens, training=False):
        words = tf.gather(self.table, tokens)  # TensorFlow ops: traced with the generator
        return words, tf.reduce_sum(words, axis=1)


@pytest.fixture(scope="module")
def binding_data(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("shapes_binding") / "data")
    cfg = DataConfig(dataset="shapes", data_dir=directory, shapes_seed=4, shapes_num_train=4,
                     shapes_num_test=NUM_TEST, shapes_size=32,
                     shapes_binding=True, shapes_max_objects=2, shapes_layout="grid",
                     shapes_names="circle,square,star", shapes_colours="red,blue,green")
    shapes_lib.generate(directory, 4, 4, NUM_TEST, 32, processes=1, max_objects=2, textured=0.0,
                        shapes=cfg.shapes_name_list, colours=cfg.shapes_colour_list,
                        binding=True)
    split = load_split(cfg, "test")
    records = shapes_lib.load_records(directory, "test")
    variants = [_variants(r, 32, i) for i, r in enumerate(records)]
    table = {im.tobytes(): truth for v in variants for im, truth in v.values()}
    return cfg, split, variants, OracleClassifier(table)


def _evaluate(cfg, split, classifier, images):
    eval_cfg = EvalConfig(eval_batch_size=5, metrics=("attributes",))
    model_cfg = ModelConfig(initial="ig", refinement="attn", stages=1, base_size=32, gf_dim=2,
                            z_dim=4, condition_dim=4, embedding_dim=8)
    ev = Evaluator(cfg, model_cfg, eval_cfg, BagOfWords(len(split.vocab)), split=split,
                   attribute_classifier=classifier)
    return ev.evaluate(TableGenerator(images), num_images=2 * NUM_TEST, seed=3)


def test_evaluator_reports_binding_scores(binding_data):
    cfg, split, variants, oracle = binding_data
    stated = _evaluate(cfg, split, oracle, [v["stated"][0] for v in variants])
    for name in ac.BINDING_METRICS:
        assert stated[name] == 1.0, (name, stated)
    assert stated["attribute_accuracy"] == 1.0
    assert stated["protocol"]["attributes"]["binding"]["scored_images"] == 2 * NUM_TEST
    colours = _evaluate(cfg, split, oracle, [v["colours"][0] for v in variants])
    assert colours["binding_accuracy"] == colours["scene_accuracy"] == 0.0
    assert colours["objects_present"] == colours["relation_accuracy"] == 1.0
    # The attribute accuracy still credits most statements of these images (a mention matches
    # the object agreeing with most of its words): it does not isolate binding errors.
    assert colours["attribute_accuracy"] > 0.5
    cells = _evaluate(cfg, split, oracle, [v["cells"][0] for v in variants])
    assert cells["relation_accuracy"] == 0.0 and cells["binding_accuracy"] == 1.0
    # Other shapes data: no binding scores.
    other = _evaluate(cfg.replace(shapes_binding=False), split, oracle,
                      [v["stated"][0] for v in variants])
    assert other["attribute_accuracy"] == 1.0
    assert not set(ac.BINDING_METRICS) & set(other)
    assert "binding" not in other["protocol"]["attributes"]
