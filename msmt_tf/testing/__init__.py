"""msmt_tf.testing."""
