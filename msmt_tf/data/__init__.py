"""msmt_tf.data: datasets (AttnGAN layout, custom folders, synthetic shapes) and tf.data.

Light imports only here (``shapes`` runs in spawned worker processes); the TensorFlow
pipeline is imported on first use of ``make_dataset``.
"""

from msmt_tf.data.config import DataConfig
from msmt_tf.data.dataset import Split, ensure_dataset, load_split
from msmt_tf.data.errors import DataError
from msmt_tf.data.vocabulary import Vocabulary, tokenize


def make_dataset(cfg, split, batch_size, training, *, image_sizes, seed=None):
    """See ``msmt_tf.data.pipeline.make_dataset``."""
    from msmt_tf.data import pipeline

    return pipeline.make_dataset(cfg, split, batch_size, training, image_sizes=image_sizes,
                                 seed=seed)


__all__ = ["DataConfig", "DataError", "Split", "Vocabulary", "ensure_dataset", "load_split",
           "make_dataset", "tokenize"]
