"""The GAN task: networks, optimizers, the GAN step, image grids and evaluation.

`GANTrainer` is the `loop.Task` of GAN training: the generator and its EMA copy, one
discriminator per stage, one Adam per network, the noise generator, the checkpoint (step,
epoch, every network and optimizer, the RNG states), the discriminator warm-up of a new run,
image grids from a fixed set of test captions and noise, and the periodic FID / R-precision
evaluation that keeps the best checkpoint. `train` runs it with `loop.Loop` (steps, saves,
SIGTERM, TensorBoard + `metrics.jsonl`, progress); running it again on the same run directory
resumes.
"""

import collections
import logging
import time

import keras
import numpy as np
import tensorflow as tf

from msmt_tf.evaluation import registry
from msmt_tf.models.discriminator import Discriminator
from msmt_tf.models.generator import build_generator
from msmt_tf.models.param_count import dummy_generator_inputs
from msmt_tf.training import checkpointing, ema as ema_lib
from msmt_tf.training import distribute, loop as loop_lib, precision
from msmt_tf.training.gan_step import GANStep

log = logging.getLogger(__name__)

NUM_FIXED_SAMPLES = 8
_MIN_REDUCED = ("finite",)
_MEAN_REDUCED = ("loss_scale",)


def build_networks(model_cfg, train_cfg, words_num, replica_batch):
    """Generator, EMA generator and discriminators, built (call inside the strategy scope)."""
    generator = build_generator(model_cfg, seed=train_cfg.seed, name="generator")
    dummy = dummy_generator_inputs(model_cfg, batch=replica_batch, words_num=words_num)
    generator(dummy, training=False)
    ema_generator = ema_lib.clone_model(generator, dummy, training=False)
    return generator, ema_generator, build_discriminators(model_cfg, train_cfg, replica_batch)


def build_discriminators(model_cfg, train_cfg, replica_batch):
    """One built discriminator per stage, lowest resolution first (as checkpointed)."""
    discriminators = []
    for k, size in enumerate(model_cfg.image_sizes):
        d = Discriminator(size, df_dim=model_cfg.df_dim, condition_dim=model_cfg.embedding_dim,
                          kind=model_cfg.discriminator, seed=train_cfg.seed + 1 + k,
                          name=f"d_{size}")
        code = d(np.zeros((replica_batch, size, size, 3), "float32"), training=False)
        d.uncond_logits(code)
        d.cond_logits(code, np.zeros((replica_batch, model_cfg.embedding_dim), "float32"))
        discriminators.append(d)
    return discriminators


def make_optimizer(lr, train_cfg, variables):
    opt = keras.optimizers.Adam(learning_rate=lr, beta_1=train_cfg.beta_1, beta_2=train_cfg.beta_2,
                                epsilon=train_cfg.adam_epsilon)
    opt = precision.wrap_optimizer(opt, train_cfg.precision)
    opt.build(variables)
    return opt


