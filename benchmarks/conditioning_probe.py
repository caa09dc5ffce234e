"""Does each discriminator's conditional head read the shape and colour words? Run by hand.

    python benchmarks/conditioning_probe.py --run=runs/shapes_ig_sdm2 --num_images=200

For real test images of a shapes run (its dataset's test split on disk), the
caption "a <size> <colour> <shape>" of the main object is compared with the same caption with
the shape word, or the colour word, replaced by another one. Prints, per discriminator, the
fraction of images whose conditional logit prefers the true caption and the mean logit gap:
0.5 and 0 mean the head ignores that word, so the generator gets no pressure to draw it
(docs/training.md, "How the quickstart's shapes follow their captions").
"""

import os
import sys

import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from msmt_tf.cli import entry  # noqa: E402

flags.DEFINE_string("run", None, "Run directory of a shapes run (its latest checkpoint).")
flags.DEFINE_integer("num_images", 200, "Test images to probe.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the replacement words.")
FLAGS = flags.FLAGS


def probe_captions(objects, rng, names, colours):
    """(true, shape-swapped, colour-swapped) caption lists for the main objects (the swapped
    words drawn from the data's ``names`` and ``colours``)."""
    true, shape, colour = [], [], []
    for o in objects:
        other_shape = rng.choice([s for s in names if s != o["shape"]])
        other_colour = rng.choice([c for c in colours if c != o["colour"]])
        true.append(f"a {o['size']} {o['colour']} {o['shape']}")
        shape.append(f"a {o['size']} {o['colour']} {other_shape}")
        colour.append(f"a {o['size']} {other_colour} {o['shape']}")
    return true, shape, colour


def main(argv):
    entry.no_arguments(argv, "--run, --num_images, --seed, --help")
    import tensorflow as tf  # after entry.run (oneDNN on, TensorFlow's C++ log lines hidden)
    from PIL import Image

    from msmt_tf import sampling
    from msmt_tf.data import shapes
    from msmt_tf.data.dataset import load_split
    from msmt_tf.training import checkpointing
    from msmt_tf.training.gan_trainer import build_discriminators
    from msmt_tf.inference import load_for_inference

    inf = load_for_inference(run_dir=FLAGS.run)
    cfgs = inf.configs
    data = cfgs.data
    if data.dataset != "shapes":
        sys.exit(f"{FLAGS.run} trained on --dataset={data.dataset}: the probe needs shapes.")
    prefix = inf.checkpoint  # the checkpoint of the generator and encoders just loaded
    ds = build_discriminators(cfgs.model, cfgs.train, 1)
    # Checked: a checkpoint without these discriminators (or of another shape) is an error,
    # not a probe of randomly initialised heads.
    checkpointing.read_checkpoint(
        prefix, {f"discriminator_{k}": d for k, d in enumerate(ds)},
        what=f"the discriminators built from {FLAGS.run}/config.json",
        hint="Give the run directory of a GAN training run (python -m msmt_tf.train).")
    split = load_split(data, "test")
    objects = shapes.load_attributes(data.resolved_data_dir, "test")
    n = min(FLAGS.num_images, len(split))
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32)
                  for p in split.image_paths[:n]]) / 127.5 - 1.0
    captions = probe_captions([objects[k][0] for k in split.keys[:n]],
                              np.random.default_rng(FLAGS.seed), data.shapes_name_list,
                              data.shapes_colour_list)

    def sentence(caps):
        enc = sampling.encode_captions(inf.vocab, caps, data.words_num)
        return inf.text_encoder(tf.constant(enc.ids), training=False)[1]

    sentences = [sentence(c) for c in captions]
    print(f"{prefix}: {len(x)} test images")
    for d in ds:
        size = d.stage_size
        code = d(tf.image.resize(x, [size, size], antialias=True), training=False)
        true, shape, colour = [np.asarray(d.cond_logits(code, s, training=False))
                               for s in sentences]
        print(f"D {size:3d} px: true caption preferred over a swapped shape word "
              f"{np.mean(true > shape):.2f} (mean logit gap {np.mean(true - shape):.3f}), over a "
              f"swapped colour word {np.mean(true > colour):.2f} (gap {np.mean(true - colour):.3f})")


if __name__ == "__main__":
    flags.mark_flag_as_required("run")
    entry.run(main, onednn=True)
