"""DAMSM encoder pretraining (taoxugit/AttnGAN code/pretrain_DAMSM.py (commit 0d000e6), losses
code/miscc/losses.py:words_loss and sent_loss; identical in MinfengZhu/DM-GAN).

Objective: `w_loss0 + w_loss1 + s_loss0 + s_loss1` on real image-caption batches, same-class
negatives masked. One Adam (betas 0.5/0.999) over the text encoder and the two trainable
projections of the image encoder; the text-encoder gradients are clipped to global norm
`--damsm_clip`; the Inception trunk is frozen and runs in inference mode.

Deviations from the references, all documented in `docs/training.md`:
- The references re-create Adam every epoch (moments reset); we keep one optimizer and set
  its learning rate per epoch (a continuing run must not depend on where it was resumed).
- The references run the frozen trunk's BN in training mode, drifting its statistics
  (`cnn_model.train()` in code/pretrain_DAMSM.py:train); our trunk always uses its stored
  statistics.
- Validation averages over the rows of the batches it ran (the references divide the sum of
  51 batch means by 50), counting only rows left with a negative (below).

Validation also reports within-batch retrieval R@1 (image -> text and text -> image, sentence
cosine, same-class candidates other than the true one excluded, as in the loss).

A row whose batch holds only captions of its own class has no negative left after the
same-class masking: its loss is exactly 0 and its R@1 is 1 by construction, not a
measurement. Validation leaves such rows out of every mean and reports ``rows_counted`` of
``rows_total``; when no row counts (e.g. a test split of one class) every value is NaN
(undefined) and a warning says why. Training keeps the references' objective (such rows
contribute 0 loss and no gradient).
"""

import json
import logging
import math
import os
import time

import numpy as np
import tensorflow as tf
import keras

from msmt_tf import losses
from msmt_tf.models import damsm
from msmt_tf.training import checkpointing, distribute, loop as loop_lib

STOPPED_FILE = "pretraining_stopped.json"

log = logging.getLogger(__name__)


def damsm_learning_rate(cfg, epoch):
    """The references' schedule: after each epoch, `lr *= decay` if `lr > lr0 * min_ratio`.

    With 0.002, 0.98 and 0.1 that is 114 decays, ending at 0.002 * 0.98**114 = 1.9995e-4
    (the epoch loop of taoxugit/AttnGAN code/pretrain_DAMSM.py (commit 0d000e6):
    `if lr > cfg.TRAIN.ENCODER_LR/10.: lr *= 0.98`).
    """
    lr = cfg.damsm_lr
    floor = cfg.damsm_lr * cfg.damsm_min_lr_ratio
    for _ in range(epoch):
        if lr <= floor:
            break
        lr *= cfg.damsm_lr_decay
    return lr


LOSS_TERMS = ("w_loss0", "w_loss1", "s_loss0", "s_loss1")
R1_TERMS = ("r1_image_to_text", "r1_text_to_image")


def negatives_per_row(class_ids):
    """Candidates of another class per row (int32 ``[B]``): what the same-class mask leaves.

    The mask is symmetric, so a row (image -> captions) and its column (caption -> images)
    have the same count; it is 0 for every row of a batch of a single class.
    """
    ids = tf.reshape(class_ids, [-1])
    return tf.reduce_sum(tf.cast(tf.not_equal(ids[:, None], ids[None, :]), tf.int32), axis=1)


def retrieval_hits(image_code, sentence, class_ids):
    """Within-batch R@1 hits per row in both directions with same-class masking (float32 [B])."""
    img = tf.math.l2_normalize(tf.cast(image_code, tf.float32), axis=-1)
    sen = tf.math.l2_normalize(tf.cast(sentence, tf.float32), axis=-1)
    scores = tf.matmul(img, sen, transpose_b=True)
    n = tf.shape(scores)[0]
    ids = tf.reshape(class_ids, [-1])
    same = tf.logical_and(tf.equal(ids[:, None], ids[None, :]), tf.logical_not(tf.eye(n, dtype=tf.bool)))
    scores = tf.where(same, -2.0 * tf.ones_like(scores), scores)
    target = tf.range(n, dtype=tf.int64)
    i2t = tf.cast(tf.equal(tf.argmax(scores, axis=1), target), tf.float32)
    t2i = tf.cast(tf.equal(tf.argmax(scores, axis=0), target), tf.float32)
    return i2t, t2i


