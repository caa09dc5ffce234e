"""msmt_tf.training."""
