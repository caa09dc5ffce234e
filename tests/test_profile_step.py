"""benchmarks/profile_trace.py (used by benchmarks/profile_step.py): reading a profiler trace (self times, nesting, names) and its
tables, on a hand-built trace with hand-computed times. The command itself is smoke-run in
tests/test_smoke_commands.py."""

import os
import sys

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import profile_trace as ps  # noqa: E402

# Event metadata: (name, display name). Ops are "<node>:<type>" with the type as display name.
METADATA = {
    1: ("d/conv/Conv2D:_MklNativeConv2D", "_MklNativeConv2D"),
    2: ("enc/lstm/while:While", "While"),
    3: ("enc/lstm/while/body/_5/enc/lstm/cell/mul:Mul", "Mul"),
    4: ("ExecutorState::Process", ""),  # executor bookkeeping: not an op
    5: ("gradient_tape/d/conv/Conv2DBackpropInput:Conv2DBackpropInput", "Conv2DBackpropInput"),
    6: ("ThreadpoolListener::StartRegion", ""),
}
# Per thread line: (metadata id, start, duration), in ms (x MS picoseconds).
LINES = [
    [(4, 0, 200), (2, 0, 100), (3, 10, 20), (3, 40, 10), (1, 120, 40), (6, 170, 0)],
    [(5, 0, 80)],
]
MS = 10**9


def _xspace():
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    for key, (name, display) in METADATA.items():
        plane.event_metadata[key].id = key
        plane.event_metadata[key].name = name
        plane.event_metadata[key].display_name = display
    for events in LINES:
        line = plane.lines.add()
        for key, start, duration in events:
            line.events.add(metadata_id=key, offset_ps=start * MS, duration_ps=duration * MS)
    other = space.planes.add(name="Task Environment")  # not a host plane: ignored
    other.event_metadata[1].name = "x:Mul"
    return space


def test_self_times_subtract_nested_ops_only():
    events = sorted(ps.op_events(_xspace()), key=lambda e: (e.name, e.self_ps))
    assert [(e.type, e.self_ps / MS) for e in events] == [
        ("_MklNativeConv2D", 40),
        ("While", 100 - 20 - 10),  # the two Mul events run inside the While
        ("Mul", 10),
        ("Mul", 20),
        ("Conv2DBackpropInput", 80),  # on its own thread: not nested in the Process event
    ]


def test_names_scopes_and_tables(capsys):
    assert ps.traced_name("enc/lstm/while/body/_5/enc/lstm/cell/mul") == "enc/lstm/cell/mul"
    assert ps.traced_name("a/body/b") == "a/body/b"  # no "_<n>" after "body"
    assert ps.scope_key("gradient_tape/d/conv/Conv2DBackpropInput", 2) == ("d/conv", True)
    assert ps.scope_key("d/conv/Conv2D", 5) == ("d/conv", False)
    assert ps.scope_key("IsFinite_3", 3) == ("(top level)", False)

    events = ps.op_events(_xspace())
    dtypes = {"enc/lstm/cell/mul": "bfloat16", "d/conv/Conv2D": "float32"}
    ps.report(events, dtypes, steps=2, top=10, depth=2)
    out = capsys.readouterr().out.splitlines()
    # 220 ms of op time over 2 steps: 110 ms per step; shares of 220.
    assert out[:2] == ["op_seconds 0.110", "ops_per_step 2"]
    types = out[out.index("op types (top 4 of 4)") + 2:][:4]
    assert [line.split() for line in types] == [
        ["40.0", "36.4%", "0.5", "Conv2DBackpropInput", "?"],  # not traced: no dtype
        ["35.0", "31.8%", "0.5", "While", "?"],
        ["20.0", "18.2%", "0.5", "_MklNativeConv2D", "float32"],
        ["15.0", "13.6%", "1.0", "Mul", "bfloat16"],  # the loop body's op, by its traced name
    ]
    scopes = out[out.index("name scopes (depth 2) (top 2 of 2)") + 2:][:2]
    assert [line.split() for line in scopes] == [
        ["60.0", "54.5%", "20.0", "40.0", "1.0", "d/conv"],  # forward 40 + backward 80
        ["50.0", "45.5%", "50.0", "0.0", "1.5", "enc/lstm"],
    ]
    nodes = out[out.index("nodes (top 4 of 4)") + 2:]
    assert nodes[0].split()[-2:] == ["gradient_tape/d/conv/Conv2DBackpropInput",
                                     "(Conv2DBackpropInput)"]


def test_scope_table_splits_forward_and_backward():
    rows = ps.scope_table(ps.op_events(_xspace()), depth=2)
    assert rows == {"enc/lstm": [100 * MS, 0, 3], "d/conv": [40 * MS, 80 * MS, 2]}


def test_node_dtypes_of_a_traced_graph():
    @tf.function
    def fn(x):
        y = tf.cast(x, tf.bfloat16)
        return tf.cast(y + y, tf.float32) * 2.0

    graph = fn.get_concrete_function(tf.TensorSpec([3], tf.float32)).graph
    dtypes = ps.node_dtypes(graph)
    casts = sorted(v for k, v in dtypes.items() if k.startswith("Cast"))
    assert casts == ["bfloat16->float32", "float32->bfloat16"]
    assert dtypes["add"] == "bfloat16" and dtypes["mul"] == "float32"
