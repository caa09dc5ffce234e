"""DiscriminatorLogits: hand values, an independent NumPy conditional head, serialization."""

import numpy as np
import pytest

from msmt_tf.layers.d_logits import DiscriminatorLogits
from msmt_tf.testing.layer_test import np_conv_same, run_serialization_test


def test_uncond_head_hand_values():
    head = DiscriminatorLogits(1, conditional=False)
    code = np.full((2, 4, 4, 8), 0.01, "float32")
    code[1] *= -1
    head.build(code.shape)
    head.out_conv.kernel.assign(np.ones((4, 4, 8, 1), "float32"))
    head.out_conv.bias.assign([0.5])
    np.testing.assert_allclose(head(code), [1.28 + 0.5, -1.28 + 0.5], rtol=1e-5)
    prob = DiscriminatorLogits(1, conditional=False, output="probability")
    prob.build(code.shape)
    prob.set_weights(head.get_weights())
    np.testing.assert_allclose(prob(code), 1 / (1 + np.exp(-np.array([1.78, -0.78]))), rtol=1e-5)


def test_cond_head_matches_numpy():
    rng = np.random.default_rng(0)
    code = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    sentence = rng.normal(size=(2, 3)).astype("float32")
    head = DiscriminatorLogits(1, condition_dim=3, conditional=True, kind="dmgan", seed=1)
    head.build(code.shape, sentence.shape)
    head.joint_conv.conv.bias.assign(rng.normal(size=8).astype("float32"))
    head.out_conv.bias.assign([0.3])
    got = head(code, sentence, training=False)

    sn = head.joint_conv.conv
    w = sn.kernel.numpy().astype("float64")  # HWIO
    w_mat = np.transpose(w, (3, 2, 0, 1)).reshape(8, -1)
    sigma = sn.u.numpy() @ w_mat @ sn.v.numpy()
    joint = np.concatenate([code, np.tile(sentence[:, None, None, :], (1, 4, 4, 1))], axis=-1)
    h = (np_conv_same(joint, w / sigma) + sn.bias.numpy())
    h = np.where(h > 0, h, 0.2 * h)
    expected = np.einsum("bhwc,hwc->b", h, head.out_conv.kernel.numpy()[..., 0]) + 0.3
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert got.dtype == "float32"


def test_cond_head_parameter_counts():
    for kind, df, expected in (("dmgan", 32, 1_184_001), ("attngan", 64, 3_548_161)):
        head = DiscriminatorLogits(df, kind=kind, kernel_initializer="zeros")
        head.build((None, 4, 4, 8 * df), (None, 256))
        assert sum(int(np.prod(w.shape)) for w in head.trainable_weights) == expected


def test_errors_name_the_problem():
    head = DiscriminatorLogits(2, conditional=True)
    with pytest.raises(ValueError, match="df_dim"):
        head.build((None, 4, 4, 8), (None, 256))
    head = DiscriminatorLogits(1, condition_dim=3)
    with pytest.raises(ValueError, match="sentence"):
        head(np.zeros((1, 4, 4, 8), "float32"))
    with pytest.raises(ValueError, match="output="):
        DiscriminatorLogits(1, output="sigmoid")


@pytest.mark.parametrize("kind", ["dmgan", "attngan"])
def test_serialization_round_trip(kind):
    rng = np.random.default_rng(2)
    code = rng.normal(size=(2, 4, 4, 16)).astype("float32")
    sentence = rng.normal(size=(2, 5)).astype("float32")
    cond = DiscriminatorLogits(2, condition_dim=5, kind=kind, output="probability", seed=9)
    out = run_serialization_test(cond, code, call_kwargs={"sentence": sentence})
    assert tuple(out.shape) == (2,)
    uncond = DiscriminatorLogits(2, condition_dim=5, conditional=False, kind=kind, seed=9)
    run_serialization_test(uncond, code)
