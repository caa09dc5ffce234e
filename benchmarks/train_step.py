"""Median time of one GAN training step (all D updates + G update + EMA), run by hand.

    python benchmarks/train_step.py --flagfile=flags/dmgan_cub.flags --stages=1 --batch_size=10
    python benchmarks/train_step.py --batch_size=10 --lambda3=0        # the quickstart's step

Synthetic batches of the configured shapes; random encoder weights (timing only). Prints one
figure per line: the median seconds per step after warm-up, the share of the DAMSM image
encoder (forward + backward of the generated images through it, measured alone), and the peak
resident memory; then the step's FLOPs (``step_gflop``: 2 per multiply-add of its live conv,
matmul and einsum ops, forward and backward, counted on the traced graph by
benchmarks/flops.py, data-dependent shapes such as MSMT-GAN's valid tails taken from one more
partial run; ``step_gflop_tf_cost_model``: TensorFlow's profiler count of the same graph, a
cross-check that also counts dead and elementwise ops but misses einsums), ``achieved_gflops``
= step_gflop / step_seconds_median, and with ``--peak_gflops=P`` (this machine's
``peak_gflops_<dtype>`` of benchmarks/conv_peak.py, the dtype the precision computes in)
``fraction_of_peak`` = achieved_gflops / P.
"""

import os
import resource
import statistics
import sys
import time

import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import caption_lengths, flops  # noqa: E402
from msmt_tf.cli import common, entry  # noqa: E402
from msmt_tf.training import onednn  # noqa: E402

common.define_all_flags()
flags.DEFINE_integer("warmup", 2, "Untimed steps (tracing).", lower_bound=0)
flags.DEFINE_integer("repeats", 5, "Timed steps.", lower_bound=1)
flags.DEFINE_integer("vocab_size", 5450, "Vocabulary size of the random text encoder.",
                     lower_bound=2)
flags.DEFINE_enum("caption_lengths", "random", caption_lengths.KINDS,
                  "Caption lengths of the synthetic batch (MTWIG decodes one tail per n-gram): "
                  "random = uniform 4..words_num, cub = CUB-200-like, shapes = the shapes "
                  "dataset's (--shapes_*), full = all words_num (benchmarks/caption_lengths.py).")
flags.DEFINE_float("peak_gflops", None, "This machine's peak GFLOP/s (peak_gflops_<dtype> of "
                   "benchmarks/conv_peak.py): prints fraction_of_peak.", lower_bound=1e-9)
FLAGS = flags.FLAGS


def synthetic_batch(configs, batch):
    rng = np.random.default_rng(0)
    words_num = configs.data.words_num
    lengths = caption_lengths.draw(FLAGS.caption_lengths, configs.data, batch, rng)
    caps = rng.integers(1, FLAGS.vocab_size, size=(batch, words_num)).astype("int32")
    caps[np.arange(words_num)[None] >= lengths[:, None]] = 0
    images = tuple(rng.uniform(-1, 1, size=(batch, s, s, 3)).astype("float32")
                   for s in configs.model.image_sizes)
    return {"images": images, "captions": caps, "caption_len": lengths.astype("int32"),
            "class_id": rng.integers(0, 200, size=batch).astype("int32"),
            "wrong_captions": np.roll(caps, 1, axis=0),
            "wrong_caption_len": np.roll(lengths, 1).astype("int32")}


def build_step(configs):
    """`(tf.function of the GANStep, DAMSM image encoder, configs)` of `configs`, random
    encoder weights; the returned configs have --precision=auto resolved (as a run's).

    Sets the precision policy first. Shared with benchmarks/memory.py and profile_step.py.
    """
    import tensorflow as tf

    from msmt_tf.models import damsm
    from msmt_tf.training import ema as ema_lib, precision, runner
    from msmt_tf.training.gan_step import GANStep
    from msmt_tf.training.gan_trainer import build_networks, make_optimizer

    configs, _ = runner.resolve_precision(configs)  # --precision=auto: logged
    cfg, mcfg = configs.train, configs.model
    precision.set_precision(cfg.precision)
    text = damsm.build_text_encoder(mcfg, FLAGS.vocab_size)
    image = damsm.build_image_encoder(mcfg, load_trunk_weights=False)
    gen, ema_gen, ds = build_networks(mcfg, cfg, configs.data.words_num, cfg.batch_size)
    g_opt = make_optimizer(cfg.g_lr, cfg, gen.trainable_variables)
    d_opts = [make_optimizer(cfg.d_lr, cfg, d.trainable_variables) for d in ds]
    step = GANStep(gen, ds, text, image, g_opt, d_opts,
                   ema_lib.ExponentialMovingAverage(gen, ema_gen, cfg.ema_decay),
                   tf.random.Generator.from_seed(0), cfg, mcfg.z_dim)
    return tf.function(step, jit_compile=cfg.jit_compile or None), image, configs


