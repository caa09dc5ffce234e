"""``python -m msmt_tf.export``: see ``msmt_tf.export.cli``."""

from msmt_tf.export.cli import run

run()
