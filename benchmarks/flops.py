"""FLOPs of a traced TensorFlow function (imported by train_step.py, conv_peak.py and the tests).

Two counts of the same graph, ``fn.get_concrete_function(*args).graph`` (the ops as traced,
before Grappler fuses them into ``_FusedConv2D``/``_FusedMatMul`` or oneDNN rewrites them, so
fusion does not change the count):

``graph_flops(graph)`` -- the count the benchmarks print. 2 FLOPs per multiply-add of every
*matrix* op: ``Conv2D``, ``Conv2DBackpropInput``, ``Conv2DBackpropFilter``,
``DepthwiseConv2dNative`` (and its two backprops), ``MatMul``, ``BatchMatMul*`` and two-operand
``Einsum`` (attention, DM-GAN's memory, the DAMSM word loss), from the ops' static shapes:

    conv (and both its backprops)  2 * |conv output| * kh * kw * c_in   (c_in: filter dim 2)
    depthwise (and backprops)      2 * |conv output| * kh * kw
    matmul / batch matmul          2 * |output| * k
    einsum                         2 * product of the sizes of all labels of its two operands

The backward ops are the ones the tape wrote (names under ``gradient_tape/``), so forward +
backward is what the step really runs, with no "forward x 3" rule (a frozen network, e.g. the
DAMSM image encoder, needs input gradients only; an input that needs none gets none). Only
*live* ops count: those the function's outputs and control outputs (the variable updates)
depend on; the function runtime prunes the rest before running it (e.g. the tape's
``Conv2DBackpropFilter`` of the frozen encoders). Nested functions are followed: a call counts
its body, an ``If``/``Case`` its costliest branch, a ``While`` its body times its static
``maximum_iterations`` (Keras' LSTM: the caption length), else once (``loops`` counts those).
Elementwise ops (bias, batch norm, activations, optimizers) are left out: TensorFlow's cost
model, which counts most of them, finds under 1% of the matrix FLOPs in the GAN steps. An op
with a shape unknown when traced is listed in ``unknown`` and not counted, unless
``fill_runtime_shapes`` completed it from one run first (MSMT-GAN's valid tails).

``tf_cost_model_flops(graph)`` -- TensorFlow's own cost model, the cross-check:
``tf.compat.v1.profiler.profile(graph, options=ProfileOptionBuilder.float_operation())``, the
sum of the ``RegisterStatistics("<op>", "flops")`` functions of TensorFlow's
``python/profiler/internal/flops_registry.py`` and ``python/ops/nn_ops.py`` over the graph's
top-level ops. It counts the conv backprops and the elementwise ops, but

* not ``Einsum`` (no registered statistics), nor anything inside nested functions;
* dead ops too (it does not prune);
* the conv backprops with the *input* map in place of the conv's output map (``|input| /
  stride^2``): exact for SAME padding, too many for VALID or explicitly padded convs (16x for
  the discriminators' 4x4 VALID logit convs on 4x4 maps);
* ``BatchMatMulV2`` with the inner dimension read through ``transpose_a`` (an attribute only
  ``MatMul`` has) instead of ``adj_x``, so wrong for an adjoint batch matmul.

``matrix`` is its count of the matrix op types above, for a like-for-like comparison.
"""

import collections
import contextlib
import io

# --------------------------------------------------------------------------- one op

CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")
DEPTHWISE_OPS = ("DepthwiseConv2dNative", "DepthwiseConv2dNativeBackpropInput",
                 "DepthwiseConv2dNativeBackpropFilter")
MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
MATRIX_OPS = CONV_OPS + DEPTHWISE_OPS + MATMUL_OPS + ("Einsum",)
BACKWARD_SCOPES = ("gradient_tape", "gradients")


def _dims(shape):
    """The static dims of ``shape`` as ints, or None if any is unknown."""
    if shape.rank is None or not shape.is_fully_defined():
        return None
    return [int(d) for d in shape]


def _prod(values):
    out = 1
    for v in values:
        out *= v
    return out


def _conv_shapes(op):
    """``(conv output dims, filter dims)`` of a conv op or either of its backprops."""
    if op.type.endswith("BackpropInput"):  # inputs: input_sizes, filter, out_backprop
        return _dims(op.inputs[2].shape), _dims(op.inputs[1].shape)
    if op.type.endswith("BackpropFilter"):  # inputs: input, filter_sizes, out_backprop
        return _dims(op.inputs[2].shape), _dims(op.outputs[0].shape)
    return _dims(op.outputs[0].shape), _dims(op.inputs[1].shape)


