"""The one runner of every entry point: flags, presets, help, errors and logs.

``run(main)`` replaces ``absl.app.run(main)`` in ``msmt_tf.train``, ``pretrain_damsm``,
``evaluate``, ``sample``, ``export``, ``summary``, ``prepare_data``, ``fid`` and ``tools/*.py``:

* ``--flagfile`` and ``--preset=NAME`` are expanded first (``msmt_tf.cli.flagfiles``): nested
  flagfiles resolve relative to the file naming them, presets come from the shipped ``flags/``.
* A user's mistake -- any ``msmt_tf.errors.UserError``, an absl flag error (unknown flag, bad
  enum value, failed validator), an ``app.UsageError``, ``sys.exit("message")`` or an
  ``OSError`` naming a file -- prints one line, ``Error: <message>``, on stderr and exits with
  ``errors.EXIT_CODE``. Anything else is a bug and keeps its traceback.
* ``--help``/``--helpshort`` list the entry point's flags grouped by config (data, model,
  train, damsm, eval, ...) with help text and default; ``--helpfull`` lists every flag.
* absl's ``--verbosity`` sets the Python log level (absl's handler on the root logger; -1
  warnings only, 0 info (the default), 1 debug), and TensorFlow's C++ log lines are hidden
  unless ``--verbosity >= 1`` (``msmt_tf.cli.tflog``); ``onednn=True`` switches on oneDNN
  (``msmt_tf.training.onednn``). Both happen before ``main`` runs, so before TensorFlow is imported.
"""

import inspect
import os
import sys

from absl import app, flags

from msmt_tf import errors
from msmt_tf.cli import flagfiles, flagutil, tflog
from msmt_tf.training import onednn

FLAGS = flags.FLAGS
ERROR_PREFIX = "Error: "
GENERAL_GROUP = "general"
# Flags of absl or of this runner shown under "general" in --help (the rest: --helpfull).
GENERAL_FLAGS = ("preset", "flagfile", "verbosity", "help", "helpfull")
FLAGFILE_HELP = ("Insert the flags of this file here (one per line); a --flagfile line inside "
                 "it is relative to that file.")


# --------------------------------------------------------------------------- errors


def one_line(message):
    """``Error: <message>`` on one line (line breaks joined, a leading ``Error:`` kept once)."""
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    while text.startswith(ERROR_PREFIX):
        text = text[len(ERROR_PREFIX):]
    return ERROR_PREFIX + text


def user_error_message(exc):
    """The message of ``exc`` if it is a user's mistake (printed as one line), else None."""
    if isinstance(exc, (errors.UserError, app.UsageError, flags.Error)):
        return str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None:  # a path that cannot be used
        return str(exc)
    if isinstance(exc, SystemExit) and isinstance(exc.code, str):  # sys.exit("message")
        return exc.code
    return None


def no_arguments(argv, hint="--flagfile=FILE, --preset=NAME, --help"):
    """Refuses positional arguments (``train flags/x.flags`` without ``--flagfile=``); ``hint``
    names the flags to use instead."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; use flags ({hint}).")


def fail(message):
    """Prints ``one_line(message)`` on stderr and exits with ``errors.EXIT_CODE``."""
    sys.stdout.flush()
    sys.stderr.write(one_line(message) + "\n")
    sys.stderr.flush()
    sys.exit(errors.EXIT_CODE)


def call_main(main, argv):
    """``main(argv)``, a user's mistake turned into ``fail`` (a bug propagates)."""
    try:
        return main(argv)
    except (Exception, SystemExit) as e:  # noqa: B902 - SystemExit("message") is a user error
        message = user_error_message(e)
        if message is None:
            raise
        fail(message)


# --------------------------------------------------------------------------- flags


def define_flags(flag_values=FLAGS):
    """Defines the runner's own flag, ``--preset`` (idempotent)."""
    if "preset" not in flag_values:
        names = flagfiles.preset_names()
        flags.DEFINE_string(
            "preset", None,
            "Read the shipped preset flags/NAME.flags before every other flag (a flag given on "
            "the command line or in a --flagfile wins). NAME: " + (", ".join(names) or "none"),
            flag_values=flag_values, module_name=flagutil.group_module(GENERAL_GROUP))


def parse(argv, flag_values=FLAGS):
    """Parses ``argv`` (program name first) with ``--flagfile``/``--preset`` expanded; returns
    the positional arguments (program name first). Raises ``flags.Error`` or ``UserError``."""
    return flag_values([argv[0]] + flagfiles.expand_args(argv[1:]))


# --------------------------------------------------------------------------- help


