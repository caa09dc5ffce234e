"""benchmarks/ablation.py: the rows differ only in their component flags, a finished row is not
run again, wall time and the steady step time add up over sittings, failures name the row,
seed and log, and --report writes hand-computed means and ranges, the paper's figures and
ranks. Commands are replaced by a fake runner that writes what the real ones write."""

import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import ablation as ab  # noqa: E402
from msmt_tf.models.config import ModelConfig  # noqa: E402


def _settings(tmp_path, **kw):
    return ab.Settings(work_dir=str(tmp_path / "work"), out_dir=str(tmp_path / "out"),
                       doc=str(tmp_path / "doc.md"), **kw)


# --------------------------------------------------------------------------- rows and flags


def _split(flags, names):
    """``(flags whose name is in names, the others)``."""
    return ([f for f in flags if ab.flag_name(f) in names],
            [f for f in flags if ab.flag_name(f) not in names])


def test_rows_differ_only_in_component_flags(tmp_path):
    settings = _settings(tmp_path)
    shared = None
    for row in ab.ROWS:
        flags = ab.train_flags(settings, row, seed=0)
        component, rest = _split(flags, ab.COMPONENT_FLAGS)
        assert component == list(row.flags), row.name  # the row's own, nowhere else
        names = [ab.flag_name(f) for f in row.flags]
        assert {"initial", "stages"} <= set(names) and len(set(names)) == len(names), row.name
        run_dir, rest = _split(rest, ("run_dir",))
        assert run_dir == [f"--run_dir={os.path.join(settings.work_dir, f'{row.name}_s0', 'run')}"]
        shared = rest if shared is None else shared
        assert rest == shared, row.name  # everything else identical for every row
    assert f"--flagfile={ab.FLAGFILE}" in shared and "--seed=0" in shared
    assert f"--max_steps={ab.STEPS}" in shared
    # No two rows are the same model, and each row's flags make a valid ModelConfig.
    assert len({frozenset(r.flags) for r in ab.ROWS}) == len(ab.ROWS)
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    for row in ab.ROWS:
        values = dict(f[2:].split("=", 1) for f in row.flags)
        typed = {k: type(fields[k].default)(v) for k, v in values.items()}
        cfg = ModelConfig(**typed)
        assert cfg.stages == (1 if row.table == ab.TABLE4 else 2), row.name


def test_seeds_differ_only_in_seed_and_run_dir(tmp_path):
    settings = _settings(tmp_path)
    row = ab.ROW_BY_NAME["t1_mtwig_sdm1"]
    a = _split(ab.train_flags(settings, row, 0), ("seed", "run_dir"))
    b = _split(ab.train_flags(settings, row, 7), ("seed", "run_dir"))
    assert a[1] == b[1]
    assert sorted(b[0]) == sorted(["--seed=7", f"--run_dir={settings.work_dir}/t1_mtwig_sdm1_s7/run"])


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ab.AblationError, match=r"--heads=6.*not a row's"):
        _settings(tmp_path, train_flags=("--gf_dim=4", "--heads=6"))
    with pytest.raises(ab.AblationError, match="unknown row"):
        ab.select_rows(["t4_ig", "t9_nope"])
    with pytest.raises(ab.AblationError, match="distinct"):
        ab.parse_seeds(["0", "0"])
    assert ab.parse_seeds(["1", "0"]) == (1, 0)


# --------------------------------------------------------------------------- fake commands

VOCAB = ["<end>", "a", "red", "circle", "blue", "square", "above"]


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


class FakeStore:
    """`ab.DamsmStore` for the fake commands' text files: packing copies them, the fingerprint
    hashes their contents."""

    @staticmethod
    def fingerprint(directory):
        h = hashlib.sha256()
        for name in ab.DAMSM_FILES:
            with open(os.path.join(directory, name), "rb") as f:
                h.update(f.read())
        return h.hexdigest()

    @staticmethod
    def pack(directory, stored):
        shutil.copytree(directory, stored, dirs_exist_ok=True)
        return FakeStore.fingerprint(directory)

    @staticmethod
    def unpack(stored, directory):
        shutil.copytree(stored, directory, dirs_exist_ok=True)
        return FakeStore.fingerprint(directory)


def refuse(argv, log_path, heartbeat):
    raise AssertionError(f"ran {argv}")


