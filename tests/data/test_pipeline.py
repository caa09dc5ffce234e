"""make_dataset: structure, determinism, transforms, caption choice and truncation."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from msmt_tf.configlib import ConfigError
from msmt_tf.data import pipeline, shapes
from msmt_tf.data.config import DataConfig
from msmt_tf.data.dataset import Split, load_split
from msmt_tf.data.errors import DataError
from msmt_tf.data.vocabulary import Vocabulary
from msmt_tf.training.config import TrainConfig

SIZES = (16, 32)  # the stage sizes of the shapes_cfg tests


@pytest.fixture(scope="module")
def shapes_cfg(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pipe") / "shapes")
    cfg = DataConfig(data_dir=root, shapes_num_train=24, shapes_num_test=8, shapes_size=32,
                     words_num=6, shapes_seed=3)
    shapes.ensure_generated(root, 3, 24, 8, 32, processes=1, max_objects=cfg.shapes_max_objects,
                            textured=cfg.shapes_textured, layout=cfg.shapes_layout,
                            shapes=cfg.shapes_name_list, colours=cfg.shapes_colour_list)
    return cfg


def _batches(ds):
    return [{k: (tuple(x.numpy() for x in v) if k == "images" else v.numpy())
             for k, v in b.items()} for b in ds]


def _equal(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for k in x:
            xs, ys = (x[k], y[k]) if k == "images" else ((x[k],), (y[k],))
            if any(not np.array_equal(p, q) for p, q in zip(xs, ys)):
                return False
    return True


def test_structure_shapes_dtypes_ranges(shapes_cfg):
    ds = pipeline.make_dataset(shapes_cfg, "train", 5, training=True, image_sizes=SIZES, seed=1)
    spec = ds.element_spec
    assert [s.shape.as_list() for s in spec["images"]] == [[5, 16, 16, 3], [5, 32, 32, 3]]
    assert spec["captions"].shape.as_list() == [5, 6] and spec["captions"].dtype == tf.int32
    for k in ("caption_len", "class_id", "wrong_caption_len"):
        assert spec[k].dtype == tf.int32 and spec[k].shape.as_list() == [5]
    assert spec["key"].dtype == tf.string
    assert spec["wrong_mask"].dtype == tf.float32 and spec["wrong_mask"].shape.as_list() == [5]
    batches = _batches(ds)
    assert len(batches) == 4  # 24 // 5, remainder dropped
    keys = np.concatenate([b["key"] for b in batches])
    assert len(set(keys.tolist())) == 20
    for b in batches:
        for img in b["images"]:
            assert img.dtype == np.float32 and img.min() >= -1.0 and img.max() <= 1.0
            assert img.max() - img.min() > 0.5
        n = b["caption_len"]
        assert ((1 <= n) & (n <= 6)).all()
        pos = np.arange(6)[None, :]
        assert ((b["captions"] != 0) == (pos < n[:, None])).all()  # zero padding after the words
        assert ((b["wrong_captions"] != 0) == (pos < b["wrong_caption_len"][:, None])).all()
    evals = _batches(pipeline.make_dataset(shapes_cfg, "test", 5, training=False,
                                           image_sizes=SIZES, seed=1))
    assert [len(b["key"]) for b in evals] == [5, 3]
    assert np.concatenate([b["key"] for b in evals]).tolist() == \
        [k.encode() for k in load_split(shapes_cfg, "test").keys]


def test_seeds(shapes_cfg):
    make = lambda s: pipeline.make_dataset(shapes_cfg, "train", 4, training=True,  # noqa: E731
                                           image_sizes=SIZES, seed=s)
    a1, a2 = make(7), make(7)
    first, again = _batches(a1), _batches(a2)
    assert _equal(first, again)
    assert _equal(_batches(a1), _batches(a2))  # second epochs also agree
    assert not _equal(first, _batches(a1))  # but differ from the first epoch
    assert not _equal(first, _batches(make(8)))
    # A --deterministic run seeds its pipeline with --seed, an other run does not.
    run = TrainConfig(seed=7, deterministic=True)
    assert (run.pipeline_seed, run.replace(deterministic=False).pipeline_seed) == (7, None)
    det = pipeline.make_dataset(shapes_cfg, "train", 4, True, image_sizes=SIZES,
                                seed=run.pipeline_seed)
    assert _equal(first, _batches(det))


def test_parallelism_and_cache_do_not_change_batches(shapes_cfg):
    ref = _batches(pipeline.make_dataset(shapes_cfg, "train", 4, True, image_sizes=SIZES, seed=5))
    one = shapes_cfg.replace(num_parallel_calls=1)
    assert _equal(ref, _batches(pipeline.make_dataset(one, "train", 4, True, image_sizes=SIZES,
                                                      seed=5)))
    cached = pipeline.make_dataset(shapes_cfg.replace(cache=True), "train", 4, True,
                                   image_sizes=SIZES, seed=5)
    assert _equal(ref, _batches(cached))
    ref_eval = _batches(pipeline.make_dataset(shapes_cfg, "test", 4, False, image_sizes=SIZES,
                                              seed=5))
    cached_eval = pipeline.make_dataset(shapes_cfg.replace(cache=True), "test", 4, False,
                                        image_sizes=SIZES, seed=5)
    assert _equal(ref_eval, _batches(cached_eval))


def _custom_split(tmp_path, images, captions, cpi, class_ids=None):
    paths = []
    for i, img in enumerate(images):
        p = str(tmp_path / f"im{i}.png")
        Image.fromarray(img).save(p)
        paths.append(p)
    vocab = Vocabulary({i: ("<end>" if i == 0 else f"w{i}") for i in range(60)})
    n = len(images)
    return Split(name="train", data_dir=str(tmp_path), keys=[f"k{i}" for i in range(n)],
                 captions=captions, vocab=vocab, image_paths=paths, bboxes=None,
                 class_ids=np.asarray(class_ids if class_ids is not None else range(n), np.int64),
                 captions_per_image=cpi)


def test_caption_choice_and_truncation(tmp_path):
    img = np.zeros((40, 40, 3), np.uint8)
    long_caption = list(range(1, 31))
    n = 40  # images 0..38 share two captions (long, short); image 39 has short ones
    captions = [long_caption, [40, 41, 42]] * (n - 1) + [[43], [44, 45]]
    split = _custom_split(tmp_path, [img] * n, captions, 2)
    cfg = DataConfig(dataset="folder", data_dir=str(tmp_path), words_num=8)
    seen_train, seen_first = set(), {0: 0, 1: 0}
    for b in pipeline.make_dataset(cfg, split, 8, training=True, image_sizes=(16,), seed=0):
        for cap, n, key in zip(b["captions"].numpy(), b["caption_len"].numpy(), b["key"].numpy()):
            if key != b"k39":
                if cap[0] == 40:
                    assert cap.tolist() == [40, 41, 42, 0, 0, 0, 0, 0] and n == 3
                    seen_first[1] += 1
                else:  # random subset of 8 words of 1..30, original order kept
                    assert n == 8 and (np.diff(cap) > 0).all() and cap.max() <= 30
                    seen_train.add(tuple(cap.tolist()))
                    seen_first[0] += 1
            else:
                assert cap.tolist() in ([43] + [0] * 7, [44, 45] + [0] * 6)
    assert min(seen_first.values()) >= 8  # both captions are chosen
    assert len(seen_train) >= 8  # and the word subset changes
    for b in pipeline.make_dataset(cfg, split, 8, training=False, image_sizes=(16,), seed=0):
        for cap, n, key in zip(b["captions"].numpy(), b["caption_len"].numpy(), b["key"].numpy()):
            if key != b"k39":  # evaluation: the first 8 words
                assert cap.tolist() in (list(range(1, 9)), [40, 41, 42, 0, 0, 0, 0, 0])
                assert n == (8 if cap[0] == 1 else 3)


def test_image_transforms_exact(tmp_path):
    rng = np.random.default_rng(0)
    # The shorter side already equals int(32 * 76 / 64) = 38, so the resize is the identity.
    img = rng.integers(0, 256, size=(38, 50, 3), dtype=np.uint8)
    split = _custom_split(tmp_path, [img] * 24, [[1], [2]] * 12, 1, class_ids=[0, 1] * 12)
    cfg = DataConfig(dataset="folder", data_dir=str(tmp_path))
    to_unit = lambda a: a.astype(np.float32) / 127.5 - 1.0  # noqa: E731
    sizes = (8, 16, 32)
    b = next(iter(pipeline.make_dataset(cfg, split, 2, training=False, image_sizes=sizes, seed=0)))
    final = b["images"][2].numpy()[0]
    # centre crop offsets: ((38 - 32 + 1) // 2, (50 - 32 + 1) // 2) = (3, 9)
    np.testing.assert_allclose(final, to_unit(img[3:35, 9:41]), atol=1e-5)
    # smaller stages: a pyramid of halvings with the antialiased bilinear (triangle) filter,
    # computed here independently with PIL's BILINEAR resize in float mode
    want = img[3:35, 9:41].astype(np.float32)
    for stage, size in ((1, 16), (0, 8)):
        aliased = tf.image.resize(want, [size, size], antialias=False).numpy()
        want = np.stack([np.asarray(Image.fromarray(want[..., c], mode="F").resize(
            (size, size), Image.BILINEAR)) for c in range(3)], axis=-1)
        got = (b["images"][stage].numpy()[0] + 1.0) * 127.5
        np.testing.assert_allclose(got, want, atol=0.05)
        assert np.abs(aliased - want).max() > 10  # the check can tell the filters apart
    crops = [to_unit(img[y:y + 32, x:x + 32]) for y in range(7) for x in range(19)]
    mirrored = 0
    for f in pipeline.make_dataset(cfg, split, 8, training=True, image_sizes=sizes, seed=0):
        for out in f["images"][2].numpy():
            plain = any(np.abs(out - c).max() < 1e-4 for c in crops)
            flipped = any(np.abs(out[:, ::-1] - c).max() < 1e-4 for c in crops)
            assert plain or flipped
            mirrored += flipped and not plain
    assert 4 <= mirrored <= 20
    # shapes captions name left and right: never mirrored there
    for f in pipeline.make_dataset(cfg.replace(dataset="shapes"), split, 8, training=True,
                                   image_sizes=sizes, seed=1):
        for out in f["images"][2].numpy():
            assert any(np.abs(out - c).max() < 1e-4 for c in crops)


def test_wrong_partner_hand_cases():
    assert pipeline.wrong_partner(tf.constant([1, 1, 2, 1])).numpy().tolist() == [2, 2, 3, 2]
    assert pipeline.wrong_partner(tf.constant([5, 5, 5])).numpy().tolist() == [1, 2, 0]
    assert pipeline.wrong_partner(tf.constant([9])).numpy().tolist() == [0]


def test_wrong_captions_come_from_other_classes(shapes_cfg):
    cfg = shapes_cfg.replace(mismatch_swap=0.0)  # the references' mismatches only
    for b in pipeline.make_dataset(cfg, "train", 6, training=True, image_sizes=SIZES, seed=2):
        cls = b["class_id"].numpy()
        caps, wrong = b["captions"].numpy(), b["wrong_captions"].numpy()
        partner = pipeline.wrong_partner(b["class_id"]).numpy()
        np.testing.assert_array_equal(wrong, caps[partner])
        np.testing.assert_array_equal(b["wrong_caption_len"].numpy(), b["caption_len"].numpy()[partner])
        assert (partner != np.arange(6)).all()
        if len(set(cls.tolist())) > 1:
            assert (cls[partner] != cls).all()
        np.testing.assert_array_equal(b["wrong_mask"].numpy(), np.ones(6))  # B pairs


def test_next_row_partner_hand_cases():
    partner, mask = pipeline.next_row_partner(4)
    assert partner.numpy().tolist() == [1, 2, 3, 0] and mask.numpy().tolist() == [1, 1, 1, 0]
    partner, mask = pipeline.next_row_partner(1)  # no pair at all
    assert partner.numpy().tolist() == [0] and mask.numpy().tolist() == [0]
    partner, mask = pipeline.mismatch_partner(tf.constant([1, 1, 2, 1]), "other_class")
    assert partner.numpy().tolist() == [2, 2, 3, 2] and mask.numpy().tolist() == [1, 1, 1, 1]
    partner, mask = pipeline.mismatch_partner(tf.constant([1, 1, 2, 1]), "next_row")
    assert partner.numpy().tolist() == [1, 2, 3, 0] and mask.numpy().tolist() == [1, 1, 1, 0]


def test_next_row_pairing_is_the_references(shapes_cfg):
    """--mismatch_pairing=next_row: rows 0..B-2 get captions 1..B-1 (same class allowed, as
    DM-GAN's ``conditions[1:batch_size]``); the last row is masked out: B - 1 pairs."""
    cfg = shapes_cfg.replace(mismatch_swap=0.0, mismatch_pairing="next_row")
    same_class = 0
    for b in pipeline.make_dataset(cfg, "train", 6, training=True, image_sizes=SIZES, seed=2):
        caps, wrong = b["captions"].numpy(), b["wrong_captions"].numpy()
        np.testing.assert_array_equal(wrong[:5], caps[1:])
        np.testing.assert_array_equal(b["wrong_caption_len"].numpy()[:5],
                                      b["caption_len"].numpy()[1:])
        np.testing.assert_array_equal(b["wrong_mask"].numpy(), [1, 1, 1, 1, 1, 0])
        cls = b["class_id"].numpy()
        same_class += int((cls[:5] == cls[1:]).sum())
    assert same_class > 0  # not filtered by class (3 shape classes, 20 pairs)
    with pytest.raises(ConfigError, match="--mismatch_pairing='row'"):
        shapes_cfg.replace(mismatch_pairing="row")


def test_next_row_pairing_with_swap_counts_swapped_rows(shapes_cfg):
    """--mismatch_swap=1 on top of next_row: a swapped caption is a pair of its own, so the last
    row counts when (and only when) its caption was swapped."""
    vocab = load_split(shapes_cfg, "train").vocab
    shape_ids = {vocab.wordtoix[w] for w in shapes.SHAPES if w in vocab.wordtoix}
    cfg = shapes_cfg.replace(mismatch_swap=1.0, mismatch_pairing="next_row", words_num=18)
    for b in pipeline.make_dataset(cfg, "train", 6, training=True, image_sizes=SIZES, seed=4):
        caps, wrong = b["captions"].numpy(), b["wrong_captions"].numpy()
        has_shape = np.isin(caps, list(shape_ids)).any(axis=1)
        expected = np.where(has_shape, 1.0, [1, 1, 1, 1, 1, 0])
        np.testing.assert_array_equal(b["wrong_mask"].numpy(), expected)
        assert (np.sum(caps != wrong, axis=1)[has_shape] == 1).all()


def test_swap_word_hand_cases():
    ids = [5, 9, 11]
    caption = tf.constant([3, 7, 5, 0, 0], tf.int32)
    news = set()
    for r in range(40):
        out, found = pipeline.swap_word(caption, ids, tf.constant(r, tf.int64))
        out = out.numpy().tolist()
        assert bool(found) and out[:2] == [3, 7] and out[3:] == [0, 0]
        news.add(out[2])
    assert news == {9, 11}  # never the old word, both others drawn
    plain = tf.constant([3, 7, 4, 0, 0], tf.int32)
    out, found = pipeline.swap_word(plain, ids, tf.constant(1, tf.int64))
    assert not bool(found) and out.numpy().tolist() == [3, 7, 4, 0, 0]
    two = tf.constant([9, 2, 11, 0], tf.int32)  # two candidate positions: one changes per draw
    positions = set()
    for r in range(40):
        out = pipeline.swap_word(two, ids, tf.constant(r, tf.int64))[0].numpy()
        changed = np.flatnonzero(out != two.numpy())
        assert len(changed) == 1 and out[changed[0]] in ids
        positions.add(int(changed[0]))
    assert positions == {0, 2}


def test_mismatch_swap_replaces_the_shape_word(shapes_cfg):
    """--mismatch_swap=1: every wrong caption that can be swapped is the image's own caption
    with exactly its shape word changed to another shape; 0.5 mixes both kinds."""
    vocab = load_split(shapes_cfg, "train").vocab
    shape_ids = {vocab.wordtoix[w] for w in shapes.SHAPES if w in vocab.wordtoix}
    swapped = kept = 0
    for p in (1.0, 0.5):
        cfg = shapes_cfg.replace(mismatch_swap=p, words_num=18)
        for b in pipeline.make_dataset(cfg, "train", 6, training=True, image_sizes=SIZES, seed=4):
            caps, wrong = b["captions"].numpy(), b["wrong_captions"].numpy()
            partner = pipeline.wrong_partner(b["class_id"]).numpy()
            for i in range(6):
                diff = np.flatnonzero(caps[i] != wrong[i])
                if len(diff) == 1 and caps[i][diff[0]] in shape_ids and wrong[i][diff[0]] in shape_ids:
                    assert b["wrong_caption_len"].numpy()[i] == b["caption_len"].numpy()[i]
                    swapped += p == 0.5
                else:
                    assert p == 0.5, (caps[i], wrong[i])
                    np.testing.assert_array_equal(wrong[i], caps[partner[i]])
                    kept += 1
    assert swapped > 0 and kept > 0


def test_mismatch_words_must_be_in_the_vocabulary(shapes_cfg):
    with pytest.raises(DataError, match="--mismatch_words: zebra not in the vocabulary"):
        pipeline.make_dataset(shapes_cfg.replace(mismatch_words="circle,zebra"), "train", 6,
                              training=True, image_sizes=SIZES)
    with pytest.raises(ConfigError, match="--mismatch_words='circle'"):
        shapes_cfg.replace(mismatch_words="circle").validate()


def test_batch_larger_than_split_is_an_error(shapes_cfg):
    with pytest.raises(DataError, match="batch_size=30"):
        pipeline.make_dataset(shapes_cfg, "train", 30, training=True, image_sizes=SIZES)


@pytest.mark.parametrize("h,w", [(50, 70), (30, 41), (90, 45)])
def test_resize_crop_equals_full_resize_then_crop(h, w):
    """The S x S window computed directly equals resizing the whole image, then cropping."""
    rng = np.random.default_rng(h * w)
    image = tf.constant(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    final, target = 32, pipeline.load_size(32)
    oh, ow = ((target * h) // w, target) if w <= h else (target, (target * w) // h)
    full = tf.image.resize(image, [oh, ow], method="bilinear", antialias=min(h, w) > target).numpy()
    eval_img = pipeline.transform_image(image, (32,), False, tf.constant(0, tf.int64))[0].numpy()
    y, x = (oh - final + 1) // 2, (ow - final + 1) // 2
    np.testing.assert_allclose((eval_img + 1) * 127.5, full[y:y + 32, x:x + 32], atol=2e-3)
    seen = set()
    for r in range(10):
        out = (pipeline.transform_image(image, (32,), True, tf.constant(r, tf.int64), flip=False)[0]
               .numpy() + 1) * 127.5
        hits = [(yy, xx) for yy in range(oh - 31) for xx in range(ow - 31)
                if np.abs(out - full[yy:yy + 32, xx:xx + 32]).max() < 2e-3]
        assert hits, (h, w, r)
        seen.add(hits[0])
    assert len(seen) >= 3


def test_fixed_grid_captions_do_not_depend_on_the_global_seed(shapes_cfg):
    """The grid captions of a run are the same whatever the global seed before (a fresh run
    pretrains DAMSM first in the same process; a resumed one does not)."""
    from types import SimpleNamespace

    from msmt_tf.models.config import ModelConfig
    from msmt_tf.training.runner import fixed_batch

    configs = SimpleNamespace(data=shapes_cfg, model=ModelConfig(base_size=16), train=TrainConfig())
    split = load_split(shapes_cfg, "test")
    tf.random.set_seed(123)
    a = fixed_batch(configs, split)
    for _ in range(3):
        tf.random.uniform(())
    b = fixed_batch(configs, split)
    tf.random.set_seed(7)
    c = fixed_batch(configs, split)
    np.testing.assert_array_equal(a["captions"], b["captions"])
    np.testing.assert_array_equal(a["captions"], c["captions"])
