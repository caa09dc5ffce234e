"""Loss functions of AttnGAN / DM-GAN / MSMT-GAN as small pure functions on tensors.

Equations: paper (arXiv 2110.08143) eqs 19-23; reference behaviour: ``code/miscc/losses.py``
of taoxugit/AttnGAN and MinfengZhu/DM-GAN (``discriminator_loss``, ``generator_loss``,
``KL_loss``, ``words_loss``, ``sent_loss``). All computations and reductions are float32
(inputs are cast), so the functions are safe under mixed precision.

Discriminator scores are **logits** by default (``msmt_tf.models.discriminator`` returns
logits); ``from_logits=True`` uses ``sigmoid_cross_entropy_with_logits``, which equals the
references' ``BCELoss(sigmoid(x))`` except where PyTorch's log clamp at -100 bites. With
``from_logits=False`` the scores are probabilities and the loss is PyTorch's ``BCELoss``
exactly (log clamped at -100).

Batch reduction and ``tf.distribute``: every function averages over the batch like the
references' ``BCELoss()`` / ``CrossEntropyLoss()`` (mean). Pass ``global_batch_size`` inside a
replica: each per-example term is then summed and divided by the global count
(``average_loss``), so summing the replica losses (what an optimizer under a strategy does with
the gradients) gives the mean over the global batch. Terms with a different count than the
batch (the B-1 wrong-caption pairs) are divided by ``global_batch_size * n / B_local``, i.e.
the global count of such terms when every replica has the same local batch (static shapes).
Masked terms (the pipeline's ``wrong_mask``: ``--mismatch_pairing=next_row`` leaves the batch's
last row without a mismatched pair) are summed over the mask and divided by the mask's global
sum, which the caller passes (``masked_average_loss``).
The contrastive DAMSM losses use the negatives of the local (replica) batch only.
"""

import tensorflow as tf

_NEG = -1e9  # "minus infinity" for masked logits; exp underflows to exactly 0 in float32.


def _f32(x):
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def _norm(x, axis=-1):
    # L2 norm with a finite gradient at 0 (padded words are exact zeros); identical to
    # tf.norm for any vector whose squared norm exceeds 1e-30.
    return tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(x), axis=axis), 1e-30))


# ----------------------------------------------------------------------------- reductions


def average_loss(per_example, global_batch_size=None, local_batch_size=None):
    """Averages per-example losses over the batch (local mean or global-batch scaling).

    Args:
        per_example: ``[N]`` float losses.
        global_batch_size: None -> ``mean(per_example)``. Otherwise
            ``sum(per_example) / (global_batch_size * N / local_batch_size)`` (as
            ``tf.nn.compute_average_loss``), for use inside a replica.
        local_batch_size: the replica's batch ``B`` the ``N`` terms come from (default ``N``);
            e.g. ``B`` for the ``B - 1`` wrong-caption terms.

    Returns:
        float32 scalar.
    """
    per_example = _f32(per_example)
    if global_batch_size is None:
        return tf.reduce_mean(per_example)
    n = tf.cast(tf.size(per_example), tf.float32)
    local = n if local_batch_size is None else tf.cast(local_batch_size, tf.float32)
    denominator = tf.cast(global_batch_size, tf.float32) * n / local
    return tf.reduce_sum(per_example) / denominator


def masked_average_loss(per_example, mask, global_count=None):
    """Mean of the per-example losses where ``mask`` is 1: ``sum(mask * x) / count``.

    Args:
        per_example: ``[N]`` float losses.
        mask: ``[N]`` 0/1 (float or bool): which terms count.
        global_count: None -> ``count = sum(mask)`` (a plain mean over the masked terms).
            Inside a replica: the number of counted terms over *all* replicas (the all-reduced
            ``sum(mask)``), so that summing the replica losses gives the global mean.

    Returns:
        float32 scalar; 0 when no term counts.
    """
    per_example, mask = _f32(per_example), _f32(mask)
    count = tf.reduce_sum(mask) if global_count is None else _f32(global_count)
    return tf.math.divide_no_nan(tf.reduce_sum(per_example * mask), count)


