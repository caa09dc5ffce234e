"""Checkpoints: exact resume (weights, optimizer slots, EMA, RNG), best-by-metric, signals."""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from msmt_tf.training import checkpointing

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def _load_toy():
    spec = importlib.util.spec_from_file_location("toy_loop", os.path.join(HERE, "toy_loop.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


toy = _load_toy()


@pytest.fixture
def deterministic_ops():
    tf.config.experimental.enable_op_determinism()
    yield
    tf_config.disable_op_determinism()


def _train(parts, n, strategy):
    step = toy.make_step(strategy, parts, source="generator")
    for _ in range(n):
        step(tf.constant(0.0))
        parts["ckpt"].step.assign_add(1)


def test_resume_equals_straight_run(tmp_path, deterministic_ops):
    strategy = tf.distribute.get_strategy()
    # 4 steps straight.
    a = toy.build(strategy, str(tmp_path / "a"), dropout=True)
    init = toy.weights_of(a)
    assert len(a["rng"].seed_states) >= 2  # Dropout's and Keras' global seed generator
    _train(a, 4, strategy)
    want = toy.weights_of(a)
    want_rng = a["rng"].numpy()
    want_draw = a["gen"].normal([5]).numpy()

    # 2 steps, save, forget every Python object, rebuild, restore, 2 more steps.
    b = toy.build(strategy, str(tmp_path / "b"), dropout=True)
    _train(b, 2, strategy)
    b["ckpt"].epoch.assign(1)
    b["ckpt"].save("test")
    del b
    c = toy.build(strategy, str(tmp_path / "b"), dropout=True)
    assert c["ckpt"].restore_latest() == 2
    assert int(c["ckpt"].epoch.numpy()) == 1
    _train(c, 2, strategy)
    got = toy.weights_of(c)

    assert sorted(got) == sorted(want)
    assert any(k.startswith("opt/") and v.ndim == 2 for k, v in got.items())  # Adam slots compared
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-6, err_msg=k)
        if k.startswith(("model/", "ema/")):
            assert not np.allclose(want[k], init[k]), f"{k} did not train"
    got_rng = c["rng"].numpy()
    np.testing.assert_array_equal(got_rng["generators"]["data"], want_rng["generators"]["data"])
    for x, y in zip(got_rng["seed_states"], want_rng["seed_states"]):
        np.testing.assert_array_equal(x, y)
    # The random draws after the resume continue the same sequence.
    np.testing.assert_array_equal(c["gen"].normal([5]).numpy(), want_draw)


def test_rng_state_tracks_seed_generators_that_keras_does_not_checkpoint(tmp_path):
    layer = keras.layers.Dropout(0.5, seed=7)
    layer.build((2, 3))
    seed = keras.random.SeedGenerator(5)
    rng = checkpointing.RngState(models=[layer], seed_generators=[seed], include_global=False)
    assert len(rng.seed_states) == 2
    ck = tf.train.Checkpoint(rng=rng)
    path = ck.write(str(tmp_path / "r"))
    before = [keras.ops.convert_to_numpy(v) for v in rng.seed_states]
    keras.random.normal((2,), seed=seed)
    layer(np.ones((2, 3), "float32"), training=True)
    assert not np.array_equal(keras.ops.convert_to_numpy(seed.state), before[1])
    ck.read(path).assert_existing_objects_matched()
    for v, b in zip(rng.seed_states, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), b)


def _tiny(seed=0):
    m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(seed))])
    return m


