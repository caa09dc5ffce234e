"""Mixed precision, loss scaling and the non-finite step guard.

* ``set_precision("float32" | "mixed_float16" | "mixed_bfloat16")`` sets the global Keras
  dtype policy *before* models are built: layers then compute in float16/bfloat16 and keep
  float32 variables (the "master weights").
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

import logging

import keras
import tensorflow as tf

from msmt_tf import errors

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class NonFiniteError(errors.UserError, RuntimeError):
    """Too many non-finite steps in a row."""


def set_precision(precision: str):
    """Sets the global Keras dtype policy; returns the ``keras.DTypePolicy``."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision={precision!r} is not one of {list(PRECISIONS)}.")
    keras.mixed_precision.set_dtype_policy(precision)
    return keras.mixed_precision.dtype_policy()


def needs_loss_scaling(precision: str) -> bool:
    return precision == "mixed_float16"


def wrap_optimizer(optimizer, precision: str):
    """``LossScaleOptimizer(optimizer)`` for ``mixed_float16``, else ``optimizer`` itself."""
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
        self.precision = precision
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