def _flag(argv, name):
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))


class FakeRunner:
    """Plays the commands: each advances the clock by its seconds and writes its outputs.
    ``train_lines[i]`` are the (step, seconds after the start) training lines the i-th training
    command logs; it then 'stops' (exit 0, as after a signal) unless the last step is the run's."""

    SECONDS = {"pretrain_damsm": 60.0, "train": None, "evaluate": 30.0, "sample": 10.0,
               "summary": 5.0}

    def __init__(self, clock, train_lines, train_seconds):
        self.clock, self.train_lines, self.train_seconds = clock, list(train_lines), list(train_seconds)
        self.calls = []

    def __call__(self, argv, log_path, heartbeat):
        tool = argv[2].split(".")[-1]
        self.calls.append((tool, argv))
        start = self.clock.t
        output = ""
        if tool == "pretrain_damsm":
            d = _flag(argv, "damsm_dir")
            for name in ab.DAMSM_FILES:
                _write(os.path.join(d, name), json.dumps({"words": VOCAB}))
        elif tool == "train":
            run = _flag(argv, "run_dir")
            _write(os.path.join(run, "config.json"), json.dumps({"train": {"precision": "float32"}}))
            with open(os.path.join(run, "metrics.jsonl"), "a") as f:
                f.write(json.dumps({"step": 0, "time": start, "d_warmup_seconds": 3.0}) + "\n")
                for step, dt in self.train_lines.pop(0):
                    f.write(json.dumps({"step": step, "time": start + dt, "g_loss": 1.0,
                                        "step_seconds": 0.5}) + "\n")
        elif tool == "evaluate":
            _write(_flag(argv, "out"), json.dumps({
                "fid": 50.0, "kid_mean": 0.05, "r_precision_mean": 20.0, "attribute_accuracy": 0.5,
                "binding_accuracy": 0.25, "relation_accuracy": 0.4, "skipped": {},
                "protocol": {"image_size": 32, "damsm": {"sha256": "abc"}}}))
        elif tool == "sample":
            _write(os.path.join(_flag(argv, "out"), "contact_sheet.png"), "png bytes")
        elif tool == "summary":
            assert f"--vocab_size={len(VOCAB)}" in argv
            output = ("preset: ig_sdm2  stages: (32,)  vocab: 7\nmodule  trainable  non-trainable\n"
                      "generator  12,345  0\ndiscriminators  6,789  0\ntext_encoder  1,000  0\n"
                      "total  13,345  0\n")
        seconds = self.SECONDS[tool]
        self.clock.t += self.train_seconds.pop(0) if seconds is None else seconds
        heartbeat()
        return 0, output


def test_resumed_job_sums_its_sittings(tmp_path):
    settings = _settings(tmp_path, steps=100)
    clock = Clock()
    # Sitting 1: stopped at step 50 after 100 s. Sitting 2 (1,000 s later): steps 75 and 100
    # in 200 s, then evaluate 30 s, sample 10 s, params 5 s.
    runner = FakeRunner(clock, [[(25, 40.0), (50, 80.0)], [(75, 100.0), (100, 150.0)]],
                        [100.0, 200.0])
    ab.ensure_damsm(settings, runner, clock, FakeStore)
    row = ab.ROW_BY_NAME["t4_mtwig_ks2"]
    job = ab.Job(settings, row, 1, runner, clock)
    with pytest.raises(ab.AblationError, match="training stopped at step 50 of 100"):
        job.run()
    assert [c[0] for c in runner.calls] == ["pretrain_damsm", "train"]
    assert not job.done()
    clock.t += 1000.0  # the machine was off
    ab.Job(settings, row, 1, runner, clock).run()
    assert [c[0] for c in runner.calls[2:]] == ["train", "evaluate", "sample", "summary"]
    assert runner.calls[1][1] == runner.calls[2][1]  # the same command resumes the run
    with open(job.json_path) as f:
        result = json.load(f)
    assert [s["seconds"] for s in result["sittings"]] == [100.0, 245.0]
    assert result["wall_seconds"] == 345.0
    assert result["train_seconds"] == 300.0
    # Pairs (25, 50): 40 s; (75, 100): 50 s; (50, 75) spans the restart: left out.
    assert result["seconds_per_step"] == pytest.approx(90.0 / 50)
    assert result["steps_per_second"] == pytest.approx(50 / 90.0)
    assert result["params"] == {"generator": 12345, "discriminators": 6789,
                                "text_encoder": 1000, "total": 13345}
    assert result["metrics"]["fid"] == 50.0 and result["metrics"]["scene_accuracy"] is None
    assert result["component_flags"] == list(row.flags)
    assert result["settings"] == settings.record() and result["damsm_sha256"] == "abc"
    assert result["precision"] == "float32" and result["eval_image_size"] == 32
    assert result["grid"] == "t4_mtwig_ks2_s1.png"
    with open(job.grid_path) as f:
        assert f.read() == "png bytes"
    assert result["commands"]["train"].startswith("python -m msmt_tf.train --flagfile=")
    with open(os.path.join(settings.out_dir, "damsm.json")) as f:
        assert json.load(f)["wall_seconds"] == 60.0


