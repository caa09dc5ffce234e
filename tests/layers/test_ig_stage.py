"""Tests for msmt_tf.layers.ig_stage (IG, the references' INIT_STAGE_G)."""

import keras
import numpy as np
import pytest

from msmt_tf.layers.ig_stage import IGStage, SeedDecoder
from msmt_tf.testing.layer_test import run_serialization_test


def _conv_same(x, kernel):
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for du in range(3):
        for dv in range(3):
            out += xp[:, du : du + h, dv : dv + w] @ kernel[du, dv]
    return out


def _bn_eval(x, bn):
    g, b, m, v = (np.asarray(t) for t in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    return (x - m) / np.sqrt(v + 1e-5) * g + b


def _glu(x):
    c = x.shape[-1] // 2
    return x[..., :c] / (1.0 + np.exp(-x[..., c:]))


def _randomize(layer, rng):
    layer.set_weights([
        (np.abs(rng.normal(size=w.shape)) + 0.5 if "variance" in w.path else rng.normal(size=w.shape) * 0.3)
        .astype("float32")
        for w in layer.weights
    ])


def test_matches_numpy_pytorch_layout():
    """An independent NumPy IG with the NCHW ``view(B, ngf, 4, 4)`` of the reference."""
    rng = np.random.default_rng(0)
    c = rng.normal(size=(2, 3)).astype("float32")
    z = rng.normal(size=(2, 4)).astype("float32")
    layer = IGStage(1, z_dim=4, condition_dim=3)  # ngf = 16
    layer((c, z))
    _randomize(layer, rng)
    out = np.asarray(layer((c, z), training=False))

    x = np.concatenate([c, z], -1) @ np.asarray(layer.fc.kernel)  # c first, then z
    x = _glu(_bn_eval(x, layer.decoder.norm))  # [2, 256]
    x = x.reshape(2, 16, 4, 4).transpose(0, 2, 3, 1)  # feature index = ch * 16 + h * 4 + w
    for up in layer.decoder.ups:
        x = x.repeat(2, axis=1).repeat(2, axis=2)
        x = _glu(_bn_eval(_conv_same(x, np.asarray(up.conv.kernel)), up.norm))
    assert out.shape == (2, 64, 64, 1)
    np.testing.assert_allclose(out, x, rtol=1e-3, atol=1e-4)


def _trainable(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


@pytest.mark.parametrize("gf_dim, expected", [(32, 6_444_928), (64, 19_156_736)])
def test_reference_parameter_counts(gf_dim, expected):
    layer = IGStage(gf_dim)  # AttnGAN CUB (ngf 512) and DM-GAN CUB (ngf 1024)
    layer.build(((None, 100), (None, 100)))
    assert _trainable(layer) == expected


def test_other_output_sizes_halve_channels_down_to_gf():
    for size, upsamples in ((8, 1), (32, 3), (128, 5)):
        layer = IGStage(2, z_dim=2, condition_dim=3, output_size=size)
        assert layer.ngf == 2 * 2**upsamples and len(layer.decoder.ups) == upsamples
        out = layer((keras.Input((3,)), keras.Input((2,))))
        assert out.shape == (None, size, size, 2)
    assert IGStage(2).ngf == 32  # 16 * GF at the references' 64 px


def test_symbolic_serialization_and_errors():
    c, z = keras.Input((3,)), keras.Input((2,))
    assert IGStage(1, z_dim=2, condition_dim=3)((c, z)).shape == (None, 64, 64, 1)
    rng = np.random.default_rng(1)
    inputs = (rng.normal(size=(2, 3)).astype("float32"), rng.normal(size=(2, 2)).astype("float32"))
    run_serialization_test(
        IGStage(1, z_dim=2, condition_dim=3, output_size=16, name="ig"), inputs, atol=1e-5
    )
    run_serialization_test(
        SeedDecoder(16, upsamples=2), rng.normal(size=(2, 512)).astype("float32"), atol=1e-5
    )
    with pytest.raises(ValueError, match="base_size"):
        IGStage(1, output_size=100)
    with pytest.raises(ValueError, match="z_dim=100"):
        IGStage(1)((inputs[0], inputs[1]))
    with pytest.raises(ValueError, match="multiple of 2\\*\\*upsamples = 16"):
        SeedDecoder(24)
