"""The paper's Table 1 and Table 4 ablations at one small scale on the shapes binding set, run by
hand over as many sittings as it takes (docs/ablations.md).

    python benchmarks/ablation.py                          # every row, seeds 0 and 1
    python benchmarks/ablation.py --rows=t4_ig,t4_mtwig_ks3 --seeds=0,1,2
    python benchmarks/ablation.py --report                 # only rewrite docs/ablations.md

Each row is a generator architecture of the paper (`ROWS`: its component flags and the paper's
figures for it); every row trains with the same flags otherwise (`shared_flags`: the data of
`flags/shapes_binding.flags`, the quickstart's widths and objective, batch 10, learning rates
2e-4, `--steps` steps, one DAMSM pretrained once for all rows, the run's seed), is evaluated
the same way (`python -m msmt_tf.evaluate` on `--eval_images` test captions with eval seed
100: FID, KID, R-precision, attribute and binding scores) and draws the same grid (`CAPTIONS`,
two noises each, noise seed 0, `python -m msmt_tf.sample`).

One job per (row, seed) in `<work_dir>/<row>_s<seed>/`: `run/` (the training run directory),
`metrics.json`, `samples/`, `logs/<phase>.log` (every command's output, appended per sitting)
and `progress.json` (phases done, seconds per sitting, the training windows). Phases: train
(`python -m msmt_tf.train`, which resumes its run directory: a killed job loses at most a
checkpoint interval, `--checkpoint_every` 100 steps), evaluate, sample, params
(`python -m msmt_tf.summary`). When all are done the job writes `<out_dir>/<row>_s<seed>.png`
(the grid) and then, atomically, `<out_dir>/<row>_s<seed>.json`; a job whose JSON exists is
skipped, so running the same command again continues where it stopped. SIGTERM / Ctrl-C are
passed to the running command (training saves a checkpoint) and the sitting is recorded.

Times: `wall_seconds` is the job's wall time summed over sittings (every phase; the DAMSM
pretraining shared by all rows is recorded apart, in `<out_dir>/damsm.json`); `seconds_per_step`
is the steady training step, from the time stamps of consecutive training lines of the run's
`metrics.jsonl` inside one training window (so it leaves out start-up, tracing, the
discriminator warm-up, the evaluations and restarts; image grids and checkpoints are in).

`--report` (also run after every finished job) rewrites the marked sections of `--doc` from
the JSON files: per row the mean and the range [min, max] over seeds, the paper's figures and
the FID / R-precision rank of the rows among themselves next to the paper's order, rows with
fewer than two seeds and runs whose shared settings differ from the others flagged, and the
grids side by side.
"""

import collections
import dataclasses
import datetime
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from msmt_tf import errors  # noqa: E402

FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILE = "flags/shapes_binding.flags"  # relative to ROOT, the commands' working directory
DEFAULT_DOC = os.path.join(ROOT, "docs", "ablations.md")
DEFAULT_OUT = os.path.join(ROOT, "docs", "ablations")
DEFAULT_WORK = os.path.join(ROOT, "runs", "ablation")
# The step budget of every row: the slowest row with its evaluation within about 30 minutes
# on the 2-core machine (measurements in docs/ablations.md, "Budget").
STEPS = 4000
EVAL_IMAGES = 2000  # the whole test split of flags/shapes_binding.flags, each image once
EVAL_SEED = 100  # python -m msmt_tf.evaluate's default (the references' manualSeed)
EVAL_METRICS = "fid,kid,r_precision,attributes"
MIN_SEEDS = 2
HEARTBEAT_SECONDS = 30  # progress.json is rewritten this often while a command runs

# Flags every row and seed trains with, after the data flagfile: the quickstart's widths and
# objective are the dataclass defaults (msmt_tf/models/config.py, msmt_tf/training/config.py),
# restated here where a row could otherwise drift (batch, learning rates, precision). The
# in-training evaluation scores attributes only (the row's numbers come from the evaluate phase,
# with one eval seed for every run); float32 keeps the numbers independent of the machine's
# bfloat16 support (--precision=auto would follow it).
SHARED_FLAGS = (
    "--batch_size=10", "--g_lr=0.0002", "--d_lr=0.0002", "--lambda3=0", "--precision=float32",
    "--gf_dim=16", "--df_dim=16", "--n_m=32", "--r_num=1", "--grid=4",
    "--checkpoint_every=100", "--eval_every=0", "--metrics=attributes",
)
# The only flags in which rows may differ (tests/test_ablation.py checks it).
COMPONENT_FLAGS = ("initial", "mtwig_kernel", "refinement", "heads", "stages")

# Fixed captions of every row's grid: each pair states the same two shapes with the colours
# exchanged (a generator that binds draws them differently), over the four relations.
CAPTIONS = (
    "a red circle to the left of a blue square",
    "a blue circle to the left of a red square",
    "a green triangle above a yellow star",
    "a yellow triangle above a green star",
    "the blue star is below a red triangle",
    "the red star is below a blue triangle",
    "a large yellow square to the right of a small green circle",
    "a large green square to the right of a small yellow circle",
)
SAMPLES_PER_CAPTION = 2
SAMPLE_SEED = 0

