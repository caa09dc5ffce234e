"""Exponential moving average of a Keras model's trainable weights into a copy model.

As in the references (DM-GAN/AttnGAN ``code/trainer.py`` ``train``; ``copy_G_params`` /
``load_params`` in ``code/miscc/utils.py``): after every generator step
``avg = decay * avg + (1 - decay) * p`` over the *parameters* only (``trainable_weights``).
Buffers are not averaged: the references' EMA generator is the live network with averaged
parameters loaded into it, so it runs with the *live* BatchNorm moving statistics. ``update``
reproduces that by copying the non-trainable weights (BN moving mean/variance) after each
step (``copy_buffers=True``, the default). Without it the copy would keep its initial
statistics (mean 0, variance 1) and its inference-mode output would be a flat image.
Seed-generator states are never copied.

``num_updates`` (optional, e.g. the generator optimizer's ``iterations``) ramps the decay up as
``tf.train.ExponentialMovingAverage`` does: ``min(decay, (1 + n) / (10 + n))``, so a short run's
copy follows the live network early instead of staying near its random initialisation (at
decay 0.999 the plain average is still 61% initial weights after 500 steps). The references
have no ramp (``--ema_ramp=false`` in ``flags/paper_common.flags``).

The copy model is an ordinary Keras model (same class and config), so it is checkpointed,
exported and evaluated like the live one.
"""

import tensorflow as tf

from msmt_tf.training.checkpointing import SEED_STATE_NAME


def clone_model(model, *build_args, **build_kwargs):
    """A fresh instance of ``model``'s class from its config, built by calling it once.

    ``build_args``/``build_kwargs`` are sample inputs for that call (only shapes matter).
    The weights are copied from ``model``.
    """
    clone = model.__class__.from_config(model.get_config())
    if build_args or build_kwargs:
        clone(*build_args, **build_kwargs)
    elif not clone.built:
        raise ValueError(
            f"clone_model({model.name}): pass sample inputs so the copy can be built."
        )
    ExponentialMovingAverage._pairs(model, clone)  # checks structure
    clone.set_weights(model.get_weights())
    return clone


def _is_seed_state(v):
    return str(getattr(v, "path", "")).endswith(SEED_STATE_NAME) or getattr(v, "name", "") == SEED_STATE_NAME


class ExponentialMovingAverage:
    """``ema = decay * ema + (1 - decay) * w`` over trainable weights, into ``ema_model``.

    Args:
        model: the live (trained) Keras model.
        ema_model: a built copy with the same weight structure (``clone_model``).
        decay: EMA decay in [0, 1]; 0.999 as the references.
        copy_buffers: also copy the live model's non-trainable weights (BN statistics) on
            every ``update``.
        num_updates: optional scalar variable counting the updates so far (the trainer passes
            the generator optimizer's ``iterations``); with it the decay ramps up as ``min(decay, (1 + n) / (10 + n))``.

    ``update(condition=None)`` works eagerly, inside ``tf.function``, and inside ``strategy.run``
    (in a replica context it merges into the cross-replica context, so mirrored copies stay
    equal); with ``condition`` False the step is skipped.
    """

    def __init__(self, model, ema_model, decay: float = 0.999, copy_buffers: bool = True,
                 num_updates=None):
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"EMA decay={decay!r} must be in [0, 1] (--ema_decay).")
        self.model = model
        self.ema_model = ema_model
        self.decay = float(decay)
        self.copy_buffers = bool(copy_buffers)
        self.num_updates = num_updates
        self._trainable = self._pairs(model, ema_model, trainable=True)
        self._buffers = self._pairs(model, ema_model, trainable=False)

    @staticmethod
    def _pairs(model, ema_model, trainable=True):
        if trainable:
            a, b = model.trainable_weights, ema_model.trainable_weights
        else:
            a = [v for v in model.non_trainable_weights if not _is_seed_state(v)]
            b = [v for v in ema_model.non_trainable_weights if not _is_seed_state(v)]
        if len(a) != len(b) or any(tuple(x.shape) != tuple(y.shape) for x, y in zip(a, b)):
            raise ValueError(
                f"EMA copy {ema_model.name!r} does not match {model.name!r}: "
                f"{[tuple(x.shape) for x in a]} vs {[tuple(y.shape) for y in b]}; build it from "
                "the same config (ema.clone_model)."
            )
        return list(zip(a, b))

    def current_decay(self):
        """The decay of the next update: ``decay``, or its ramp with ``num_updates``."""
        decay = tf.constant(self.decay, tf.float32)
        if self.num_updates is None:
            return decay
        n = tf.cast(tf.convert_to_tensor(self.num_updates), tf.float32)
        return tf.minimum(decay, (1.0 + n) / (10.0 + n))

    @staticmethod
    def _mix(src, dst, decay):
        d = tf.cast(decay, dst.dtype)
        return d * tf.convert_to_tensor(dst) + (1.0 - d) * tf.cast(tf.convert_to_tensor(src), dst.dtype)

    def _in_replica_context(self):
        ctx = tf.distribute.get_replica_context()
        return ctx is not None and tf.distribute.has_strategy()

    def update(self, condition=None):
        """One EMA step over the trainable weights.

        Args:
            condition: optional scalar bool tensor; the step is skipped where it is False
                (pass the flag of ``precision.apply_gradients_if_finite`` so a skipped
                optimiser step is not averaged in either).
        """
        if self._in_replica_context():
            ctx = tf.distribute.get_replica_context()
            if condition is None:
                ctx.merge_call(lambda _strategy: self._update_cross())
            else:
                ctx.merge_call(
                    lambda strategy, c: self._update_cross(strategy.experimental_local_results(c)[0]),
                    args=(condition,),
                )
        else:
            self._update_cross(condition)

    def _update_cross(self, condition=None):
        def apply():
            decay = self.current_decay()
            for src, dst in self._trainable:
                dst.assign(self._mix(src, dst, decay))
            if self.copy_buffers:
                for src, dst in self._buffers:
                    dst.assign(tf.cast(tf.convert_to_tensor(src), dst.dtype))
            return tf.constant(True)

        if condition is None:
            apply()
        else:
            tf.cond(tf.convert_to_tensor(condition, tf.bool), apply, lambda: tf.constant(False))

    def copy_weights(self):
        """Sets the copy's trainable weights to the live model's (decay 0 for one step)."""
        for src, dst in self._trainable:
            dst.assign(tf.cast(tf.convert_to_tensor(src), dst.dtype))
