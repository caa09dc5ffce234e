"""The experiment config: the frozen configs of one invocation, one per domain.

``Configs`` holds ``.data`` (``DataConfig``), ``.model`` (``ModelConfig``), ``.train``
(``TrainConfig``), ``.damsm`` (``DAMSMConfig``) and ``.eval`` (``EvalConfig``). No two of them
share a field (``tests/test_flagfiles.py``): the stage sizes (``--base_size``, ``--stages``)
are the model's, the seed of the run (``--seed``, ``--deterministic``) the training config's,
and the code that needs them elsewhere (the data pipeline, a custom folder's split) is given
them. The entry points build it once from the flags (``msmt_tf.cli.common.configs_from_flags``);
a run's ``config.json`` stores it section by section (``msmt_tf.training.run_dir``), and
restoring a run rebuilds it from there.
"""

from msmt_tf.data.config import DataConfig
from msmt_tf.evaluation.config import EvalConfig
from msmt_tf.models.config import ModelConfig
from msmt_tf.training.config import TrainConfig
from msmt_tf.training.damsm_config import DAMSMConfig

# (section of Configs and of config.json, class), in the order of --help
SECTIONS = (
    ("data", DataConfig),
    ("model", ModelConfig),
    ("train", TrainConfig),
    ("damsm", DAMSMConfig),
    ("eval", EvalConfig),
)


def config_classes():
    """Yields ``(section, class)`` for every config domain."""
    yield from SECTIONS


class Configs:
    """The frozen configs of one invocation: ``.data``, ``.model``, ``.train``, ``.damsm``,
    ``.eval``."""

    def __init__(self, **configs):
        self.__dict__.update(configs)

    def to_dict(self):
        return {name: cfg.to_dict() for name, cfg in self.__dict__.items()}

    def items(self):
        return self.__dict__.items()
