"""TensorFlow's oneDNN CPU kernels, switched on by every entry point.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it is imported, and enables oneDNN by
default only on CPUs with AVX-512 VNNI/BF16 or AMX. On the 2-core AVX2 machines this project
is developed on, oneDNN makes the FID Inception about 30% faster
(``benchmarks/inception_throughput.py``, pool_3 features within 1e-5 of the default kernels)
and the quickstart GAN step 1.7x faster (``benchmarks/train_step.py``: 0.58 s vs 0.98 s).
So the entry points (``train``, ``pretrain_damsm``, ``evaluate``, ``tools/fid.py``,
``sample``) call ``enable_onednn`` before they import TensorFlow (``msmt_tf.cli.entry.run(main,
onednn=True)``, before ``main`` runs); a user who sets the variable
(``TF_ENABLE_ONEDNN_OPTS=0``) keeps their choice. ``onednn_enabled`` tells the precision choice
(``msmt_tf.training.precision``) whether TensorFlow's bfloat16 CPU kernels are there.
"""

import os
import sys


def enable_onednn():
    """Sets ``TF_ENABLE_ONEDNN_OPTS=1`` unless set or TensorFlow is already imported.

    Returns True if the variable was set here. Does not import TensorFlow.
    """
    if "tensorflow" in sys.modules or "TF_ENABLE_ONEDNN_OPTS" in os.environ:
        return False
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return True


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN CPU kernels (imports TensorFlow)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"
