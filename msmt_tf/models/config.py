"""ModelConfig: one frozen description of the generator family and its discriminators.

AttnGAN, DM-GAN, MSMT-GAN and every ablation of the paper (Tables 1 and 4) are points of this
space; the presets in `flags/` select them and set every field explicitly. The dataclass
defaults are the CPU quickstart (`python -m msmt_tf.train` with no flags): the sentence-level
initial stage with a 2-head SDM/IMHM refinement at 32 -> 64 px and small widths. MTWIG costs
T = L - ks + 1 times IG's upsampling stack (one per word n-gram), too much for the 15-minute
CPU budget; the paper's values are in `flags/msmt_cub.flags`.
"""

import dataclasses

from msmt_tf import configlib
from msmt_tf.configlib import option


@dataclasses.dataclass(frozen=True)
class ModelConfig(configlib.ConfigBase):
    """Architecture of the generator, the discriminators and the DAMSM encoders."""

    initial: str = option(
        "ig", "Initial stage: ig (AttnGAN/DM-GAN) or mtwig (MSMT-GAN eqs 1-3).",
        choices=("ig", "mtwig"))
    mtwig_kernel: int = option(3, "MTWIG Conv1D kernel size ks (eq 2): tails are word ks-grams.",
                               lower=1, upper=5)
    refinement: str = option(
        "sdm", "Refinement stages: attn (AttnGAN), memory (DM-GAN) or sdm (MSMT-GAN SDM + IMHM).",
        choices=("attn", "memory", "sdm"))
    heads: int = option(2, "IMHM refinement heads T per stage (eqs 15-16).", lower=1)
    grid: int = option(4, "SDM grid size h (eq 5): each stage input is split into h x h cells.",
                       lower=1)
    stages: int = option(2, "Generator stages K; image sizes are base_size * 2**k, k < stages "
                         "(the sizes the data pipeline resizes the real images to).",
                         lower=1, upper=4)
    base_size: int = option(32, "Image size of the first generator stage.", lower=8)
    gf_dim: int = option(16, "Generator width N_r (GF_DIM); the initial 4x4 map has 16x this.",
                         lower=1)
    df_dim: int = option(16, "Discriminator width (DF_DIM).", lower=1)
    r_num: int = option(1, "Residual blocks per refinement stage (R_NUM).", lower=0)
    n_m: int = option(32, "SDM memory slot width N_m (eq 7).", lower=1)
    z_dim: int = option(100, "Noise dimension N_z (eq 1).", lower=1)
    condition_dim: int = option(100, "Conditioning-augmentation output size (CONDITION_DIM).",
                                lower=1)
    embedding_dim: int = option(256, "DAMSM text/image feature width N_w (nef).", lower=2)
    word_embedding_dim: int = option(300, "Text-encoder word-embedding size.", lower=1)
    rnn_type: str = option("lstm", "Text-encoder RNN.", choices=("lstm", "gru"))
    sdm_kernel: int = option(3, "Kernel of the SDM convolutions the paper leaves open "
                             "(M_c, phi_K, phi_V, phi_Q).", lower=1)
    key_reading: str = option(
        "concat", "SDM key reading (eqs 8-12, see docs/decisions.md): concat (phi_K 3 N_r wide, "
        "concatenated query) or positional (phi_K N_r + p^2 wide as printed; MSMT presets).",
        choices=("concat", "positional"))
    sdm_trunk: str = option(
        "n_r", "Blocks after the IMHM response (Sec. 3.3, see docs/decisions.md): n_r = R_NUM "
        "ResBlock(N_r) + UpBlock(N_r); 2n_r = DM-GAN's cat(response, response) -> R_NUM "
        "ResBlock(2 N_r) -> UpBlock(2 N_r -> N_r) (MSMT presets, fits Table 2); 2n_r_prev = "
        "cat(R_{k-1}, response) -> the same 2 N_r blocks.",
        choices=("n_r", "2n_r", "2n_r_prev"))
    fusion_gate: str = option("pixel", "Gated fusion (eqs 17-18): one gate per pixel or per channel.",
                              choices=("pixel", "channel"))
    discriminator: str = option(
        "dmgan", "Discriminator family: dmgan (spectral norm, no BN; the paper's) or attngan (BN).",
        choices=("dmgan", "attngan"))
    mask_row_quirk: bool = option(
        False, "Reproduce the reference attention-mask row-order bug (for imported AttnGAN/DM-GAN "
        "checkpoints only).")
    damsm_image_size: int = option(75, "Input size of the DAMSM image encoder (299 as the "
                                   "references; smaller for CPU runs).", lower=75)

    def validate(self):
        super().validate()
        n = self.base_size // 4
        if self.base_size % 4 or n & (n - 1) or n < 2:
            raise configlib.ConfigError(
                f"--base_size={self.base_size} must be 4 * 2**n with n >= 1 (the initial 4x4 map is "
                "upsampled n times; 64 in every reference config).")
        if self.refinement == "sdm":
            for k in range(self.stages - 1):
                size = self.base_size * 2**k
                if size % self.grid:
                    raise configlib.ConfigError(
                        f"--grid={self.grid} does not divide the stage-{k + 1} feature size {size}; "
                        "choose a grid that divides --base_size.")

    @property
    def image_sizes(self):
        """Stage image sizes, lowest resolution first (also the data pipeline's)."""
        return tuple(self.base_size * 2**k for k in range(self.stages))

    @property
    def preset_name(self):
        """Short name of the architecture, e.g. 'msmt', 'dmgan', 'attngan', 'mtwig_memory'."""
        if self.initial == "ig" and self.refinement == "attn":
            return "attngan"
        if self.initial == "ig" and self.refinement == "memory":
            return "dmgan"
        if self.initial == "mtwig" and self.refinement == "sdm" and self.heads > 1:
            return "msmt"
        return f"{self.initial}_{self.refinement}" + (
            f"{self.heads}" if self.refinement == "sdm" else "")