def _einsum_macs(op):
    """Multiply-adds of a two-operand ``Einsum``: the product of all its labels' sizes."""
    equation = op.get_attr("equation").decode()
    operands = equation.split("->")[0].split(",")
    if len(operands) != 2:
        return 0  # a one-operand einsum is a transpose or a reduction: no multiply-adds
    sizes = {}
    for labels, tensor in zip(operands, op.inputs):
        dims = _dims(tensor.shape)
        if dims is None:
            return None
        if "..." in labels:  # the ellipsis' dims get labels of their own (aligned right)
            head, tail = labels.split("...")
            extra = len(dims) - len(head) - len(tail)
            labels = [*head, *[f"...{i}" for i in range(extra)], *tail]
        for label, size in zip(labels, dims):
            sizes[label] = max(sizes.get(label, 1), size)  # max: broadcast size-1 dims
    return _prod(sizes.values())


def op_flops(op):
    """2 x the multiply-adds of one matrix op (``MATRIX_OPS``); 0 for any other op; None if
    its shapes are not static."""
    if op.type in CONV_OPS + DEPTHWISE_OPS:
        out, kernel = _conv_shapes(op)
        if out is None or kernel is None:
            return None
        per_output = kernel[0] * kernel[1] * (kernel[2] if op.type in CONV_OPS else 1)
        return 2 * _prod(out) * per_output
    if op.type in MATMUL_OPS:
        a, out = _dims(op.inputs[0].shape), _dims(op.outputs[0].shape)
        if a is None or out is None:
            return None
        flag = "transpose_a" if op.type == "MatMul" else "adj_x"
        k = a[-2] if op.get_attr(flag) else a[-1]
        return 2 * _prod(out) * k
    if op.type == "Einsum":
        macs = _einsum_macs(op)
        return None if macs is None else 2 * macs
    return 0


# --------------------------------------------------------------------------- a graph

class FlopCount(collections.namedtuple(
        "FlopCount", ["forward", "backward", "by_type", "unknown", "loops"])):
    """``graph_flops``'s result: forward/backward FLOPs, FLOPs per op type, names of ops with
    non-static shapes, number of ``While`` loops without a static trip count (counted once)."""

    @property
    def total(self):
        return self.forward + self.backward


def _live_ops(graph):
    """The ops the graph's outputs and control outputs depend on (all ops of a plain Graph)."""
    roots = [t.op for t in getattr(graph, "outputs", [])] + list(
        getattr(graph, "control_outputs", []))
    if not roots:
        return list(graph.get_operations())
    seen, stack = set(), list(roots)
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return [op for op in graph.get_operations() if op in seen]  # graph order: deterministic


def _function_graph(graph, name):
    """The FuncGraph of the function ``name`` registered in ``graph`` or an enclosing one."""
    while graph is not None:
        fn = graph._get_function(name)  # noqa: SLF001 - no public lookup by name
        if fn is not None:
            return getattr(fn, "graph", None)
        graph = getattr(graph, "outer_graph", None)
    return None


def _nested_graphs(op):
    """``{attribute: [FuncGraph, ...]}`` of the function-valued attributes of ``op``."""
    out = {}
    for key, value in op.node_def.attr.items():
        if value.HasField("func"):
            names = [value.func.name]
        elif value.HasField("list") and value.list.func:
            names = [f.name for f in value.list.func]
        else:
            continue
        out[key] = [_function_graph(op.graph, n) for n in names]
    return out


def _static_int(tensor):
    """The value of a scalar int tensor known when traced, else None (folds the ``Max`` /
    ``Identity`` of a scalar constant that Keras' RNN loops use as their trip count)."""
    from tensorflow.python.framework import tensor_util

    value = tensor_util.constant_value(tensor)
    if value is None and tensor.op.type in ("Max", "Min", "Identity") and tensor.shape.rank == 0:
        return _static_int(tensor.op.inputs[0])
    return None if value is None or value.ndim else int(value)


def _while_trips(op):
    """The static ``maximum_iterations`` of a while_v2 op (its inputs: loop counter, maximum
    iterations, loop variables), or None (unknown or unbounded)."""
    trips = _static_int(op.inputs[1])
    return trips if trips is not None and trips >= 0 else None


def _scaled(count, factor):
    return FlopCount(count.forward * factor, count.backward * factor,
                     {k: v * factor for k, v in count.by_type.items()}, count.unknown,
                     count.loops)


def _is_backward(op):
    return any(part in BACKWARD_SCOPES for part in op.name.split("/"))


def _accumulate(count, other, backward):
    forward, back, by_type, unknown, loops = count
    if backward:  # a body called from a gradient op is all backward
        back += other.forward + other.backward
    else:
        forward += other.forward
        back += other.backward
    for k, v in other.by_type.items():
        by_type[k] = by_type.get(k, 0) + v
    return FlopCount(forward, back, by_type, unknown + other.unknown, loops + other.loops)


