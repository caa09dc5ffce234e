"""``DataConfig``: where the data lives, its format, and the input-pipeline settings.

Field name == absl flag name (see ``msmt_tf.cli.flagutil``). Fields owned by other configs are
not repeated here: the stage image sizes the pipeline produces are the model's
(``ModelConfig.image_sizes``, from ``--base_size``/``--stages``), and the seed of the pipeline
and of a custom folder's split is the run's (``TrainConfig.seed``/``deterministic``); the
callers pass them in.
"""

import dataclasses
import os
from typing import Optional

from msmt_tf import configlib
from msmt_tf.data import shapes_options

DATASETS = ("shapes", "cub", "coco", "folder")
PAIRINGS = ("other_class", "next_row")


def _words(text):
    """``"a, B,c"`` -> ``("a", "b", "c")``."""
    return tuple(w.strip().lower() for w in text.split(",") if w.strip())


@dataclasses.dataclass(frozen=True)
class DataConfig(configlib.ConfigBase):
    """Dataset and input-pipeline configuration (frozen, validated)."""

    dataset: str = configlib.option(
        "shapes", "Dataset kind: the synthetic default, AttnGAN-format CUB/COCO, or a custom folder.",
        choices=DATASETS)
    data_dir: Optional[str] = configlib.option(
        None, "Dataset directory; default data/<dataset> relative to the working directory.")
    words_num: int = configlib.option(
        18, "Caption length in words (WORDS_NUM); longer captions are truncated.", lower=1)
    captions_per_image: int = configlib.option(
        10, "Captions per image (CAPTIONS_PER_IMAGE): 10 for CUB and shapes, 5 for COCO.", lower=1)
    test_fraction: float = configlib.option(
        0.1, "Fraction of a custom folder's images put in the test split (drawn with --seed when "
        "the folder is converted).",
        lower=0.0, upper=0.9)
    shapes_seed: int = configlib.option(
        0, "Seed that generates the synthetic shapes dataset (kept apart from --seed so runs "
        "with different seeds share one dataset).", lower=0)
    skip_bad_images: bool = configlib.option(
        False, "Skip (and count) unreadable or truncated images instead of stopping.")
    shapes_num_train: int = configlib.option(
        10000, "Training images of the synthetic shapes dataset.", lower=1)
    shapes_num_test: int = configlib.option(
        2000, "Test images of the synthetic shapes dataset.", lower=1)
    shapes_size: int = configlib.option(
        64, "Image size of the synthetic shapes dataset (pixels).", lower=16, upper=256)
    shapes_max_objects: int = configlib.option(
        1, "Objects per shapes image: 1 to this many (1 is the quickstart, 3 the full set of "
        "flags/shapes.flags).", lower=1, upper=3)
    shapes_textured: float = configlib.option(
        0.0, "Fraction of shapes images on a textured background (0 is the quickstart, 0.4 the "
        "full set of flags/shapes.flags).", lower=0.0, upper=1.0)
    shapes_layout: str = configlib.option(
        "centre", "Placement of the shapes objects: centre (the one object in the centre cell: "
        "the quickstart) or grid (distinct random cells of a 3 x 3 grid: flags/shapes.flags).",
        choices=("centre", "grid"))
    shapes_binding: bool = configlib.option(
        False, "Word-level binding set: every image has exactly two objects of different "
        "shapes and different colours in distinct grid cells, and every caption names both, "
        "each colour bound to its shape, and their spatial relation (\"a red circle to the "
        "left of a blue square\"); needs --shapes_layout=grid --shapes_max_objects=2 "
        "(flags/shapes_binding.flags; docs/shapes_binding.md).")
    shapes_names: str = configlib.option(
        "circle,square,triangle",
        "Comma-separated shapes the synthetic objects are drawn from, out of circle, square, "
        "triangle, diamond, hexagon, star, cross (three is the quickstart, all seven the full "
        "set of flags/shapes.flags).")
    shapes_colours: str = configlib.option(
        "red,green,blue",
        "Comma-separated colours the synthetic objects are drawn from, out of red, green, blue, "
        "yellow, purple, orange, pink, cyan, brown (three is the quickstart, all nine the full "
        "set of flags/shapes.flags).")
    folder_classes: str = configlib.option(
        "auto", "Class ids of a custom folder: from top-level sub-folders, none (every image its "
        "own class), or auto (sub-folders when there are at least two and no top-level images).",
        choices=("auto", "subfolders", "none"))
    random_flip: bool = configlib.option(
        True, "Random horizontal flips when training (never for shapes: its captions name "
        "left and right).")
    mismatch_pairing: str = configlib.option(
        "other_class", "The mismatched caption of each training image (the wrong pair of the "
        "discriminator loss, --d_mismatch_term=on): next_row = the next row's caption, image i "
        "with caption i + 1 for the batch's first B - 1 rows, same class allowed (the "
        "references' code, discriminator_loss of AttnGAN/DM-GAN code/miscc/losses.py; every "
        "paper preset); other_class = the nearest later row (cyclically) of a different class, "
        "B pairs (the quickstart).", choices=PAIRINGS)
    mismatch_swap: float = configlib.option(
        0.5, "Probability that a training image's mismatched caption (the wrong-caption pair of "
        "the conditional discriminator loss) is its own caption with one of --mismatch_words "
        "replaced by another of them, instead of another image's caption as in the references "
        "(0: the references; the presets). On the quickstart set, other images' captions almost "
        "always differ in colour, so without these the discriminators never learn to read the "
        "shape word (docs/training.md).", lower=0.0, upper=1.0)
    mismatch_words: str = configlib.option(
        "auto", "Comma-separated words swapped for --mismatch_swap (at least two in the "
        "vocabulary), e.g. bird colours; auto: the shape names on shapes, none elsewhere.")
    cache: bool = configlib.option(
        False, "Keep decoded images in memory after the first epoch.")
    tfrecord_dir: Optional[str] = configlib.option(
        None, "Read sharded TFRecords written by prepare_data --tfrecord from this directory.")
    num_parallel_calls: int = configlib.option(
        -1, "Parallel calls of the image map function; -1 = tf.data.AUTOTUNE.", lower=-1)

    def validate(self):
        super().validate()
        if self.dataset == "shapes":
            problem = shapes_options.problem(self.shapes_layout, self.shapes_max_objects,
                                             self.shapes_name_list, self.shapes_colour_list,
                                             self.shapes_binding)
            if problem:
                raise configlib.ConfigError(problem)
        if (self.mismatch_swap > 0 and self.mismatch_words.strip() != "auto"
                and len(set(self.mismatch_word_list)) < 2):
            raise configlib.ConfigError(
                f"--mismatch_words={self.mismatch_words!r}: give at least two comma-separated "
                "words to swap, auto, or set --mismatch_swap=0.")
        if self.num_parallel_calls == 0:
            raise configlib.ConfigError(
                "--num_parallel_calls=0: use -1 (autotune) or a positive number.")

    @property
    def shapes_name_list(self):
        return _words(self.shapes_names)

    @property
    def shapes_colour_list(self):
        return _words(self.shapes_colours)

    @property
    def mismatch_word_list(self):
        """The words of --mismatch_words (auto resolved), possibly empty."""
        if self.mismatch_words.strip() == "auto":
            return self.shapes_name_list if self.dataset == "shapes" else ()
        return _words(self.mismatch_words)

    @property
    def resolved_data_dir(self):
        """``data_dir`` or ``data/<dataset>`` relative to the working directory."""
        return self.data_dir if self.data_dir else os.path.join("data", self.dataset)
