"""One GAN training step: every discriminator, then the generator (eqs 19-23).

The order and the terms follow the references' `condGANTrainer.train` (AttnGAN/DM-GAN
`code/trainer.py`): the generator runs once; each stage's discriminator is updated on the
detached fakes with `losses.discriminator_loss` (`--d_mismatch_term`: on = the references'
`(real + cond_real)/2 + (fake + cond_fake + cond_wrong)/3`, off = eq 23 as printed; the wrong
pairs are the batch's `wrong_captions` where `wrong_mask` is 1, see `--mismatch_pairing`);
then the generator loss is computed with the *updated* discriminators:

    L_G = sum_k L_G_k + lambda3 sum_{k in damsm_stages} L_DAMSM_k + lambda1 L_CA
          + lambda2 sum_{k >= 2} L_RED_k                                        (eq 19)

with `L_G_k = g_adv_factor * [BCE(D_k(x), 1) + BCE(D_k(x, s), 1)]` (eq 22: factor 1 as the
references sum it, 0.5 as printed) and `L_DAMSM_k = w_loss0 + w_loss1 + s_loss0 + s_loss1` on
stage k's image. The text and image encoders are frozen. Every loss is scaled by the *global*
batch (`global_batch_size`) so that the gradients summed over replicas by the optimizers are
the global-batch means; the mismatched-pair terms by the number of pairs over all replicas.
"""

import tensorflow as tf

from msmt_tf import losses
from msmt_tf.training import precision


