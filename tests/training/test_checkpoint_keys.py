"""Checkpoint keys: variables are saved by what they are (Keras path), not by position.

``checkpointing.VariableMap`` keys each variable by its path relative to its model and each
optimizer slot by its model variable; ``read_checkpoint`` checks keys and shapes before it
assigns anything, and still reads the old positional layout (``by_index/v00042``).
"""

import logging
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from msmt_tf.training import checkpointing


class Pair(keras.Model):
    """Two equal-shaped Dense layers whose creation order (hence ``variables`` order) is a flag."""

    def __init__(self, reverse=False, names=("first", "second"), units=(3, 3), **kw):
        super().__init__(**kw)
        a = lambda: keras.layers.Dense(units[0], name=names[0])  # noqa: E731
        b = lambda: keras.layers.Dense(units[1], name=names[1])  # noqa: E731
        if reverse:
            self.b, self.a = b(), a()
        else:
            self.a, self.b = a(), b()

    def call(self, x):
        return self.a(x), self.b(x)


def _pair(**kw):
    m = Pair(name="pair", **kw)
    m(np.ones((1, 3), "float32"))
    return m


def _adam(model, grads=None):
    """A built Adam with one step of distinct gradients, so every slot holds its own values."""
    opt = keras.optimizers.Adam(0.1)
    opt.build(model.trainable_variables)
    if grads is not None:
        opt.apply_gradients([(grads[v.path], v) for v in model.trainable_variables])
    return opt


def _slot(opt, var, which="_momentums"):
    """Adam's slot of ``var`` through Keras' own index (independent of checkpoint keys)."""
    return getattr(opt, which)[opt._get_variable_index(var)]


class _OldMap(tf.Module):
    """The positional layout of msmt_tf before path keys, reproduced independently."""

    def __init__(self, obj):
        super().__init__()
        self.by_index = {f"v{i:05d}": v for i, v in enumerate(obj.variables)}


def _values(model):
    return {v.path: np.asarray(v.numpy()) for v in model.variables}


def test_reordered_layers_restore_each_variable_its_own_value(tmp_path):
    a = _pair()
    for k, v in enumerate(a.variables):
        v.assign(np.full(v.shape, 10.0 + k, "float32"))
    grads = {v.path: np.full(v.shape, 1.0 + k, "float32") for k, v in enumerate(a.trainable_variables)}
    opt_a = _adam(a, grads)
    ck = checkpointing.TrainCheckpoint(str(tmp_path / "c"), model=a, opt=opt_a)
    ck.save()

    b = _pair(reverse=True)
    # Same paths, other order: a positional layout would swap first <-> second.
    assert [v.path for v in a.variables] != [v.path for v in b.variables]
    assert sorted(v.path for v in a.variables) == sorted(v.path for v in b.variables)
    opt_b = _adam(b)
    checkpointing.TrainCheckpoint(str(tmp_path / "c"), model=b, opt=opt_b).restore_latest()
    want = _values(a)
    for v in b.variables:
        np.testing.assert_array_equal(v.numpy(), want[v.path], err_msg=v.path)
    # Adam's slots follow their model variable, not their position.
    by_path_a = {v.path: v for v in a.trainable_variables}
    for v in b.trainable_variables:
        for which in ("_momentums", "_velocities"):
            np.testing.assert_array_equal(_slot(opt_b, v, which).numpy(),
                                          _slot(opt_a, by_path_a[v.path], which).numpy())
    assert int(opt_b.iterations.numpy()) == 1


def test_keys_of_models_and_optimizer_slots():
    m = _pair()
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    opt.build(m.trainable_variables)
    vmap = checkpointing.wrap_all({"model": m, "opt": opt})
    assert vmap["model"].keys == ["first/kernel", "first/bias", "second/kernel", "second/bias"]
    keys = vmap["opt"].keys
    assert {"iteration", "learning_rate", "dynamic_scale", "step_counter",
            "inner_optimizer/iteration", "inner_optimizer/learning_rate",
            "inner_optimizer/model/first/kernel/momentum",
            "inner_optimizer/model/second/bias/velocity"} <= set(keys)
    assert len(keys) == len(set(keys)) == len(opt.variables)
    inner = opt.inner_optimizer
    for v in m.trainable_variables:
        key = v.path.split("/", 1)[1]
        assert vmap["opt"].by_path[f"inner_optimizer/model/{key}/momentum"] is _slot(inner, v)