def binary_cross_entropy_per_example(scores, label, from_logits=True):
    """``-[y log p + (1 - y) log(1 - p)]`` per element, ``[N]``.

    ``from_logits``: ``scores`` are logits (stable formula); otherwise probabilities with
    PyTorch ``BCELoss``'s clamp of each log at -100.
    """
    scores = _f32(scores)
    labels = tf.fill(tf.shape(scores), tf.cast(label, tf.float32))
    if from_logits:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=scores)
    log_p = tf.maximum(tf.math.log(scores), -100.0)
    log_1mp = tf.maximum(tf.math.log(1.0 - scores), -100.0)
    return -(labels * log_p + (1.0 - labels) * log_1mp)


def _accuracy_per_example(scores, label, from_logits):
    threshold = 0.0 if from_logits else 0.5
    predicted_real = _f32(scores) > threshold
    return tf.cast(tf.equal(predicted_real, bool(label)), tf.float32)


# ----------------------------------------------------------------------------- adversarial


def _wrong_mean(per_example, batch, global_batch_size, wrong_mask, global_wrong_count):
    """Mean of the mismatched-pair terms: over ``wrong_mask`` when given (dividing by
    ``global_wrong_count`` inside a replica), else as ``average_loss`` with local batch
    ``batch``."""
    if wrong_mask is None:
        return average_loss(per_example, global_batch_size, batch)
    if global_batch_size is not None and global_wrong_count is None:
        raise ValueError("wrong_mask with global_batch_size needs global_wrong_count (the "
                         "all-reduced sum of the mask over the replicas).")
    return masked_average_loss(per_example, wrong_mask, global_wrong_count)