def eval_scalars(result, seconds, num_images):
    """The scalars of one evaluation of `num_images` images: every metric number of `result`
    under its registered name with the image count (``eval/fid200``, ``eval/kid2k_mean``:
    `evaluation.registry.tag`; a 200-image FID is never plotted beside a 30k one), each
    per-attribute accuracy as ``eval/attribute_accuracy<count>/<attribute>``, other numbers as
    ``eval/<name>``, and the seconds taken."""
    def name(key):
        return f"eval/{registry.tag(key, num_images) or key}"

    scalars = {name(k): v for k, v in result.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for attribute, value in result.get("attribute_accuracy_per_attribute", {}).items():
        scalars[name(f"attribute_accuracy/{attribute}")] = float(value)
    scalars["eval/seconds"] = float(seconds)
    return scalars


class GANTrainer(loop_lib.Task):
    """One GAN run (the GAN `loop.Task`).

    Args:
        configs: `msmt_tf.cli.common.Configs` (`.data`, `.model`, `.train`, `.damsm`).
        run: `RunDir` of the run (already prepared).
        strategy: a `tf.distribute.Strategy`.
        text_encoder, image_encoder: frozen DAMSM encoders (built in the strategy scope and,
            as `runner.train` does, in `precision.policy_scope` of the run's precision).
        vocab: the dataset vocabulary (for captions on the grids).
        train_ds: one epoch of training batches (global batch; `drop_remainder`).
        steps_per_epoch: number of batches in `train_ds`.
        fixed_batch: a dict batch of test captions for the image grids (numpy).
        evaluator: optional object with `evaluate(generator, num_images, batch_size, seed)`
            returning a dict of metrics (`fid` keeps the best checkpoint) and `skipped`
            {metric: reason}; used every `--eval_every` steps and at the end. Give an adaptive
            `Evaluator` (`runner.make_evaluator`): a metric the test split cannot support is
            skipped or shrunk with the reason instead of stopping the run.
        eval_num_images: images per in-training evaluation.
        is_chief: whether this worker writes logs.
    """

    def __init__(self, configs, run, strategy, text_encoder, image_encoder, vocab, train_ds,
                 steps_per_epoch, fixed_batch=None, evaluator=None, eval_num_images=1000,
                 is_chief=True):
        self.configs = configs
        # --precision=auto resolved (runner.train passes it resolved already).
        self.cfg = precision.resolve_train_config(configs.train)
        self.model_cfg = configs.model
        self.run = run
        self.strategy = strategy
        self.vocab = vocab
        self.steps_per_epoch = steps_per_epoch
        self.evaluator = evaluator
        self.eval_num_images = eval_num_images
        self.is_chief = is_chief
        cfg = self.cfg
        replicas = strategy.num_replicas_in_sync
        if cfg.batch_size % replicas:
            raise distribute.DistributeError(
                f"--batch_size={cfg.batch_size} does not split over {replicas} replicas "
                f"(--strategy={cfg.strategy}): use a multiple of {replicas}.")
        self.replica_batch = cfg.batch_size // replicas
        words_num = configs.data.words_num
        # Reproducible initial weights: every unseeded initializer draws from Keras' global
        # generator, seeded here (a resumed run restores the weights anyway).
        keras.utils.set_random_seed(cfg.seed)
        # The networks compute in --precision (a layer reads the policy when constructed);
        # everything built later (the evaluator's networks) stays float32.
        with strategy.scope(), precision.policy_scope(cfg.precision):
            self.generator, self.ema_generator, self.discriminators = build_networks(
                self.model_cfg, cfg, words_num, self.replica_batch)
            self.g_optimizer = make_optimizer(cfg.g_lr, cfg, self.generator.trainable_variables)
            self.d_optimizers = [make_optimizer(cfg.d_lr, cfg, d.trainable_variables)
                                 for d in self.discriminators]
            self.noise_rng = tf.random.Generator.from_seed(cfg.seed, alg="philox")
        self.ema = ema_lib.ExponentialMovingAverage(
            self.generator, self.ema_generator, decay=cfg.ema_decay,
            num_updates=self.g_optimizer.iterations if cfg.ema_ramp else None)
        objects = {"generator": self.generator, "ema_generator": self.ema_generator,
                   "g_optimizer": self.g_optimizer}
        for k, (d, opt) in enumerate(zip(self.discriminators, self.d_optimizers)):
            objects[f"discriminator_{k}"] = d
            objects[f"d_optimizer_{k}"] = opt
        rng = checkpointing.RngState(generators={"noise": self.noise_rng},
                                     models=[self.generator])
        self.checkpoint = checkpointing.TrainCheckpoint(
            run.checkpoint_dir, keep=cfg.keep_checkpoints, best_directory=run.best_dir,
            checkpoint_every=cfg.checkpoint_every, rng=rng, is_chief=is_chief, **objects)
        self.step_fn = GANStep(self.generator, self.discriminators, text_encoder, image_encoder,
                               self.g_optimizer, self.d_optimizers, self.ema, self.noise_rng, cfg,
                               self.model_cfg.z_dim)
        self.train_ds = distribute.distribute_dataset(strategy, train_ds)
        self._train_step = tf.function(self._distributed_step, jit_compile=cfg.jit_compile or None)
        self._warmup_step = tf.function(self._distributed_warmup)
        self.text_encoder = text_encoder
        self.fixed = self._fixed_inputs(fixed_batch) if fixed_batch is not None else None

    # ------------------------------------------------------------------ steps
    def _distributed_step(self, batch):
        # z and the CA epsilon of the global batch, drawn once here (cross-replica context) and
        # split across replicas by the step: the same numbers whatever the replica count.
        noise = self.step_fn.draw_noise(self.cfg.batch_size)
        logs = self.strategy.run(self.step_fn, args=(batch, noise))
        out = {}
        sum_ = tf.distribute.ReduceOp.SUM
        for k, v in logs.items():
            if k in _MIN_REDUCED:  # all replicas finite <=> the mean of the 0/1 flags is 1
                # (`v` is a PerReplica value under a multi-replica strategy: reduce it as is.)
                mean = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                out[k] = tf.cast(tf.equal(mean, 1.0), tf.float32)
            elif k in _MEAN_REDUCED:
                out[k] = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            else:  # already divided by the global batch in every replica
                out[k] = self.strategy.reduce(sum_, v, axis=None)
        return out

    def _distributed_warmup(self, batch):
        logs = self.strategy.run(self.step_fn.matching_warmup, args=(batch,))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in logs.items()}

    def warmup_discriminators(self, metrics_logger, prog):
        """``--d_warmup_steps`` matching steps of the discriminators (a new run only); logs the
        mean loss and accuracy of the last ``--log_every`` steps as ``d_warmup_*`` at step 0.
        The outputs stay tensors until a progress line (every ``--log_every`` steps) reads them."""
        n = self.cfg.d_warmup_steps
        recent, done, t0 = collections.deque(maxlen=self.cfg.log_every), 0, time.time()
        while done < n:
            for batch in self.train_ds:
                recent.append(self._warmup_step(batch))
                done += 1
                if done % self.cfg.log_every == 0 or done == n:
                    last = loop_lib.read(recent[-1])
                    acc = [v for k, v in last.items() if k.startswith("d_warmup_accuracy")]
                    prog.write(f"discriminator warm-up {done}/{n}: matching accuracy "
                               + " ".join(f"{a:.2f}" for a in acc)
                               + f" ({time.time() - t0:.0f} s)")
                if done >= n:
                    break
        recent = [loop_lib.read(r) for r in recent]
        means = {k: sum(r[k] for r in recent) / len(recent) for k in recent[-1]}
        means["d_warmup_seconds"] = time.time() - t0
        metrics_logger.scalars(0, means)
        return means

    # ------------------------------------------------------------------ grids
    def _fixed_inputs(self, batch):
        n = min(NUM_FIXED_SAMPLES, len(batch["captions"]))
        captions = np.asarray(batch["captions"][:n], np.int32)
        noise = np.random.default_rng(self.cfg.seed + 12345).normal(
            size=(n, self.model_cfg.z_dim)).astype("float32")
        eps = np.random.default_rng(self.cfg.seed + 54321).normal(
            size=(n, self.model_cfg.condition_dim)).astype("float32")
        texts = [self.vocab.decode(c) for c in captions]
        return {"captions": captions, "noise": noise, "ca_eps": eps, "texts": texts}

    def sample_fixed(self, generator=None):
        """Images of the fixed captions/noise from `generator` (default: the EMA copy)."""
        generator = generator or self.ema_generator
        f = self.fixed
        words, sentence = self.text_encoder(f["captions"], training=False)
        out = generator({"noise": f["noise"], "sentence": sentence, "words": words,
                         "mask": f["captions"] != 0, "ca_eps": f["ca_eps"]}, training=False)
        return out

    def write_grids(self, metrics_logger, step):
        if self.fixed is None or not self.is_chief:
            return None
        out = self.sample_fixed()
        paths = []
        for k, images in enumerate(out["images"]):
            _, path = metrics_logger.grid(step, f"samples/stage{k}", np.asarray(images, np.float32),
                                          captions=self.fixed["texts"])
            paths.append(path)
        for k, attn in enumerate(out["attention"]):
            maps = self._attention_grid(np.asarray(attn[0], np.float32), self.fixed["captions"][0])
            if maps is not None:
                metrics_logger.grid(step, f"attention/stage{k + 1}", maps[0], captions=maps[1])
        return paths

    def _attention_grid(self, attn, caption):
        """Per-word maps `[L', S, S, 3]` in [-1, 1] of the first fixed caption."""
        length = int(np.sum(caption != 0))
        if length == 0:
            return None
        maps = attn[..., :length]  # [S, S, L']
        maps = maps / np.maximum(maps.max(axis=(0, 1), keepdims=True), 1e-8)
        images = np.repeat(np.transpose(maps, (2, 0, 1))[..., None], 3, axis=-1) * 2.0 - 1.0
        words = [self.vocab.ixtoword.get(int(i), "?") for i in caption[:length]]
        return images, words

    # ------------------------------------------------------------------ task
    def total_steps(self):
        return self.cfg.total_steps(self.steps_per_epoch)

    def evaluate(self, metrics_logger, step):
        if self.evaluator is None:
            return None
        t0 = time.time()
        result = self.evaluator.evaluate(self.ema_generator, num_images=self.eval_num_images,
                                         batch_size=min(50, self.eval_num_images),
                                         seed=self.cfg.seed)
        scalars = eval_scalars(result, time.time() - t0, self.eval_num_images)
        if self.is_chief:
            metrics_logger.scalars(step, scalars)
        if "fid" in result and np.isfinite(result["fid"]):
            self.checkpoint.update_best(result["fid"], metric="fid")
        return result

    def train_step(self, batch):
        return self._train_step(batch)

    def begin(self, loop, new_run):
        if new_run:
            self.ema.copy_weights()
            self.write_grids(loop.logger, 0)
            if self.cfg.d_warmup_steps:
                self.warmup_discriminators(loop.logger, loop.progress)

    def epoch_begin(self, loop, epoch):
        self._epoch_start = time.time()

    def log_scalars(self, loop, logs):
        return {"lr/generator": self.cfg.g_lr, "lr/discriminator": self.cfg.d_lr}

    def progress_metrics(self, logs):
        return {"g": logs["g_loss"], "d": logs[f"d_loss/stage{len(self.discriminators) - 1}"]}

    def after_step(self, loop, step):
        if step % self.cfg.image_every == 0:
            self.write_grids(loop.logger, step)
        if self.cfg.eval_every and step % self.cfg.eval_every == 0 and step < loop.total:
            self.evaluate(loop.logger, step)

    def epoch_end(self, loop, epoch):
        log.info("epoch %d done in %.1fs", epoch + 1,
                 time.time() - getattr(self, "_epoch_start", time.time()))

    def end(self, loop):
        self.write_grids(loop.logger, loop.step)
        return {"eval": self.evaluate(loop.logger, loop.step)}

    def train(self, stream=None):
        """Runs or resumes the run (`loop.Loop`); returns ``{"step", "stopped", "logs"}`` and,
        when it ran to the end, ``"eval"``: the final evaluation (or None)."""
        cfg = self.cfg
        return loop_lib.Loop(
            self, self.strategy, self.train_ds, self.total_steps(), self.steps_per_epoch,
            self.run.path, log_every=cfg.log_every, examples_per_step=cfg.batch_size,
            nonfinite=precision.NonFiniteCounter(cfg.max_nonfinite_steps, cfg.precision),
            is_chief=self.is_chief, stream=stream).run()
