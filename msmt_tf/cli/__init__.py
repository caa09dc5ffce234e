"""msmt_tf.cli."""