def discriminator_loss(
    real_uncond,
    real_cond,
    fake_uncond,
    fake_cond,
    wrong_cond,
    from_logits=True,
    global_batch_size=None,
    mismatch_term=True,
    wrong_mask=None,
    global_wrong_count=None,
):
    """Per-stage discriminator loss ``L_{D_k}``: the references' form or paper eq 23 as printed.

    With ``real = BCE(D(x), 1)``, ``cond_real = BCE(D(x, s), 1)``, ``fake = BCE(D(G(z)), 0)``,
    ``cond_fake = BCE(D(G(z), s), 0)`` and ``cond_wrong = BCE(D(x, s_wrong), 0)`` over the
    mismatched pairs:

    - ``mismatch_term=True`` (``--d_mismatch_term=on``; ``discriminator_loss`` of
      taoxugit/AttnGAN and MinfengZhu/DM-GAN ``code/miscc/losses.py``):
      ``L = (real + cond_real) / 2 + (fake + cond_fake + cond_wrong) / 3``; without an
      unconditional head (``real_uncond`` and ``fake_uncond`` None):
      ``cond_real + (cond_fake + cond_wrong) / 2``.
    - ``mismatch_term=False`` (``--d_mismatch_term=off``; eq 23 as printed, no mismatched
      pairs): ``L = (real + fake) / 2 + (cond_real + cond_fake) / 2``; without an
      unconditional head, eq 23's conditional half ``(cond_real + cond_fake) / 2``.
      ``cond_wrong`` is still computed and returned when ``wrong_cond`` is given (a
      diagnostic of whether D reads the text), but it is not in ``loss``.

    Args:
        real_uncond, fake_uncond: ``[B]`` scores of real / fake images (or None).
        real_cond, fake_cond: ``[B]`` conditional scores with the matching sentences.
        wrong_cond: ``[B_w]`` conditional scores of mismatched pairs: the references' ``B - 1``
            (real image i with sentence i + 1, no mask), or one per row with ``wrong_mask``;
            None only with ``mismatch_term=False``.
        from_logits: scores are logits (default; the discriminator heads' output).
        global_batch_size: see ``average_loss``.
        mismatch_term: include ``cond_wrong`` in the loss (the references) or not (eq 23).
        wrong_mask: ``[B_w]`` 0/1, which rows of ``wrong_cond`` are pairs (the pipeline's
            ``wrong_mask``), or None (all, divided as ``B_w`` terms of a batch of ``B``).
        global_wrong_count: with ``wrong_mask`` inside a replica: the number of pairs over all
            replicas (required with ``global_batch_size``); see ``masked_average_loss``.

    Returns:
        dict of float32 scalars: ``loss`` (the total), ``real``, ``fake`` (absent without an
        unconditional head), ``cond_real``, ``cond_fake``, ``cond_wrong`` (absent without
        ``wrong_cond``), and accuracies (fraction classified correctly at probability 0.5):
        ``accuracy_real``, ``accuracy_fake`` (unconditional head when present, else
        conditional), ``cond_accuracy_real``, ``cond_accuracy_fake``, ``cond_accuracy_wrong``.
    """
    batch = tf.shape(real_cond)[0]
    if wrong_cond is None and mismatch_term:
        raise ValueError("discriminator_loss: mismatch_term=True needs wrong_cond.")

    def bce(scores, label):
        per_example = binary_cross_entropy_per_example(scores, label, from_logits)
        return average_loss(per_example, global_batch_size)

    def acc(scores, label):
        per_example = _accuracy_per_example(scores, label, from_logits)
        return average_loss(per_example, global_batch_size)

    out = {
        "cond_real": bce(real_cond, 1.0),
        "cond_fake": bce(fake_cond, 0.0),
        "cond_accuracy_real": acc(real_cond, 1),
        "cond_accuracy_fake": acc(fake_cond, 0),
    }
    if wrong_cond is not None:
        for name, per_example in (
                ("cond_wrong", binary_cross_entropy_per_example(wrong_cond, 0.0, from_logits)),
                ("cond_accuracy_wrong", _accuracy_per_example(wrong_cond, 0, from_logits))):
            out[name] = _wrong_mean(per_example, batch, global_batch_size, wrong_mask,
                                    global_wrong_count)
    if (real_uncond is None) != (fake_uncond is None):
        raise ValueError("discriminator_loss: give both real_uncond and fake_uncond, or neither.")
    wrong = [out["cond_wrong"]] if mismatch_term else []
    if real_uncond is not None:
        out["real"] = bce(real_uncond, 1.0)
        out["fake"] = bce(fake_uncond, 0.0)
        out["accuracy_real"] = acc(real_uncond, 1)
        out["accuracy_fake"] = acc(fake_uncond, 0)
        fakes = [out["fake"], out["cond_fake"]] + wrong
        out["loss"] = (out["real"] + out["cond_real"]) / 2.0 + tf.add_n(fakes) / len(fakes)
    else:
        out["accuracy_real"] = out["cond_accuracy_real"]
        out["accuracy_fake"] = out["cond_accuracy_fake"]
        fakes = [out["cond_fake"]] + wrong
        real_weight = 1.0 if mismatch_term else 0.5
        out["loss"] = real_weight * out["cond_real"] + tf.add_n(fakes) / 2.0
    return out


def matching_loss(real_cond, wrong_cond, from_logits=True, global_batch_size=None,
                  wrong_mask=None, global_wrong_count=None):
    """The discriminator warm-up loss (``--d_warmup_steps``; not in the paper or references).

    ``BCE(D(x, s), 1) + BCE(D(x, s_wrong), 0)`` on real images only: the conditional head learns
    to tell an image's caption from its mismatched one before the GAN starts. ``wrong_mask``,
    ``global_wrong_count``: as in ``discriminator_loss`` (None: one pair per row).

    Returns:
        dict of float32 scalars: ``loss``, ``accuracy`` (the mean of the fraction of matched
        pairs scored real and the fraction of mismatched pairs scored fake, at probability
        0.5).
    """
    def mean(per_example):
        return average_loss(per_example, global_batch_size)

    def wrong_mean(per_example):
        batch = tf.shape(per_example)[0]
        return _wrong_mean(per_example, batch, global_batch_size, wrong_mask, global_wrong_count)

    loss = (mean(binary_cross_entropy_per_example(real_cond, 1.0, from_logits))
            + wrong_mean(binary_cross_entropy_per_example(wrong_cond, 0.0, from_logits)))
    accuracy = (mean(_accuracy_per_example(real_cond, 1, from_logits))
                + wrong_mean(_accuracy_per_example(wrong_cond, 0, from_logits))) / 2.0
    return {"loss": loss, "accuracy": accuracy}


