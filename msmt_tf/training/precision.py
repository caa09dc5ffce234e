"""Mixed precision, loss scaling and the non-finite step guard.

* ``--precision=auto`` (the default) picks the policy that fits the machine:
  ``choose_precision`` decides from the facts (CPU flags, GPU compute capabilities, oneDNN)
  and ``resolve`` detects them (``cpu_flags``, ``gpu_capabilities``) and logs the choice:
  ``mixed_float16`` on GPUs with tensor cores (compute capability >= 7.0, NVIDIA's
  mixed-precision training guide), ``mixed_bfloat16`` on CPUs with native bfloat16
  (AVX512_BF16 or AMX-BF16), ``float32`` otherwise. An explicit value always wins.
* ``policy_scope(precision)`` sets the Keras dtype policy while models are built (layers
  then compute in float16/bfloat16 and keep float32 variables, the "master weights") and
  restores the previous one; ``set_precision`` sets it for good.
* ``wrap_optimizer(opt, precision)`` wraps in ``keras.optimizers.LossScaleOptimizer`` for
  float16 (dynamic scale, initial 2**15, doubled after 2000 finite steps, halved on overflow).
  The train step computes gradients of ``optimizer.scale_loss(loss)``; the wrapper unscales.
* ``apply_gradients_if_finite`` applies the update only if the losses and gradients are finite
  on every replica; otherwise nothing changes (no moment update, no ``iterations`` increment;
  a ``LossScaleOptimizer`` also halves its scale). It returns the finite flag.
* ``NonFiniteCounter`` counts skipped steps on the host and raises ``NonFiniteError`` after
  ``--max_nonfinite_steps`` in a row, with a message that says what to change. A loss-scale
  overflow is a skipped step too; ``max_nonfinite_steps`` overflows in a row would take the
  scale from 2**15 to below 2**-4, so it is no longer a transient.
"""

import contextlib
import dataclasses
import functools
import logging

import keras
import tensorflow as tf

from msmt_tf import errors

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
AUTO = "auto"
# /proc/cpuinfo flags of native bfloat16 arithmetic: AVX512_BF16 (Cooper Lake, Zen 4 and
# later) and AMX-BF16 (Sapphire Rapids and later).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
TENSOR_CORE_CAPABILITY = (7, 0)  # Volta and later


class NonFiniteError(errors.UserError, RuntimeError):
    """Too many non-finite steps in a row."""


@dataclasses.dataclass(frozen=True)
class Resolution:
    """What ``--precision`` became: ``precision`` (one of ``PRECISIONS``) and why."""

    requested: str
    precision: str
    reason: str

    def message(self):
        """The INFO line, e.g. ``precision auto -> mixed_bfloat16 (CPU has avx512_bf16)``."""
        if self.requested == self.precision:
            return f"precision {self.precision} ({self.reason})"
        return f"precision {self.requested} -> {self.precision} ({self.reason})"


def choose_precision(requested, cpu_flags=(), gpu_capabilities=(), onednn=True) -> Resolution:
    """Resolves ``--precision`` from the facts of a machine (no detection: testable anywhere).

    Args:
        requested: ``"auto"`` or one of ``PRECISIONS`` (returned as is).
        cpu_flags: the CPU's feature flags (``/proc/cpuinfo`` names, ``cpu_flags()``).
        gpu_capabilities: one ``(major, minor)`` compute capability per visible GPU, None
            where unknown (``gpu_capabilities()``).
        onednn: whether TensorFlow runs its oneDNN CPU kernels (its bfloat16 kernels).

    With GPUs the step runs on them: ``mixed_float16`` if every GPU has tensor cores
    (capability >= 7.0), else ``float32``. Without GPUs: ``mixed_bfloat16`` if the CPU has
    AVX512_BF16 or AMX-BF16 and oneDNN is on, else ``float32``.
    """
    if requested != AUTO:
        if requested not in PRECISIONS:
            raise ValueError(f"--precision={requested!r} is not one of {[AUTO, *PRECISIONS]}.")
        return Resolution(requested, requested, "set by --precision")
    gpus = list(gpu_capabilities)
    if gpus:
        if any(c is None for c in gpus):
            return Resolution(AUTO, "float32", "GPU compute capability unknown")
        low = min(tuple(c) for c in gpus)
        shown = f"{low[0]}.{low[1]}"
        if low >= TENSOR_CORE_CAPABILITY:
            return Resolution(AUTO, "mixed_float16",
                              f"GPU compute capability {shown} >= 7.0: tensor cores")
        return Resolution(AUTO, "float32", f"GPU compute capability {shown} < 7.0: no tensor cores")
    native = [f for f in BF16_CPU_FLAGS if f in set(cpu_flags)]
    if not native:
        return Resolution(AUTO, "float32", "no GPU, and the CPU has no " + "/".join(BF16_CPU_FLAGS))
    if not onednn:
        return Resolution(AUTO, "float32", f"CPU has {native[0]}, but TensorFlow's oneDNN kernels "
                          "are off (TF_ENABLE_ONEDNN_OPTS=0)")
    return Resolution(AUTO, "mixed_bfloat16", f"CPU has {native[0]}")