def test_finished_row_is_skipped(tmp_path):
    settings = _settings(tmp_path)
    clock = Clock()
    done = FakeRunner(clock, [], [])
    ab.ensure_damsm(settings, done, clock, FakeStore)
    row = ab.ROW_BY_NAME["t4_ig"]
    _write(ab.Job(settings, row, 0).json_path, "{}")
    stream = io.StringIO()
    ab.run_all(settings, [row], [0], runner=refuse, clock=clock, stream=stream, store=FakeStore)
    assert "t4_ig_s0: finished already" in stream.getvalue()


def test_damsm_is_pretrained_once_then_rebuilt_from_the_repository_copy(tmp_path):
    settings = _settings(tmp_path)
    clock = Clock()
    runner = FakeRunner(clock, [], [])
    ab.ensure_damsm(settings, runner, clock, FakeStore)
    work, stored = ab.damsm_dir(settings), os.path.join(settings.out_dir, ab.STORED_DAMSM)
    record_path = os.path.join(settings.out_dir, "damsm.json")
    with open(record_path) as f:
        record = json.load(f)
    assert [c[0] for c in runner.calls] == ["pretrain_damsm"]
    assert record["sha256"] == FakeStore.fingerprint(work) == FakeStore.fingerprint(stored)
    # A new machine: no work directory; the copy in the repository is used, nothing runs.
    shutil.rmtree(settings.work_dir)
    ab.ensure_damsm(settings, refuse, clock, FakeStore)
    assert FakeStore.fingerprint(work) == record["sha256"]
    # A work directory pretrained apart (another sha256) is replaced by the recorded encoders.
    _write(os.path.join(work, "vocab.json"), "other words")
    ab.ensure_damsm(settings, refuse, clock, FakeStore)
    assert FakeStore.fingerprint(work) == record["sha256"]
    # A copy that no longer gives the recorded encoders is an error naming what to restore.
    _write(os.path.join(stored, "vocab.json"), "edited")
    shutil.rmtree(work)
    with pytest.raises(ab.AblationError, match=r"records .*git checkout"):
        ab.ensure_damsm(settings, refuse, clock, FakeStore)
    # A record whose work directory holds other encoders and no copy yet: an error.
    shutil.rmtree(stored)
    _write(os.path.join(work, "damsm.json"), "pretrained again")
    with pytest.raises(ab.AblationError, match="are not the ones"):
        ab.ensure_damsm(settings, refuse, clock, FakeStore)
    assert not os.path.exists(stored)


def test_failed_command_names_row_seed_and_log(tmp_path):
    settings = _settings(tmp_path)
    row = ab.ROW_BY_NAME["t1_ig_memory"]
    job = ab.Job(settings, row, 3, runner=lambda argv, log, heartbeat: (2, ""))
    log = os.path.join(settings.work_dir, "t1_ig_memory_s3", "logs", "train.log")
    with pytest.raises(ab.AblationError, match=re.escape(
            f"row t1_ig_memory seed 3: train failed (exit status 2); see {log}")):
        job.run()


def test_parse_params_reads_the_summary_table():
    from msmt_tf.models.param_count import format_table

    rows = {"generator/ca": (10, 0), "generator": (1234567, 12), "discriminator_32": (89, 0),
            "discriminators": (89, 0), "text_encoder": (4321, 0), "total": (1238888, 0)}
    assert ab.parse_params("preset: x\n" + format_table(rows)) == {
        "generator": 1234567, "discriminators": 89, "text_encoder": 4321, "total": 1238888}