def generator_adversarial_loss(
    fake_uncond, fake_cond, factor=1.0, from_logits=True, global_batch_size=None
):
    """Per-stage generator adversarial loss ``L_{G_k}`` (paper eq 22).

    ``factor * [BCE(D(G(z)), 1) + BCE(D(G(z), s), 1)]`` (non-saturating). The references'
    ``generator_loss`` sums the two terms (``factor=1``, the default); eq 22's ``-1/2 [...]``
    is ``factor=0.5`` (``--g_adv_factor``). ``fake_uncond`` may be None (no unconditional
    head).

    Returns:
        dict of float32 scalars: ``loss``, ``uncond`` (if given), ``cond`` (before ``factor``).
    """

    def bce(scores):
        per_example = binary_cross_entropy_per_example(scores, 1.0, from_logits)
        return average_loss(per_example, global_batch_size)

    out = {"cond": bce(fake_cond)}
    total = out["cond"]
    if fake_uncond is not None:
        out["uncond"] = bce(fake_uncond)
        total = total + out["uncond"]
    out["loss"] = tf.cast(factor, tf.float32) * total
    return out


# ----------------------------------------------------------------------------- CA / KL


def kl_loss_per_example(mu, logvar):
    """``-0.5 * mean_d(1 + logvar - mu^2 - exp(logvar))`` per example, ``[B]``."""
    mu, logvar = _f32(mu), _f32(logvar)
    return -0.5 * tf.reduce_mean(1.0 + logvar - tf.square(mu) - tf.exp(logvar), axis=-1)


def kl_loss(mu, logvar, global_batch_size=None):
    """Conditioning augmentation loss ``L_CA`` of eq 19 (the references' ``KL_loss``).

    ``-0.5 * mean(1 + logvar - mu^2 - exp(logvar))`` over all ``B x 100`` elements (the
    references' mean, not a sum over dimensions). ``mu``, ``logvar``: ``[B, C]``.
    """
    return average_loss(kl_loss_per_example(mu, logvar), global_batch_size)


# ----------------------------------------------------------------------------- DAMSM


def _class_mask(class_ids, batch):
    """``[B, B]`` bool: same class and off the diagonal (the references' ``masks``), or None."""
    if class_ids is None:
        return None
    ids = tf.reshape(tf.convert_to_tensor(class_ids), [-1])
    same = tf.equal(ids[:, None], ids[None, :])
    return tf.logical_and(same, tf.logical_not(tf.eye(batch, dtype=tf.bool)))


def _cross_entropy_both_ways(scores, class_ids):
    """Per-example CE of ``scores`` [B, B] rows and columns against the diagonal."""
    batch = tf.shape(scores)[0]
    mask = _class_mask(class_ids, batch)
    if mask is not None:
        scores = tf.where(mask, tf.constant(_NEG, tf.float32), scores)
    labels = tf.range(batch)
    loss0 = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=scores)
    loss1 = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.transpose(scores)
    )
    return loss0, loss1


def _word_mask(words, word_mask):
    word_mask = tf.convert_to_tensor(word_mask)
    length = tf.shape(words)[1]
    if word_mask.shape.rank == 1:  # caption lengths
        return tf.sequence_mask(word_mask, length)
    return tf.cast(word_mask, tf.bool)


