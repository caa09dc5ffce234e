"""Discriminator: reference parameter counts, topology, gradients, state, serialization."""

import numpy as np
import pytest
import tensorflow as tf

from msmt_tf import losses
from msmt_tf.models.discriminator import Discriminator
from msmt_tf.testing.layer_test import run_serialization_test


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _built(stage_size, **kwargs):
    d = Discriminator(stage_size, kernel_initializer="zeros", **kwargs)
    d.build((None, stage_size, stage_size, 3))
    return d


# Measured by instantiating D_NET64/128/256 of taoxugit/AttnGAN code/model.py (commit 0d000e6)
# and MinfengZhu/DM-GAN code/model.py (commit d515995) with torch (CUB widths): trainable
# parameters, and DM-GAN's totals including the spectral-norm u/v vectors (code/spectral.py).
DMGAN = {64: (1_878_242, 1_887_218), 128: (5_155_810, 5_174_258), 256: (18_264_546, 18_301_938)}
ATTNGAN = {64: 6_313_730, 128: 19_424_002, 256: 71_858_946}


def test_dmgan_cub_parameter_counts():
    total = 0
    for size, (trainable, with_uv) in DMGAN.items():
        d = _built(size, df_dim=32, kind="dmgan")
        assert _count(d.trainable_weights) == trainable
        assert _count(d.weights) == with_uv
        assert _count(d.cond_head.trainable_weights) == 1_184_001
        assert _count(d.uncond_head.trainable_weights) == 4_097
        total += _count(d.trainable_weights)
    assert total == 25_298_598


def test_attngan_cub_parameter_counts():
    total = 0
    for size, trainable in ATTNGAN.items():
        d = _built(size, df_dim=64, kind="attngan")
        assert _count(d.trainable_weights) == trainable
        assert _count(d.cond_head.trainable_weights) == 3_548_161
        assert _count(d.uncond_head.trainable_weights) == 8_193
        total += _count(d.trainable_weights)
    assert total == 97_596_678


def test_topology_follows_reference():
    d = Discriminator(256, df_dim=2)
    plan = [(b.filters, b.kernel_size, b.strides) for b in d.blocks]
    assert plan == [(2, 4, 2), (4, 4, 2), (8, 4, 2), (16, 4, 2), (32, 4, 2), (64, 4, 2),
                    (32, 3, 1), (16, 3, 1)]
    a = Discriminator(128, df_dim=2, kind="attngan")
    assert [b.batch_norm for b in a.blocks] == [False, True, True, True, True, True]


@pytest.mark.parametrize("kind", ["dmgan", "attngan"])
@pytest.mark.parametrize("size", [64, 128, 256])
def test_shapes(kind, size):
    d = Discriminator(size, df_dim=1, condition_dim=5, kind=kind, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, size, size, 3)).astype("float32")
    code = d(x, training=True)
    assert tuple(code.shape) == (2, 4, 4, 8)
    assert tuple(d.uncond_logits(code).shape) == (2,)
    assert tuple(d.cond_logits(code, np.ones((2, 5), "float32")).shape) == (2,)


@pytest.mark.parametrize("kind", ["dmgan", "attngan"])
def test_gradient_reaches_every_trainable_weight(kind):
    rng = np.random.default_rng(1)
    d = Discriminator(128, df_dim=1, condition_dim=4, kind=kind, seed=2)
    real = rng.uniform(-1, 1, size=(3, 128, 128, 3)).astype("float32")
    fake = rng.uniform(-1, 1, size=(3, 128, 128, 3)).astype("float32")
    sent = rng.normal(size=(3, 4)).astype("float32")
    d(real)
    with tf.GradientTape() as tape:
        real_code = d(real, training=True)
        fake_code = d(fake, training=True)
        out = losses.discriminator_loss(
            d.uncond_logits(real_code, training=True),
            d.cond_logits(real_code, sent, training=True),
            d.uncond_logits(fake_code, training=True),
            d.cond_logits(fake_code, sent, training=True),
            d.cond_logits(real_code[:-1], sent[1:], training=True),
        )
    grads = tape.gradient(out["loss"], d.trainable_weights)
    assert len(grads) == len(d.trainable_weights) > 0
    for w, g in zip(d.trainable_weights, grads):
        assert g is not None, w.path
        assert np.abs(g.numpy()).max() > 0, w.path


def test_spectral_state_advances_only_in_training():
    # Orthogonal kernels have all singular values 1 (the iteration is at its fixed point from
    # the first step), so use Gaussian kernels to see the state move.
    d = Discriminator(64, df_dim=1, seed=3, kernel_initializer="random_normal")
    x = np.random.default_rng(4).uniform(-1, 1, size=(1, 64, 64, 3)).astype("float32")
    d(x)
    before = [w.numpy().copy() for w in d.non_trainable_weights]
    d(x, training=False)
    for a, w in zip(before, d.non_trainable_weights):
        np.testing.assert_array_equal(a, w.numpy())
    d(x, training=True)
    changed = [not np.allclose(a, w.numpy()) for a, w in zip(before, d.non_trainable_weights)]
    assert any(changed)
    eager = Discriminator(
        64, df_dim=1, seed=3, update_in_eval=True, kernel_initializer="random_normal"
    )
    eager(x)
    snapshot = [w.numpy().copy() for w in eager.non_trainable_weights]
    eager(x, training=False)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(snapshot, eager.non_trainable_weights))


def test_seed_makes_builds_identical():
    a, b = Discriminator(64, df_dim=1, seed=5), Discriminator(64, df_dim=1, seed=5)
    a.build((None, 64, 64, 3))
    b.build((None, 64, 64, 3))
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())
    # Different blocks get different kernels (seeds are offset per block).
    k0, k1 = a.blocks[1].conv.kernel.numpy(), a.blocks[2].conv.kernel.numpy()
    assert not np.allclose(k0.ravel()[:16], k1.ravel()[:16])


def test_wrong_image_size_is_a_clear_error():
    d = Discriminator(128, df_dim=1)
    with pytest.raises(ValueError, match="stage_size=128"):
        d(np.zeros((1, 64, 64, 3), "float32"))
    with pytest.raises(ValueError, match="stage_size"):
        Discriminator(96)


@pytest.mark.parametrize("kind", ["dmgan", "attngan"])
def test_serialization_round_trip(kind):
    d = Discriminator(
        128, df_dim=1, condition_dim=6, kind=kind, output="probability", update_in_eval=False,
        seed=11,
    )
    x = np.random.default_rng(6).uniform(-1, 1, size=(2, 128, 128, 3)).astype("float32")
    run_serialization_test(d, x)
    clone = Discriminator.from_config(d.get_config())
    clone(x)
    clone.set_weights(d.get_weights())
    code = d(x)
    s = np.ones((2, 6), "float32")
    np.testing.assert_allclose(clone.cond_logits(code, s), d.cond_logits(code, s), rtol=1e-6)
    assert np.all((d.cond_logits(code, s).numpy() > 0) & (d.cond_logits(code, s).numpy() < 1))


def test_mixed_precision_logits_are_float32():
    d = Discriminator(64, df_dim=1, condition_dim=4, dtype="mixed_float16")
    x = np.random.default_rng(7).uniform(-1, 1, size=(2, 64, 64, 3)).astype("float32")
    code = d(x, training=True)
    assert code.dtype == "float16"
    assert d.uncond_logits(code).dtype == "float32"
    assert d.cond_logits(code, np.ones((2, 4), "float32")).dtype == "float32"
    assert all(w.dtype == "float32" for w in d.weights)
