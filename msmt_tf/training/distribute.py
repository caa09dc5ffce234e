"""``tf.distribute`` setup: strategies, logical CPU devices, datasets and loss scaling.

* ``make_strategy("default" | "mirrored" | "multiworker")``:
  default -> ``tf.distribute.get_strategy()`` (one device, no-op);
  mirrored -> ``MirroredStrategy`` over all local GPUs, or over all logical CPU devices when
  there is no GPU (see ``split_cpu``; cross-device reduction through one device);
  multiworker -> ``MultiWorkerMirroredStrategy`` configured from the ``TF_CONFIG`` environment
  variable (create it first thing in the program, before any other TF op).
* ``split_cpu(n)`` splits the physical CPU into ``n`` logical devices; it must run before TF
  initialises its devices (tests run it in a fresh subprocess).
* ``distribute_dataset`` batches nothing itself: pass a dataset already batched with the
  *global* batch size (``drop_remainder=True``, static shapes); it is split across replicas,
  and across workers by data (``AutoShardPolicy.DATA``), so file-less datasets work.
* ``compute_average_loss(per_example, global_batch_size)``: sum / global batch, the scaling that
  makes the all-reduced (summed) gradients equal to the single-device mean.
"""

import json
import os

import tensorflow as tf

from msmt_tf import errors

STRATEGIES = ("default", "mirrored", "multiworker")


class DistributeError(errors.UserError, RuntimeError):
    """A strategy cannot be created as asked; the message says what to do."""


def split_cpu(n: int):
    """Configures ``n`` logical CPU devices (before TF initialises its devices)."""
    if n < 1:
        raise ValueError(f"split_cpu(n={n}): n must be >= 1.")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as e:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing == n:
            return
        raise DistributeError(
            f"cannot split the CPU into {n} logical devices: TensorFlow already initialised "
            f"{existing} ({e}). Call split_cpu() at program start, before any TF op."
        ) from None


def make_strategy(name: str = "default"):
    """Returns the ``tf.distribute.Strategy`` for ``--strategy=name``."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if name == "multiworker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise DistributeError(
                "--strategy=multiworker needs the TF_CONFIG environment variable "
                '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}); see docs/training.md.'
            )
        try:
            json.loads(raw)
        except json.JSONDecodeError as e:
            raise DistributeError(f"TF_CONFIG is not valid JSON ({e}); fix the environment variable.") from None
        impl = (
            tf.distribute.experimental.CommunicationImplementation.AUTO
            if tf.config.list_physical_devices("GPU")
            else tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(implementation=impl)
        )
    raise ValueError(f"--strategy={name!r} is not one of {list(STRATEGIES)}.")


def worker_info(strategy):
    """``(task_id, is_chief)`` of this process (``(0, True)`` outside multi-worker runs)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0, True
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    chief = task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )
    return int(task_id), bool(chief)


def distribute_dataset(strategy, dataset: tf.data.Dataset):
    """Splits a dataset batched with the global batch size across replicas and workers."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def compute_average_loss(per_example_loss, global_batch_size: int):
    """Sum of per-example losses / global batch (``tf.nn.compute_average_loss``), float32."""
    per_example_loss = tf.cast(per_example_loss, tf.float32)
    return tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)


def any_replica(strategy, flag: bool) -> bool:
    """True if ``flag`` is True on any worker (e.g. one worker received SIGTERM)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return bool(flag)  # one process: the flag is already global
    value = tf.constant(1.0 if flag else 0.0)
    per_replica = strategy.run(lambda: tf.identity(value))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy() > 0)
