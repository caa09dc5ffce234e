"""msmt_tf.data."""
