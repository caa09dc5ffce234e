"""``msmt_tf.inference``: the traced noise draw and forward pass trace once for every batch size.

An evaluation of 13 captions in batches of 5 runs batches of 5, 5 and 3 rows; a ``tf.function``
keyed on the input shapes would trace again for the last one (and for every other size a caller
uses). These tests count the traces.
"""

import numpy as np
import tensorflow as tf

from msmt_tf import inference


def test_seeded_noise_traces_once_for_batches_of_5_5_3_and_any_width():
    seed = tf.constant(7, tf.int64)
    z, eps = inference.seeded_noise(seed, np.arange(5), z_dim=8, condition_dim=6)
    traces = inference._draw.experimental_get_tracing_count()
    parts = [(z, eps)] + [
        inference.seeded_noise(seed, np.arange(start, start + n), z_dim=8, condition_dim=6)
        for start, n in ((5, 5), (10, 3))
    ]
    inference.seeded_noise(seed, np.arange(2), z_dim=3, condition_dim=2)  # another width
    assert inference._draw.experimental_get_tracing_count() == traces
    z = np.concatenate([p[0] for p in parts])
    eps = np.concatenate([p[1] for p in parts])
    assert z.shape == (13, 8) and eps.shape == (13, 6)
    # The rule of the module docstring, row by row: [z | ca_eps] = stateless_normal([14],
    # seed=[seed, i]) for caption i, sample 0; the smaller last batch changes no value.
    rows = np.stack([tf.random.stateless_normal([14], seed=tf.constant([7, i], tf.int64))
                     for i in range(13)])
    np.testing.assert_array_equal(np.concatenate([z, eps], axis=1), rows)


def test_seeded_noise_keeps_the_static_width_inside_a_graph():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def draw(rows):
        z, eps = inference.seeded_noise(tf.constant(3, tf.int64), rows, z_dim=4, condition_dim=2)
        assert z.shape.as_list() == [None, 4] and eps.shape.as_list() == [None, 2]
        return z

    np.testing.assert_array_equal(
        draw(tf.range(3, dtype=tf.int64)),
        inference.seeded_noise(3, [0, 1, 2], z_dim=4, condition_dim=2)[0])


def test_generate_batches_traces_once_for_a_smaller_last_batch(tiny_inference):
    text_encoder, generator = tiny_inference.text_encoder, tiny_inference.generator
    rng = np.random.default_rng(0)
    ids = rng.integers(1, len(tiny_inference.vocab), size=(13, 6)).astype(np.int32)
    forward = inference.forward_fn(text_encoder, generator, ids.shape[1])
    first = next(inference.generate_batches(text_encoder, generator, ids[:5], 4, batch_size=5))
    traces = (forward.experimental_get_tracing_count(),
              inference._draw.experimental_get_tracing_count())
    batches = list(inference.generate_batches(text_encoder, generator, ids, 4, batch_size=5))
    assert [len(b.ids) for b in batches] == [5, 5, 3]
    assert (forward.experimental_get_tracing_count(),
            inference._draw.experimental_get_tracing_count()) == traces
    # The batch size changes no image: one batch of all 13 gives the same rows.
    whole = next(inference.generate_batches(text_encoder, generator, ids, 4, batch_size=13))
    np.testing.assert_allclose(np.concatenate([b.final for b in batches]), whole.final, atol=1e-5)
    np.testing.assert_array_equal(batches[0].final, first.final)