def cpu_flags(path="/proc/cpuinfo") -> frozenset:
    """The CPU's feature flags from Linux's ``/proc/cpuinfo`` (empty if unreadable: other
    systems count as having no native bfloat16)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def gpu_capabilities() -> list:
    """``(major, minor)`` compute capability of every visible GPU (None where unknown)."""
    caps = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            cap = tf.config.experimental.get_device_details(device).get("compute_capability")
        except (ValueError, RuntimeError):
            cap = None
        caps.append(tuple(cap) if cap else None)
    return caps


BF16_GPU_CAPABILITY = (8, 0)  # Ampere and later compute in bfloat16 natively


def explicit_warning(precision, cpu_flags=(), gpu_capabilities=(), onednn=True):
    """The warning for an explicit mixed ``precision`` the machine (its facts, as
    ``choose_precision``'s) has no native support for, else None: float16 needs GPUs of compute
    capability >= 7.0, bfloat16 GPUs of >= 8.0 or, without GPUs, a CPU with AVX512_BF16/AMX-BF16
    and oneDNN."""
    gpus = list(gpu_capabilities)
    if precision == "mixed_float16":
        needs, ok = "GPUs of compute capability >= 7.0", bool(gpus) and all(
            c is not None and tuple(c) >= TENSOR_CORE_CAPABILITY for c in gpus)
    elif precision == "mixed_bfloat16":
        needs = "GPUs of compute capability >= 8.0 or a CPU with " + "/".join(BF16_CPU_FLAGS)
        if gpus:
            ok = all(c is not None and tuple(c) >= BF16_GPU_CAPABILITY for c in gpus)
        else:
            ok = onednn and any(f in set(cpu_flags) for f in BF16_CPU_FLAGS)
    else:
        return None
    if ok:
        return None
    return (f"--precision={precision} needs {needs} to run natively; here it is emulated and "
            "likely slower than float32 (--precision=auto picks what this machine runs fast).")


@functools.lru_cache(maxsize=None)
def resolve(requested: str) -> Resolution:
    """``choose_precision`` on this machine's facts; logs the choice once per process (and a
    warning for an explicit mixed policy the machine has no native support for)."""
    from msmt_tf.training import onednn

    facts = (cpu_flags(), gpu_capabilities(), onednn.onednn_enabled())
    if requested == AUTO:
        res = choose_precision(AUTO, *facts)
    else:
        res = choose_precision(requested)
        warning = explicit_warning(requested, *facts)
        if warning:
            logging.warning("%s", warning)
    logging.info("%s", res.message())
    return res


def concrete(precision: str) -> str:
    """``precision`` itself, or what ``"auto"`` resolves to on this machine."""
    return resolve(precision).precision if precision == AUTO else precision


def resolve_train_config(train_cfg):
    """``train_cfg`` with ``precision`` resolved (the same object if it already is)."""
    if train_cfg.precision != AUTO:
        return train_cfg
    return dataclasses.replace(train_cfg, precision=concrete(AUTO))


def set_precision(precision: str):
    """Sets the global Keras dtype policy (``"auto"`` resolved); returns the policy."""
    precision = concrete(precision)
    if precision not in PRECISIONS:
        raise ValueError(f"--precision={precision!r} is not one of {list(PRECISIONS)}.")
    keras.mixed_precision.set_dtype_policy(precision)
    return keras.mixed_precision.dtype_policy()


@contextlib.contextmanager
def policy_scope(precision: str):
    """Within: the Keras dtype policy of ``precision`` (layers read it when constructed);
    after: the previous policy again. Yields the policy."""
    previous = keras.mixed_precision.dtype_policy()
    try:
        yield set_precision(precision)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def needs_loss_scaling(precision: str) -> bool:
    return precision == "mixed_float16"


def checkpoint_compatible(old: str, new: str) -> bool:
    """Whether a run's checkpoints written under precision ``old`` restore under ``new``: the
    variables are float32 under every policy, but ``mixed_float16`` checkpoints a
    ``LossScaleOptimizer`` (other variable keys, the loss scale)."""
    return needs_loss_scaling(old) == needs_loss_scaling(new)


def wrap_optimizer(optimizer, precision: str):
    """``LossScaleOptimizer(optimizer)`` for ``mixed_float16``, else ``optimizer`` itself."""
    precision = concrete(precision)
    if needs_loss_scaling(precision) and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def loss_scale(optimizer):
    """Current dynamic loss scale (1.0 without loss scaling), as a float32 tensor."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(tf.convert_to_tensor(optimizer.dynamic_scale), tf.float32)
    return tf.constant(1.0, tf.float32)


