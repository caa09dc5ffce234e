"""load_split / ensure_dataset on tiny CUB-like and COCO-like trees, and bad input."""

import logging
import os
import pickle

import numpy as np
import pytest

from msmt_tf.data import bbox as bbox_lib
from msmt_tf.data.config import DataConfig
from msmt_tf.data.dataset import check_image_file, ensure_dataset, load_split
from msmt_tf.data.errors import DataError


def _cub_cfg(root, **kw):
    return DataConfig(dataset="cub", data_dir=str(root), captions_per_image=3, **kw)


def test_cub_tree(tmp_path, helpers, caplog):
    splits = helpers.make_cub_tree(str(tmp_path))
    with caplog.at_level(logging.INFO):
        train = load_split(_cub_cfg(tmp_path), "train")
    assert train.keys == splits["train"]
    assert train.class_ids.dtype == np.int64 and train.class_ids.tolist() == [1, 2, 1, 2]
    assert train.image_paths[1] == os.path.join(
        str(tmp_path), "CUB_200_2011", "images", splits["train"][1] + ".jpg")
    # image 1's box is (11, 8, 30, 21): r = 22, centre (int(52/2), int(37/2)) = (26, 18)
    assert train.bboxes[1].tolist() == [4, -4, 48, 40]
    assert train.bboxes.tolist()[0] == list(bbox_lib.raw_crop_box((10, 8, 30, 20)))
    # captions.pickle was built from text/: 3 first non-empty captions of each image
    assert os.path.isfile(tmp_path / "captions.pickle")
    assert len(train.captions) == 4 * 3
    assert train.vocab.decode(train.captions[2]) == "the bird is red with black eyes"
    assert train.vocab.decode(train.captions[3]) == "this bird has a red crown and a short beak"
    assert "skipped 6 empty caption lines" in caplog.text
    test = load_split(_cub_cfg(tmp_path), "test")
    assert test.keys == splits["test"] and test.vocab.sha1() == train.vocab.sha1()


def test_cub_class_info_absent_means_own_class(tmp_path, helpers):
    helpers.make_cub_tree(str(tmp_path))
    os.remove(tmp_path / "train" / "class_info.pickle")
    assert load_split(_cub_cfg(tmp_path), "train").class_ids.tolist() == [0, 1, 2, 3]


def test_coco_tree_train2014_val2014(tmp_path, helpers):
    splits = helpers.make_coco_tree(str(tmp_path))
    cfg = DataConfig(dataset="coco", data_dir=str(tmp_path), captions_per_image=5)
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert train.bboxes is None and train.class_ids.tolist() == [0, 1, 2]
    assert train.image_paths[0].endswith(os.path.join("images", "train2014", splits["train"][0] + ".jpg"))
    assert test.image_paths[1].endswith(os.path.join("images", "val2014", splits["test"][1] + ".jpg"))
    # 6 lines in each file: the first 5 are kept
    assert len(train.captions) == 15
    assert train.vocab.decode(train.captions[4]) == "a cat sleeping"
    # images/<key>.jpg (the DM-GAN README layout) wins when present
    helpers.write_image(str(tmp_path / "images" / (splits["train"][0] + ".jpg")),
                        helpers.gradient_image(8, 8))
    assert load_split(cfg, "train").image_paths[0] == os.path.join(
        str(tmp_path), "images", splits["train"][0] + ".jpg")


def test_wrong_captions_per_image_is_named(tmp_path, helpers):
    helpers.make_coco_tree(str(tmp_path))
    load_split(DataConfig(dataset="coco", data_dir=str(tmp_path), captions_per_image=5), "train")
    with pytest.raises(DataError, match=r"--captions_per_image=4 \(the file has 5 per image\)"):
        load_split(DataConfig(dataset="coco", data_dir=str(tmp_path), captions_per_image=4), "train")


def test_missing_layout_messages(tmp_path, helpers, monkeypatch):
    with pytest.raises(DataError, match=r"nowhere: dataset directory not found \(--data_dir\)"):
        ensure_dataset(DataConfig(dataset="cub", data_dir=str(tmp_path / "nowhere")))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"data/coco: dataset directory not found \(--data_dir "
                                        r"\(default data/<dataset>\)\).*coco layout"):
        ensure_dataset(DataConfig(dataset="coco"))
    helpers.make_cub_tree(str(tmp_path))
    os.remove(tmp_path / "test" / "filenames.pickle")
    with pytest.raises(DataError, match=r"test/filenames\.pickle: file list not found.*birds layout"):
        load_split(_cub_cfg(tmp_path), "train")
    helpers.make_cub_tree(str(tmp_path))
    os.remove(tmp_path / "CUB_200_2011" / "bounding_boxes.txt")
    with pytest.raises(DataError, match=r"bounding_boxes\.txt: not found"):
        load_split(_cub_cfg(tmp_path), "train")
    helpers.make_cub_tree(str(tmp_path))
    key = pickle.load(open(tmp_path / "train" / "filenames.pickle", "rb"))[2]
    os.remove(tmp_path / "text" / (key + ".txt"))
    with pytest.raises(DataError, match=rf"{key}\.txt: caption file not found"):
        load_split(_cub_cfg(tmp_path), "train")
    with pytest.raises(DataError, match="folder not prepared.*prepare_data --dataset=folder"):
        ensure_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path)))


def test_bad_images_error_or_skip(tmp_path, helpers, caplog):
    splits = helpers.make_cub_tree(str(tmp_path))
    images = tmp_path / "CUB_200_2011" / "images"
    truncated = images / (splits["train"][1] + ".jpg")
    truncated.write_bytes(truncated.read_bytes()[:200])
    (images / (splits["train"][3] + ".jpg")).write_bytes(b"GIF89a not really")
    with pytest.raises(DataError, match=rf"{splits['train'][1]}\.jpg: truncated JPEG.*--skip_bad_images"):
        load_split(_cub_cfg(tmp_path), "train")
    with caplog.at_level(logging.WARNING):
        train = load_split(_cub_cfg(tmp_path, skip_bad_images=True), "train")
    assert train.keys == [splits["train"][0], splits["train"][2]]
    assert len(train.captions) == 6 and train.class_ids.tolist() == [1, 1]
    assert train.bboxes.shape == (2, 4)
    assert "skipped 2 bad images of 4" in caplog.text


def test_check_image_file(tmp_path, helpers):
    helpers.write_image(str(tmp_path / "a.png"), helpers.gradient_image(9, 9))
    assert check_image_file(str(tmp_path / "a.png")) is None
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) - 20])
    assert check_image_file(str(tmp_path / "b.png")) == "truncated PNG (no IEND chunk)"
    (tmp_path / "c.jpg").write_bytes(b"")
    assert check_image_file(str(tmp_path / "c.jpg")) == "empty file"
    assert check_image_file(str(tmp_path / "d.jpg")).startswith("cannot read")
