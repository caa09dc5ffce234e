"""Every msmt_tf module imports on its own, the imports form no circle, and no module imports
from a layer above its own.

The layers, lowest first (a module may import from its own layer and those below it):

    base            msmt_tf (package), errors, configlib, io
    data            msmt_tf.data
    layers          msmt_tf.layers, losses
    models          msmt_tf.models
    jobs            msmt_tf.training, msmt_tf.evaluation, inference, sampling,
                    inference_config, experiment_config
    entry points    msmt_tf.cli, msmt_tf.export, msmt_tf.interop, msmt_tf.testing and the
                    command modules (train, pretrain_damsm, evaluate, sample, prepare_data,
                    summary, fid)

Imports are read with ``ast`` from every ``.py`` file under ``msmt_tf/``, the ones inside
functions included (a deferred import is still a dependency).
"""

import ast
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "msmt_tf")

LAYERS = (
    ("base", ("msmt_tf", "msmt_tf.errors", "msmt_tf.configlib", "msmt_tf.io")),
    ("data", ("msmt_tf.data",)),
    ("layers", ("msmt_tf.layers", "msmt_tf.losses")),
    ("models", ("msmt_tf.models",)),
    ("jobs", ("msmt_tf.training", "msmt_tf.evaluation", "msmt_tf.inference", "msmt_tf.sampling",
              "msmt_tf.inference_config", "msmt_tf.experiment_config")),
    ("entry points", ("msmt_tf.cli", "msmt_tf.export", "msmt_tf.interop", "msmt_tf.testing",
                      "msmt_tf.train", "msmt_tf.pretrain_damsm", "msmt_tf.evaluate",
                      "msmt_tf.sample", "msmt_tf.prepare_data", "msmt_tf.summary",
                      "msmt_tf.fid")),
)


def _modules():
    """``{dotted name: path}`` of every module of the package (``__init__`` as the package)."""
    out = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".")
                out[dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return out


MODULES = _modules()


def imports_of(name, path):
    """``[(imported msmt_tf module, line)]`` of the module ``name`` at ``path``."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = []
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:  # `from pkg import submodule` depends on the submodule
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return [(m, line) for m, line in found if m == "msmt_tf" or m.startswith("msmt_tf.")]


def layer_of(name):
    """Index in ``LAYERS`` of the longest prefix naming ``name``, or None."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + ".") and prefix != "msmt_tf":
                if best is None or len(prefix) > len(best[1]):
                    best = (i, prefix)
    return None if best is None else best[0]


def test_every_module_has_a_layer():
    assert [name for name in sorted(MODULES) if layer_of(name) is None] == [], (
        "add these modules to LAYERS in tests/test_imports.py")


def test_no_module_imports_from_a_layer_above():
    violations = []
    for name, path in sorted(MODULES.items()):
        own = layer_of(name)
        for imported, line in imports_of(name, path):
            theirs = layer_of(imported)
            if own is not None and theirs is not None and theirs > own:
                violations.append(f"{os.path.relpath(path, ROOT)}:{line} ({LAYERS[own][0]}) "
                                  f"imports {imported} ({LAYERS[theirs][0]})")
    assert violations == []


def test_layer_check_can_fail(tmp_path):
    assert layer_of("msmt_tf.data.config") == 1 and layer_of("msmt_tf.layers.glu") == 2
    assert layer_of("msmt_tf") == 0 and layer_of("msmt_tf.training.config") == 4
    assert layer_of("msmt_tf.elsewhere") is None  # "msmt_tf" names the package only
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from msmt_tf.data import shapes\n")
    b.write_text("def f():\n    from ..cli import common\n")
    assert imports_of("msmt_tf.data.a", str(a)) == [("msmt_tf.data.shapes", 1)]
    assert imports_of("msmt_tf.training.b", str(b)) == [("msmt_tf.cli.common", 2)]


def test_no_import_circle():
    graph = {name: {m for m, _ in imports_of(name, path) if m in MODULES and m != name}
             for name, path in MODULES.items()}
    circles, done = [], set()

    def visit(name, trail):
        if name in trail:
            circles.append(trail[trail.index(name):] + [name])
            return
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, trail + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert circles == []


_IMPORT_EACH = """
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "msmt_tf" or m.startswith("msmt_tf.")]:
        del sys.modules[loaded]  # a fresh import of the package; TensorFlow stays loaded
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def test_every_module_imports_first():
    """Each module imported before any other msmt_tf module (a circle or an order dependence
    between modules fails here), in one fresh interpreter."""
    names = sorted(n for n in MODULES if not n.endswith(".__main__"))  # __main__ runs a command
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(names)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}
