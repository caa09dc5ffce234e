"""msmt_tf.evaluation."""
