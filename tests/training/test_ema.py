"""EMA of trainable weights (parameters only, as the references); BN statistics copied."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.training import ema as ema_lib


def _net():
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
         keras.layers.Dropout(0.5, seed=1), keras.layers.Dense(2)]
    )


def _np(v):
    return keras.ops.convert_to_numpy(v)


@pytest.mark.parametrize("copy_buffers", [False, True])
def test_update_matches_numpy_and_buffers(copy_buffers):
    model = _net()
    copy = ema_lib.clone_model(model, np.zeros((1, 3), "float32"))
    ema = ema_lib.ExponentialMovingAverage(model, copy, decay=0.9, copy_buffers=copy_buffers)
    rs = np.random.RandomState(0)
    expected = [_np(v) for v in copy.trainable_weights]
    bn_before = [_np(v) for v in copy.layers[1].non_trainable_weights]
    update = tf.function(ema.update)
    for i in range(3):
        for v in model.trainable_weights:
            v.assign(rs.normal(size=v.shape).astype("float32"))
        # The live model's BN statistics move; the EMA copy follows only with copy_buffers.
        model(rs.normal(size=(8, 3)).astype("float32"), training=True)
        (update if i else ema.update)()  # eager and compiled
        expected = [0.9 * e + 0.1 * _np(v) for e, v in zip(expected, model.trainable_weights)]
    for e, v in zip(expected, copy.trainable_weights):
        np.testing.assert_allclose(_np(v), e, rtol=1e-6, atol=1e-6)
    assert not np.allclose(_np(model.layers[1].moving_mean), bn_before[0])
    for a, b, v in zip(model.layers[1].non_trainable_weights, bn_before,
                       copy.layers[1].non_trainable_weights):
        np.testing.assert_array_equal(_np(v), _np(a) if copy_buffers else b)

    ema.copy_weights()
    for a, b in zip(model.trainable_weights, copy.trainable_weights):
        np.testing.assert_array_equal(_np(a), _np(b))


def test_decay_ramp_follows_the_tf_formula():
    """With ``num_updates`` the decay is min(decay, (1 + n) / (10 + n)): 0.1, 2/11, 3/12, ...
    then capped (decay 0.2 here, reached at n = 2 since 3/12 = 0.25 > 0.2)."""
    model = _net()
    copy = ema_lib.clone_model(model, np.zeros((1, 3), "float32"))
    counter = tf.Variable(0, dtype=tf.int64)
    ema = ema_lib.ExponentialMovingAverage(model, copy, decay=0.2, num_updates=counter)
    update = tf.function(ema.update)
    expected = [_np(v) for v in copy.trainable_weights]
    rs = np.random.RandomState(1)
    for n, want in enumerate([1 / 10, 2 / 11, 0.2, 0.2]):
        assert float(ema.current_decay()) == pytest.approx(want, rel=1e-6)
        for v in model.trainable_weights:
            v.assign(rs.normal(size=v.shape).astype("float32"))
        update()
        counter.assign_add(1)
        expected = [want * e + (1 - want) * _np(v) for e, v in zip(expected, model.trainable_weights)]
    for e, v in zip(expected, copy.trainable_weights):
        np.testing.assert_allclose(_np(v), e, rtol=1e-5, atol=1e-6)
    assert float(ema_lib.ExponentialMovingAverage(model, copy, decay=0.2).current_decay()) == \
        pytest.approx(0.2)


def test_update_skipped_when_condition_is_false():
    model = _net()
    copy = ema_lib.clone_model(model, np.zeros((1, 3), "float32"))
    ema = ema_lib.ExponentialMovingAverage(model, copy, decay=0.5)
    for v in model.trainable_weights:
        v.assign(np.full(v.shape, 2.0, "float32"))
    before = [_np(v) for v in copy.trainable_weights]
    step = tf.function(ema.update)
    step(tf.constant(False))
    for b, v in zip(before, copy.trainable_weights):
        np.testing.assert_array_equal(_np(v), b)
    step(tf.constant(True))
    for b, v in zip(before, copy.trainable_weights):
        np.testing.assert_allclose(_np(v), 0.5 * b + 1.0, rtol=1e-6)


def test_seed_states_are_not_copied():
    model = _net()
    copy = ema_lib.clone_model(model, np.zeros((1, 3), "float32"))
    model(np.ones((2, 3), "float32"), training=True)  # advances model's dropout seed
    seed = [v for v in copy.variables if v.path.endswith("seed_generator_state")]
    assert seed
    before = _np(seed[0])
    ema_lib.ExponentialMovingAverage(model, copy).update()  # copies the buffers, not the seeds
    np.testing.assert_array_equal(_np(seed[0]), before)
    assert not np.array_equal(_np(seed[0]), _np(next(
        v for v in model.variables if v.path.endswith("seed_generator_state"))))


def test_structure_mismatch_and_bad_decay():
    a = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    b = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="does not match"):
        ema_lib.ExponentialMovingAverage(a, b)
    with pytest.raises(ValueError, match="--ema_decay"):
        ema_lib.ExponentialMovingAverage(a, a, decay=1.5)
