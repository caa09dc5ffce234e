"""msmt_tf.layers."""
