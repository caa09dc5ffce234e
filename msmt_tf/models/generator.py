"""The multi-stage text-to-image generator shared by AttnGAN, DM-GAN and MSMT-GAN."""

import keras

from msmt_tf.layers.attn_refinement import AttnRefinement
from msmt_tf.layers.conditioning_augmentation import ConditioningAugmentation
from msmt_tf.layers.ig_stage import IGStage
from msmt_tf.layers.image_head import ImageHead
from msmt_tf.layers.memory_refinement import MemoryRefinement
from msmt_tf.layers.mtwig import MTWIG
from msmt_tf.layers.sdm_refinement import SDMRefinement

_INITIAL = ("ig", "mtwig")
_REFINEMENT = ("attn", "memory", "sdm")


@keras.saving.register_keras_serializable(package="msmt_tf")
class Generator(keras.Model):
    """Conditioning augmentation, an initial stage and `stages - 1` refinement stages.

    AttnGAN = `initial="ig", refinement="attn"`; DM-GAN = `initial="ig", refinement="memory"`;
    MSMT-GAN = `initial="mtwig", refinement="sdm", heads=6` (paper Fig. 1). Stage k+1 consumes
    the hidden features of stage k (not its image); every stage predicts an image with its own
    3x3 conv + tanh head (taoxugit/AttnGAN code/model.py:G_NET (commit 0d000e6), same in
    MinfengZhu/DM-GAN; paper Sec. 3.3 last sentence).

    Args:
        initial: `"ig"` (AttnGAN/DM-GAN sentence-level stage) or `"mtwig"` (eqs 1-3).
        mtwig_kernel: MTWIG Conv1D kernel size (eq 2).
        refinement: `"attn"`, `"memory"` or `"sdm"`.
        heads: IMHM heads per SDM stage (eqs 15-16).
        grid: SDM grid size h (eq 5).
        stages: number of stages K (images at base, 2x base, 4x base, ...).
        base_size: image size of the first stage (64 in the references; 4 * 2**n).
        gf_dim: generator width N_r.
        r_num: residual blocks per refinement stage.
        n_m: SDM memory width N_m.
        z_dim: noise size.
        condition_dim: conditioning-augmentation size.
        word_dim: text feature width N_w.
        sdm_kernel: kernel of the SDM convolutions the paper leaves open.
        key_reading: SDM key reading, `"concat"` or `"positional"`.
        sdm_trunk: blocks after the IMHM response, `"n_r"`, `"2n_r"` or `"2n_r_prev"`
            (`SDMRefinement`'s `trunk`).
        fusion_gate: `"pixel"` or `"channel"` gated fusion.
        mask_row_quirk: reproduce the reference mask bug (imported checkpoints only).
        seed: seed of the conditioning-augmentation noise generator.

    Call arguments:
        inputs: dict with `noise` `[B, z_dim]`, `sentence` `[B, N_w]`, `words` `[B, L, N_w]`,
            `mask` bool `[B, L]` (True at real words) and optionally `ca_eps`
            `[B, condition_dim]` (the reparameterisation noise, for equivalence tests).
        training: BN mode.

    Returns:
        dict with `images` (list of `[B, S_k, S_k, 3]` in [-1, 1], lowest size first),
        `attention` (list of `[B, S_k, S_k, L]` maps of each refinement stage), `mu`, `logvar`
        `[B, condition_dim]`, and `head_features` (per refinement stage, the list of IMHM head
        outputs O_t for the redundancy loss, eqs 20-21; empty lists for attn/memory).
    """

    def __init__(
        self,
        initial="mtwig",
        mtwig_kernel=3,
        refinement="sdm",
        heads=6,
        grid=8,
        stages=3,
        base_size=64,
        gf_dim=48,
        r_num=2,
        n_m=96,
        z_dim=100,
        condition_dim=100,
        word_dim=256,
        sdm_kernel=3,
        key_reading="concat",
        fusion_gate="pixel",
        mask_row_quirk=False,
        seed=None,
        sdm_trunk="n_r",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if initial not in _INITIAL:
            raise ValueError(f"initial={initial!r} is not one of {_INITIAL}.")
        if refinement not in _REFINEMENT:
            raise ValueError(f"refinement={refinement!r} is not one of {_REFINEMENT}.")
        if stages < 1:
            raise ValueError(f"stages={stages} must be >= 1.")
        self.initial = initial
        self.mtwig_kernel = mtwig_kernel
        self.refinement = refinement
        self.heads = heads
        self.grid = grid
        self.stages = stages
        self.base_size = base_size
        self.gf_dim = gf_dim
        self.r_num = r_num
        self.n_m = n_m
        self.z_dim = z_dim
        self.condition_dim = condition_dim
        self.word_dim = word_dim
        self.sdm_kernel = sdm_kernel
        self.key_reading = key_reading
        self.fusion_gate = fusion_gate
        self.mask_row_quirk = mask_row_quirk
        self.seed = seed
        self.sdm_trunk = sdm_trunk

        policy = self.dtype_policy
        self.ca = ConditioningAugmentation(
            condition_dim=condition_dim, seed=seed, name="ca", dtype=policy)
        if initial == "ig":
            self.initial_stage = IGStage(
                gf_dim, z_dim=z_dim, condition_dim=condition_dim, output_size=base_size,
                name="initial", dtype=policy)
        else:
            self.initial_stage = MTWIG(
                gf_dim, kernel_size=mtwig_kernel, z_dim=z_dim, condition_dim=condition_dim,
                word_dim=word_dim, gate=fusion_gate, output_size=base_size, name="initial",
                dtype=policy)
        self.refiners = [self._make_refiner(k, policy) for k in range(stages - 1)]
        self.image_heads = [ImageHead(name=f"image_{k}", dtype=policy) for k in range(stages)]

    def _make_refiner(self, k, policy):
        name = f"refine_{k + 1}"
        if self.refinement == "attn":
            return AttnRefinement(
                self.gf_dim, r_num=self.r_num, mask_row_quirk=self.mask_row_quirk, name=name,
                dtype=policy)
        if self.refinement == "memory":
            return MemoryRefinement(
                self.gf_dim, r_num=self.r_num, mask_row_quirk=self.mask_row_quirk, name=name,
                dtype=policy)
        return SDMRefinement(
            self.gf_dim, r_num=self.r_num, heads=self.heads, memory_dim=self.n_m, grid=self.grid,
            kernel_size=self.sdm_kernel, key_reading=self.key_reading, gate=self.fusion_gate,
            word_dim=self.word_dim, trunk=self.sdm_trunk, name=name, dtype=policy)

    def build_variables(self, words_num=18):
        """Creates every variable from static shapes, without a forward pass.

        The same variables as a first call on `[B, words_num]` captions. Under
        `keras.StatelessScope(initialize_variables=False)` no initial value is drawn either,
        which is how `param_count` counts a full-size model (MTWIG's 33.6M-entry orthogonal
        kernel alone takes seconds to initialise).
        """
        words, mask = (None, words_num, self.word_dim), (None, words_num)
        seeds = ((None, self.condition_dim), (None, self.z_dim))
        with keras.name_scope(self.name):  # the variable paths of a first call
            self.ca.build((None, self.word_dim))
            self.initial_stage.build(seeds if self.initial == "ig" else seeds + (words, mask))
            for k, head in enumerate(self.image_heads):
                size = self.base_size * 2**k
                if k > 0:
                    h = (None, size // 2, size // 2, self.gf_dim)
                    self.refiners[k - 1].build((h, words, mask))
                head.build((None, size, size, self.gf_dim))
        self.built = True

    def call(self, inputs, training=None):
        noise = inputs["noise"]
        words = inputs["words"]
        mask = inputs["mask"]
        c_code, mu, logvar = self.ca(inputs["sentence"], training=training, eps=inputs.get("ca_eps"))
        if self.initial == "ig":
            h = self.initial_stage((c_code, noise), training=training)
        else:
            h = self.initial_stage((c_code, noise, words, mask), training=training)
        images = [self.image_heads[0](h, training=training)]
        attention, head_features = [], []
        for k, refiner in enumerate(self.refiners):
            out = refiner((h, words, mask), training=training)
            h = out["features"]
            images.append(self.image_heads[k + 1](h, training=training))
            attention.append(out["attention"])
            head_features.append(list(out["head_features"]))
        return {
            "images": images,
            "attention": attention,
            "mu": mu,
            "logvar": logvar,
            "head_features": head_features,
        }

    def get_config(self):
        config = super().get_config()
        config.update({
            "initial": self.initial,
            "mtwig_kernel": self.mtwig_kernel,
            "refinement": self.refinement,
            "heads": self.heads,
            "grid": self.grid,
            "stages": self.stages,
            "base_size": self.base_size,
            "gf_dim": self.gf_dim,
            "r_num": self.r_num,
            "n_m": self.n_m,
            "z_dim": self.z_dim,
            "condition_dim": self.condition_dim,
            "word_dim": self.word_dim,
            "sdm_kernel": self.sdm_kernel,
            "key_reading": self.key_reading,
            "fusion_gate": self.fusion_gate,
            "mask_row_quirk": self.mask_row_quirk,
            "seed": self.seed,
            "sdm_trunk": self.sdm_trunk,
        })
        return config


def build_generator(cfg, seed=None, name="generator"):
    """Builds the `Generator` described by a `ModelConfig`."""
    return Generator(
        initial=cfg.initial,
        mtwig_kernel=cfg.mtwig_kernel,
        refinement=cfg.refinement,
        heads=cfg.heads,
        grid=cfg.grid,
        stages=cfg.stages,
        base_size=cfg.base_size,
        gf_dim=cfg.gf_dim,
        r_num=cfg.r_num,
        n_m=cfg.n_m,
        z_dim=cfg.z_dim,
        condition_dim=cfg.condition_dim,
        word_dim=cfg.embedding_dim,
        sdm_kernel=cfg.sdm_kernel,
        key_reading=cfg.key_reading,
        fusion_gate=cfg.fusion_gate,
        mask_row_quirk=cfg.mask_row_quirk,
        seed=seed,
        sdm_trunk=cfg.sdm_trunk,
        name=name,
    )
