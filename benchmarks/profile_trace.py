"""Reading a TensorFlow profiler trace into op-level tables (benchmarks/profile_step.py).

No flags and no TensorFlow import at module level, so tests can import it next to the entry
points (tests/test_profile_step.py checks it on a hand-built trace).
"""

import collections
import glob
import os

from benchmarks import flops

BACKWARD_PREFIX = "gradient_tape/"

# One op execution: node name, op type, self time in picoseconds.
OpEvent = collections.namedtuple("OpEvent", ["name", "type", "self_ps"])


# --------------------------------------------------------------------------- reading a trace

def op_events(xspace):
    """The ``OpEvent`` of every TensorFlow op event of the host plane(s) of ``xspace``.

    An op event is one whose metadata name is ``<node name>:<op type>`` with a non-empty
    display name (the op type); other events (executor bookkeeping, thread-pool regions, eager
    calls) have no ``:`` or no display name and are skipped. Self time: the event's duration
    minus the durations of the op events directly nested in it on the same thread line.
    """
    out = []
    for plane in xspace.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            events = []
            for e in line.events:
                meta = plane.event_metadata[e.metadata_id]
                name, sep, op_type = meta.name.rpartition(":")
                if sep and name and op_type and meta.display_name == op_type:
                    events.append((e.offset_ps, e.duration_ps, name, op_type))
            out.extend(_self_times(events))
    return out


def _self_times(events):
    """``OpEvent``s of one thread's ``(start, duration, name, type)`` events (nesting allowed)."""
    events = sorted(events, key=lambda e: (e[0], -e[1]))  # a parent before its children
    self_ps = [e[1] for e in events]
    stack = []  # indices of the open events
    for i, (start, duration, _, _) in enumerate(events):
        while stack and start >= events[stack[-1]][0] + events[stack[-1]][1]:
            stack.pop()
        if stack:
            self_ps[stack[-1]] -= duration
        stack.append(i)
    return [OpEvent(name, op_type, max(0, s))
            for (_, _, name, op_type), s in zip(events, self_ps)]


def read_trace(directory):
    """The ``XSpace`` of the single ``*.xplane.pb`` the profiler wrote under ``directory``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)
    if len(paths) != 1:
        raise RuntimeError(f"profile_step: expected one *.xplane.pb under {directory}, "
                           f"found {len(paths)}; pass an empty --trace_dir.")
    space = xplane_pb2.XSpace()
    with open(paths[0], "rb") as f:
        space.ParseFromString(f.read())
    return space


# --------------------------------------------------------------------------- aggregating

def node_dtypes(graph):
    """``{node name: dtype label}`` of the traced step (nested function bodies included):
    ``T``'s dtype (``dtype`` for ops without ``T``), ``SrcT->DstT`` for a ``Cast``."""
    out = {}

    def visit(g, seen):
        for op in g.get_operations():
            attrs = op.node_def.attr
            if op.type == "Cast":
                label = f"{_dtype(attrs['SrcT'].type)}->{_dtype(attrs['DstT'].type)}"
            elif "T" in attrs and attrs["T"].type:
                label = _dtype(attrs["T"].type)
            elif "dtype" in attrs and attrs["dtype"].type:
                label = _dtype(attrs["dtype"].type)
            else:
                label = None
            if label is not None:
                out.setdefault(op.name, label)
            for graphs in flops._nested_graphs(op).values():  # noqa: SLF001 - same package
                for body in graphs:
                    if body is not None and id(body) not in seen:
                        seen.add(id(body))
                        visit(body, seen)

    visit(graph, set())
    return out


def _dtype(enum):
    import tensorflow as tf

    return tf.dtypes.as_dtype(enum).name


def traced_name(name):
    """The traced node name of a runtime node name: a ``While`` body's ops run as
    ``<loop>/while/body/_<n>/<traced name>``; other names are unchanged."""
    parts = name.split("/")
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "body" and parts[i + 1].startswith("_") and parts[i + 1][1:].isdigit():
            return "/".join(parts[i + 2:])
    return name


def type_key(event, dtypes):
    """``"<op type> <dtype>"`` of an event (``?`` when the node was not traced)."""
    return f"{event.type} {dtypes.get(traced_name(event.name), '?')}"


def scope_key(name, depth):
    """``(scope, backward)``: the first ``depth`` components of the node's scope (its name
    without the last component), ``gradient_tape/`` stripped and reported as ``backward``."""
    backward = name.startswith(BACKWARD_PREFIX)
    if backward:
        name = name[len(BACKWARD_PREFIX):]
    parts = name.split("/")[:-1] or ["(top level)"]
    return "/".join(parts[:depth]), backward


def aggregate(events, key):
    """``{key(event): [self_ps, count]}``."""
    out = collections.defaultdict(lambda: [0, 0])
    for e in events:
        row = out[key(e)]
        row[0] += e.self_ps
        row[1] += 1
    return dict(out)


def scope_table(events, depth):
    """``{scope: [fwd_ps, bwd_ps, count]}``."""
    out = collections.defaultdict(lambda: [0, 0, 0])
    for e in events:
        scope, backward = scope_key(e.name, depth)
        row = out[scope]
        row[1 if backward else 0] += e.self_ps
        row[2] += 1
    return dict(out)


# --------------------------------------------------------------------------- printing

def _ms(ps, steps):
    return ps / 1e9 / steps


def print_table(title, rows, total_ps, steps, top):
    """``rows``: ``{key: [self_ps, count]}``, printed by decreasing time."""
    print(f"\n{title} (top {min(top, len(rows))} of {len(rows)})")
    print(f"{'ms/step':>10} {'share':>6} {'ops/step':>9}  name")
    for key, (ps, count) in sorted(rows.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{_ms(ps, steps):10.1f} {ps / total_ps:6.1%} {count / steps:9.1f}  {key}")


def print_scope_table(title, rows, total_ps, steps, top):
    """``rows``: ``{scope: [fwd_ps, bwd_ps, count]}``, printed by decreasing total time."""
    print(f"\n{title} (top {min(top, len(rows))} of {len(rows)})")
    print(f"{'ms/step':>10} {'share':>6} {'fwd ms':>9} {'bwd ms':>9} {'ops/step':>9}  scope")
    for key, (fwd, bwd, count) in sorted(rows.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:top]:
        print(f"{_ms(fwd + bwd, steps):10.1f} {(fwd + bwd) / total_ps:6.1%} "
              f"{_ms(fwd, steps):9.1f} {_ms(bwd, steps):9.1f} {count / steps:9.1f}  {key}")


def report(events, dtypes, steps, top, depth):
    """Prints the totals and the three tables of the module docstring."""
    total = sum(e.self_ps for e in events)
    print(f"op_seconds {total / 1e12 / steps:.3f}")
    print(f"ops_per_step {len(events) / steps:.0f}")
    print_table("op types", aggregate(events, lambda e: type_key(e, dtypes)), total, steps, top)
    print_scope_table(f"name scopes (depth {depth})", scope_table(events, depth), total, steps,
                      top)
    print_table("nodes", aggregate(events, lambda e: f"{e.name} ({e.type})"), total, steps, top)
