"""``--flagfile`` and ``--preset``, read before absl parses the command line.

absl resolves a ``--flagfile=PATH`` line *inside* a flagfile against the working directory, so
``flags/dmgan_cub.flags`` (which names ``cub.flags``) only worked from the repository root.
``expand_args`` reads every flagfile itself and inlines its lines, resolving a nested
``--flagfile`` relative to the file that names it (falling back to the working directory,
absl's rule, for older files), so a preset runs from any directory.

``--preset=NAME`` names a file of the shipped presets (``flags/NAME.flags`` in the repository,
installed as ``msmt_tf/presets/NAME.flags``): ``dmgan_cub``, ``ablations/mtwig_ks3``, ...
Its lines go first, so every flag given on the command line (or in a ``--flagfile``) wins.

The file format is absl's: one flag per line, ``#`` or ``//`` comment lines, blank lines
ignored.
"""

import os

from msmt_tf import errors

EXTENSION = ".flags"
PRESETS_PACKAGE_DIR = "presets"  # msmt_tf/presets in an installed package (setup.py)
SOURCE_PRESETS_DIR = "flags"  # <repository>/flags in a source checkout


class FlagfileError(errors.UserError, ValueError):
    """A ``--flagfile`` that cannot be read or a ``--preset`` that does not exist."""


def presets_dir():
    """The directory of the shipped presets, or None.

    ``msmt_tf/presets`` in an installed package (``pip install .``), else ``flags/`` next to
    the ``msmt_tf`` package (a source checkout or an editable install).
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (os.path.join(package, PRESETS_PACKAGE_DIR),
                      os.path.join(os.path.dirname(package), SOURCE_PRESETS_DIR)):
        if os.path.isdir(candidate):
            return candidate
    return None


def preset_names(directory=None):
    """Sorted preset names: the ``.flags`` files under ``directory``, without the extension,
    with ``/`` between folders (``ablations/mtwig_ks3``)."""
    directory = directory or presets_dir()
    if not directory:
        return []
    names = []
    for root, _, files in os.walk(directory):
        for name in files:
            if name.endswith(EXTENSION):
                rel = os.path.relpath(os.path.join(root, name), directory)
                names.append(rel[: -len(EXTENSION)].replace(os.sep, "/"))
    return sorted(names)


def preset_path(name, directory=None):
    """The file of preset ``name`` (``dmgan_cub``, ``ablations/mtwig_ks3``; ``.flags`` optional).

    An unknown name raises ``FlagfileError`` listing the available presets.
    """
    directory = directory or presets_dir()
    key = name[: -len(EXTENSION)] if name.endswith(EXTENSION) else name
    names = preset_names(directory)
    if key not in names:
        where = f" (the .flags files under {directory})" if directory else ""
        raise FlagfileError(
            f"--preset={name}: no such preset; available{where}: {', '.join(names) or 'none'}.")
    return os.path.join(directory, *key.split("/")) + EXTENSION


def _directive(args, i, name):
    """``(value, args consumed)`` if ``args[i]`` is ``--name=V``/``-name=V``/``--name V``."""
    arg = args[i]
    for dashes in ("--", "-"):
        if arg.startswith(f"{dashes}{name}="):
            return arg.split("=", 1)[1], 1
        if arg == f"{dashes}{name}":
            if i + 1 >= len(args):
                raise FlagfileError(f"--{name} needs a value (--{name}=...).")
            return args[i + 1], 2
    return None, 0


def _resolve(value, naming_file):
    """The path of ``--flagfile=value``; relative paths against the naming file's directory
    first (a command-line ``--flagfile`` against the working directory)."""
    path = os.path.expanduser(value)
    if os.path.isabs(path) or naming_file is None:
        return os.path.abspath(path)
    beside = os.path.join(os.path.dirname(naming_file), path)
    if os.path.exists(beside) or not os.path.exists(path):
        return os.path.abspath(beside)
    return os.path.abspath(path)  # absl's rule: relative to the working directory


def read_flagfile(path, stack=()):
    """The flag lines of the flagfile ``path`` (absolute), nested flagfiles inlined."""
    if path in stack:
        chain = " -> ".join(list(stack) + [path])
        raise FlagfileError(f"--flagfile cycle: {chain}.")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        named = f" (named in {stack[-1]})" if stack else ""
        raise FlagfileError(
            f"--flagfile={path}{named}: cannot read it ({e.strerror or e}).") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("//"):
            continue
        value, _ = _directive([line], 0, "flagfile")
        if value is not None:
            out.extend(read_flagfile(_resolve(value, path), tuple(stack) + (path,)))
        else:
            out.append(line)
    return out


def _expand_flagfiles(args):
    out = []
    i = 0
    while i < len(args):
        if args[i] == "--":  # absl stops reading flags here
            out.extend(args[i:])
            break
        value, used = _directive(args, i, "flagfile")
        if used:
            out.extend(read_flagfile(_resolve(value, None)))
            i += used
        else:
            out.append(args[i])
            i += 1
    return out


def expand_args(args, directory=None):
    """``args`` (without the program name) with every ``--flagfile`` and ``--preset`` inlined.

    The presets' lines go first, in the order given; the other arguments keep their order, a
    flagfile's lines standing where the ``--flagfile`` stood (the last occurrence of a flag
    wins, as in absl).
    """
    expanded = _expand_flagfiles(list(args))
    presets, rest = [], []
    i = 0
    while i < len(expanded):
        if expanded[i] == "--":
            rest.extend(expanded[i:])
            break
        value, used = _directive(expanded, i, "preset")
        if used:
            presets.append(value)
            i += used
        else:
            rest.append(expanded[i])
            i += 1
    front = []
    for name in presets:
        path = preset_path(name, directory)
        lines = read_flagfile(path)
        if any(_directive([line], 0, "preset")[1] for line in lines):
            raise FlagfileError(f"{path}: a preset cannot name another --preset; use --flagfile.")
        front.extend(lines)
    return front + rest
