"""DAMSM encoder pretraining.

    python -m msmt_tf.pretrain_damsm --flagfile=flags/cub.flags [--damsm_dir=runs/cub_damsm]

Writes the encoder directory read by `python -m msmt_tf.train` (see `msmt_tf.models.damsm`),
with TensorBoard logs and a resumable checkpoint (also on SIGTERM/SIGINT); runs under
--strategy. Running the same command again resumes.
"""

from msmt_tf.cli import common, entry

common.define_all_flags()


def main(argv):
    entry.no_arguments(argv)
    import sys

    from msmt_tf.training import runner

    trainer = runner.damsm_pretraining(common.configs_from_flags())
    best = trainer.train(progress_stream=sys.stderr)
    if trainer.stopped:  # as every worker agreed (the marker file is the chief's)
        print(f"DAMSM pretraining in {trainer.out_dir} stopped early by a signal: run the same "
              "command again to resume.")
        return
    print(f"DAMSM encoders written to {trainer.out_dir}")
    if best:
        print("best validation: " + " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items()))


def run():
    entry.run(main, onednn=True)  # oneDNN: 1.7x faster CPU steps


if __name__ == "__main__":
    run()