def test_best_by_metric_survives_rotation(tmp_path):
    model = _tiny()
    ck = checkpointing.TrainCheckpoint(
        str(tmp_path / "checkpoints"), keep=2, best_directory=str(tmp_path / "best"),
        checkpoint_every=1, model=model,
    )
    fids = {1: 30.0, 2: 12.5, 3: 20.0, 4: 15.0, 5: 13.0}
    for step, fid in fids.items():
        ck.step.assign(step)
        model.layers[0].kernel.assign(np.full((2, 1), step, "float32"))
        assert ck.maybe_save() is not None
        saved = ck.update_best(fid, metric="fid")
        assert saved == (fid == min(v for s, v in fids.items() if s <= step))
    periodic = sorted(f for f in os.listdir(tmp_path / "checkpoints") if f.endswith(".index"))
    assert periodic == ["ckpt-4.index", "ckpt-5.index"]
    best = sorted(f for f in os.listdir(tmp_path / "best") if f.endswith(".index"))
    assert best == ["best-2.index"]
    assert ck.best() == {"metric": "fid", "value": 12.5, "step": 2, "path": "best-2"}
    # A new TrainCheckpoint (a resumed run) knows the stored best and restores it.
    model2 = _tiny()
    ck2 = checkpointing.TrainCheckpoint(
        str(tmp_path / "checkpoints"), keep=2, best_directory=str(tmp_path / "best"), model=model2
    )
    assert ck2.update_best(14.0) is False
    # the checkpoint best.json names (what inference's best/ loading reads) restores step 2
    assert ck2.restore(os.path.join(ck2.best_directory, ck2.best()["path"])) == 2
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model2.layers[0].kernel), np.full((2, 1), 2.0))
    assert ck2.restore_latest() == 5
    # The best value also travels in the checkpoint itself (workers need no shared best.json).
    os.remove(tmp_path / "best" / "best.json")
    ck4 = checkpointing.TrainCheckpoint(
        str(tmp_path / "checkpoints"), keep=2, best_directory=str(tmp_path / "best"), model=_tiny()
    )
    assert ck4.best() is None and ck4.restore_latest() == 5
    assert float(ck4.best_value.numpy()) == 12.5
    assert ck4.update_best(14.0) is False and ck4.update_best(11.0) is True
    # "max" mode keeps the highest value (R-precision).
    ck3 = checkpointing.TrainCheckpoint(str(tmp_path / "c3"), best_directory=str(tmp_path / "b3"),
                                        best_mode="max", model=_tiny())
    assert ck3.update_best(0.5, "r_precision") and not ck3.update_best(0.4, "r_precision")
    assert ck3.update_best(0.7, "r_precision") and ck3.best()["value"] == 0.7


def test_unbuilt_optimizer_and_mismatched_checkpoint_are_clear_errors(tmp_path):
    with pytest.raises(checkpointing.CheckpointError, match=r"opt.build\(model.trainable_variables\)"):
        checkpointing.TrainCheckpoint(str(tmp_path / "c"), opt=keras.optimizers.Adam())
    small = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpointing.TrainCheckpoint(str(tmp_path / "c"), model=small).save()
    big = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    with pytest.raises(checkpointing.CheckpointError, match="--noresume"):
        checkpointing.TrainCheckpoint(str(tmp_path / "c"), model=big).restore_latest()


def test_stop_signal_sets_flag_and_restores_handler():
    before = signal.getsignal(signal.SIGTERM)
    with checkpointing.StopSignal() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested and stop.received == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_ctrl_c_interrupts_at_once():
    with checkpointing.StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)


def test_sigterm_subprocess_leaves_resumable_checkpoint(tmp_path):
    run_dir = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "toy_loop.py"), "--run_dir", run_dir, "--steps", "1000",
         "--sleep", "0.05", "--checkpoint_every", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    lines = []
    try:
        deadline = time.time() + 150
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("step 3/"):
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += rest.splitlines()
    assert proc.returncode == 0, lines
    stopped = [l for l in lines if l.startswith("STOPPED")]
    assert stopped, lines
    saved_step = int(stopped[0].split()[1])
    assert 3 <= saved_step < 1000
    assert stopped[0].split()[2].endswith(f"ckpt-{saved_step}")
    # The loop's own stop line names the step it saved.
    assert f"stop requested: saving step {saved_step} and exiting" in [l.strip() for l in lines]
    # Resume in this process with new objects: the restored step is the saved one.
    parts = toy.build(tf.distribute.get_strategy(), run_dir, dropout=False)
    assert parts["ckpt"].restore_latest() == saved_step


