"""msmt_tf.io."""
