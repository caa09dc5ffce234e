"""msmt_tf.export."""
