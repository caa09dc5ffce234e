"""TFRecords written by prepare_data are read back by make_dataset with the same outputs."""

import numpy as np
import pytest

from msmt_tf.data import pipeline, tfrecord
from msmt_tf.data.config import DataConfig
from msmt_tf.data.dataset import load_split
from msmt_tf.data.errors import DataError


def _collect(ds):
    out = []
    for b in ds:
        out.append({k: (tuple(x.numpy() for x in v) if k == "images" else v.numpy())
                    for k, v in b.items()})
    return out


def test_tfrecord_roundtrip_cub(tmp_path, helpers):
    helpers.make_cub_tree(str(tmp_path / "birds"), num_train=7, num_test=3)
    cfg = DataConfig(dataset="cub", data_dir=str(tmp_path / "birds"), captions_per_image=3,
                     words_num=5)
    sizes = (16, 32)
    rec_dir = str(tmp_path / "rec")
    for s in ("train", "test"):
        meta = tfrecord.write_split(load_split(cfg, s), rec_dir, examples_per_shard=3)
    assert meta["shards"] == ["test-00000-of-00001.tfrecord"]
    assert tfrecord.read_meta(rec_dir, "train")["num_examples"] == 7
    rec_cfg = cfg.replace(tfrecord_dir=rec_dir)
    # evaluation: identical batches (same order, same seeded caption choice)
    a = _collect(pipeline.make_dataset(cfg, "train", 3, training=False, image_sizes=sizes,
                                      seed=4))
    b = _collect(pipeline.make_dataset(rec_cfg, "train", 3, training=False, image_sizes=sizes,
                                      seed=4))
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        for k in x:
            if k == "images":
                for p, q in zip(x[k], y[k]):
                    np.testing.assert_array_equal(p, q)
            else:
                np.testing.assert_array_equal(x[k], y[k])
    # training: the same examples per epoch, in another order; deterministic with a seed
    t1 = _collect(pipeline.make_dataset(rec_cfg, "train", 2, training=True, image_sizes=sizes,
                                       seed=1))
    t2 = _collect(pipeline.make_dataset(rec_cfg, "train", 2, training=True, image_sizes=sizes,
                                       seed=1))
    keys = [k for b in t1 for k in b["key"].tolist()]
    all_keys = {x.encode() for x in load_split(cfg, "train").keys}
    assert len(t1) == 3 and len(set(keys)) == 6 and set(keys) <= all_keys
    assert all(np.array_equal(x["captions"], y["captions"]) for x, y in zip(t1, t2))


def test_tfrecord_errors(tmp_path, helpers):
    with pytest.raises(DataError, match=r"train\.json: TFRecord index not found.*--tfrecord"):
        tfrecord.read_meta(str(tmp_path), "train")
    helpers.make_coco_tree(str(tmp_path / "coco"))
    cfg = DataConfig(dataset="coco", data_dir=str(tmp_path / "coco"), captions_per_image=5)
    tfrecord.write_split(load_split(cfg, "test"), str(tmp_path / "rec"))
    with pytest.raises(DataError, match="captions_per_image=5, but --captions_per_image=4"):
        pipeline.make_dataset(cfg.replace(tfrecord_dir=str(tmp_path / "rec"), captions_per_image=4),
                              "test", 2, training=False, image_sizes=(32,))
