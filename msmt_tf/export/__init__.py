"""msmt_tf.export: the SavedModel endpoints (``saved_model.py``), the in-graph tokenizer
(``tokenizer.py``) and the entry point ``python -m msmt_tf.export`` (``cli.py``)."""
