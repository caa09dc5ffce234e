"""benchmarks/flops.py: FLOP counts of traced graphs against hand-computed values, and where
TensorFlow's cost model (the cross-check of benchmarks/train_step.py) agrees or not."""

import importlib.util
import os

import keras
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def flops():
    spec = importlib.util.spec_from_file_location(
        "benchmarks_flops", os.path.join(ROOT, "benchmarks", "flops.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conv_dense_training_step(flops):
    # x [2, 8, 8, 3] -> 3x3 SAME conv, 4 filters -> flatten (256) -> dense 5; SGD on the weights.
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.Flatten(), keras.layers.Dense(5)])
    opt = keras.optimizers.SGD(0.1)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) ** 2)
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    graph = flops.function_graph(step, tf.zeros([2, 8, 8, 3]))
    count = flops.graph_flops(graph)
    conv = 2 * (2 * 8 * 8 * 4) * (3 * 3 * 3)  # 2 x outputs x taps x input channels = 27,648
    dense = 2 * (2 * 5) * 256  # 2 x outputs x inputs = 5,120
    assert count.forward == conv + dense
    # kernel gradients of both layers, the dense layer's input gradient; no gradient for x
    assert count.backward == conv + 2 * dense
    assert count.by_type == {"Conv2D": conv, "Conv2DBackpropFilter": conv,
                             "MatMul": 3 * dense}
    assert count.unknown == [] and count.loops == 0

    tf_model = flops.tf_cost_model_flops(graph)
    # Same per-op formulas for SAME convs and matmuls, but the tape's Conv2DBackpropInput for x
    # (dead: pruned at run time) is counted too, and so are the elementwise ops.
    assert tf_model.by_type["Conv2D"] == tf_model.by_type["Conv2DBackpropFilter"] == conv
    assert tf_model.by_type["Conv2DBackpropInput"] == conv
    assert tf_model.by_type["MatMul"] == 3 * dense
    assert tf_model.matrix == count.total + conv
    assert tf_model.total > tf_model.matrix


def test_valid_conv_backprop(flops):
    # A 4x4 VALID conv on a 4x4 map (the discriminators' logit convs): output 1x1.
    x = tf.Variable(tf.ones([3, 4, 4, 2]))
    w = tf.Variable(tf.ones([4, 4, 2, 5]))

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(tf.nn.conv2d(x, w, 1, "VALID"))
        return y, tape.gradient(y, [x, w])  # without y the forward conv would be dead

    graph = flops.function_graph(grads)
    count = flops.graph_flops(graph)
    conv = 2 * (3 * 1 * 1 * 5) * (4 * 4 * 2)  # = 960: each backprop does the same MACs
    assert count.by_type == {"Conv2D": conv, "Conv2DBackpropInput": conv,
                             "Conv2DBackpropFilter": conv}
    assert (count.forward, count.backward) == (conv, 2 * conv)
    # TensorFlow's backprop formulas take the input map (4x4) as the output map: 16x too many.
    tf_model = flops.tf_cost_model_flops(graph)
    assert tf_model.by_type["Conv2DBackpropInput"] == 16 * conv
    assert tf_model.by_type["Conv2DBackpropFilter"] == 16 * conv


def test_einsum_and_adjoint_batch_matmul(flops):
    @tf.function
    def fn(q, k, a, b):
        logits = tf.einsum("bqc,blc->bql", q, k)  # 2 x 3 x 5 x 4 MACs
        both = tf.einsum("...ij,...jk->...ik", q, tf.transpose(k, [0, 2, 1]))  # the same
        moved = tf.einsum("bqc->bcq", q)  # a transpose: no MACs
        prod = tf.linalg.matmul(a, b, adjoint_a=True)  # [2,4,3]^T [2,4,5]: k = 4
        return logits, both, moved, prod

    graph = flops.function_graph(fn, tf.zeros([2, 3, 4]), tf.zeros([2, 5, 4]),
                                 tf.zeros([2, 4, 3]), tf.zeros([2, 4, 5]))
    count = flops.graph_flops(graph)
    macs = 2 * 3 * 5 * 4
    assert count.by_type == {"Einsum": 2 * 2 * macs, "BatchMatMulV2": 2 * macs}
    tf_model = flops.tf_cost_model_flops(graph)
    assert "Einsum" not in tf_model.by_type  # no registered statistics
    assert tf_model.by_type["BatchMatMulV2"] == 2 * (2 * 3 * 5) * 3  # reads a's last dim


def test_nested_functions(flops):
    w = tf.Variable(tf.ones([4, 4]))
    n = tf.Variable(3)
    mm = 2 * 2 * 4 * 4  # [2, 4] x [4, 4]

    @tf.function
    def fn(x):
        y = tf.cond(tf.reduce_sum(x) > 0, lambda: x @ w @ w, lambda: x @ w)  # costlier: 2
        _, y = tf.while_loop(lambda i, y: i < 10, lambda i, y: (i + 1, y @ w), [0, y],
                             maximum_iterations=3)  # 3 trips
        _, y = tf.while_loop(lambda i, y: i < n, lambda i, y: (i + 1, y @ w), [0, y])  # unknown

        @tf.function
        def call(z):
            return z @ w

        return call(y)  # 1

    count = flops.graph_flops(flops.function_graph(fn, tf.ones([2, 4])))
    assert count.total == (2 + 3 + 1 + 1) * mm
    assert count.loops == 1  # the loop without a static trip count, counted once
    assert flops.tf_cost_model_flops(flops.function_graph(fn, tf.ones([2, 4]))).matrix == 0


