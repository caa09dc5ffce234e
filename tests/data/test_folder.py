"""Custom caption folders (sibling .txt or captions.jsonl) -> AttnGAN layout -> load_split."""

import json
import logging
import os
import pickle

import pytest

from msmt_tf.data import folder
from msmt_tf.data.config import DataConfig
from msmt_tf.data.dataset import load_split
from msmt_tf.data.errors import DataError
from msmt_tf.data.vocabulary import Vocabulary


def _txt_folder(root, helpers, n=6):
    for i in range(n):
        cls = "cats" if i % 2 else "dogs"
        helpers.write_image(os.path.join(root, cls, f"img{i}.jpg"), helpers.gradient_image(20, 24, i))
        with open(os.path.join(root, cls, f"img{i}.txt"), "w") as f:
            f.write(f"a photo of {cls} number {i}\n\nanother caption {i}\n")
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write("ignored")


def test_sibling_txt_with_classes(tmp_path, helpers, caplog):
    root = str(tmp_path / "pets")
    _txt_folder(root, helpers)
    cfg = DataConfig(dataset="folder", data_dir=root, captions_per_image=3, test_fraction=0.34)
    with caplog.at_level(logging.INFO):
        prepared = folder.prepare_folder(cfg, 0)
    assert prepared == os.path.join(root, "prepared")
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    keys = sorted(train.keys + test.keys)
    assert keys == sorted(f"{'cats' if i % 2 else 'dogs'}/img{i}" for i in range(6))
    assert len(test.keys) >= 1 and len(train.keys) >= 1
    expected_split = {k: folder.split_of(k, 0, 0.34) for k in keys}
    if "test" in expected_split.values():
        assert sorted(test.keys) == sorted(k for k, s in expected_split.items() if s == "test")
    for split in (train, test):
        for k, c in zip(split.keys, split.class_ids.tolist()):
            assert c == (0 if k.startswith("cats/") else 1)  # sorted sub-folder names
        assert split.image_paths[0] == os.path.join(root, split.keys[0] + ".jpg")
    i = train.keys.index(train.keys[0])
    number = train.keys[0][-1]
    # 2 captions + the first one reused to reach 3 (the empty line is skipped)
    assert [train.vocab.decode(c) for c in train.captions[3 * i:3 * i + 3]] == [
        f"a photo of {train.keys[0].split('/')[0]} number {number}", f"another caption {number}",
        f"a photo of {train.keys[0].split('/')[0]} number {number}"]
    assert "fewer than --captions_per_image=3" in caplog.text
    with open(os.path.join(prepared, "classes.json")) as f:
        assert json.load(f) == ["cats", "dogs"]
    # converting again gives identical files
    before = {p: open(os.path.join(prepared, p), "rb").read()
              for p in ("captions.pickle", "train/filenames.pickle", "test/filenames.pickle")}
    folder.prepare_folder(cfg, 0)
    for p, data in before.items():
        assert open(os.path.join(prepared, p), "rb").read() == data


def test_split_is_stable_when_images_are_added(tmp_path):
    keys = [f"k{i}" for i in range(300)]
    first = {k: folder.split_of(k, 1, 0.2) for k in keys}
    assert 30 < sum(s == "test" for s in first.values()) < 90
    more = {k: folder.split_of(k, 1, 0.2) for k in keys + ["new1", "new2"]}
    assert all(more[k] == first[k] for k in keys)
    assert {k: folder.split_of(k, 2, 0.2) for k in keys} != first


def test_jsonl_flat_folder(tmp_path, helpers):
    root = tmp_path / "flat"
    for i in range(3):
        helpers.write_image(str(root / f"p{i}.png"), helpers.gradient_image(16, 16, i))
    with open(root / "captions.jsonl", "w") as f:
        for i in range(3):
            f.write(json.dumps({"image": f"p{i}.png", "captions": [f"red square {i}", "a tile"]}) + "\n")
    cfg = DataConfig(dataset="folder", data_dir=str(root), captions_per_image=2, test_fraction=0.3)
    folder.prepare_folder(cfg, 0)
    splits = [load_split(cfg, s) for s in ("train", "test")]
    assert sorted(splits[0].keys + splits[1].keys) == ["p0", "p1", "p2"]
    # no sub-folders: every image its own class
    ids = {k: c for s in splits for k, c in zip(s.keys, s.class_ids.tolist())}
    assert ids == {"p0": 0, "p1": 1, "p2": 2}
    s = splits[0]
    assert s.vocab.decode(s.captions[0]) == f"red square {s.keys[0][1]}"


def test_folder_errors(tmp_path, helpers):
    cfg = DataConfig(dataset="folder", data_dir=str(tmp_path / "none"))
    with pytest.raises(DataError, match=r"none: folder not found \(--data_dir\)"):
        folder.prepare_folder(cfg, 0)
    root = tmp_path / "f"
    helpers.write_image(str(root / "a.jpg"), helpers.gradient_image(8, 8))
    cfg = cfg.replace(data_dir=str(root))
    with pytest.raises(DataError, match=r"a\.txt: caption file not found for a\.jpg"):
        folder.prepare_folder(cfg, 0)
    (root / "captions.jsonl").write_text('{"image": "b.jpg", "captions": ["x"]}\n')
    with pytest.raises(DataError, match=r"captions\.jsonl:1: image 'b\.jpg' not found"):
        folder.prepare_folder(cfg, 0)
    (root / "captions.jsonl").write_text('{"img": "a.jpg"}\n')
    with pytest.raises(DataError, match=r"captions\.jsonl:1: expected"):
        folder.prepare_folder(cfg, 0)
    helpers.write_image(str(root / "a.png"), helpers.gradient_image(8, 8))
    with pytest.raises(DataError, match="two images share the name 'a'"):
        folder.prepare_folder(cfg, 0)


def test_reuse_vocabulary_reports_unknown(tmp_path, helpers, caplog):
    root = str(tmp_path / "pets")
    _txt_folder(root, helpers, n=4)
    vocab = Vocabulary({0: "<end>", 1: "photo", 2: "of", 3: "cats", 4: "dogs", 5: "a"})
    cfg = DataConfig(dataset="folder", data_dir=root, captions_per_image=2, test_fraction=0.0)
    with caplog.at_level(logging.WARNING):
        folder.prepare_folder(cfg, 0, vocab=vocab)
    train = load_split(cfg, "train")
    assert train.vocab.ixtoword == vocab.ixtoword
    assert train.keys[0] == "cats/img1"
    assert train.vocab.decode(train.captions[0]) == "a photo of cats"  # "number 1" dropped
    # line 2 of the source file is empty, so "another caption 0" is on line 3
    assert "img0.txt:3: caption has no known word, skipped: 'another caption 0'" in caplog.text
    with open(os.path.join(root, "prepared", "test", "filenames.pickle"), "rb") as f:
        assert pickle.load(f) == []