def main(argv):
    entry.no_arguments(argv, "--flagfile=FILE, --preset=NAME, --batch_size, --repeats, --help")
    import tensorflow as tf  # after entry.run (oneDNN on, TensorFlow's C++ log lines hidden)

    fn, image, configs = build_step(common.configs_from_flags())
    cfg, mcfg = configs.train, configs.model
    batch = synthetic_batch(configs, cfg.batch_size)
    times = []
    for i in range(FLAGS.warmup + FLAGS.repeats):
        t0 = time.perf_counter()
        logs = fn(batch)
        float(logs["g_loss"])
        if i >= FLAGS.warmup:
            times.append(time.perf_counter() - t0)

    # The DAMSM image encoder alone: forward + backward of the final-stage images.
    stages = mcfg.stages if cfg.damsm_stages == "all" else 1
    x = tf.Variable(batch["images"][-1])

    @tf.function
    def encoder_step():
        with tf.GradientTape() as tape:
            region, code = image(x, training=False)
            loss = tf.reduce_sum(region) + tf.reduce_sum(code)
        return tape.gradient(loss, x)

    enc = []
    for i in range(FLAGS.warmup + FLAGS.repeats):
        t0 = time.perf_counter()
        encoder_step().numpy()
        if i >= FLAGS.warmup:
            enc.append(time.perf_counter() - t0)
    median = statistics.median(times)
    share = min(1.0, stages * statistics.median(enc) / median)
    print(f"preset: {mcfg.preset_name} sizes {mcfg.image_sizes} batch {cfg.batch_size} "
          f"precision {cfg.precision} jit {cfg.jit_compile} onednn {onednn.onednn_enabled()}",
          file=sys.stderr)
    print(f"step_seconds_median {median:.3f}")
    print(f"damsm_image_encoder_share {share:.2f}")
    print(f"peak_rss_gb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f}")
    print_flops(fn, batch, median)


def print_flops(fn, batch, seconds):
    """The FLOP lines of the module docstring for the step ``fn`` traced for ``batch`` (shapes
    that depend on the data, e.g. MSMT-GAN's valid tails, taken from one more partial run)."""
    flops.fill_runtime_shapes(fn, batch)
    graph = flops.function_graph(fn, batch)
    count, tf_model = flops.graph_flops(graph), flops.tf_cost_model_flops(graph)
    if count.unknown or count.loops:
        print(f"FLOPs: {len(count.unknown)} matrix ops without static shapes not counted, "
              f"{count.loops} while-loop bodies counted once", file=sys.stderr)
    print(f"step_gflop {count.total / 1e9:.5g}")
    print(f"step_gflop_forward {count.forward / 1e9:.5g}")
    print(f"step_gflop_backward {count.backward / 1e9:.5g}")
    print(f"step_gflop_tf_cost_model {tf_model.total / 1e9:.5g}")
    print(f"step_gflop_tf_cost_model_matrix {tf_model.matrix / 1e9:.5g}")
    achieved = count.total / 1e9 / seconds
    print(f"achieved_gflops {achieved:.5g}")
    if FLAGS.peak_gflops:
        print(f"fraction_of_peak {achieved / FLAGS.peak_gflops:.3f}")


if __name__ == "__main__":
    # oneDNN on, as the entry points (the README's figures); TF_ENABLE_ONEDNN_OPTS=0 compares
    # without it.
    entry.run(main, onednn=True)
