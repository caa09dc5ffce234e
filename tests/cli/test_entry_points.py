"""Every entry point, run as a user runs it (a subprocess): one ``Error:`` line for a user's
mistake, ``--help`` grouped by config, presets from any directory, no TensorFlow C++ banner.

The failures are chosen to happen before TensorFlow is imported (about 0.3 s each), except
the log test, which needs TensorFlow's import.
"""

import os
import subprocess
import sys

import pytest

from msmt_tf import errors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")


def _start(args, cwd, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    environ["PYTHONPATH"] = ROOT
    environ.update(env)
    return subprocess.Popen([sys.executable, *args], cwd=str(cwd), env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _run(args, cwd, **env):
    return _finish(_start(args, cwd, **env))


def _module(name):
    return ["-m", name]


def _tool(name):
    return [os.path.join(TOOLS, name)]


# (command, arguments, the message's start); {tmp} is the test's temporary directory.
USER_ERRORS = [
    (_module("msmt_tf.train"), ["--eval_num_images=8"], "--eval_num_images=8 must be >= 10"),
    (_module("msmt_tf.pretrain_damsm"), ["--refinement=bogus"],
     "flag --refinement=bogus: value should be one of <attn|memory|sdm>"),
    (_module("msmt_tf.evaluate"), [], "give --run_dir (a training run) or --checkpoint"),
    (_module("msmt_tf.sample"), ["--num_per_caption=0"], "--num_per_caption=0 must be >= 1"),
    (_module("msmt_tf.export"), ["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (_module("msmt_tf.summary"), ["--flagfile={tmp}/missing.flags"],
     "--flagfile={tmp}/missing.flags: cannot read it"),
    (_module("msmt_tf.summary"), ["--vocab_size=-3"],
     "flag --vocab_size=-3: -3 is not"),  # a bound, not TextEncoder's ValueError traceback
    (_module("msmt_tf.train"), ["flags/msmt_cub.flags"],
     "unexpected arguments ['flags/msmt_cub.flags']; use flags"),  # never a default run
    (_module("msmt_tf.prepare_data"), ["--dataset=cub", "--data_dir={tmp}/nowhere"],
     "{tmp}/nowhere: dataset directory not found (--data_dir)"),
    (_module("msmt_tf.prepare_data"), ["--tfrecord_shard_size=0"],
     "flag --tfrecord_shard_size=0: 0 is not"),  # an absl validator (lower_bound)
    (_module("msmt_tf.fid"), [], "Give two paths"),  # app.UsageError
    (_module("msmt_tf.fid"), ["{tmp}/nothing", "{tmp}"],
     "{tmp}/nothing: no such file or directory"),  # sys.exit("message")
    (_tool("convert_reference.py"), [], "missing --text_encoder, --captions_pickle, --out"),
    (_tool("fid.py"), ["--batch_size=0", "a", "b"], "--batch_size=0 must be >= 1"),
    (_tool("prepare_data.py"), ["--preset=nope"], "--preset=nope: no such preset; available"),
]


@pytest.mark.parametrize("command,args,message", USER_ERRORS,
                         ids=[f"{os.path.basename(c[-1])}{' ' + a[0] if a else ''}"
                              for c, a, _ in USER_ERRORS])
def test_user_error_is_one_line(command, args, message, tmp_path):
    proc = _run(command + [a.format(tmp=tmp_path) for a in args], tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: " + message.format(tmp=tmp_path)), lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.returncode == errors.EXIT_CODE


def test_unknown_preset_lists_the_presets(tmp_path):
    proc = _run(_module("msmt_tf.train") + ["--preset=dmgan_bird"], tmp_path)
    assert proc.returncode == errors.EXIT_CODE
    assert "available" in proc.stderr and "dmgan_cub" in proc.stderr
    assert "ablations/mtwig_ks3" in proc.stderr


def test_a_bug_keeps_its_traceback(tmp_path):
    script = tmp_path / "buggy.py"
    script.write_text(
        "from msmt_tf.cli import entry\n"
        "def main(argv):\n"
        "    raise KeyError('a bug')\n"
        "entry.run(main)\n")
    proc = _run([str(script)], tmp_path)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "KeyError: 'a bug'"
    assert not any(line.startswith("Error:") for line in proc.stderr.splitlines())


def test_presets_run_from_any_directory(tmp_path):
    """absl alone fails here (the nested ``--flagfile=cub.flags`` is relative to the file)."""
    flagfile = os.path.join(ROOT, "flags", "dmgan_cub.flags")
    for args in ([f"--flagfile={flagfile}"], ["--preset=dmgan_cub"],
                 ["--preset", "ablations/mtwig_ks3"]):
        proc = _run(_module("msmt_tf.train") + args + ["--only_check_args"], tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
        assert proc.stderr == ""


def test_help_lists_the_flags_by_config(tmp_path):
    proc = _run(_module("msmt_tf.train") + ["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    headings = [line for line in out.splitlines() if line.endswith(":") and not line[0].isspace()]
    assert headings == ["data flags:", "model flags:", "train flags:", "damsm flags:",
                        "eval flags:", "general:"]

    def section(heading):
        start = out.index("\n" + heading + "\n")
        end = out.find("\n\n", start + 2)
        return out[start:end]

    assert "--dataset: <shapes|cub|coco|folder>: Dataset kind" in section("data flags:")
    assert "(default: 'shapes')" in section("data flags:")
    assert "--initial: <ig|mtwig>:" in section("model flags:")
    assert "(default: 'ig')" in section("model flags:")
    assert "--eval_num_images:" in section("train flags:")
    assert "(default: '200')" in section("train flags:")
    assert "--preset:" in section("general:") and "dmgan_cub" in section("general:")
    assert out.startswith("GAN training: the main job.")  # the module's usage first
    short = _run(_module("msmt_tf.train") + ["--helpshort"], tmp_path)
    assert short.returncode == 0 and short.stdout == out
    full = _run(_module("msmt_tf.train") + ["--helpfull"], tmp_path)
    assert "absl.logging:" in full.stdout and "\ndata flags:" in full.stdout
    assert "--eval_num_images:" in full.stdout


def test_entry_point_flags_come_first(tmp_path):
    out = _run(_module("msmt_tf.summary") + ["--help"], tmp_path).stdout
    assert out.index("msmt_tf.summary flags:") < out.index("--vocab_size:") < out.index(
        "data flags:")
    out = _run(_tool("fid.py") + ["--help"], tmp_path).stdout
    assert "fid flags:" in out and "--kid_subsets:" in out and "data flags:" not in out


def test_tensorflow_is_quiet_unless_asked(tmp_path):
    """A user error after TensorFlow's import: only the error line, unless the user set
    TF_CPP_MIN_LOG_LEVEL (then TensorFlow's own C++ lines are back)."""
    args = _module("msmt_tf.sample") + [f"--run_dir={tmp_path}", "--text=a bird"]
    loud = _start(args, tmp_path, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="0")
    quiet = _run(args, tmp_path, TF_ENABLE_ONEDNN_OPTS="1")  # both import TensorFlow at once
    loud = _finish(loud)
    assert quiet.returncode == errors.EXIT_CODE
    lines = quiet.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: --run_dir={tmp_path} has no config"), (
        quiet.stderr)
    assert "oneDNN custom operations are on" in loud.stderr
    assert any(line.startswith("I0000 ") for line in loud.stderr.splitlines())
    assert loud.stderr.splitlines()[-1] == quiet.stderr.splitlines()[-1]