def test_auto_numbered_names_and_repeated_paths_get_deterministic_keys():
    def seq():
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(2), keras.layers.Dropout(0.5),
                                 keras.layers.Dense(1)])

    first, second = seq(), seq()  # Keras numbers dense_2, dense_3, ... process-wide
    assert [v.path for v in first.variables] != [v.path for v in second.variables]
    keys = checkpointing.VariableMap(first).keys
    assert keys == checkpointing.VariableMap(second).keys
    assert keys[:2] == ["dense/kernel", "dense/bias"] and keys[-2:] == ["dense_1/kernel", "dense_1/bias"]
    # Other explicit names are kept, numbered or not; a built-in layer's name of Keras' own
    # pattern (class name in snake case + "_<n>") is taken as Keras' numbering.
    assert checkpointing.VariableMap(_pair(names=("fc_7", "refine_1"))).keys[::2] == [
        "fc_7/kernel", "refine_1/kernel"]
    assert checkpointing.VariableMap(_pair(names=("dense_7", "b"))).keys[::2] == [
        "dense/kernel", "b/kernel"]

    class Twice(keras.layers.Layer):  # the same sublayer name twice: its repeat gets "#2"
        def __init__(self):
            super().__init__(name="twice")
            self.x, self.y = keras.layers.Dense(1, name="d"), keras.layers.Dense(1, name="d")

        def call(self, t):
            return self.x(t) + self.y(t)

    t = Twice()
    t(np.ones((1, 2), "float32"))
    vmap = checkpointing.VariableMap(t)
    assert vmap.keys == ["d/kernel", "d/bias", "d/kernel#2", "d/bias#2"]
    assert vmap.by_path["d/kernel#2"] is t.y.kernel


def _save(tmp_path, **objects):
    return tf.train.Checkpoint(**checkpointing.wrap_all(objects)).write(str(tmp_path / "k" / "ckpt"))


def test_renamed_missing_and_reshaped_variables_are_one_line_errors(tmp_path):
    a = _pair()
    prefix = _save(tmp_path, model=a)
    b = _pair(names=("first", "third"))
    before = _values(b)
    with pytest.raises(checkpointing.CheckpointError) as e:
        checkpointing.read_checkpoint(prefix, {"model": b}, hint="Use the same flags.")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"checkpoint {prefix} does not match")
    assert "2 missing in checkpoint [model:third/kernel, model:third/bias]" in msg
    assert "2 unexpected in checkpoint [model:second/kernel, model:second/bias]" in msg
    assert "shape mismatch" not in msg and msg.endswith("Use the same flags.")
    for path, value in _values(b).items():  # nothing was assigned
        np.testing.assert_array_equal(value, before[path])

    c = _pair(units=(3, 4))
    with pytest.raises(checkpointing.CheckpointError,
                       match=r"2 shape mismatch \[model:second/kernel checkpoint \(3, 3\) vs model "
                             r"\(3, 4\), model:second/bias checkpoint \(3,\) vs model \(4,\)\]"):
        checkpointing.read_checkpoint(prefix, {"model": c})

    # At most 5 listed per kind, with the count; the model under another object name: all missing.
    wide = keras.Sequential([keras.Input((2,))] + [keras.layers.Dense(1, name=f"l{i}") for i in range(4)],
                            name="wide")
    with pytest.raises(checkpointing.CheckpointError) as e:
        checkpointing.read_checkpoint(prefix, {"other": wide})
    assert ("8 missing in checkpoint [other:l0/kernel, other:l0/bias, other:l1/kernel, "
            "other:l1/bias, other:l2/kernel, ... (3 more)]") in str(e.value)