def damsm_word_scores(region_features, words, word_mask, gamma1=4.0, gamma2=5.0):
    """DAMSM word-level image-caption scores (the references' ``words_loss`` with
    ``func_attention`` of ``code/GlobalAttention.py``), vectorised.

    For image ``b`` (regions ``r``) and caption ``c`` (words ``l``):
    ``s = <region_r, word_l>``; softmax over the caption's real words per region; times
    ``gamma1``; softmax over regions per word -> ``alpha[b, c, r, l]``; context
    ``ctx[b, c, l] = sum_r alpha * region_r``; ``cos[b, c, l] = cos(word_l, ctx)`` (norm product
    clamped at 1e-8); ``score[b, c] = log sum_l exp(gamma2 * cos)`` over real words only.
    Like the references, the ``1/gamma2`` exponent of AttnGAN's Eq. 10 is NOT applied.

    Args:
        region_features: ``[B, H, W, D]`` (H x W regions, row-major like PyTorch's ``view``).
        words: ``[B, L, D]``.
        word_mask: ``[B, L]`` bool (True at real words) or caption lengths ``[B]``; every
            caption needs at least one word.

    Returns:
        scores ``[B_img, B_cap]`` float32 and the matched-pair attention maps ``[B, H, W, L]``
        (``alpha[b, b]``, zero at padded words).
    """
    region_features, words = _f32(region_features), _f32(words)
    mask = _word_mask(words, word_mask)  # [B, L]
    shape = tf.shape(region_features)
    batch, height, width = shape[0], shape[1], shape[2]
    regions = tf.reshape(region_features, [batch, height * width, -1])  # [B, R, D]
    # Layouts keep every softmax on the last axis and every product a plain (batched) matmul.
    # Padded words get -1e9 added: exp underflows to exactly 0.
    word_bias = (1.0 - tf.cast(mask, tf.float32)) * _NEG  # [C, L]

    # Eq 8 (AttnGAN): per region, softmax over the caption's real words.
    logits = tf.einsum("brd,cld->brcl", regions, words) + word_bias  # [B, R, C, L]
    attn = tf.nn.softmax(logits, axis=-1)
    # Eq 9: per word, softmax over regions of gamma1 * attn.
    attn = tf.nn.softmax(gamma1 * tf.transpose(attn, [0, 2, 3, 1]), axis=-1)  # [B, C, L, R]
    context = tf.einsum("bclr,brd->bcld", attn, regions)  # [B, C, L, D]

    dot = tf.reduce_sum(words[None] * context, axis=-1)  # [B, C, L]
    norms = _norm(words)[None] * _norm(context)
    cosine = dot / tf.maximum(norms, 1e-8)
    # log-sum-exp over real words only (padded words contribute exp(.) = 0).
    expo = tf.where(mask[None], gamma2 * cosine, _NEG)
    scores = tf.reduce_logsumexp(expo, axis=-1)  # [B, C]

    diagonal = tf.stack([tf.range(batch), tf.range(batch)], axis=1)
    matched = tf.gather_nd(attn, diagonal)  # [B, L, R]: alpha[b, b]
    matched = tf.transpose(matched, [0, 2, 1]) * tf.cast(mask, tf.float32)[:, None, :]
    maps = tf.reshape(matched, [batch, height, width, -1])
    return scores, maps


def damsm_word_loss_per_example(
    region_features, words, word_mask, class_ids=None, gamma1=4.0, gamma2=5.0, gamma3=10.0
):
    """Per-example DAMSM word losses: ``(loss0 [B], loss1 [B], maps [B, H, W, L])``."""
    scores, maps = damsm_word_scores(region_features, words, word_mask, gamma1, gamma2)
    loss0, loss1 = _cross_entropy_both_ways(gamma3 * scores, class_ids)
    return loss0, loss1, maps


def damsm_word_loss(
    region_features,
    words,
    word_mask,
    class_ids=None,
    gamma1=4.0,
    gamma2=5.0,
    gamma3=10.0,
    global_batch_size=None,
):
    """DAMSM word-level loss (part of ``L_DAMSM_k`` in eq 19; the references' ``words_loss``).

    ``scores = gamma3 * damsm_word_scores(...)`` ``[B_img, B_cap]``; entries of a different
    pair with the same class id are masked out of the softmax denominators; ``loss0`` =
    cross-entropy of each image over captions (rows), ``loss1`` = of each caption over images
    (columns), the matching pair being the target; means over the batch.

    Args:
        region_features: ``[B, H, W, D]`` local image features (DAMSM image encoder).
        words: ``[B, L, D]`` word features; word_mask: ``[B, L]`` bool or lengths ``[B]``.
        class_ids: ``[B]`` ints or None (no masking).
        gamma1, gamma2, gamma3: DAMSM smoothing factors (4, 5, 10).
        global_batch_size: see ``average_loss``.

    Returns:
        ``(loss0, loss1, maps)``: float32 scalars and the attention maps ``[B, H, W, L]``.
    """
    loss0, loss1, maps = damsm_word_loss_per_example(
        region_features, words, word_mask, class_ids, gamma1, gamma2, gamma3
    )
    return (
        average_loss(loss0, global_batch_size),
        average_loss(loss1, global_batch_size),
        maps,
    )