# --------------------------------------------------------------------------- the report


def _result(row, seed, fid, kid, r, attr, binding, relation, s_per_step, wall, **extra):
    return {"row": row, "seed": seed, "grid": f"{row}_s{seed}.png", "settings": {"steps": 100},
            "precision": "float32", "damsm_sha256": "abc",
            "metrics": {"fid": fid, "kid_mean": kid, "r_precision_mean": r,
                        "attribute_accuracy": attr, "binding_accuracy": binding,
                        "relation_accuracy": relation},
            "params": {"generator": 12345}, "seconds_per_step": s_per_step,
            "wall_seconds": wall, **extra}


def _table_row(text, name):
    line = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_report_writes_means_ranges_paper_figures_and_ranks(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    results = [
        _result("t1_ig_memory", 0, 20.0, 0.01, 40.0, 0.6, 0.1, 0.3, 0.1, 600.0),
        _result("t1_ig_memory", 1, 30.0, 0.02, 50.0, 0.7, 0.2, 0.5, 0.2, 1200.0),
        _result("t1_mtwig_memory", 0, 10.0, 0.03, 30.0, 0.8, 0.4, 0.6, 0.5, 300.0,
                settings={"steps": 50}, damsm_sha256="abd",
                machine={"cpus": 2, "cpu": "AMD EPYC"}),
    ]
    for x in results[:2]:
        x["machine"] = {"cpus": 2, "cpu": "Intel Xeon"}
    for x in results:
        (out / f"{x['row']}_s{x['seed']}.json").write_text(json.dumps(x))
    (out / "notes.json").write_text("{}")
    (out / "damsm.json").write_text(json.dumps({"wall_seconds": 90.0, "sha256": "abc"}))
    doc = tmp_path / "doc.md"
    doc.write_text(f"# intro\n{ab.TABLE_MARKERS[0]}\nold table\n{ab.TABLE_MARKERS[1]}\nmiddle\n"
                   f"{ab.GRID_MARKERS[0]}\nold grids\n{ab.GRID_MARKERS[1]}\nend\n")
    ab.write_report(str(doc), str(out))
    text = doc.read_text()
    assert text.startswith("# intro\n") and "\nmiddle\n" in text and text.endswith("\nend\n")
    assert "old table" not in text and "old grids" not in text
    # row, mirrors, seeds, FID, KID, R, attr, binding, relation, G params, s/step, wall (min),
    # paper FID, paper R, FID rank, R rank
    ig = _table_row(text, "t1_ig_memory")
    assert ig[2:] == ["0, 1", "25.0 [20.0, 30.0]", "0.0150 [0.0100, 0.0200]", "45.0 [40.0, 50.0]",
                      "0.650 [0.600, 0.700]", "0.150 [0.100, 0.200]", "0.400 [0.300, 0.500]",
                      "12,345", "0.150 [0.100, 0.200]", "15.0 [10.0, 20.0]", "11.91",
                      "76.58 ± 0.53", "2 / 2", "1 / 2"]
    mtwig = _table_row(text, "t1_mtwig_memory")
    assert mtwig[2] == "0 (fewer than 2 seeds)"
    assert mtwig[3] == "10.0" and mtwig[-4:] == ["10.99", "79.37 ± 0.73", "1 / 1", "2 / 1"]
    assert _table_row(text, "t1_mtwig_sdm1")[2:4] == ["none yet", "-"]
    # Table 4 has CUB and COCO columns and no results yet.
    t4 = _table_row(text, "t4_mtwig_ks3")
    assert t4[-6:] == ["115.38", "82.94 ± 0.74", "39.85", "94.80 ± 0.29", "-", "-"]
    assert "Finished runs: 3 (2 of 9 rows)" in text
    assert "0.58 h (summed over runs and sittings), plus 1.5 min of DAMSM pretraining" in text
    assert re.search(r"\*\*Settings differ\*\*: t1_mtwig_memory_s0 ran", text)
    assert "**Other DAMSM encoders**: t1_mtwig_memory_s0 ran" in text
    assert ("Machines: 2-core AMD EPYC: 1 run(s); 2-core Intel Xeon: 2 run(s). The s/step and "
            "wall columns compare only runs of one CPU") in text
    assert "Ignored 1 file(s) of no known row: notes.json." in text
    assert ("| `t1_ig_memory` | ![t1_ig_memory seed 0](out/t1_ig_memory_s0.png) | "
            "![t1_ig_memory seed 1](out/t1_ig_memory_s1.png) |") in text
    assert "| `t1_mtwig_memory` | ![t1_mtwig_memory seed 0](out/t1_mtwig_memory_s0.png) | - |" \
        in text


def _smoke_sizes():
    """TINY_MODEL, TINY_EVAL of tests/test_smoke_commands.py (reused, not copied)."""
    spec = importlib.util.spec_from_file_location(
        "ablation_smoke_sizes", os.path.join(os.path.dirname(__file__), "test_smoke_commands.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TINY_MODEL, module.TINY_EVAL


def test_tiny_row_end_to_end(tmp_path):
    """One row, one seed, every real command at the tiniest size: the JSON has every field.
    FID is left out (its 2048 x 2048 sqrtm alone takes longer than the rest; see
    tests/test_smoke_commands.py): KID reads the same Inception features."""
    tiny_model, tiny_eval = _smoke_sizes()
    stats = f"--stats_cache_dir={tmp_path / 'stats'}"
    settings = _settings(
        tmp_path, steps=3, eval_images=10, eval_metrics="kid,r_precision,attributes",
        train_flags=(f"--data_dir={tmp_path / 'data'}", "--shapes_num_train=12",
                     "--shapes_num_test=10", "--shapes_size=32", *tiny_model, "--batch_size=2",
                     "--d_warmup_steps=1", "--eval_num_images=10", "--log_every=1",
                     "--damsm_batch_size=2", "--damsm_max_steps=1", "--damsm_max_eval_batches=1",
                     *tiny_eval, stats),
        eval_flags=(*tiny_eval, "--eval_batch_size=5", stats))
    ab.ensure_damsm(settings)
    # The repository's compact copy (no Inception trunk) rebuilds the same encoders.
    from msmt_tf.models import damsm

    with open(os.path.join(settings.out_dir, "damsm.json")) as f:
        recorded = json.load(f)["sha256"]
    assert damsm.fingerprint(ab.damsm_dir(settings))["sha256"] == recorded
    shutil.rmtree(ab.damsm_dir(settings))
    ab.ensure_damsm(settings, runner=refuse)
    assert damsm.fingerprint(ab.damsm_dir(settings))["sha256"] == recorded
    assert not os.path.exists(os.path.join(settings.out_dir, ab.STORED_DAMSM, ab.DAMSM_FILES[1]))
    # A grid caption the tiny vocabulary knows: the first caption of a test image.
    with open(sorted((tmp_path / "data" / "text").glob("*.txt"))[0]) as f:
        settings = dataclasses.replace(settings, captions=(f.readline().strip(),))
    row = ab.ROW_BY_NAME["t4_ig"]
    ab.run_all(settings, [row], [0], stream=io.StringIO())
    with open(os.path.join(settings.out_dir, "t4_ig_s0.json")) as f:
        result = json.load(f)
    metrics = result["metrics"]
    assert metrics["fid"] is None  # not asked for
    for key in set(ab.METRIC_KEYS) - {"fid"}:
        assert isinstance(metrics[key], float) and metrics[key] == metrics[key], key
    assert 0 <= metrics["binding_accuracy"] <= 1 and 0 <= metrics["r_precision_mean"] <= 100
    assert result["eval_image_size"] == 32 and result["precision"] == "float32"
    assert set(result["params"]) == set(ab.PARAM_ROWS)
    assert result["params"]["total"] == result["params"]["generator"] + result["params"][
        "text_encoder"]
    assert result["seconds_per_step"] > 0  # lines at steps 1, 2, 3 in one window
    assert result["wall_seconds"] >= result["train_seconds"] > 0
    assert len(result["sittings"]) == 1 and result["damsm_sha256"]
    assert os.path.getsize(os.path.join(settings.out_dir, "t4_ig_s0.png")) > 0
    assert set(result["commands"]) == {"train", "evaluate", "sample"}


def test_report_needs_its_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"{ab.TABLE_MARKERS[0]}\n{ab.TABLE_MARKERS[1]}\n")
    with pytest.raises(ab.AblationError, match="ablation-grids:start.*missing"):
        ab.write_report(str(doc), str(tmp_path))
