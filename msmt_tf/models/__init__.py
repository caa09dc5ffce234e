"""msmt_tf.models."""