def all_finite(*structures):
    """Scalar bool tensor: every float tensor in the (nested) structures is finite."""
    flags = [tf.constant(True)]
    for t in tf.nest.flatten(structures):
        if t is None:
            continue
        if isinstance(t, tf.IndexedSlices):
            t = t.values
        t = tf.convert_to_tensor(t)
        if t.dtype.is_floating:
            flags.append(tf.reduce_all(tf.math.is_finite(t)))
    return tf.reduce_all(tf.stack(flags))


def apply_gradients_if_finite(optimizer, grads, variables, losses=()):
    """Applies ``grads`` to ``variables`` only if ``losses`` and ``grads`` are all finite.

    Call it where ``optimizer.apply`` would be called: eagerly, in a ``tf.function``, or in
    the replica function of ``strategy.run``. The decision is all-reduced so every replica
    (and worker) skips or applies together.

    Returns:
        Scalar bool tensor, True if the update was applied (for a ``LossScaleOptimizer`` an
        overflowing scaled gradient also returns False: the wrapper skips that step).
    """
    grads = list(grads)
    variables = list(variables)
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise RuntimeError(
            "apply_gradients_if_finite must be called in a replica context "
            "(inside strategy.run or outside any cross-replica code)."
        )

    def agreed(local_ok):
        bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(local_ok), tf.float32))
        return tf.equal(bad, 0.0)

    loss_ok = agreed(all_finite(losses))
    ok = tf.logical_and(loss_ok, agreed(all_finite(grads)))
    # A LossScaleOptimizer must see overflowing gradients itself (it halves the scale), so it
    # is gated only on the losses; it skips the update on non-finite gradients by itself.
    gate = loss_ok if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else ok

    def cross_replica(distribution, ok, grads):
        flag = distribution.experimental_local_results(ok)[0]

        def apply_fn():
            distribution.extended.call_for_each_replica(optimizer.apply, args=(grads, variables))
            return tf.constant(True)

        def skip_fn():
            return tf.constant(False)

        # cond in the cross-replica context: optimizer.apply calls merge_call, which is not
        # allowed inside a cond branch of a replica context (same pattern as Keras' LSO).
        return tf.cond(flag, apply_fn, skip_fn)

    ctx.merge_call(cross_replica, args=(gate, grads))
    return ok


class NonFiniteCounter:
    """Host-side count of skipped (non-finite) steps; aborts after too many in a row.

    Args:
        max_in_row: ``--max_nonfinite_steps``.
        precision: the ``--precision`` in use (the abort message suggests float32 otherwise).
        lr_flags: flag names to lower, quoted in the message.
    """

    def __init__(self, max_in_row: int = 20, precision: str = "float32", lr_flags=("--g_lr", "--d_lr")):
        if max_in_row < 1:
            raise ValueError(f"--max_nonfinite_steps={max_in_row} must be >= 1.")
        self.max_in_row = int(max_in_row)
        self.precision = concrete(precision)
        self.lr_flags = tuple(lr_flags)
        self.in_row = 0
        self.total = 0

    def update(self, finite, step: int) -> bool:
        """Records one step; returns ``finite`` as a bool. Raises ``NonFiniteError``."""
        finite = bool(finite)
        if finite:
            self.in_row = 0
            return True
        self.in_row += 1
        self.total += 1
        logging.warning(
            "Non-finite loss or gradient at step %d: update skipped (%d in a row, %d in total).",
            step, self.in_row, self.total,
        )
        if self.in_row >= self.max_in_row:
            hint = "/".join(self.lr_flags)
            advice = f"lower {hint}"
            if self.precision != "float32":
                advice += " or use --precision=float32"
            else:
                advice += " or check the data for NaN/Inf"
            raise NonFiniteError(
                f"{self.in_row} non-finite steps in a row at step {step}: {advice} "
                f"(or raise --max_nonfinite_steps={self.max_in_row})."
            )
        return False
