"""Images from your own captions with the EMA generator of a trained run.

Usage:
  python -m msmt_tf.sample --run_dir=runs/shapes_msmt --text="a red circle" \\
      --text="a small blue square" [--num_per_caption=4] [--seed=0] [--out=samples/]
  python -m msmt_tf.sample --checkpoint=runs/x/checkpoints/ckpt-5000 --captions_file=caps.txt \\
      --stages --maps --unknown=error

Writes ``caption{i:03d}_sample{j:02d}.png`` (final stage), ``contact_sheet.png`` (a row per
caption, the caption printed under it) and ``samples.json`` into ``--out`` (default
``<run_dir>/samples``); ``--stages`` adds ``..._stage{k}.png``, ``--maps`` adds
``..._maps.png``. Unknown words are listed per caption on stderr; see ``msmt_tf.sampling``.
Only the flags of ``SampleConfig`` exist here (the run's config.json gives the model).
"""

import sys

from absl import flags

from msmt_tf.cli import entry, flagutil
from msmt_tf.inference_config import SampleConfig

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    if "text" not in flag_values:
        # Repeatable: flagutil would make a comma-separated list, and captions contain commas.
        flags.DEFINE_multi_string(
            "text", [], SampleConfig.__dataclass_fields__["text"].metadata["help"],
            flag_values=flag_values)
    flagutil.define_flags(SampleConfig, flag_values)


def main(argv, flag_values=FLAGS):
    entry.no_arguments(argv, "--text=CAPTION, --run_dir")
    cfg = flagutil.from_flags(SampleConfig, flag_values)  # a bad flag fails before TensorFlow
    from msmt_tf import sampling

    out_dir, samples, _ = sampling.sample_run(cfg)
    enc = samples.encoded
    for i, caption in enumerate(enc.captions):
        notes = []
        if enc.unknown[i]:
            notes.append("unknown words dropped: "
                         + sampling.shorten(", ".join(enc.unknown[i]), sampling.WORDS_LIMIT))
        if enc.truncated[i]:
            notes.append(f"words after the first {enc.ids.shape[1]} dropped: "
                         + sampling.shorten(", ".join(enc.truncated[i]), sampling.WORDS_LIMIT))
        if notes:
            print(f"caption {i} {sampling.shorten(caption, quote=True)}: {'; '.join(notes)}",
                  file=sys.stderr)
    if cfg.maps and not samples.attention:
        print("--maps: the generator has a single stage, so there are no refinement maps.",
              file=sys.stderr)
    print(f"Wrote {len(enc.captions) * samples.num_per_caption} images and "
          f"{sampling.SHEET_FILE} to {out_dir}")


def run():
    define_flags()
    entry.run(main, onednn=True)


if __name__ == "__main__":
    run()