PHASES = ("train", "evaluate", "sample", "params")
DAMSM_FILES = ("text_encoder.npz", "image_encoder.npz", "vocab.json", "damsm.json")
METRIC_KEYS = ("fid", "kid_mean", "kid_std", "r_precision_mean", "r_precision_std",
               "attribute_accuracy", "binding_accuracy", "objects_present", "relation_accuracy",
               "scene_accuracy", "object_count_accuracy")
PARAM_ROWS = ("generator", "discriminators", "text_encoder", "total")


class AblationError(errors.UserError, RuntimeError):
    """A bad flag, a failed command (named with its row, seed and log) or an unreadable result."""


# --------------------------------------------------------------------------- the rows


@dataclasses.dataclass(frozen=True)
class Paper:
    """A figure of the paper (arXiv 2110.08143) for one row: FID and R-precision (%, mean and
    standard deviation as printed) on one dataset."""

    dataset: str
    fid: float
    r_mean: float
    r_std: float


@dataclasses.dataclass(frozen=True)
class Row:
    """One ablation row: its name, the paper's table and row it mirrors, its component flags
    (only `COMPONENT_FLAGS`) and the paper's figures for that row."""

    name: str
    table: str
    mirrors: str
    flags: tuple
    paper: tuple = ()


TABLE1 = "Table 1"
TABLE4 = "Table 4"
GROUPS = (
    (TABLE1, "Table 1 rows: two stages, 32 -> 64 px (FID, KID and scores of the 64 px images)"),
    (TABLE4, "Table 4 rows: single stage, 32 px (FID, KID and scores of the 32 px images; "
             "compare only among these rows)"),
)
ROWS = (
    Row("t1_ig_memory", TABLE1, "DM-GAN (IG + DM-GAN's memory refinement; the paper's figure is "
        "the released DM-GAN)", ("--initial=ig", "--refinement=memory", "--stages=2"),
        (Paper("CUB", 11.91, 76.58, 0.53),)),
    Row("t1_mtwig_memory", TABLE1, "MTWIG w/ DM-GAN's refinement",
        ("--initial=mtwig", "--mtwig_kernel=3", "--refinement=memory", "--stages=2"),
        (Paper("CUB", 10.99, 79.37, 0.73),)),
    Row("t1_mtwig_sdm1", TABLE1, "MTWIG w/ SDM refinement (one head)",
        ("--initial=mtwig", "--mtwig_kernel=3", "--refinement=sdm", "--heads=1", "--stages=2"),
        (Paper("CUB", 10.48, 80.20, 0.67),)),
    Row("t1_mtwig_sdm_imhm", TABLE1, "MTWIG w/ SDM and IMHM refinement (MSMT-GAN; 2 heads "
        "here, 6 in the paper)",
        ("--initial=mtwig", "--mtwig_kernel=3", "--refinement=sdm", "--heads=2", "--stages=2"),
        (Paper("CUB", 10.23, 81.23, 0.68),)),
    Row("t1_control_ig_sdm_imhm", TABLE1, "control, not in the paper: IG w/ SDM and IMHM "
        "(the quickstart model)",
        ("--initial=ig", "--refinement=sdm", "--heads=2", "--stages=2")),
    Row("t4_ig", TABLE4, "IG", ("--initial=ig", "--stages=1"),
        (Paper("CUB", 119.39, 83.54, 0.57), Paper("COCO", 51.22, 94.57, 0.53))),
    Row("t4_mtwig_ks1", TABLE4, "MTWIG (ks=1)", ("--initial=mtwig", "--mtwig_kernel=1", "--stages=1"),
        (Paper("CUB", 118.49, 82.78, 0.58), Paper("COCO", 41.79, 94.47, 0.49))),
    Row("t4_mtwig_ks2", TABLE4, "MTWIG (ks=2)", ("--initial=mtwig", "--mtwig_kernel=2", "--stages=1"),
        (Paper("CUB", 120.76, 82.82, 0.92), Paper("COCO", 40.23, 94.65, 0.39))),
    Row("t4_mtwig_ks3", TABLE4, "MTWIG (ks=3)", ("--initial=mtwig", "--mtwig_kernel=3", "--stages=1"),
        (Paper("CUB", 115.38, 82.94, 0.74), Paper("COCO", 39.85, 94.80, 0.29))),
)
ROW_BY_NAME = {r.name: r for r in ROWS}


def flag_name(flag):
    """``"--heads=2"`` -> ``"heads"``."""
    return flag.lstrip("-").split("=", 1)[0]


def select_rows(names):
    """The rows named (all for an empty list); an unknown name is an `AblationError`."""
    if not names:
        return ROWS
    unknown = [n for n in names if n not in ROW_BY_NAME]
    if unknown:
        raise AblationError(f"--rows: unknown row(s) {', '.join(unknown)}; the rows are "
                            f"{', '.join(ROW_BY_NAME)}.")
    return tuple(ROW_BY_NAME[n] for n in names)


def parse_seeds(values):
    """``["0", "1"]`` -> ``(0, 1)``: distinct non-negative integers."""
    try:
        seeds = tuple(int(v) for v in values)
    except ValueError:
        raise AblationError(f"--seeds={','.join(values)}: give non-negative integers, e.g. "
                            "--seeds=0,1.") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise AblationError(f"--seeds={','.join(values)}: give distinct non-negative integers, "
                            "e.g. --seeds=0,1.")
    return seeds


