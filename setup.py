"""msmt_tf: MSMT-GAN, DM-GAN and AttnGAN in TensorFlow 2 / Keras 3."""

import setuptools

setuptools.setup(
    name="msmt_tf",
    version="0.1.0",
    description=(
        "MSMT-GAN, DM-GAN and AttnGAN text-to-image synthesis in TensorFlow 2 / "
        "Keras 3, with the official-Inception FID offline."
    ),
    # The presets of --preset=NAME (msmt_tf.cli.flagfiles): flags/ of the repository, installed
    # as the data-only package msmt_tf/presets.
    packages=setuptools.find_packages(include=["msmt_tf", "msmt_tf.*"]) + ["msmt_tf.presets"],
    package_dir={"msmt_tf.presets": "flags"},
    package_data={"msmt_tf.presets": ["*.flags", "*/*.flags"]},
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.10",
        "numpy",
        "pillow",
        "scipy",
        "absl-py",
        # TensorBoard views the run logs; tensorflow 2.21 no longer depends on it.
        "tensorboard==2.21.*",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.*"],
        "gpu": ["tensorflow[and-cuda]==2.21.*"],
        "test": ["pytest", "pytest-xdist"],
    },
    entry_points={
        "console_scripts": [
            "msmt-train=msmt_tf.train:run",
            "msmt-pretrain-damsm=msmt_tf.pretrain_damsm:run",
            "msmt-evaluate=msmt_tf.evaluate:run",
            "msmt-sample=msmt_tf.sample:run",
            "msmt-export=msmt_tf.export.cli:run",
            "msmt-summary=msmt_tf.summary:run",
            "msmt-prepare-data=msmt_tf.prepare_data:run",
            "msmt-fid=msmt_tf.fid:run",
        ]
    },
)