def graph_flops(graph):
    """The ``FlopCount`` of the live matrix ops of ``graph`` (see the module docstring)."""
    count = FlopCount(0, 0, {}, [], 0)
    for op in _live_ops(graph):
        backward = _is_backward(op)
        nested = _nested_graphs(op)
        if nested:
            trips = 1
            if op.type in ("While", "StatelessWhile"):
                nested = {"body": nested.get("body", [])}
                trips = _while_trips(op)
                if trips is None:
                    trips = 1
                    count = count._replace(loops=count.loops + 1)
            bodies = [_scaled(graph_flops(g), trips) if g is not None
                      else FlopCount(0, 0, {}, [op.name], 0)
                      for graphs in nested.values() for g in graphs]
            if op.type in ("If", "StatelessIf", "Case", "StatelessCase"):
                bodies = [max(bodies, key=lambda c: c.total)]  # one branch runs
            for body in bodies:
                count = _accumulate(count, body, backward)
            continue
        flops = op_flops(op)
        if flops is None:
            count.unknown.append(op.name)
        elif flops:
            count.by_type[op.type] = count.by_type.get(op.type, 0) + flops
            count = count._replace(**({"backward": count.backward + flops} if backward
                                      else {"forward": count.forward + flops}))
    return count


def function_graph(fn, *args, **kwargs):
    """The graph of ``tf.function`` ``fn`` traced for these arguments (reuses its trace)."""
    return fn.get_concrete_function(*args, **kwargs).graph


def fill_runtime_shapes(fn, *args, **kwargs):
    """Completes the static shapes of the live matrix ops of ``fn``'s graph for these arguments
    from one run, as TensorFlow's profiler does with run metadata. Returns how many tensors it
    completed.

    A dimension that depends on the data (MSMT-GAN's valid tails: a ``nonzero`` then a gather)
    is unknown when traced. This runs, once, the part of the traced graph that the shapes of
    those tensors depend on (a pruned copy of the function: at most the step itself) and sets
    the shapes it gets on the graph's tensors; both counts then see them. Every argument of
    ``fn`` must be a tensor (or array), as the step's batch is.
    """
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.eager import wrap_function

    graph = function_graph(fn, *args, **kwargs)
    tensors = {}
    for op in _live_ops(graph):
        if op.type in MATRIX_OPS:
            for t in (*op.inputs, *op.outputs):
                if not t.shape.is_fully_defined():
                    tensors[t.ref()] = t
    if not tensors:
        return 0
    tensors = list(tensors.values())
    feeds = graph.inputs[:len(graph.inputs) - len(graph.internal_captures)]
    values = tf.nest.flatten((args, kwargs))
    if len(values) != len(feeds) or not all(
            isinstance(v, (tf.Tensor, np.ndarray)) for v in values):
        raise ValueError(f"fill_runtime_shapes: {len(values)} arguments for {len(feeds)} "
                         "inputs; pass every argument as a tensor or an array.")
    with graph.as_default():
        fetches = [tf.shape(t) for t in tensors]
    pruned = wrap_function.WrappedFunction(
        graph, variable_holder=wrap_function.VariableHolder(share_variables=True)).prune(
            feeds, fetches)
    for t, shape in zip(tensors, pruned(*map(tf.convert_to_tensor, values))):
        t.set_shape(shape.numpy().tolist())
    return len(tensors)


# --------------------------------------------------------------------------- TensorFlow's model

TfCostModel = collections.namedtuple("TfCostModel", ["total", "matrix", "by_type"])


def tf_cost_model_flops(graph):
    """TensorFlow's profiler count of ``graph`` (``TfCostModel``: the profiler's total, the part
    of it from ``MATRIX_OPS`` types, and per op type); see the module docstring."""
    import tensorflow as tf
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.util import deprecation

    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    # Silenced: its shape helper is a deprecated TF1 API, and it writes "N ops no flops stats
    # due to incomplete shapes" (elementwise ops of MSMT-GAN's valid tails) to stderr.
    with deprecation.silence(), contextlib.redirect_stderr(io.StringIO()):
        total = tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
        by_type = collections.Counter()
        for op in graph.get_operations():  # the same statistics, per op type
            try:
                value = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
            except ValueError:  # no static shape: the profiler skips the op too
                value = None
            if value:
                by_type[op.type] += int(value)
    matrix = sum(v for k, v in by_type.items() if k in MATRIX_OPS)
    return TfCostModel(int(total), matrix, dict(by_type))

