"""R-precision as DM-GAN defines it (MinfengZhu/DM-GAN
`code/trainer.py:condGANTrainer.sampling`, commit d515995), without its
fold off-by-one.

For each generated image: its own caption plus `num_negatives` (99) captions of test images from
other classes are ranked by the cosine similarity between the DAMSM global image code and their
sentence features; a hit when the true caption ranks first (R = 1 relevant item among 100).
The hits are shuffled with a seeded generator and split into `folds` (10) equal folds; the
result is the mean and standard deviation of the fold means, in percent.

DM-GAN slices each fold as `[i*3000 : (i+1)*3000 - 1]` (2,999 items, the last item of every
fold dropped); we use all items (`docs/metrics.md`).
"""

import numpy as np


def negative_shortfall(class_ids, candidate_class_ids, num_negatives=99):
    """The query classes with fewer than `num_negatives` candidates of another class.

    What R-precision needs from a split, checked before anything is generated (the evaluator
    skips the metric, or stops with a message naming the flag, instead of failing halfway).

    Returns:
        dict {class id (int): number of candidate captions of other classes}, empty when every
        query class has enough.
    """
    candidate_class_ids = np.asarray(candidate_class_ids)
    classes, counts = np.unique(candidate_class_ids, return_counts=True)
    same = dict(zip(classes.tolist(), counts.tolist()))
    short = {}
    for c in np.unique(np.asarray(class_ids)).tolist():
        available = len(candidate_class_ids) - same.get(c, 0)
        if available < num_negatives:
            short[int(c)] = int(available)
    return short


def sample_negatives(class_ids, candidate_class_ids, num_negatives=99, seed=0):
    """Indices of `num_negatives` candidates of another class, per query.

    Args:
        class_ids: int array `[N]`, the class of each query (generated image).
        candidate_class_ids: int array `[M]`, the class of each candidate caption.
        num_negatives: negatives per query.
        seed: seed of the numpy generator (deterministic).

    Returns:
        int array `[N, num_negatives]` of candidate indices, each with a class different from
        the query's. Raises ValueError when a class has fewer candidates of other classes than
        `num_negatives`.
    """
    class_ids = np.asarray(class_ids)
    candidate_class_ids = np.asarray(candidate_class_ids)
    short = negative_shortfall(class_ids, candidate_class_ids, num_negatives)
    if short:
        c, available = min(short.items(), key=lambda kv: kv[1])
        raise ValueError(
            f"R-precision needs {num_negatives} captions of other classes than class {c}, "
            f"but the test split has only {available}.")
    rng = np.random.default_rng(seed)
    out = np.empty((len(class_ids), num_negatives), np.int64)
    pools = {}
    for i, c in enumerate(class_ids):
        if c not in pools:
            pools[c] = np.flatnonzero(candidate_class_ids != c)
        pool = pools[c]
        # Draw with replacement like DM-GAN's get_mis_caption (independent random images).
        out[i] = pool[rng.integers(0, len(pool), num_negatives)]
    return out


def _normalise(x):
    x = np.asarray(x, np.float64)
    # DM-GAN clamps the product of the norms at 1e-8; per-vector clamping is equivalent for
    # the ranking and avoids a division by zero.
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def r_precision_hits(image_codes, true_sentences, negative_sentences):
    """Hit (1.0) or miss (0.0) per query.

    Args:
        image_codes: `[N, D]` global DAMSM image codes of the generated images.
        true_sentences: `[N, D]` sentence features of each image's own caption.
        negative_sentences: `[N, K, D]` sentence features of the mismatched captions.

    Returns:
        float array `[N]`. The true caption must score strictly higher than every negative;
        a tie counts as a miss (argmax of DM-GAN picks the first maximum, which is the true
        caption at index 0, so ties were hits there; exact ties of float cosines do not occur
        in practice).
    """
    img = _normalise(image_codes)
    true_score = np.sum(img * _normalise(true_sentences), axis=-1)
    neg_score = np.einsum("nd,nkd->nk", img, _normalise(negative_sentences))
    return (true_score > neg_score.max(axis=1)).astype(np.float64)


def fold_statistics(hits, folds=10, seed=0):
    """Shuffles the hits and returns (mean %, std %) of the fold means.

    All `len(hits) // folds * folds` items are used (the remainder, if any, is dropped so
    that folds are equal; 30,000 / 10 leaves none).
    """
    hits = np.asarray(hits, np.float64)
    if len(hits) < folds:
        raise ValueError(f"R-precision needs at least {folds} images for {folds} folds, got {len(hits)}.")
    rng = np.random.default_rng(seed)
    shuffled = hits[rng.permutation(len(hits))]
    size = len(hits) // folds
    means = shuffled[: size * folds].reshape(folds, size).mean(axis=1)
    return float(means.mean() * 100.0), float(means.std() * 100.0)