def test_old_positional_checkpoints_load_by_position_with_a_warning(tmp_path, caplog):
    a = _pair()
    for k, v in enumerate(a.variables):
        v.assign(np.full(v.shape, 10.0 + k, "float32"))
    opt_a = _adam(a, {v.path: np.full(v.shape, 2.0, "float32") for v in a.trainable_variables})
    counters = dict(step=tf.Variable(7, dtype=tf.int64), epoch=tf.Variable(2, dtype=tf.int64),
                    best_value=tf.Variable(float("nan"), dtype=tf.float64))
    prefix = tf.train.Checkpoint(model=_OldMap(a), opt=_OldMap(opt_a), **counters).write(
        str(tmp_path / "checkpoints" / "ckpt-7"))

    b = _pair()
    opt_b = _adam(b)
    ck = checkpointing.TrainCheckpoint(str(tmp_path / "checkpoints"), model=b, opt=opt_b)
    with caplog.at_level(logging.WARNING):
        assert ck.restore(prefix) == 7
    assert int(ck.epoch.numpy()) == 2
    assert "old positional layout" in caplog.text and "model, opt" in caplog.text
    for path, value in _values(a).items():
        np.testing.assert_array_equal(dict(_values(b))[path], value)
    for x, y in zip(opt_a.variables, opt_b.variables):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    # The next save is path-keyed, and reads back without the warning.
    ck.step.assign(8)
    path = ck.save("test")
    assert path.endswith("ckpt-8")
    stored = [n for n, _ in tf.train.list_variables(path) if n.startswith("model/")]
    assert len(stored) == len(checkpointing.VariableMap(b).keys)
    assert all(n.startswith("model/by_path/") for n in stored)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        checkpointing.read_checkpoint(path, {"model": _pair()})
    assert "positional" not in caplog.text

    # Position by position: a reshaped or extra variable is the same one-line error.
    with pytest.raises(checkpointing.CheckpointError,
                       match=r"2 shape mismatch \[model:second/kernel checkpoint \(3, 3\) vs model \(3, 4\), "
                             r"model:second/bias checkpoint \(3,\) vs model \(4,\)\]"):
        checkpointing.read_checkpoint(prefix, {"model": _pair(units=(3, 4))})
    three = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="x")], name="pair")
    with pytest.raises(checkpointing.CheckpointError,
                       match=r"2 unexpected in checkpoint \[model:v00002 \(no such position\), "
                             r"model:v00003 \(no such position\)\]"):
        checkpointing.read_checkpoint(prefix, {"model": three})


def _as_checkpointed(generator, prefix, name, model_cfg):
    """A copy of ``generator`` holding the weights checkpoint ``prefix`` stores under ``name``
    (``read_checkpoint`` first checks that every key and shape matches)."""
    from msmt_tf.models.param_count import dummy_generator_inputs
    from msmt_tf.testing.tiny_run import WORDS_NUM
    from msmt_tf.training import ema as ema_lib

    copy = ema_lib.clone_model(
        generator, dummy_generator_inputs(model_cfg, batch=1, words_num=WORDS_NUM), training=False)
    checkpointing.read_checkpoint(prefix, {name: copy})
    return dict(checkpointing.layer_variable_keys(copy))


def test_inference_reads_path_keys_and_old_runs(tiny_run, tiny_inference, tmp_path):
    from msmt_tf import inference

    generator = tiny_inference.generator
    keys = dict(checkpointing.layer_variable_keys(generator))
    for name in ("ema_generator", "generator"):
        stored = _as_checkpointed(generator, tiny_run.checkpoint, name, tiny_run.configs.model)
        assert sorted(stored) == sorted(keys)
        same = all(np.array_equal(stored[k].numpy(), v.numpy()) for k, v in keys.items())
        assert same == (name == "ema_generator")

    # A run directory written before path keys: the same weights, positional layout.
    run = tmp_path / "old_run"
    os.makedirs(run / "checkpoints")
    shutil.copy(os.path.join(tiny_run.run_dir, "config.json"), run / "config.json")
    prefix = tf.train.Checkpoint(ema_generator=_OldMap(generator)).write(str(run / "checkpoints" / "ckpt-1"))
    loaded = inference.load_for_inference(checkpoint=prefix)
    for x, y in zip(loaded.generator.variables, generator.variables):
        assert x.path == y.path
        np.testing.assert_array_equal(x.numpy(), y.numpy())

    # A checkpoint of another generator: one line, caught as RestoreError by the entry points.
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="fc")], name="generator")
    prefix = tf.train.Checkpoint(ema_generator=checkpointing.VariableMap(other)).write(
        str(run / "checkpoints" / "ckpt-2"))
    with pytest.raises(inference.RestoreError) as e:
        inference.load_for_inference(checkpoint=prefix)
    assert isinstance(e.value, checkpointing.CheckpointError) and "\n" not in str(e.value)
    assert f"generator built from {run}/config.json" in str(e.value)
    assert "2 unexpected in checkpoint [ema_generator:fc/kernel, ema_generator:fc/bias]" in str(e.value)
