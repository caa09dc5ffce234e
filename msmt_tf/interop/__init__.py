"""msmt_tf.interop: import of weights released by other implementations."""
