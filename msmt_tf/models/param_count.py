"""Parameter counts per module and per network, with Table 2's definition of the total."""

import collections

import keras
import numpy as np

from msmt_tf.models.generator import build_generator


def _trainable(layer):
    return int(sum(np.prod(w.shape) for w in layer.trainable_weights))


def _non_trainable(layer):
    return int(sum(np.prod(w.shape) for w in layer.non_trainable_weights))


def dummy_generator_inputs(cfg, batch=1, words_num=18):
    """Zero inputs of the right shapes (one real word per caption) to build a generator."""
    mask = np.zeros((batch, words_num), bool)
    mask[:, :4] = True
    return {
        "noise": np.zeros((batch, cfg.z_dim), "float32"),
        "sentence": np.zeros((batch, cfg.embedding_dim), "float32"),
        "words": np.zeros((batch, words_num, cfg.embedding_dim), "float32"),
        "mask": mask,
    }


def build_all(cfg, vocab_size, with_image_encoder=True, with_discriminators=True,
              initialize=True):
    """Builds every network of a configuration and returns them in a dict.

    With `initialize=False` the generator's and discriminators' variables are created from
    static shapes (`Generator.build_variables`, `Discriminator.build`) inside
    `keras.StatelessScope(initialize_variables=False)`: they have their shapes but no value
    (counting needs shapes only, and drawing the large orthogonal kernels takes seconds). Such
    networks cannot be called; `keras.backend.clear_session()` drops the pending
    initialisations. Otherwise every network has random weights from a forward pass on dummy
    inputs.
    """
    from msmt_tf.layers.text_encoder import TextEncoder
    from msmt_tf.models.discriminator import Discriminator

    gen = build_generator(cfg)
    discriminators = [
        Discriminator(size, df_dim=cfg.df_dim, condition_dim=cfg.embedding_dim,
                      kind=cfg.discriminator)
        for size in (cfg.image_sizes if with_discriminators else ())
    ]
    if initialize:
        gen(dummy_generator_inputs(cfg), training=False)
        for d in discriminators:
            code = d(np.zeros((1, d.stage_size, d.stage_size, 3), "float32"), training=False)
            d.uncond_logits(code)
            d.cond_logits(code, np.zeros((1, cfg.embedding_dim), "float32"))
    else:
        with keras.StatelessScope(initialize_variables=False):
            gen.build_variables()
            for d in discriminators:
                d.build((1, d.stage_size, d.stage_size, 3))
    text = TextEncoder(vocab_size, word_dim=cfg.word_embedding_dim,
                       hidden_per_direction=cfg.embedding_dim // 2, rnn_type=cfg.rnn_type)
    text(np.ones((1, 18), "int32"), training=False)
    nets = {"generator": gen, "text_encoder": text, "discriminators": discriminators}
    if with_image_encoder:
        from msmt_tf.models.damsm_image_encoder import DAMSMImageEncoder

        image = DAMSMImageEncoder(embedding_dim=cfg.embedding_dim, image_size=cfg.damsm_image_size)
        image(np.zeros((1, 64, 64, 3), "float32"), training=False)
        nets["image_encoder"] = image
    return nets


def count_parameters(cfg, vocab_size, with_image_encoder=True, with_discriminators=True):
    """Returns an ordered dict of rows `name -> (trainable, non_trainable)`.

    Rows: every generator submodule, `generator`, each discriminator and `discriminators`
    (unless `with_discriminators=False`), `text_encoder`, `image_encoder` (its trainable part is
    the two projections; the frozen Inception trunk is non-trainable) and `total` = generator +
    text encoder, the definition of the paper's Table 2 ("parameters required at test-time,
    including text-encoders"). The generator and the discriminators are built from shapes,
    without drawing their weights (`build_all(initialize=False)`); the counts equal those of
    forward-built models.
    """
    nets = build_all(cfg, vocab_size, with_image_encoder, with_discriminators, initialize=False)
    gen = nets["generator"]
    rows = collections.OrderedDict()
    for layer in [gen.ca, gen.initial_stage, *gen.refiners, *gen.image_heads]:
        rows[f"generator/{layer.name}"] = (_trainable(layer), _non_trainable(layer))
    rows["generator"] = (_trainable(gen), _non_trainable(gen))
    if with_discriminators:
        for size, d in zip(cfg.image_sizes, nets["discriminators"]):
            rows[f"discriminator_{size}"] = (_trainable(d), _non_trainable(d))
        rows["discriminators"] = (
            sum(rows[f"discriminator_{s}"][0] for s in cfg.image_sizes),
            sum(rows[f"discriminator_{s}"][1] for s in cfg.image_sizes),
        )
    rows["text_encoder"] = (_trainable(nets["text_encoder"]), _non_trainable(nets["text_encoder"]))
    if with_image_encoder:
        image = nets["image_encoder"]
        rows["image_encoder"] = (_trainable(image), _non_trainable(image))
    rows["total"] = (rows["generator"][0] + rows["text_encoder"][0], 0)
    keras.backend.clear_session()
    return rows


def format_table(rows):
    """Renders the rows of `count_parameters` as an aligned text table."""
    width = max(len(k) for k in rows)
    lines = [f"{'module':<{width}}  {'trainable':>12}  {'non-trainable':>13}"]
    for name, (t, n) in rows.items():
        lines.append(f"{name:<{width}}  {t:>12,}  {n:>13,}")
    return "\n".join(lines)