# --------------------------------------------------------------------------- settings, commands


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every row shares (and where the files go). `train_flags` / `eval_flags` are added to
    every row's training / evaluation commands (e.g. a smaller model for a smoke run); they may
    not set a component flag."""

    steps: int = STEPS
    work_dir: str = DEFAULT_WORK
    out_dir: str = DEFAULT_OUT
    doc: str = DEFAULT_DOC
    eval_images: int = EVAL_IMAGES
    eval_seed: int = EVAL_SEED
    eval_metrics: str = EVAL_METRICS
    train_flags: tuple = ()
    eval_flags: tuple = ()
    captions: tuple = CAPTIONS
    samples_per_caption: int = SAMPLES_PER_CAPTION
    sample_seed: int = SAMPLE_SEED

    def __post_init__(self):
        if self.steps < 1 or self.eval_images < 2:
            raise AblationError(f"--steps={self.steps} --eval_images={self.eval_images}: give "
                                "at least 1 step and 2 images.")
        bad = [f for f in self.train_flags + self.eval_flags
               if not f.startswith("--") or flag_name(f) in COMPONENT_FLAGS + ("seed", "run_dir")]
        if bad:
            raise AblationError(
                f"--train_flag/--eval_flag {' '.join(bad)}: give --name=value flags that are not "
                f"a row's ({', '.join(COMPONENT_FLAGS)}) nor --seed/--run_dir.")

    def record(self):
        """The settings every run of the table must share (stored in each JSON, compared by
        the report)."""
        return {"flagfile": FLAGFILE, "shared_flags": list(SHARED_FLAGS), "steps": self.steps,
                "eval_images": self.eval_images, "eval_seed": self.eval_seed,
                "eval_metrics": self.eval_metrics, "train_flags": list(self.train_flags),
                "eval_flags": list(self.eval_flags), "captions": list(self.captions),
                "samples_per_caption": self.samples_per_caption,
                "sample_seed": self.sample_seed}


def job_name(row, seed):
    return f"{row.name}_s{seed}"


def job_dir(settings, row, seed):
    return os.path.join(settings.work_dir, job_name(row, seed))


def damsm_dir(settings):
    return os.path.join(settings.work_dir, "damsm")


def shared_flags(settings, seed):
    """The flags of every row's training (and of the DAMSM pretraining) for ``seed``."""
    return [f"--flagfile={FLAGFILE}", *SHARED_FLAGS, f"--max_steps={settings.steps}",
            f"--damsm_dir={damsm_dir(settings)}", f"--seed={seed}", *settings.train_flags]


def train_flags(settings, row, seed):
    """The flags of ``python -m msmt_tf.train`` for (row, seed): the shared flags, the run
    directory, then the row's component flags."""
    run = os.path.join(job_dir(settings, row, seed), "run")
    return [*shared_flags(settings, seed), f"--run_dir={run}", *row.flags]


def python(*args):
    return [sys.executable, *args]


def relative(text):
    """``text`` with the repository's absolute path dropped (paths under it become relative)."""
    return text.replace(ROOT + os.sep, "")


def shown(argv):
    """``argv`` as a shell command line to read (and to commit): ``python`` for the interpreter,
    paths under the repository relative to it."""
    return " ".join(["python"] + [shlex.quote(relative(a)) for a in argv[1:]])


def commands(settings, row, seed, vocab_size=None):
    """``{phase: argv}`` of one job (``params`` needs the vocabulary size)."""
    job = job_dir(settings, row, seed)
    run = os.path.join(job, "run")
    texts = [f"--text={c}" for c in settings.captions]
    out = {
        "train": python("-m", "msmt_tf.train", *train_flags(settings, row, seed)),
        "evaluate": python("-m", "msmt_tf.evaluate", f"--run_dir={run}",
                           f"--num_images={settings.eval_images}",
                           f"--eval_seed={settings.eval_seed}",
                           f"--metrics={settings.eval_metrics}",
                           f"--out={os.path.join(job, 'metrics.json')}", *settings.eval_flags),
        "sample": python("-m", "msmt_tf.sample", f"--run_dir={run}", *texts,
                         f"--num_per_caption={settings.samples_per_caption}",
                         f"--seed={settings.sample_seed}", "--unknown=error",
                         f"--out={os.path.join(job, 'samples')}"),
    }
    if vocab_size is not None:
        out["params"] = python("-m", "msmt_tf.summary", *train_flags(settings, row, seed),
                               f"--vocab_size={vocab_size}", "--noimage_encoder")
    return out


# --------------------------------------------------------------------------- running commands


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class _Signals:
    """SIGTERM while a command runs: passed on to it (training saves a checkpoint), then the
    sitting stops after recording its time."""

    child = None
    received = []

    @classmethod
    def handler(cls, signum, frame):
        del frame
        cls.received.append(signum)
        if cls.child is not None and cls.child.poll() is None:
            cls.child.send_signal(signum)