def _format_flag(flag):
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    if flag.short_name:
        name = f"-{flag.short_name},{name}"
    text = flags.text_wrap(f"{name}: {flag.help or ''}", indent="    ", firstline_indent="  ")
    if flag.default_as_str:
        text += "\n" + flags.text_wrap(f"(default: {flag.default_as_str})", indent="    ")
    if flag.parser.syntactic_help:
        text += "\n" + flags.text_wrap(f"({flag.parser.syntactic_help})", indent="    ")
    return text


def _section(title, flag_list):
    if not flag_list:
        return []
    return [f"\n{title}:"] + [_format_flag(f) for f in flag_list]


def help_text(flag_values=FLAGS, entry_modules=(), title="flags", doc=None):
    """The ``--help`` text: ``doc``, then the flags of ``entry_modules`` (the entry point's own
    flags), one section per config group (``flagutil.group_module``), and the general flags."""
    by_module = flag_values.flags_by_module_dict()
    registered = flag_values._flags()  # noqa: SLF001 - the flags that are currently defined

    def alive(flag_list):
        seen, out = set(), []
        for f in flag_list:
            if registered.get(f.name) is f and f.name not in seen and f.name not in GENERAL_FLAGS:
                seen.add(f.name)
                out.append(f)
        return out

    lines = [doc.strip("\n")] if doc else []
    own = [f for m in entry_modules for f in by_module.get(m, [])]
    lines += _section(title, alive(own))
    general_module = flagutil.group_module(GENERAL_GROUP)
    for module, flag_list in by_module.items():
        if module.endswith(flagutil.GROUP_SUFFIX) and module != general_module:
            lines += _section(module, alive(flag_list))
    lines.append(f"\n{GENERAL_GROUP}:")
    for name in GENERAL_FLAGS:
        if name == "flagfile":
            lines.append(flags.text_wrap(f"--flagfile: {FLAGFILE_HELP}", indent="    ",
                                         firstline_indent="  "))
        elif name in registered:
            lines.append(_format_flag(registered[name]))
    lines.append("\nTry --helpfull to get a list of all flags.")
    return "\n".join(lines) + "\n"


class _HelpFlag(app.HelpFlag):
    """``--help``/``-?``: prints ``help_text`` of the running entry point and exits 0."""

    text = staticmethod(lambda: help_text())

    def parse(self, arg):
        if self._parse(arg):
            sys.stdout.write(_HelpFlag.text())
            sys.stdout.flush()
            sys.exit(0)


class _HelpshortFlag(_HelpFlag):
    NAME = "helpshort"
    SHORT_NAME = None


def _install_help(main):
    """Replaces absl's ``--help``/``--helpshort`` (the key flags of ``__main__``, which our
    flags are not) by ``help_text`` of ``main``'s module."""
    module_name = main.__module__
    if module_name == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        title = spec.name if spec else os.path.basename(sys.argv[0])
    else:
        title = module_name
    doc = getattr(inspect.getmodule(main), "__doc__", None)
    # absl registers a flag defined in __main__ under sys.argv[0]
    modules = (sys.argv[0], module_name) if module_name != "__main__" else (sys.argv[0],)
    _HelpFlag.text = staticmethod(
        lambda: help_text(FLAGS, modules, title=f"{title} flags", doc=doc))
    app.define_help_flags()
    for name in ("help", "?", "helpshort"):
        if name in FLAGS and not isinstance(FLAGS[name], _HelpFlag):
            delattr(FLAGS, name)
    for flag in (_HelpFlag(), _HelpshortFlag()):
        if flag.name not in FLAGS:
            flags.DEFINE_flag(flag, FLAGS, module_name=flagutil.group_module(GENERAL_GROUP))


# --------------------------------------------------------------------------- run


def prepare_environment(verbosity, use_onednn=False):
    """TensorFlow's C++ logging (and oneDNN): call before TensorFlow is imported."""
    tflog.quiet_tensorflow(verbosity)
    if use_onednn:
        onednn.enable_onednn()


def run(main, argv=None, onednn=False):
    """``absl.app.run(main)`` with the behaviour described in the module docstring.

    ``onednn=True`` enables TensorFlow's oneDNN kernels (``msmt_tf.training.onednn``) before
    ``main`` runs.
    """
    define_flags()

    def flags_parser(args):
        _install_help(main)
        try:
            return parse(args)
        except (flags.Error, errors.UserError) as e:
            fail(e)

    def wrapped(args):
        prepare_environment(FLAGS.verbosity, use_onednn=onednn)
        return call_main(main, args)

    app.run(wrapped, argv=argv, flags_parser=flags_parser)
