"""GAN training: the main job.

    python -m msmt_tf.train                                   # quickstart on the shapes data
    python -m msmt_tf.train --flagfile=flags/msmt_cub.flags   # MSMT-GAN on CUB (paper setup)

Prepares the data, pretrains the DAMSM encoders if --damsm_dir has none, then trains (or
resumes) the run in --run_dir (default runs/<dataset>_<preset>). See docs/training.md.
"""

import logging

from absl import app

from msmt_tf.cli import common, onednn

common.define_all_flags()


def main(argv):
    del argv
    onednn.enable_onednn()  # before TensorFlow is imported: 1.7x faster CPU steps
    logging.getLogger().setLevel(logging.INFO)
    from msmt_tf.training import runner

    configs = common.configs_from_flags()
    runner.train(configs)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
