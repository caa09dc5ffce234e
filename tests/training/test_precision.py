"""Mixed precision: float32 master weights, finite fp16 step, non-finite skip and abort."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.training import precision


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def _model():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1),
         keras.layers.Activation("linear", dtype="float32")]
    )


def _step(model, opt, x, y, poison=0.0):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True)[:, 0] - y)) + poison
        scaled = opt.scale_loss(loss)
    grads = tape.gradient(scaled, model.trainable_variables)
    ok = precision.apply_gradients_if_finite(opt, grads, model.trainable_variables, losses=[loss])
    return loss, ok


def test_mixed_float16_step_is_finite_with_float32_master_weights(restore_policy):
    policy = precision.set_precision("mixed_float16")
    assert policy.compute_dtype == "float16" and policy.variable_dtype == "float32"
    model = _model()
    opt = precision.wrap_optimizer(keras.optimizers.Adam(1e-3), "mixed_float16")
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    assert precision.wrap_optimizer(opt, "mixed_float16") is opt
    opt.build(model.trainable_variables)
    assert float(precision.loss_scale(opt)) == 2.0**15
    x = tf.random.stateless_normal([8, 4], seed=[1, 2])
    y = tf.reduce_sum(x, axis=1)
    assert model.layers[0](x).dtype == "float16"
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    step = tf.function(_step)
    # The first steps may overflow the float16 gradients at scale 2**15: the wrapper skips
    # them and halves the scale; the losses themselves stay finite.
    skipped = 0
    for _ in range(12):
        loss, ok = step(model, opt, x, y)
        assert np.isfinite(float(loss)) and loss.dtype == tf.float32
        if bool(ok):
            break
        skipped += 1
    assert bool(ok)
    assert float(precision.loss_scale(opt)) == 2.0 ** (15 - skipped)
    for v, b in zip(model.trainable_variables, before):
        assert v.dtype == "float32"
        assert not np.array_equal(keras.ops.convert_to_numpy(v), b)
    assert int(opt.iterations) == 1


def test_bfloat16_and_float32_are_not_wrapped(restore_policy):
    opt = keras.optimizers.Adam()
    assert precision.wrap_optimizer(opt, "mixed_bfloat16") is opt
    assert precision.wrap_optimizer(opt, "float32") is opt
    assert float(precision.loss_scale(opt)) == 1.0
    with pytest.raises(ValueError, match="--precision='fp8'"):
        precision.set_precision("fp8")


@pytest.mark.parametrize("prec", ["float32", "mixed_float16"])
def test_nan_step_is_skipped_and_counted(prec, restore_policy):
    precision.set_precision(prec)
    keras.utils.set_random_seed(2)
    model = _model()
    opt = precision.wrap_optimizer(keras.optimizers.Adam(1e-2), prec)
    opt.build(model.trainable_variables)
    x = tf.ones([4, 4])
    y = tf.ones([4])
    step = tf.function(_step)
    # float16: overflowing steps at the initial scale are skipped until the scale fits.
    assert any(bool(step(model, opt, x, y)[1]) for _ in range(12))
    snapshot = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables + opt.variables]
    counter = precision.NonFiniteCounter(max_in_row=3, precision=prec)
    assert counter.update(True, 1)
    loss, ok = step(model, opt, x, y, float("nan"))
    assert not bool(ok) and np.isnan(float(loss))
    assert not counter.update(ok, 2)
    assert (counter.in_row, counter.total) == (1, 1)
    # Nothing changed: weights, Adam moments, iteration counters, the loss scale.
    for a, b in zip(snapshot, model.trainable_variables + opt.variables):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    # A finite step resets the run; three NaN steps in a row abort with advice.
    assert any(bool(step(model, opt, x, y)[1]) for _ in range(12)) and counter.update(True, 3)
    assert counter.in_row == 0 and counter.total == 1
    counter.update(False, 4)
    counter.update(False, 5)
    msg = "3 non-finite steps in a row at step 6: lower --g_lr/--d_lr"
    if prec != "float32":
        msg += " or use --precision=float32"
    with pytest.raises(precision.NonFiniteError, match=msg.replace("-", r"\-").replace("/", "/")):
        counter.update(False, 6)
    assert counter.total == 4


def test_all_finite():
    assert bool(precision.all_finite([tf.ones(3)], None, {"a": tf.constant(2.0)}))
    assert not bool(precision.all_finite([tf.ones(3), tf.constant([1.0, np.inf])]))
    assert bool(precision.all_finite(tf.constant([1, 2])))  # integers are ignored


def test_guarded_step_under_xla_matches_plain_graph(restore_policy):
    """--jit_compile: the guarded update compiles with XLA and gives the same weights."""
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(1)
        model = _model()
        opt = keras.optimizers.Adam(1e-2)
        opt.build(model.trainable_variables)
        step = tf.function(_step, jit_compile=jit)
        x = tf.reshape(tf.range(16, dtype=tf.float32), [4, 4]) / 16.0
        y = tf.constant([1.0, -1.0, 0.5, 2.0])
        oks = [bool(step(model, opt, x, y, p)[1]) for p in (0.0, float("nan"), 0.0)]
        assert oks == [True, False, True]
        assert int(opt.iterations) == 2
        results.append([keras.ops.convert_to_numpy(v) for v in model.trainable_variables + opt.variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
