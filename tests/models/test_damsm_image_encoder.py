"""DAMSM image encoder: shapes, frozen trunk, parameter count, resize modes, weight import."""

import keras
import numpy as np
import pytest

from msmt_tf.models import damsm_image_encoder as die
from msmt_tf.models import inception
from msmt_tf.testing import layer_test


@pytest.fixture(scope="module")
def encoder():
    enc = die.DAMSMImageEncoder(image_size=80, seed=1)
    enc.build((None, 64, 64, 3))
    return enc


def test_shapes_and_trainable_count(encoder):
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    region, code = encoder(x)
    # 80 -> 39 -> 37 -> 37 -> 18 -> 18 -> 16 -> 7 -> mixed_3: 3
    assert tuple(region.shape) == (2, 3, 3, 256) and tuple(code.shape) == (2, 256)
    assert encoder.compute_output_shape((2, 64, 64, 3)) == ((2, 3, 3, 256), (2, 256))
    assert sum(int(np.prod(w.shape)) for w in encoder.trainable_weights) == 721_152
    assert not encoder.trunk.trainable
    k = keras.ops.convert_to_numpy(encoder.emb_features.kernel)
    assert k.min() >= -0.1 and k.max() <= 0.1 and k.std() > 0.05  # U(-0.1, 0.1)


def test_projection_weights_from_torch_state_dict(encoder):
    rng = np.random.default_rng(2)
    state = dict(inception.trunk_weights_numpy(encoder.trunk))
    state = {k: rng.normal(size=v.shape).astype(np.float32) * 0.1 for k, v in state.items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = np.abs(state[k]) + 1.0
    state["emb_features.weight"] = rng.normal(size=(256, 768, 1, 1)).astype(np.float32)
    state["emb_cnn_code.weight"] = rng.normal(size=(256, 2048)).astype(np.float32)
    state["emb_cnn_code.bias"] = rng.normal(size=256).astype(np.float32)
    die.load_torch_image_encoder(encoder, state, source="enc.pth")
    x = rng.uniform(-1, 1, (1, 80, 80, 3)).astype(np.float32)  # already image_size: no resize
    region, code = encoder(x)
    feats = encoder.trunk(x)
    local = keras.ops.convert_to_numpy(feats["local"])
    pooled = keras.ops.convert_to_numpy(feats["pool_3"])
    want_region = np.einsum("bhwc,oc->bhwo", local, state["emb_features.weight"][:, :, 0, 0])
    want_code = pooled @ state["emb_cnn_code.weight"].T + state["emb_cnn_code.bias"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(region), want_region, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(code), want_code, rtol=1e-4, atol=1e-3)
    del state["emb_cnn_code.bias"]
    with pytest.raises(ValueError, match="enc.pth: missing tensor 'emb_cnn_code.bias'"):
        die.load_torch_image_encoder(encoder, state, source="enc.pth")


def test_resize_modes():
    x = np.random.default_rng(3).uniform(-1, 1, (1, 5, 7, 3)).astype(np.float32)
    ac = np.asarray(die._resize(x, (9, 13), "align_corners"))
    # align_corners keeps the four corners and samples at i * (in-1)/(out-1)
    np.testing.assert_allclose(ac[0, [0, -1]][:, [0, -1]], x[0, [0, -1]][:, [0, -1]], atol=1e-6)
    np.testing.assert_allclose(ac[0, 0, 6], x[0, 0, 3], atol=1e-6)  # 6 * 6/12 = 3
    hp = np.asarray(die._resize(x, (10, 14), "bilinear"))
    # half-pixel 2x upsampling: out[1] = 0.75 x[0] + 0.25 x[1] along each axis (interior)
    np.testing.assert_allclose(hp[0, 0, 1], 0.75 * x[0, 0, 0] + 0.25 * x[0, 0, 1], atol=1e-6)
    lg = np.asarray(die._resize(x, (10, 14), "legacy"))
    np.testing.assert_allclose(lg[0, 0, 1], 0.5 * x[0, 0, 0] + 0.5 * x[0, 0, 1], atol=1e-6)


def test_serialization_round_trip():
    enc = die.DAMSMImageEncoder(embedding_dim=8, image_size=75, variant="tf2015", resize="align_corners", seed=4)
    x = np.random.default_rng(5).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    region, code = layer_test.run_serialization_test(enc, x, atol=1e-5)
    assert tuple(code.shape) == (1, 8) and region.shape[0] == 1 and region.shape[-1] == 8


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size=64 must be >= 75"):
        die.DAMSMImageEncoder(image_size=64)
    with pytest.raises(ValueError, match="resize='nearest'"):
        die.DAMSMImageEncoder(resize="nearest")
