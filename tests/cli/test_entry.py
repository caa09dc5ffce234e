"""The shared runner's pieces in process (``msmt_tf.cli.entry``); end to end in
``test_entry_points.py``."""

import os

import pytest
from absl import app, flags

from msmt_tf import configlib, errors
from msmt_tf.cli import entry, flagutil, tflog
from msmt_tf.data.config import DataConfig


def test_one_line():
    assert entry.one_line("a\n  b\n\nc ") == "Error: a b c"
    assert entry.one_line("Error: already prefixed") == "Error: already prefixed"


@pytest.mark.parametrize("exc,message", [
    (configlib.ConfigError("--x=1 must be >= 2."), "--x=1 must be >= 2."),
    (app.UsageError("give two paths"), "give two paths"),
    (flags.IllegalFlagValueError("flag --a=b: bad"), "flag --a=b: bad"),
    (FileNotFoundError(2, "No such file or directory", "/x/y"),
     "[Errno 2] No such file or directory: '/x/y'"),
    (SystemExit("a: no such file"), "a: no such file"),
    (SystemExit(3), None),  # an exit code is not a message
    (KeyError("a bug"), None),
    (OSError("no file named"), None),
])
def test_user_error_message(exc, message):
    assert entry.user_error_message(exc) == message


def test_call_main_prints_one_line_and_exits_with_the_code(capsys):
    def main(argv):
        raise configlib.ConfigError(f"{argv[1]}:\nfirst line\nsecond line")

    with pytest.raises(SystemExit) as e:
        entry.call_main(main, ["prog", "--flag=x"])
    assert e.value.code == errors.EXIT_CODE
    assert capsys.readouterr().err == "Error: --flag=x: first line second line\n"


def test_call_main_lets_a_bug_through(capsys):
    def main(argv):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError, match="a bug"):
        entry.call_main(main, ["prog"])
    assert capsys.readouterr().err == ""
    assert entry.call_main(lambda argv: 7, ["prog"]) == 7  # main's return value is kept


def test_help_text_groups_by_config():
    fv = flags.FlagValues()
    flagutil.define_flags(DataConfig, fv, group="data")
    flags.DEFINE_integer("own", 3, "An entry point flag.", flag_values=fv, module_name="my.entry")
    flags.DEFINE_integer("elsewhere", 1, "A library's flag.", flag_values=fv, module_name="lib")
    text = entry.help_text(fv, ("my.entry",), title="my.entry flags", doc="Usage: my entry.")
    assert text.startswith("Usage: my entry.\n\nmy.entry flags:\n  --own: An entry point flag.\n"
                           "    (default: '3')\n    (an integer)\n\ndata flags:\n  --dataset: ")
    assert "--elsewhere" not in text  # --helpfull only
    data = text[text.index("data flags:"):text.index("general:")]
    names = [line.split(":")[0].strip().replace("--[no]", "--") for line in data.splitlines()[1:]
             if line.startswith("  --")]
    assert names == ["--" + f for f in DataConfig.__dataclass_fields__]  # field order


def test_quiet_tensorflow_only_when_not_asked_for():
    environ = {}
    assert tflog.quiet_tensorflow(0, environ) is True and environ == {"TF_CPP_MIN_LOG_LEVEL": "3"}
    user = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    assert tflog.quiet_tensorflow(0, user) is False and user == {"TF_CPP_MIN_LOG_LEVEL": "0"}
    debug = {}
    assert tflog.quiet_tensorflow(1, debug) is False and debug == {}


def test_cpp_log_lines():
    drop = ["I0000 00:00:1796460658.730616   15796 port.cc:153] oneDNN custom operations are on.",
            "E1205 08:51:09.320332   15847 meta_optimizer.cc:967] remapper failed: INVALID",
            "W0000 00:00:1.5 12 cpu_feature_guard.cc:227] x",
            "WARNING: All log messages before absl::InitializeLog() is called are written to "
            "STDERR"]
    keep = ["I1205 08:51:09.320332 140344655985536 tpu_cluster_resolver.py:34] absl Python log",
            "F0000 00:00:1.2 1 a.cc:1] a fatal error", "Error: x", "I0000 not a log line"]
    assert [tflog.is_cpp_log_line(line) for line in drop + keep] == [True] * 4 + [False] * 4


def test_filtered_stderr_fd_drops_cpp_lines_written_to_fd_2(capfd):
    with tflog.filtered_stderr_fd():
        os.write(2, b"I0000 00:00:1.5   7 port.cc:1] banner\nkept line\n")
        os.write(2, b"E0000 00:00:2.5   7 meta_optimizer.cc:967] remapper failed\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "kept line\nafter\n"