def test_keras_lstm_runs_its_time_steps(flops):
    batch, steps, features, units = 2, 5, 3, 4
    lstm = keras.layers.LSTM(units)

    @tf.function
    def fn(x):
        return lstm(x)

    count = flops.graph_flops(flops.function_graph(fn, tf.zeros([batch, steps, features])))
    # each step: input [B, F] x [F, 4U] and state [B, U] x [U, 4U]
    assert count.total == steps * 2 * batch * 4 * units * (features + units)
    assert count.loops == 0


def test_runtime_shapes_of_a_data_dependent_batch(flops):
    # The rows a mask keeps (MSMT-GAN's valid tails) are known only when the step runs.
    w = tf.Variable(tf.ones([3, 3, 4, 5]))

    @tf.function
    def step(x, keep):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.nn.conv2d(tf.boolean_mask(x, keep), w, 1, "SAME") ** 2)
        w.assign_sub(0.1 * tape.gradient(loss, w))
        return loss

    args = (tf.ones([6, 8, 8, 4]), tf.constant([True, False, True, True, False, False]))
    count = flops.graph_flops(flops.function_graph(step, *args))
    assert count.total == 0 and len(count.unknown) == 2  # the conv and its filter gradient
    assert flops.fill_runtime_shapes(step, *args) > 0
    assert w.numpy().min() == 1  # only the shapes ran, not the update
    count = flops.graph_flops(flops.function_graph(step, *args))
    conv = 2 * (3 * 8 * 8 * 5) * (3 * 3 * 4)  # 3 rows kept
    assert (count.forward, count.backward, count.unknown) == (conv, conv, [])
    assert flops.fill_runtime_shapes(step, *args) == 0  # nothing left to fill


def test_tiny_dmgan_step_against_tf_cost_model(flops):
    """Op by op on a real GAN step (tiny DM-GAN: 32 -> 64 px, DAMSM term on): the forward
    convs and top-level matmuls agree exactly with TensorFlow's statistics, the conv backprops
    up to TensorFlow's input-map-for-output-map factor (1 for SAME convs); the frozen image
    encoder's filter gradients are dead."""
    import dataclasses

    from tensorflow.python.framework import ops as tf_ops

    from msmt_tf.training import ema as ema_lib
    from msmt_tf.training.gan_step import GANStep
    from msmt_tf.training.gan_trainer import build_networks, make_optimizer
    from tests.training import gan_fixtures as fx

    cfgs = fx.configs()
    m = dataclasses.replace(cfgs.model, initial="ig", refinement="memory")
    t = cfgs.train
    text, image = fx.encoders(m)
    gen, ema_gen, ds = build_networks(m, t, fx.WORDS, fx.BATCH)
    step = GANStep(gen, ds, text, image, make_optimizer(t.g_lr, t, gen.trainable_variables),
                   [make_optimizer(t.d_lr, t, d.trainable_variables) for d in ds],
                   ema_lib.ExponentialMovingAverage(gen, ema_gen, t.ema_decay),
                   tf.random.Generator.from_seed(0), t, m.z_dim)
    fn, batch = tf.function(step), fx.batch(m)
    batch.pop("key")  # strings: not a step input
    assert flops.fill_runtime_shapes(fn, batch) == 0  # DM-GAN: every shape static
    graph = flops.function_graph(fn, batch)
    count = flops.graph_flops(graph)
    assert count.unknown == [] and count.loops == 0 and count.by_type["Einsum"] > 0

    live = set(flops._live_ops(graph))  # noqa: SLF001
    seen, ratios = set(), set()
    for op in graph.get_operations():
        if op.type not in flops.MATRIX_OPS or op.type == "Einsum":
            continue
        ours = flops.op_flops(op)
        theirs = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        seen.add(op.type)
        if op.type in ("Conv2D", "MatMul"):
            assert theirs == ours, op.name
        else:  # TF's backprop formulas: the conv's input map / stride^2 for its output map
            image = op.outputs[0] if op.type == "Conv2DBackpropInput" else op.inputs[0]
            (_, h, w, _), (_, oh, ow, _) = image.shape, op.inputs[2].shape
            ratio = h * w / (op.get_attr("strides")[1] ** 2 * oh * ow)
            assert theirs == pytest.approx(ours * ratio, rel=1e-9), op.name
            ratios.add(ratio)
        if op.type == "Conv2DBackpropFilter" and op.name.split("/")[1].startswith("image"):
            assert op not in live, op.name  # the encoder is frozen
    assert {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul"} <= seen
    assert 1 in ratios and max(ratios) > 1  # SAME convs agree; padded/VALID ones do not
