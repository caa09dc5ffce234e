"""GAN training: the main job.

    python -m msmt_tf.train                                   # quickstart on the shapes data
    python -m msmt_tf.train --flagfile=flags/msmt_cub.flags   # MSMT-GAN on CUB (paper setup)

Prepares the data, pretrains the DAMSM encoders if --damsm_dir has none, then trains (or
resumes) the run in --run_dir (default runs/<dataset>_<preset>). See docs/training.md.
"""

from msmt_tf.cli import common, entry

common.define_all_flags()


def main(argv):
    entry.no_arguments(argv)
    from msmt_tf.training import runner

    configs = common.configs_from_flags()
    runner.train(configs)


def run():
    entry.run(main, onednn=True)  # oneDNN: 1.7x faster CPU steps


if __name__ == "__main__":
    run()