# ------------------------------------------------------- the real networks (path keys)
def _gan(batch=2, heads_reversed=False, seed=0):
    """Generator, EMA copy, discriminators and built Adams as ``GANTrainer`` wires them, plus
    random weights and one optimizer step so that every value (and slot) is distinct."""
    from msmt_tf.models.discriminator import Discriminator
    from msmt_tf.training import gan_trainer
    from tests.training import gan_fixtures as fx

    cfgs = fx.configs()
    m = cfgs.model
    generator, ema, discriminators = gan_trainer.build_networks(m, cfgs.train, fx.WORDS, batch)
    if heads_reversed:  # the heads built in the other order (and another batch size)
        discriminators = []
        for k, size in enumerate(m.image_sizes):
            d = Discriminator(size, df_dim=m.df_dim, condition_dim=m.embedding_dim,
                              kind=m.discriminator, seed=cfgs.train.seed + 1 + k, name=f"d_{size}")
            code = d(np.zeros((batch, size, size, 3), "float32"), training=False)
            d.cond_logits(code, np.zeros((batch, m.embedding_dim), "float32"))
            d.uncond_logits(code)
            discriminators.append(d)
    objects = {"generator": generator, "ema_generator": ema,
               "g_optimizer": gan_trainer.make_optimizer(1e-3, cfgs.train, generator.trainable_variables)}
    for k, d in enumerate(discriminators):
        objects[f"discriminator_{k}"] = d
        objects[f"d_optimizer_{k}"] = gan_trainer.make_optimizer(1e-3, cfgs.train, d.trainable_variables)
    rng = np.random.default_rng(seed)
    for name, obj in objects.items():
        if isinstance(obj, keras.layers.Layer):
            for v in obj.variables:
                if v.dtype == "float32":
                    v.assign(rng.normal(0, 1, v.shape).astype("float32"))
    for k in range(len(discriminators)):
        opt, net = objects[f"d_optimizer_{k}"], objects[f"discriminator_{k}"]
        opt.apply_gradients([(rng.normal(0, 1, v.shape).astype("float32"), v) for v in net.trainable_variables])
    g_opt = objects["g_optimizer"]
    g_opt.apply_gradients([(rng.normal(0, 1, v.shape).astype("float32"), v) for v in generator.trainable_variables])
    return objects


def _arrays(objects):
    """Every variable of every object by its Keras path (model) or position (optimizer)."""
    out = {}
    for name, obj in objects.items():
        for i, v in enumerate(obj.variables):
            key = i if isinstance(obj, keras.optimizers.Optimizer) else v.path
            out[(name, key)] = keras.ops.convert_to_numpy(v)
    return out


def test_real_networks_have_unique_keys_the_same_in_every_build():
    a, b = _gan(batch=2), _gan(batch=3, heads_reversed=True)
    wa, wb = checkpointing.wrap_all(a), checkpointing.wrap_all(b)
    for name in a:
        assert len(set(wa[name].keys)) == len(wa[name].keys) == len(a[name].variables), name
        assert sorted(wa[name].keys) == sorted(wb[name].keys), name
    # Slots are keyed by their model variable (owner name + key) and found for every variable.
    slots = [k for k in wa["g_optimizer"].keys if k.endswith(("/momentum", "/velocity"))]
    assert len(slots) == 2 * len(a["generator"].trainable_variables)
    assert {k.rsplit("/", 1)[0] for k in slots} == {
        f"generator/{k}" for k, v in wa["generator"].by_path.items() if v.trainable}
    # The live and the EMA generator share keys (the EMA weights load into either).
    assert wa["generator"].keys == wa["ema_generator"].keys
    # The DAMSM text encoder's RNN seed generators are numbered by Keras process-wide
    # (seed_generator_12, ...): their keys are renumbered within the model.
    from msmt_tf.models import damsm
    from tests.training import gan_fixtures as fx

    t1, t2 = (damsm.build_text_encoder(fx.configs().model, fx.VOCAB) for _ in range(2))
    assert [v.path for v in t1.variables] != [v.path for v in t2.variables]
    assert checkpointing.VariableMap(t1).keys == checkpointing.VariableMap(t2).keys


def test_real_generator_optimizer_and_ema_round_trip(tmp_path):
    saved = _gan(seed=1)
    noise = tf.random.Generator.from_seed(4, alg="philox")
    noise.normal([3])
    ck = checkpointing.TrainCheckpoint(str(tmp_path / "c"), rng=checkpointing.RngState(
        generators={"noise": noise}, models=[saved["generator"]]), **saved)
    ck.step.assign(5)
    ck.save("test")
    want = _arrays(saved)

    fresh = _gan(seed=2)
    noise2 = tf.random.Generator.from_seed(9, alg="philox")
    before = _arrays(fresh)
    assert sorted(before) == sorted(want)
    ck2 = checkpointing.TrainCheckpoint(str(tmp_path / "c"), rng=checkpointing.RngState(
        generators={"noise": noise2}, models=[fresh["generator"]]), **fresh)
    assert ck2.restore_latest() == 5
    got = _arrays(fresh)
    changed = 0
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))
        changed += not np.array_equal(before[key], want[key])
    assert changed > 0.9 * len(want)  # the restore, not the build, gave these values
    np.testing.assert_array_equal(noise2.state.numpy(), noise.state.numpy())
