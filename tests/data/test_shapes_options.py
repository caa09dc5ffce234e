"""The check of a --shapes_* combination, shared by DataConfig and shapes.generate."""

import os
import subprocess
import sys

from msmt_tf.data.shapes_options import COLOURS, SHAPES, problem

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OK = dict(layout="grid", max_objects=2, shapes=("circle", "star"), colours=("red", "blue"),
          binding=True)


def test_a_drawable_combination_has_no_problem():
    assert problem(**OK) is None
    assert problem("centre", 1, SHAPES, COLOURS, False) is None


def test_each_problem_names_the_flags():
    assert problem(**{**OK, "layout": "centre"}) == (
        "--shapes_layout=centre holds one object, but --shapes_max_objects=2: use "
        "--shapes_layout=grid (flags/shapes.flags) or --shapes_max_objects=1.")
    assert problem(**{**OK, "shapes": ("circle", "oval")}) == (
        "--shapes_names=circle,oval: give distinct names from "
        "circle,square,triangle,diamond,hexagon,star,cross (oval unknown).")
    assert problem(**{**OK, "colours": ("red", "red")}).startswith(
        "--shapes_colours=red,red: give distinct names from red,green,blue,")
    assert problem(**{**OK, "colours": ()}).startswith("--shapes_colours=: give distinct names")
    assert problem(**{**OK, "max_objects": 3}).startswith(
        "--shapes_binding draws exactly two objects in distinct grid cells, but "
        "--shapes_layout=grid --shapes_max_objects=3")
    assert problem(**{**OK, "shapes": ("circle",)}).startswith(
        "--shapes_binding gives the two objects different shapes and colours, but "
        "--shapes_names=circle --shapes_colours=red,blue")
    assert problem(**{**OK, "shapes": ("circle",), "binding": False}) is None


def test_the_first_problem_is_reported():
    # centre layout, then names, then binding
    both = problem(**{**OK, "layout": "centre", "shapes": ("oval",)})
    assert both.startswith("--shapes_layout=centre")
    assert problem(**{**OK, "max_objects": 3, "shapes": ("oval",)}).startswith("--shapes_names")


def test_the_config_does_not_import_the_generator():
    """No circle: DataConfig checks its flags without loading msmt_tf.data.shapes (which
    imports these options)."""
    code = ("import sys; import msmt_tf.data.config; "
            "print('msmt_tf.data.shapes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO), timeout=120, check=True)
    assert out.stdout.strip() == "False"
