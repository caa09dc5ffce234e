"""What a synthetic shapes set can be asked for, and the check of one combination.

The names (``SHAPES``, ``COLOURS``), the layouts and ``problem``, the one check of a
``--shapes_*`` combination: ``DataConfig`` calls it when it is built from flags and
``shapes.generate`` again for direct callers. No drawing code and no imports, so the config
does not load the generator (``msmt_tf.data.shapes``), which imports this module.
"""

SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan", "brown")
# Object placement: distinct random cells of the 3 x 3 grid, or (one object only) the centre cell.
LAYOUTS = ("grid", "centre")


def problem(layout, max_objects, shapes, colours, binding):
    """The message for a combination that cannot be drawn, or None: a centre layout with more
    than one object, shape/colour names outside ``SHAPES``/``COLOURS`` (or none, or repeated),
    or a binding set (``--shapes_binding``) that is not two objects of different shapes and
    colours on the grid."""
    return (_centre_layout_problem(layout, max_objects) or _names_problem(shapes, colours)
            or _binding_problem(binding, layout, max_objects, shapes, colours))


def _centre_layout_problem(layout, max_objects):
    if layout == "centre" and max_objects > 1:
        return (f"--shapes_layout=centre holds one object, but --shapes_max_objects={max_objects}: "
                "use --shapes_layout=grid (flags/shapes.flags) or --shapes_max_objects=1.")
    return None


def _names_problem(shapes, colours):
    for flag, names, known in (("--shapes_names", shapes, SHAPES),
                               ("--shapes_colours", colours, COLOURS)):
        unknown = [n for n in names if n not in known]
        if unknown or not names or len(set(names)) != len(names):
            return (f"{flag}={','.join(names)}: give distinct names from {','.join(known)}"
                    + (f" ({', '.join(unknown)} unknown)." if unknown else "."))
    return None


def _binding_problem(binding, layout, max_objects, shapes, colours):
    if not binding:
        return None
    if layout != "grid" or max_objects != 2:
        return (f"--shapes_binding draws exactly two objects in distinct grid cells, but "
                f"--shapes_layout={layout} --shapes_max_objects={max_objects}: use "
                "--shapes_layout=grid --shapes_max_objects=2 (flags/shapes_binding.flags).")
    if len(set(shapes)) < 2 or len(set(colours)) < 2:
        return (f"--shapes_binding gives the two objects different shapes and colours, but "
                f"--shapes_names={','.join(shapes)} --shapes_colours={','.join(colours)}: "
                "give at least two of each.")
    return None