def run_command(argv, log_path, heartbeat=lambda: None):
    """Runs ``argv`` in the repository root with its output appended to ``log_path``; calls
    ``heartbeat()`` every `HEARTBEAT_SECONDS`. Returns ``(exit status, this run's output)``."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n===== {_utc()} $ {' '.join(argv[1:])}\n")
        log.flush()
        start = log.tell()
        proc = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        _Signals.child = proc
        try:
            while True:
                try:
                    status = proc.wait(timeout=HEARTBEAT_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    heartbeat()
        except KeyboardInterrupt:  # the child got the same SIGINT: let it save and exit
            proc.wait()
            raise
        finally:
            _Signals.child = None
    with open(log_path, encoding="utf-8", errors="replace") as f:
        f.seek(start)
        return status, f.read()


# --------------------------------------------------------------------------- files


def _loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def _utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json(path, value):
    """Writes ``value`` to ``path`` atomically (a temporary file, then `os.replace`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise AblationError(f"{path}: unreadable {what} ({e}); delete it to redo that part.") from None


def training_log(run_dir):
    """``[(step, time)]`` of the training lines (those with ``g_loss``) of the run's
    metrics.jsonl, in file order; unparsable lines (a write cut by a kill) are left out."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "g_loss" in record and "time" in record:
                out.append((int(record["step"]), float(record["time"])))
    return out


def seconds_per_step(log, windows):
    """Steady seconds per training step: the time between consecutive training lines of
    ``log`` over the steps between them, summed over the pairs that lie inside one of the
    training ``windows`` ``[(start, end)]`` (so restarts between sittings are left out).
    None when no pair qualifies."""
    seconds = steps = 0.0
    for (s0, t0), (s1, t1) in zip(log, log[1:]):
        if s1 > s0 and any(a <= t0 and t1 <= b for a, b in windows):
            seconds += t1 - t0
            steps += s1 - s0
    return seconds / steps if steps else None


def parse_params(text):
    """``{generator, discriminators, text_encoder, total}`` trainable counts of the table that
    ``python -m msmt_tf.summary`` prints."""
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in PARAM_ROWS:
            counts[parts[0]] = int(parts[1].replace(",", ""))
    return counts


def machine():
    """CPU count and model name (the JSON's record of where a run's times come from)."""
    name = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": name}


def vocab_size(settings):
    words = read_json(os.path.join(damsm_dir(settings), "vocab.json"), "DAMSM vocabulary")["words"]
    return len(words)


# --------------------------------------------------------------------------- a job


class Job:
    """One (row, seed) over sittings: its phases, its progress file, its result."""

    def __init__(self, settings, row, seed, runner=run_command, clock=time.time):
        self.settings, self.row, self.seed = settings, row, seed
        self.runner, self.clock = runner, clock
        self.dir = job_dir(settings, row, seed)
        self.run_dir = os.path.join(self.dir, "run")
        self.name = job_name(row, seed)
        self.json_path = os.path.join(settings.out_dir, f"{self.name}.json")
        self.grid_path = os.path.join(settings.out_dir, f"{self.name}.png")
        self.progress_path = os.path.join(self.dir, "progress.json")

    def done(self):
        return os.path.exists(self.json_path)

    def _load_progress(self):
        if os.path.exists(self.progress_path):
            return read_json(self.progress_path, "progress file")
        return {"done": {}, "sittings": [], "train_windows": []}

    def _save(self):
        self.sitting["seconds"] = round(self.clock() - self.sitting_start, 3)
        if self.window is not None:
            self.window[1] = self.clock()
        write_json(self.progress_path, self.progress)

    def _log(self, phase):
        return os.path.join(self.dir, "logs", f"{phase}.log")

    def _run(self, phase, argv):
        stopped = AblationError(f"row {self.row.name} seed {self.seed}: stopped by a signal "
                                f"at {phase}; run the same command again to resume.")
        if _Signals.received:
            raise stopped
        status, output = self.runner(argv, self._log(phase), heartbeat=self._save)
        if _Signals.received:
            raise stopped
        if status != 0:
            raise AblationError(
                f"row {self.row.name} seed {self.seed}: {phase} failed (exit status {status}); "
                f"see {self._log(phase)}")
        return output

    def run(self):
        """Runs the phases not done yet, then writes the grid and the JSON."""
        os.makedirs(self.dir, exist_ok=True)
        self.progress = self._load_progress()
        self.sitting_start = self.clock()
        self.sitting = {"started": _utc(), "seconds": 0.0, "loadavg": _loadavg()}
        self.progress["sittings"].append(self.sitting)
        self.window = None
        try:
            self._phases()
        finally:
            self.window = None
            self._save()
        self._finish()

    def _phases(self):
        done = self.progress["done"]
        argv = commands(self.settings, self.row, self.seed)
        if not done.get("train"):
            self.window = [self.clock(), self.clock()]
            self.progress["train_windows"].append(self.window)
            try:
                self._run("train", argv["train"])
            finally:
                self.window[1] = self.clock()
                self.window = None
            steps = max((s for s, _ in training_log(self.run_dir)), default=0)
            if steps < self.settings.steps:
                raise AblationError(
                    f"row {self.row.name} seed {self.seed}: training stopped at step {steps} of "
                    f"{self.settings.steps}; run the same command again to resume (log: "
                    f"{self._log('train')}).")
            done["train"] = True
            self._save()
        for phase in ("evaluate", "sample"):
            if not done.get(phase):
                self._run(phase, argv[phase])
                done[phase] = True
                self._save()
        if not done.get("params"):
            argv = commands(self.settings, self.row, self.seed, vocab_size(self.settings))
            counts = parse_params(self._run("params", argv["params"]))
            if set(counts) != set(PARAM_ROWS):
                raise AblationError(
                    f"row {self.row.name} seed {self.seed}: no parameter table in the output of "
                    f"msmt_tf.summary; see {self._log('params')}")
            self.progress["params"] = counts
            done["params"] = True
            self._save()

    def _finish(self):
        metrics = read_json(os.path.join(self.dir, "metrics.json"), "evaluation")
        config = read_json(os.path.join(self.run_dir, "config.json"), "run config")
        windows = self.progress["train_windows"]
        s_per_step = seconds_per_step(training_log(self.run_dir), windows)
        sheet = os.path.join(self.dir, "samples", "contact_sheet.png")
        if not os.path.exists(sheet):
            raise AblationError(f"row {self.row.name} seed {self.seed}: {sheet} is missing; "
                                f"delete {self.progress_path} to redo the job's phases.")
        os.makedirs(self.settings.out_dir, exist_ok=True)
        shutil.copyfile(sheet, self.grid_path)
        protocol = metrics.get("protocol", {})
        result = {
            "row": self.row.name, "seed": self.seed, "table": self.row.table,
            "mirrors": self.row.mirrors, "component_flags": list(self.row.flags),
            "settings": self.settings.record(),
            "precision": config.get("train", {}).get("precision"),
            "damsm_sha256": (protocol.get("damsm") or {}).get("sha256"),
            "eval_image_size": protocol.get("image_size"),
            # how the evaluation drew its noise and quantised (differs between code versions)
            "eval_protocol": {k: protocol.get(k) for k in ("noise", "quantization")},
            "metrics": {k: metrics.get(k) for k in METRIC_KEYS},
            "attribute_accuracy_per_attribute": metrics.get("attribute_accuracy_per_attribute"),
            "skipped": metrics.get("skipped", {}),
            "params": self.progress["params"],
            "steps": self.settings.steps,
            "seconds_per_step": s_per_step,
            "steps_per_second": 1.0 / s_per_step if s_per_step else None,
            "train_seconds": round(sum(b - a for a, b in windows), 3),
            "wall_seconds": round(sum(s["seconds"] for s in self.progress["sittings"]), 3),
            "sittings": self.progress["sittings"],
            "machine": machine(),
            "grid": os.path.basename(self.grid_path),
            "commands": {k: shown(v) for k, v in commands(self.settings, self.row,
                                                           self.seed).items()},
            "finished": _utc(),
        }
        write_json(self.json_path, result)


# The DAMSM pretraining is not bitwise reproducible (it differs run to run and machine to
# machine), and the work directory does not outlive a machine: the encoders every row uses are
# kept in the repository, in `<out_dir>/damsm/`, without the frozen Inception trunk (about
# 90 MB, rebuilt from the offline 2015 Inception weights, `msmt_tf.models.inception_weights`):
# the text encoder, the image encoder's two trained projections, the vocabulary and the meta.
STORED_DAMSM = "damsm"
PROJECTIONS_FILE = "image_projections.npz"
_TRUNK_PREFIX = "image_encoder/trunk/"


class DamsmStore:
    """Packs a pretrained DAMSM directory into the repository's compact copy and rebuilds a
    full directory from it (what `ensure_damsm` calls; the tests replace it)."""

    @staticmethod
    def fingerprint(directory):
        from msmt_tf.models import damsm

        return damsm.fingerprint(directory)["sha256"]

    @staticmethod
    def pack(directory, stored):
        """Writes the compact copy of ``directory`` to ``stored``; returns its fingerprint after
        checking that unpacking gives the same encoders (the trunk is the offline one)."""
        import numpy as np
        from msmt_tf.models import damsm

        os.makedirs(stored, exist_ok=True)
        image = damsm.read_npz(os.path.join(directory, damsm.IMAGE_FILE))
        np.savez_compressed(os.path.join(stored, PROJECTIONS_FILE), **{
            k: v for k, v in image.items() if not k.startswith(_TRUNK_PREFIX)})
        for name in (damsm.TEXT_FILE, damsm.VOCAB_FILE, damsm.META_FILE):
            shutil.copyfile(os.path.join(directory, name), os.path.join(stored, name))
        sha = DamsmStore.fingerprint(directory)
        check = f"{stored}.check"
        shutil.rmtree(check, ignore_errors=True)
        try:
            if DamsmStore.unpack(stored, check) != sha:
                raise AblationError(f"{directory}: its Inception trunk is not the offline 2015 "
                                    "one, so the compact copy would not rebuild it; pretrain "
                                    "the DAMSM again (delete the directory).")
        finally:
            shutil.rmtree(check, ignore_errors=True)
        return sha

    @staticmethod
    def unpack(stored, directory):
        """Rebuilds the full encoder directory ``directory`` from the compact copy ``stored``;
        returns its fingerprint."""
        import types
        from msmt_tf.models import damsm

        meta = read_json(os.path.join(stored, damsm.META_FILE), "stored DAMSM meta")
        sizes = types.SimpleNamespace(embedding_dim=meta["embedding_dim"],
                                      damsm_image_size=meta["damsm_image_size"])
        image = damsm.build_image_encoder(sizes, meta["damsm_image_variant"],
                                          meta["damsm_resize"])
        arrays = {v.path: v.numpy() for v in image.weights}
        arrays.update(damsm.read_npz(os.path.join(stored, PROJECTIONS_FILE)))
        tmp = f"{directory}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        damsm.load_layer(image, os.path.join(stored, PROJECTIONS_FILE), stored=arrays)
        damsm.save_layer(image, os.path.join(tmp, damsm.IMAGE_FILE))
        for name in (damsm.TEXT_FILE, damsm.VOCAB_FILE, damsm.META_FILE):
            shutil.copyfile(os.path.join(stored, name), os.path.join(tmp, name))
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
        return DamsmStore.fingerprint(directory)


def ensure_damsm(settings, runner=run_command, clock=time.time, store=DamsmStore):
    """The DAMSM encoders every row uses, in ``<work_dir>/damsm``: rebuilt from the repository's
    copy ``<out_dir>/damsm/`` if there is one, else pretrained once (resumable; shared flags,
    seed 0) and then copied there. ``<out_dir>/damsm.json`` records the pretraining's wall time
    over sittings and the encoders' fingerprint (``sha256``), which every row's evaluation
    must report."""
    record_path = os.path.join(settings.out_dir, "damsm.json")
    stored = os.path.join(settings.out_dir, STORED_DAMSM)
    work = damsm_dir(settings)
    have_work = all(os.path.exists(os.path.join(work, name)) for name in DAMSM_FILES)
    record = read_json(record_path, "DAMSM record") if os.path.exists(record_path) else None
    if record and os.path.isdir(stored):
        sha = store.fingerprint(work) if have_work else None
        if sha != record.get("sha256"):
            print(f"DAMSM encoders of every row: rebuilding {work} from {stored}", flush=True)
            sha = store.unpack(stored, work)
        if sha != record.get("sha256"):
            raise AblationError(
                f"{stored}: rebuilds encoders with sha256 {sha[:12]}, {record_path} records "
                f"{str(record.get('sha256'))[:12]}; restore both from git (git checkout -- "
                f"{relative(stored)} {relative(record_path)}).")
        return
    if record and have_work:  # pretrained here, not copied to the repository yet
        sha = store.pack(work, stored)
        if record.get("sha256", sha) != sha:
            shutil.rmtree(stored)
            raise AblationError(
                f"{work}: its encoders (sha256 {sha[:12]}) are not the ones {record_path} "
                f"records ({record['sha256'][:12]}); delete both to pretrain again.")
        record["sha256"] = sha
        write_json(record_path, record)
        return
    progress_path = os.path.join(settings.work_dir, "damsm_progress.json")
    progress = read_json(progress_path, "progress file") if os.path.exists(progress_path) else {
        "sittings": []}
    start = clock()
    sitting = {"started": _utc(), "seconds": 0.0, "loadavg": _loadavg()}
    progress["sittings"].append(sitting)

    def save():
        sitting["seconds"] = round(clock() - start, 3)
        write_json(progress_path, progress)

    log = os.path.join(settings.work_dir, "logs", "damsm.log")
    argv = python("-m", "msmt_tf.pretrain_damsm", *shared_flags(settings, 0))
    print(f"DAMSM pretraining for every row: {work} (log: {log})", flush=True)
    try:
        status, _ = runner(argv, log, heartbeat=save)
    finally:
        save()
    if status != 0 or _Signals.received:
        raise AblationError(f"DAMSM pretraining failed or was stopped (exit status {status}); "
                            f"see {log}; run the same command again to resume.")
    write_json(record_path, {"command": shown(argv), "directory": relative(work),
                             "wall_seconds": round(sum(s["seconds"] for s in progress["sittings"]), 3),
                             "sittings": progress["sittings"], "finished": _utc(),
                             "machine": machine(), "sha256": store.pack(work, stored)})


def run_all(settings, rows, seeds, runner=run_command, clock=time.time, stream=sys.stdout,
            store=DamsmStore):
    """Runs every (row, seed) job not finished yet, in order; rewrites the report after each."""
    ensure_damsm(settings, runner, clock, store)
    for row in rows:
        for seed in seeds:
            job = Job(settings, row, seed, runner, clock)
            if job.done():
                print(f"{job.name}: finished already ({job.json_path}), skipped", file=stream,
                      flush=True)
                continue
            print(f"{job.name}: running in {job.dir} (logs: {os.path.join(job.dir, 'logs')})",
                  file=stream, flush=True)
            job.run()
            print(f"{job.name}: wrote {job.json_path}", file=stream, flush=True)
            if os.path.exists(settings.doc):
                write_report(settings.doc, settings.out_dir)


# --------------------------------------------------------------------------- the report

TABLE_MARKERS = ("<!-- ablation-table:start -->", "<!-- ablation-table:end -->")
GRID_MARKERS = ("<!-- ablation-grids:start -->", "<!-- ablation-grids:end -->")
_RESULT_NAME = re.compile(r"(?P<row>.+)_s(?P<seed>\d+)\.json")
# (header, metric key, format): the columns of our figures.
COLUMNS = (
    ("FID", "fid", "{:.1f}"),
    ("KID", "kid_mean", "{:.4f}"),
    ("R-prec. (%)", "r_precision_mean", "{:.1f}"),
    ("attribute acc.", "attribute_accuracy", "{:.3f}"),
    ("binding acc.", "binding_accuracy", "{:.3f}"),
    ("relation acc.", "relation_accuracy", "{:.3f}"),
)


def load_results(out_dir):
    """``({row name: [result, ...] by seed}, [ignored file names])`` of ``out_dir``'s JSONs."""
    results, ignored = collections.defaultdict(list), []
    for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
        name = os.path.basename(path)
        found = _RESULT_NAME.fullmatch(name)
        if name == "damsm.json":
            continue
        if not found or found["row"] not in ROW_BY_NAME:
            ignored.append(name)
            continue
        results[found["row"]].append(read_json(path, "ablation result"))
    for runs in results.values():
        runs.sort(key=lambda r: r["seed"])
    return dict(results), ignored


def spread(values, fmt):
    """``"mean [min, max]"`` of the values that are numbers (one value, or all equal as printed:
    the value alone; none: "-")."""
    values = _numbers(values)
    if not values:
        return "-"
    mean, low, high = (fmt.format(v) for v in (sum(values) / len(values), min(values), max(values)))
    return mean if low == high else f"{mean} [{low}, {high}]"


def _numbers(values):
    return [v for v in values if isinstance(v, (int, float)) and v == v]


def _mean(values):
    values = _numbers(values)
    return sum(values) / len(values) if values else None


def _row_means(results, rows, key):
    """``{row name: mean over seeds of metrics[key]}`` of the ``rows`` that have a number."""
    means = {r.name: _mean([x["metrics"].get(key) for x in results.get(r.name, [])]) for r in rows}
    return {k: v for k, v in means.items() if v is not None}


def ranks(values, lower_is_better):
    """``{key: 1-based rank}`` of ``{key: value}`` (ties share the better rank)."""
    ordered = sorted(values.values(), reverse=not lower_is_better)
    return {k: ordered.index(v) + 1 for k, v in values.items()}


def _cpu(result):
    machine = result.get("machine") or {}
    return f"{machine.get('cpus', '?')}-core {machine.get('cpu', 'unknown CPU')}"


def _settings_key(result):
    return json.dumps({"settings": result.get("settings"), "precision": result.get("precision"),
                       "damsm_sha256": result.get("damsm_sha256"),
                       "eval_protocol": result.get("eval_protocol")}, sort_keys=True)


def group_table(table, results):
    """The markdown table of the rows of ``table`` (``"Table 1"`` / ``"Table 4"``)."""
    rows = [r for r in ROWS if r.table == table]
    datasets = sorted({p.dataset for r in rows for p in r.paper}, key=["CUB", "COCO"].index)
    header = ["row", "mirrors (paper row)", "seeds", *(c[0] for c in COLUMNS), "G params",
              "s/step", "wall (min)"]
    for d in datasets:
        header += [f"paper FID ({d})", f"paper R-prec. % ({d})"]
    header += ["FID rank: ours / paper " + " / ".join(datasets),
               "R-prec. rank: ours / paper " + " / ".join(datasets)]
    # Ranks among the rows that have both our number and the paper's figures.
    with_paper = [r for r in rows if r.paper]
    rank_cells = []
    for key, paper_value, lower in (("fid", "fid", True), ("r_precision_mean", "r_mean", False)):
        ours = _row_means(results, with_paper, key)
        paper = {d: ranks({r.name: getattr(p, paper_value) for r in with_paper for p in r.paper
                           if p.dataset == d and r.name in ours}, lower) for d in datasets}
        rank_cells.append({name: " / ".join([str(rank)] + [str(paper[d].get(name, "-"))
                                                          for d in datasets])
                           for name, rank in ranks(ours, lower).items()})
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        runs = results.get(row.name, [])
        seeds = ", ".join(str(x["seed"]) for x in runs) or "none yet"
        if runs and len(runs) < MIN_SEEDS:
            seeds += f" (fewer than {MIN_SEEDS} seeds)"
        cells = [f"`{row.name}`", row.mirrors, seeds]
        cells += [spread([x["metrics"].get(key) for x in runs], fmt) for _, key, fmt in COLUMNS]
        cells.append(spread([x["params"]["generator"] for x in runs], "{:,.0f}"))
        cells.append(spread([x["seconds_per_step"] for x in runs], "{:.3f}"))
        cells.append(spread([x["wall_seconds"] / 60 for x in runs], "{:.1f}"))
        figs = {p.dataset: p for p in row.paper}
        for d in datasets:
            p = figs.get(d)
            cells += [f"{p.fid:.2f}", f"{p.r_mean:.2f} ± {p.r_std:.2f}"] if p else ["-", "-"]
        cells += [ranked.get(row.name, "-") for ranked in rank_cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report_text(results, ignored=(), damsm=None):
    """The markdown between the table markers."""
    runs = [x for rs in results.values() for x in rs]
    lines = [f"Finished runs: {len(runs)} ({len(results)} of {len(ROWS)} rows). Cells: mean "
             "[min, max] over the seeds listed; the ranks order the rows of one table that have "
             "the paper's figures, by our mean and by the paper's number (1 = best: lowest FID, "
             "highest R-precision).", ""]
    for table, title in GROUPS:
        lines += [f"**{title}**", "", *group_table(table, results), ""]
    total = sum(x["wall_seconds"] for x in runs)
    text = f"Wall time of the finished runs: {total / 3600:.2f} h (summed over runs and sittings)"
    if damsm:
        text += f", plus {damsm['wall_seconds'] / 60:.1f} min of DAMSM pretraining shared by all rows"
    lines.append(text + ".")
    cpus = collections.Counter(_cpu(x) for x in runs)
    if cpus:
        lines += ["", "Machines: " + "; ".join(f"{cpu}: {n} run(s)" for cpu, n in sorted(
            cpus.items())) + "." + (" The s/step and wall columns compare only runs of one CPU; "
                                    "the scores do not depend on it beyond run-to-run noise."
                                    if len(cpus) > 1 else "")]
    sha = (damsm or {}).get("sha256")
    other = sorted(f"{x['row']}_s{x['seed']}" for x in runs if sha and x.get("damsm_sha256") != sha)
    if other:
        lines += ["", f"**Other DAMSM encoders**: {', '.join(other)} ran with DAMSM encoders other "
                  f"than the recorded ones (sha256 {sha[:12]}); rerun them."]
    keys = collections.Counter(_settings_key(x) for x in runs)
    if len(keys) > 1:
        common = keys.most_common(1)[0][0]
        odd = sorted(f"{x['row']}_s{x['seed']}" for x in runs if _settings_key(x) != common)
        lines += ["", f"**Settings differ**: {', '.join(odd)} ran with other shared settings "
                  "(flags, step budget, evaluation and its noise rule, precision or DAMSM encoders) "
                  "than the other runs; their numbers are not comparable: rerun them."]
    if ignored:
        lines += ["", f"Ignored {len(ignored)} file(s) of no known row: {', '.join(ignored)}."]
    return "\n".join(lines)


def grids_text(results, link_dir):
    """The markdown between the grid markers: one line per row, one image per seed (linked as
    ``<link_dir>/<grid file>``, ``link_dir`` relative to the document)."""
    seeds = sorted({x["seed"] for rs in results.values() for x in rs})
    if not seeds:
        return "No grids yet."
    lines = ["| row | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|" + "---|" * (len(seeds) + 1)]
    for row in ROWS:
        by_seed = {x["seed"]: x for x in results.get(row.name, [])}
        if by_seed:
            cells = [f"![{row.name} seed {s}]({link_dir}/{by_seed[s]['grid']})" if s in by_seed
                     else "-" for s in seeds]
            lines.append(f"| `{row.name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_between(text, markers, body, path):
    start, end = markers
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise AblationError(f"{path}: the markers {start} ... {end} are missing; put them back "
                            "where the generated section goes.")
    return text[: i + len(start)] + "\n" + body + "\n" + text[j:]


def write_report(doc, out_dir):
    """Rewrites the table and grid sections of ``doc`` from ``out_dir``'s JSON files."""
    results, ignored = load_results(out_dir)
    damsm_path = os.path.join(out_dir, "damsm.json")
    damsm = read_json(damsm_path, "DAMSM record") if os.path.exists(damsm_path) else None
    try:
        with open(doc, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise AblationError(f"--doc={doc}: {e.strerror}; give the markdown file to update.") from None
    text = replace_between(text, TABLE_MARKERS, report_text(results, ignored, damsm), doc)
    link_dir = os.path.relpath(out_dir, os.path.dirname(os.path.abspath(doc)))
    text = replace_between(text, GRID_MARKERS, grids_text(results, link_dir.replace(os.sep, "/")),
                           doc)
    tmp = f"{doc}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, doc)
    return results


# --------------------------------------------------------------------------- command line


def define_flags():
    flags.DEFINE_list("rows", [], "Rows to run (default all): " + ", ".join(ROW_BY_NAME))
    flags.DEFINE_list("seeds", ["0", "1"], "Training seeds of every row (at least 2 for a spread).")
    flags.DEFINE_integer("steps", STEPS, "Training steps of every row (one budget for all).",
                         lower_bound=1)
    flags.DEFINE_integer("eval_images", EVAL_IMAGES,
                         "Test captions of the evaluation (--num_images of msmt_tf.evaluate).",
                         lower_bound=2)
    flags.DEFINE_string("work_dir", DEFAULT_WORK, "Where the runs, logs and progress files go.")
    flags.DEFINE_string("out_dir", DEFAULT_OUT, "Where each finished run's JSON and grid go.")
    flags.DEFINE_string("doc", DEFAULT_DOC, "The markdown file whose marked sections --report "
                        "rewrites.")
    flags.DEFINE_bool("report", False, "Only rewrite --doc from the JSON files in --out_dir.")
    flags.DEFINE_multi_string("train_flag", [], "A flag added to every row's training (repeat; "
                              "e.g. --train_flag=--gf_dim=4 for a smoke run); recorded in the JSON.")
    flags.DEFINE_multi_string("eval_flag", [], "A flag added to every evaluation (repeat).")


def main(argv):
    from msmt_tf.cli import entry

    entry.no_arguments(argv, "--rows, --seeds, --report")
    settings = Settings(steps=FLAGS.steps, work_dir=os.path.abspath(FLAGS.work_dir),
                        out_dir=os.path.abspath(FLAGS.out_dir), doc=os.path.abspath(FLAGS.doc),
                        eval_images=FLAGS.eval_images, train_flags=tuple(FLAGS.train_flag),
                        eval_flags=tuple(FLAGS.eval_flag))
    if FLAGS.report:
        results = write_report(settings.doc, settings.out_dir)
        print(f"Wrote {settings.doc} ({sum(map(len, results.values()))} runs)")
        return
    rows, seeds = select_rows(FLAGS.rows), parse_seeds(FLAGS.seeds)
    signal.signal(signal.SIGTERM, _Signals.handler)
    try:
        run_all(settings, rows, seeds)
    except KeyboardInterrupt:  # the running command got the same SIGINT and saved
        raise AblationError("stopped by Ctrl-C; run the same command again to resume.") from None
    write_report(settings.doc, settings.out_dir)
    print(f"Wrote {settings.doc}")


if __name__ == "__main__":
    from msmt_tf.cli import entry

    define_flags()
    entry.run(main)