def damsm_sentence_loss_per_example(image_code, sentence, class_ids=None, gamma3=10.0):
    """Per-example DAMSM sentence losses ``(loss0 [B], loss1 [B])``."""
    image_code, sentence = _f32(image_code), _f32(sentence)
    dot = tf.matmul(image_code, sentence, transpose_b=True)  # [B_img, B_cap]
    norms = _norm(image_code)[:, None] * _norm(sentence)[None, :]
    scores = gamma3 * dot / tf.maximum(norms, 1e-8)
    return _cross_entropy_both_ways(scores, class_ids)


def damsm_sentence_loss(image_code, sentence, class_ids=None, gamma3=10.0, global_batch_size=None):
    """DAMSM sentence-level loss (part of ``L_DAMSM_k`` in eq 19; the references' ``sent_loss``).

    ``scores[i, j] = gamma3 * cos(image_code_i, sentence_j)`` (norm product clamped at 1e-8),
    same-class off-diagonal entries masked, ``loss0`` = CE over rows (image -> captions),
    ``loss1`` = CE over columns; means over the batch.

    Args:
        image_code: ``[B, D]`` global image features; sentence: ``[B, D]``.
        class_ids: ``[B]`` or None. global_batch_size: see ``average_loss``.

    Returns:
        ``(loss0, loss1)`` float32 scalars.
    """
    loss0, loss1 = damsm_sentence_loss_per_example(image_code, sentence, class_ids, gamma3)
    return average_loss(loss0, global_batch_size), average_loss(loss1, global_batch_size)


# ----------------------------------------------------------------------------- redundancy


def redundancy_loss_per_example(head_features, epsilon=1e-8):
    """Eqs 20-21 per example: ``[B]`` = sum over head pairs i < j of ``cos(f(i), f(j))``.

    ``f(t)`` = mean over the ``s x s`` pixels of head t's refinement features ``O_t``.
    """
    pooled = tf.stack([tf.reduce_mean(_f32(o), axis=[1, 2]) for o in head_features], axis=1)
    # pooled: [B, T, N_r]
    dots = tf.matmul(pooled, pooled, transpose_b=True)  # [B, T, T]
    norms = _norm(pooled)
    cosine = dots / tf.maximum(norms[:, :, None] * norms[:, None, :], epsilon)
    heads = len(head_features)
    upper = tf.constant(
        [[1.0 if j > i else 0.0 for j in range(heads)] for i in range(heads)], tf.float32
    )
    return tf.reduce_sum(cosine * upper, axis=[1, 2])


def redundancy_loss(head_features, global_batch_size=None):
    """Redundancy loss ``L_RED_k`` of one refinement stage (paper eqs 20-21).

    ``f(t) = 1/(s*s) sum_{u,v} o_{u,v}`` for each head's output ``O_t``; ``L = sum_{i<j}
    cos(f(i), f(j))`` (norm product clamped at 1e-8). The paper does not say how the batch is
    reduced; here the per-image sums are averaged over the batch (like every other term).
    One head gives 0.

    Args:
        head_features: list of T tensors ``[B, s, s, N_r]`` (the IMHM head outputs ``O_t``).
        global_batch_size: see ``average_loss``.

    Returns:
        float32 scalar.
    """
    if not head_features:
        raise ValueError("redundancy_loss: head_features is empty; pass the IMHM head outputs.")
    return average_loss(redundancy_loss_per_example(head_features), global_batch_size)
