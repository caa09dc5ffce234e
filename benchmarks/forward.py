"""Forward and forward+backward time and peak memory of each generator, run by hand.

    python benchmarks/forward.py                       # AttnGAN, DM-GAN, MSMT-GAN at 64 and 128 px
    python benchmarks/forward.py --presets=msmt --sizes=64 --batch=20

Random inputs (batch 20, 18 words); the architectures of flags/{attngan,dmgan,msmt}_cub.flags;
`size` is the final image size (stages from 64 px). One figure per line:
`<preset> <size>px forward_s=... forward_backward_s=... peak_rss_gb=...` (medians of --repeats
after one warm-up call; peak RSS is the process maximum so far, so run one preset per process
for exact memory figures). `--gf_dim` and `--words_num` shrink the networks and captions (the
smoke run of the test suite); the defaults are the figures of the README.
"""

import os
import resource
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from msmt_tf.cli import entry  # noqa: E402

PRESETS = {
    "attngan": dict(initial="ig", refinement="attn", gf_dim=32, r_num=2),
    "dmgan": dict(initial="ig", refinement="memory", gf_dim=64, r_num=2),
    "msmt": dict(initial="mtwig", mtwig_kernel=3, refinement="sdm", heads=6, grid=8, gf_dim=48,
                 n_m=96, r_num=2),
}
COMMON = dict(base_size=64, z_dim=100, condition_dim=100, embedding_dim=256)
STAGES = {64: 1, 128: 2, 256: 3}  # final image size -> stages from 64 px

flags.DEFINE_list("presets", list(PRESETS), "Generators to time.")
flags.DEFINE_list("sizes", ["64", "128"], "Final image sizes (64 = one stage, 128 = two).")
flags.DEFINE_integer("batch", 20, "Batch size.", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Timed calls.", lower_bound=1)
flags.DEFINE_integer("words_num", 18, "Words per caption (MSMT-GAN: words_num - 2 tails).",
                     lower_bound=3)
flags.DEFINE_integer("gf_dim", None, "Generator width instead of the preset's (smoke runs).",
                     lower_bound=1)
FLAGS = flags.FLAGS


def _time(fn, repeats):
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv):
    entry.no_arguments(argv, "--presets, --sizes, --batch, --repeats, --help")
    bad = [p for p in FLAGS.presets if p not in PRESETS] + [
        s for s in FLAGS.sizes if not s.isdigit() or int(s) not in STAGES]
    if bad:
        raise app.UsageError(f"unknown --presets/--sizes values {bad}: presets "
                             f"{','.join(PRESETS)}, sizes {','.join(map(str, STAGES))}.")
    import tensorflow as tf  # after entry.run has hidden TensorFlow's C++ log lines

    from msmt_tf.models.config import ModelConfig
    from msmt_tf.models.generator import build_generator
    from msmt_tf.models.param_count import dummy_generator_inputs

    for name in FLAGS.presets:
        for size in (int(s) for s in FLAGS.sizes):
            arch = dict(PRESETS[name], **({"gf_dim": FLAGS.gf_dim} if FLAGS.gf_dim else {}))
            cfg = ModelConfig(stages=STAGES[size], **COMMON, **arch)
            gen = build_generator(cfg)
            inputs = {k: tf.constant(v) for k, v in dummy_generator_inputs(
                cfg, batch=FLAGS.batch, words_num=FLAGS.words_num).items()}
            gen(inputs, training=True)

            @tf.function
            def forward():
                return gen(inputs, training=True)["images"][-1]

            @tf.function
            def forward_backward():
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(gen(inputs, training=True)["images"][-1])
                return tape.gradient(loss, gen.trainable_variables)

            f = _time(lambda: forward().numpy(), FLAGS.repeats)
            fb = _time(lambda: [g.numpy() for g in forward_backward() if g is not None],
                       FLAGS.repeats)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
            print(f"{name} {size}px forward_s={f:.2f} forward_backward_s={fb:.2f} "
                  f"peak_rss_gb={rss:.2f}", flush=True)


if __name__ == "__main__":
    entry.run(main)