def validation_means(sums):
    """The reported validation metrics from per-row sums accumulated over the test batches.

    Args:
        sums: dict with ``rows_counted`` and ``rows_total`` (rows with / of all rows) and, for
            every ``LOSS_TERMS`` and ``R1_TERMS`` name, the sum of that per-row value over the
            counted rows.

    Returns:
        dict: each term's mean over the counted rows, ``loss`` = the sum of the four loss
        means, and the two row counts; every mean is NaN when no row counted.
    """
    counted = int(sums["rows_counted"])
    out = {}
    for k in LOSS_TERMS + R1_TERMS:
        out[k] = float(sums[k]) / counted if counted else float("nan")
    out["loss"] = sum(out[k] for k in LOSS_TERMS)
    out["rows_counted"] = counted
    out["rows_total"] = int(sums["rows_total"])
    return out


class DAMSMTrainer(loop_lib.Task):
    """Trains the DAMSM encoders on one dataset and writes an encoder directory (the DAMSM
    `loop.Task`; `train` runs it with `loop.Loop`).

    Directory layout: the best encoders at the top level (`models.damsm`), `last/` the
    latest validated ones, `ckpt/` the resumable state (`checkpointing.TrainCheckpoint`:
    encoders (with their dropout seed states), optimizer, step, epoch, best validation loss,
    Keras' global seed generator; saved after every epoch, every ``--checkpoint_every``
    steps, at the end and on SIGTERM/SIGINT),
    `tensorboard/` + `metrics.jsonl` (``damsm_train/*`` every ``--log_every`` steps,
    ``damsm_val/*`` after each validation), and `pretraining_stopped.json` while a run stopped
    by a signal is unfinished.

    Under a multi-replica strategy each replica's rows take their negatives from the rows of
    their replica (as the GAN step's DAMSM term): ``--damsm_batch_size`` is the global batch,
    so N replicas see N times fewer negatives per row than one device. The text-encoder
    gradients are clipped by the global norm one device would compute from the replicas'
    gradients (`_replica_step`).

    Args:
        data_cfg, model_cfg, train_cfg, damsm_cfg: the frozen configs (`train_cfg` supplies
            the seed, gamma1/2/3, Adam's betas/epsilon and the loop's log/checkpoint cadence).
        out_dir: encoder directory.
        train_ds, test_ds: `tf.data` datasets of the `msmt_tf.data` format (`train_ds` one
            epoch of global batches, `drop_remainder`).
        vocab: the dataset vocabulary (saved with the encoders).
        steps_per_epoch: batches in one training epoch.
        strategy: a `tf.distribute.Strategy` (default: the default strategy).
        is_chief: whether this worker writes the directory.
    """

    def __init__(self, data_cfg, model_cfg, train_cfg, damsm_cfg, out_dir, train_ds, test_ds,
                 vocab, steps_per_epoch, load_trunk_weights=True, strategy=None, is_chief=True):
        self.data_cfg = data_cfg
        self.model_cfg = model_cfg
        self.train_cfg = train_cfg
        self.cfg = damsm_cfg
        self.out_dir = out_dir
        self.strategy = strategy or tf.distribute.get_strategy()
        self.is_chief = is_chief
        self.test_ds = test_ds
        self.vocab = vocab
        self.steps_per_epoch = steps_per_epoch
        keras.utils.set_random_seed(train_cfg.seed)
        with self.strategy.scope():
            self.text = damsm.build_text_encoder(model_cfg, len(vocab))
            self.image = damsm.build_image_encoder(
                model_cfg, variant=damsm_cfg.damsm_image_variant, resize=damsm_cfg.damsm_resize,
                seed=train_cfg.seed, load_trunk_weights=load_trunk_weights)
            self.optimizer = keras.optimizers.Adam(
                learning_rate=damsm_cfg.damsm_lr, beta_1=train_cfg.beta_1,
                beta_2=train_cfg.beta_2, epsilon=train_cfg.adam_epsilon)
            self.text_vars = self.text.trainable_variables
            self.image_vars = self.image.trainable_variables
            self.optimizer.build(self.text_vars + self.image_vars)
        self.best = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_val_loss")
        # The names of the checkpoints before the shared loop (text, image, optimizer, step,
        # epoch, best), so their directories resume. The encoders' variables include their
        # dropout seed states; `rng` (Keras' global seed generator) is new, restored if present.
        self.checkpoint = checkpointing.TrainCheckpoint(
            os.path.join(out_dir, "ckpt"), keep=1, checkpoint_every=train_cfg.checkpoint_every,
            rng=checkpointing.RngState(), is_chief=is_chief,
            optional=("rng",),
            restore_hint="Use the same flags, or another --damsm_dir to start over.",
            text=self.text, image=self.image, optimizer=self.optimizer, best=self.best)
        self.train_ds = distribute.distribute_dataset(self.strategy, train_ds)
        self._train_step = tf.function(self._distributed_step)
        self._eval_step = tf.function(self._eval_step_fn)
        self._lr = damsm_cfg.damsm_lr
        self.best_metrics = None
        self.result = None

    @property
    def step(self):
        return self.checkpoint.step

    @property
    def epoch(self):
        return self.checkpoint.epoch

    # ------------------------------------------------------------------ steps
    def _rows(self, batch, training):
        """Per-row DAMSM losses ``[B]`` (R@1 hits too unless ``training``) and which rows have
        a negative left after the same-class masking."""
        cfg = self.train_cfg
        captions = batch["captions"]
        words, sentence = self.text(captions, training=training)
        region, code = self.image(batch["images"][-1], training=False)
        class_ids = batch["class_id"]
        mask = tf.not_equal(captions, 0)
        w0, w1, _ = losses.damsm_word_loss_per_example(region, words, mask, class_ids, cfg.gamma1,
                                                       cfg.gamma2, cfg.gamma3)
        s0, s1 = losses.damsm_sentence_loss_per_example(code, sentence, class_ids, cfg.gamma3)
        rows = {"w_loss0": w0, "w_loss1": w1, "s_loss0": s0, "s_loss1": s1}
        if not training:
            rows["r1_image_to_text"], rows["r1_text_to_image"] = retrieval_hits(
                code, sentence, class_ids)
        return rows, negatives_per_row(class_ids) > 0

    def _replica_step(self, batch):
        replicas = self.strategy.num_replicas_in_sync
        variables = self.text_vars + self.image_vars
        with tf.GradientTape() as tape:
            rows, _ = self._rows(batch, training=True)
            # The references' objective: means over the whole (global) batch.
            out = {k: tf.reduce_mean(v) / replicas for k, v in rows.items()}
            out["loss"] = tf.add_n([out[k] for k in LOSS_TERMS])
        # The word embedding's gradient comes as `tf.IndexedSlices`, one value per token
        # occurrence; Keras 3's Adam would add each value's square to its second moment and
        # `tf.clip_by_global_norm` would take the values' norm. Made dense, a token's
        # occurrences are summed first, as PyTorch's dense embedding gradient in the references
        # (`nn.Embedding` without `sparse=True`), and Adam updates every row, as theirs.
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(out["loss"], variables)]
        text_grads, image_grads = grads[:len(self.text_vars)], grads[len(self.text_vars):]
        if self.cfg.damsm_clip > 0 and replicas == 1:
            text_grads, _ = tf.clip_by_global_norm(text_grads, self.cfg.damsm_clip)
        elif self.cfg.damsm_clip > 0:
            # The global norm one device computes for the global batch, whose gradient is the
            # replicas' sum; each replica scales its part by the clip factor, the optimizer
            # sums the parts.
            summed = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                                    text_grads)
            factor = self.cfg.damsm_clip / tf.maximum(tf.linalg.global_norm(summed),
                                                      self.cfg.damsm_clip)
            text_grads = [g * factor for g in text_grads]
        grads = list(text_grads) + list(image_grads)
        self.optimizer.apply_gradients(zip(grads, variables))
        return out

    def _distributed_step(self, batch):
        out = self.strategy.run(self._replica_step, args=(batch,))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in out.items()}

    def _eval_step_fn(self, batch):
        """Sums of the per-row values over the rows with a negative, and the row counts."""
        rows, counted = self._rows(batch, training=False)
        weight = tf.cast(counted, tf.float32)
        out = {k: tf.reduce_sum(tf.cast(v, tf.float32) * weight) for k, v in rows.items()}
        out["rows_counted"] = tf.reduce_sum(weight)
        out["rows_total"] = tf.cast(tf.size(weight), tf.float32)
        return out

    # ------------------------------------------------------------------ validation
    def evaluate(self):
        """Validation metrics (``validation_means``) over the test batches."""
        totals, count = {}, 0
        for i, batch in enumerate(self.test_ds):
            if self.cfg.damsm_max_eval_batches and i >= self.cfg.damsm_max_eval_batches:
                break
            out = self._eval_step(batch)
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            count += 1
        if not count:
            raise ValueError(
                f"the test split gives no batch of --damsm_batch_size={self.cfg.damsm_batch_size}: "
                "lower it.")
        val = validation_means(totals)
        if not val["rows_counted"]:
            log.warning(
                "DAMSM validation undefined (reported as NaN): in all %d test rows (%d batches) "
                "every caption in the batch is of the row's own class, so the same-class masking "
                "leaves no negative (loss 0 and R@1 1 by construction). A test split with more "
                "classes gives a defined value.", val["rows_total"], count)
        elif val["rows_counted"] < val["rows_total"]:
            log.info("DAMSM validation over %d of %d test rows (rows whose batch holds only "
                     "captions of their own class have no negative and are left out).",
                     val["rows_counted"], val["rows_total"])
        return val

    def total_steps(self):
        if self.cfg.damsm_max_steps:
            return self.cfg.damsm_max_steps
        return self.cfg.damsm_epochs * self.steps_per_epoch

    # ------------------------------------------------------------------ task
    def train_step(self, batch):
        return self._train_step(batch)

    def begin(self, loop, new_run):
        if not new_run:
            log.info("Resumed DAMSM pretraining at epoch %d, step %d", int(self.epoch.numpy()),
                     int(self.step.numpy()))

    def epoch_begin(self, loop, epoch):
        self._lr = damsm_learning_rate(self.cfg, epoch)
        self.optimizer.learning_rate.assign(self._lr)
        self._epoch_start = time.time()

    log_prefix = "damsm_train/"

    def log_scalars(self, loop, logs):
        return {"damsm_train/lr": self._lr}

    def progress_metrics(self, logs):
        return {"loss": logs["loss"], "lr": self._lr}

    def epoch_end(self, loop, epoch):
        done = epoch + 1
        if done % self.cfg.damsm_eval_every_epochs == 0 or loop.step >= loop.total:
            val = self.evaluate()
            val["epoch"] = done
            val["lr"] = self._lr
            val["epoch_seconds"] = time.time() - self._epoch_start
            log.info("DAMSM epoch %d: %s", done, _fmt(val))
            loop.logger.scalars(loop.step, {f"damsm_val/{k}": v for k, v in val.items()})
            self._save(os.path.join(self.out_dir, "last"), val)
            if val["loss"] < float(self.best.numpy()):
                self.best.assign(val["loss"])
                self._save(self.out_dir, val)
                self.best_metrics = val
            elif math.isnan(val["loss"]) and math.isinf(float(self.best.numpy())):
                # No defined validation yet: the latest encoders are the result (the GAN
                # trains on them), not selected by validation.
                log.warning("DAMSM epoch %d: no defined validation loss; keeping the latest "
                            "encoders in %s.", done, self.out_dir)
                self._save(self.out_dir, val)
                self.best_metrics = val
        return True  # a checkpoint after every epoch, as before the shared loop

    def train(self, progress_stream=None):
        """Runs (or resumes) pretraining; returns the best validation metrics (None if no
        validation ran yet). ``self.result`` is the loop's result (``"stopped"``: by a signal;
        ``stopped`` then says so too)."""
        os.makedirs(self.out_dir, exist_ok=True)
        loop = loop_lib.Loop(
            self, self.strategy, self.train_ds, self.total_steps(), self.steps_per_epoch,
            self.out_dir, log_every=self.train_cfg.log_every, examples_per_step=self.cfg.damsm_batch_size, is_chief=self.is_chief,
            stream=progress_stream)
        self.result = loop.run()
        marker = os.path.join(self.out_dir, STOPPED_FILE)
        if self.is_chief and self.result["stopped"]:
            with open(marker, "w") as f:
                json.dump({"step": self.result["step"], "total": loop.total}, f)
        elif self.is_chief and os.path.exists(marker):
            os.remove(marker)
        return self.best_metrics or self.load_best_metrics()

    @property
    def stopped(self):
        return bool(self.result and self.result["stopped"])

    def _save(self, directory, val):
        if not self.is_chief:
            return
        meta = damsm.encoder_meta(self.model_cfg, self.cfg)
        meta["validation"] = val
        meta["dataset"] = self.data_cfg.dataset
        damsm.save_encoders(directory, self.text, self.image, self.vocab, meta)

    def load_best_metrics(self):
        path = os.path.join(self.out_dir, damsm.META_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f).get("validation")


def interrupted(out_dir):
    """True if the DAMSM pretraining in ``out_dir`` was stopped by a signal and not finished
    since (its encoders, if any, are an intermediate result)."""
    return os.path.exists(os.path.join(out_dir, STOPPED_FILE))


def _fmt(values):
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items())