class GANStep:
    """Builds the per-replica step function for a set of networks.

    Args:
        generator, discriminators, text_encoder, image_encoder: the networks (the encoders
            frozen).
        g_optimizer, d_optimizers: built optimizers (possibly `LossScaleOptimizer`s).
        ema: an `ExponentialMovingAverage` of the generator, or None.
        noise_rng: `tf.random.Generator` for z and the CA epsilon (see `draw_noise`).
        train_cfg: `TrainConfig` (lambdas, gammas, damsm_stages, batch size).
        z_dim: noise size.
    """

    def __init__(self, generator, discriminators, text_encoder, image_encoder, g_optimizer,
                 d_optimizers, ema, noise_rng, train_cfg, z_dim):
        self.generator = generator
        self.discriminators = list(discriminators)
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.g_optimizer = g_optimizer
        self.d_optimizers = list(d_optimizers)
        self.ema = ema
        self.noise_rng = noise_rng
        self.cfg = train_cfg
        self.z_dim = z_dim

    def encode_text(self, captions):
        words, sentence = self.text_encoder(captions, training=False)
        return tf.stop_gradient(words), tf.stop_gradient(sentence), tf.not_equal(captions, 0)

    def draw_noise(self, global_batch_size):
        """``(z [N, z_dim], CA epsilon [N, condition_dim])`` for the *global* batch of N rows.

        Call it where no replica runs (``GANTrainer``'s step draws it before ``strategy.run``
        and passes it to every replica; each replica takes its own rows, see ``__call__``): the
        values then depend on the seed and the global batch only, not on how it is split over
        replicas or workers. Drawn in each replica instead, the noise generator would give
        every replica its own stream (it folds in the replica id), and the CA layer's own
        ``keras.random.SeedGenerator`` (a mirrored state) would give every replica the *same*
        epsilon.
        """
        return (self.noise_rng.normal([global_batch_size, self.z_dim]),
                self.noise_rng.normal([global_batch_size, self.generator.ca.condition_dim]))

    def _replica_rows(self, noise, local):
        """This replica's ``local`` rows of each global-batch tensor in ``noise``."""
        ctx = tf.distribute.get_replica_context()
        start = ctx.replica_id_in_sync_group * local
        return [tf.slice(x, [start, 0], [local, x.shape[1]]) for x in noise]

    def damsm_loss(self, image, words, sentence, mask, class_ids):
        """`L_DAMSM` of one image batch: word + sentence losses, both directions."""
        cfg = self.cfg
        region, code = self.image_encoder(image, training=False)
        w0, w1, _ = losses.damsm_word_loss(region, words, mask, class_ids, cfg.gamma1, cfg.gamma2,
                                           cfg.gamma3, global_batch_size=cfg.batch_size)
        s0, s1 = losses.damsm_sentence_loss(code, sentence, class_ids, cfg.gamma3,
                                            global_batch_size=cfg.batch_size)
        return w0 + w1, s0 + s1

    @staticmethod
    def wrong_pairs(batch):
        """``(wrong_mask [B], pairs over all replicas)`` of a batch, or ``(None, None)`` for a
        batch without ``wrong_mask`` (every row a pair)."""
        mask = batch.get("wrong_mask")
        if mask is None:
            return None, None
        mask = tf.cast(mask, tf.float32)
        count = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.reduce_sum(mask))
        return mask, count

    def _d_update(self, reals, fakes, sentence, wrong_sentence, wrong_mask=None,
                  wrong_count=None):
        logs, oks = {}, []
        gbs = self.cfg.batch_size
        mismatch_term = self.cfg.d_mismatch_term == "on"
        for k, (d, opt) in enumerate(zip(self.discriminators, self.d_optimizers)):
            with tf.GradientTape() as tape:
                real_code = d(reals[k], training=True)
                fake_code = d(tf.stop_gradient(fakes[k]), training=True)
                out = losses.discriminator_loss(
                    d.uncond_logits(real_code, training=True),
                    d.cond_logits(real_code, sentence, training=True),
                    d.uncond_logits(fake_code, training=True),
                    d.cond_logits(fake_code, sentence, training=True),
                    d.cond_logits(real_code, wrong_sentence, training=True),
                    global_batch_size=gbs, mismatch_term=mismatch_term, wrong_mask=wrong_mask,
                    global_wrong_count=wrong_count)
                scaled = opt.scale_loss(out["loss"])
            grads = tape.gradient(scaled, d.trainable_variables)
            oks.append(precision.apply_gradients_if_finite(
                opt, grads, d.trainable_variables, losses=[out["loss"]]))
            for name in ("loss", "real", "fake", "cond_real", "cond_fake", "cond_wrong",
                         "accuracy_real", "accuracy_fake"):
                logs[f"d_{name}/stage{k}"] = out[name]
        return logs, oks

    def matching_warmup(self, batch):
        """One discriminator warm-up step (``--d_warmup_steps``): each conditional head (and
        the trunk under it) learns ``D(x, s) -> 1``, ``D(x, s_wrong) -> 0`` on the batch's real
        images; no generator. Returns ``d_warmup_loss/stage<k>`` and
        ``d_warmup_accuracy/stage<k>`` (global-batch scaled)."""
        _, sentence, _ = self.encode_text(batch["captions"])
        _, wrong_sentence, _ = self.encode_text(batch["wrong_captions"])
        wrong_mask, wrong_count = self.wrong_pairs(batch)
        logs = {}
        for k, (d, opt) in enumerate(zip(self.discriminators, self.d_optimizers)):
            with tf.GradientTape() as tape:
                code = d(batch["images"][k], training=True)
                out = losses.matching_loss(
                    d.cond_logits(code, sentence, training=True),
                    d.cond_logits(code, wrong_sentence, training=True),
                    global_batch_size=self.cfg.batch_size, wrong_mask=wrong_mask,
                    global_wrong_count=wrong_count)
                scaled = opt.scale_loss(out["loss"])
            unused = {id(v) for v in d.uncond_head.trainable_variables}
            variables = [v for v in d.trainable_variables if id(v) not in unused]
            grads = tape.gradient(scaled, variables)
            precision.apply_gradients_if_finite(opt, grads, variables, losses=[out["loss"]])
            logs[f"d_warmup_loss/stage{k}"] = out["loss"]
            logs[f"d_warmup_accuracy/stage{k}"] = out["accuracy"]
        return logs

    def _g_loss(self, out, words, sentence, mask, class_ids):
        cfg = self.cfg
        gbs = cfg.batch_size
        fakes = out["images"]
        logs = {}
        total = tf.constant(0.0, tf.float32)
        for k, d in enumerate(self.discriminators):
            code = d(fakes[k], training=True)
            adv = losses.generator_adversarial_loss(
                d.uncond_logits(code, training=True), d.cond_logits(code, sentence, training=True),
                factor=cfg.g_adv_factor, global_batch_size=gbs)
            logs[f"g_adv/stage{k}"] = adv["loss"]
            total += adv["loss"]
        stages = range(len(fakes)) if cfg.damsm_stages == "all" else [len(fakes) - 1]
        if cfg.lambda3 == 0:
            stages = []  # --lambda3=0: no DAMSM term, so skip the image encoder entirely
        for k in stages:
            w, s = self.damsm_loss(fakes[k], words, sentence, mask, class_ids)
            logs[f"g_damsm_word/stage{k}"] = w
            logs[f"g_damsm_sent/stage{k}"] = s
            total += cfg.lambda3 * (w + s)
        kl = losses.kl_loss(out["mu"], out["logvar"], global_batch_size=gbs)
        logs["g_kl"] = kl
        total += cfg.lambda1 * kl
        for k, heads in enumerate(out["head_features"]):
            if len(heads) > 1:
                red = losses.redundancy_loss(heads, global_batch_size=gbs)
                logs[f"g_redundancy/stage{k + 1}"] = red
                total += cfg.lambda2 * red
        logs["g_loss"] = total
        return total, logs

    def __call__(self, batch, noise=None):
        """The per-replica step; returns a dict of scalars (already global-batch scaled).

        ``noise``: ``draw_noise(global batch)``, drawn outside the replicas; None draws it here
        (only right without a multi-replica strategy, e.g. calling the step directly).
        """
        captions = batch["captions"]
        words, sentence, mask = self.encode_text(captions)
        _, wrong_sentence, _ = self.encode_text(batch["wrong_captions"])
        local = captions.shape[0] if captions.shape[0] is not None else tf.shape(captions)[0]
        if noise is None:
            noise = self.draw_noise(local * tf.distribute.get_replica_context().num_replicas_in_sync)
        noise, ca_eps = self._replica_rows(noise, local)
        inputs = {"noise": noise, "sentence": sentence, "words": words, "mask": mask,
                  "ca_eps": ca_eps}
        with tf.GradientTape() as tape:
            out = self.generator(inputs, training=True)
            fakes = [tf.cast(x, tf.float32) for x in out["images"]]
            with tape.stop_recording():
                logs, d_oks = self._d_update(batch["images"], fakes, sentence, wrong_sentence,
                                             *self.wrong_pairs(batch))
            g_loss, g_logs = self._g_loss(out, words, sentence, mask, batch["class_id"])
            scaled = self.g_optimizer.scale_loss(g_loss)
        variables = self.generator.trainable_variables
        grads = tape.gradient(scaled, variables)
        g_ok = precision.apply_gradients_if_finite(self.g_optimizer, grads, variables,
                                                   losses=[g_loss])
        if self.ema is not None:
            self.ema.update(condition=g_ok)
        logs.update(g_logs)
        finite = tf.reduce_all(tf.stack([g_ok] + d_oks))
        logs["finite"] = tf.cast(finite, tf.float32)
        logs["loss_scale"] = precision.loss_scale(self.g_optimizer)
        return logs
