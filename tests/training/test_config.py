"""TrainConfig: reference defaults, bounds, flags round trip."""

import dataclasses
import os

import pytest
from absl import flags

from msmt_tf import configlib
from msmt_tf.cli import flagutil
from msmt_tf.training.config import TrainConfig


def test_defaults_follow_the_references_and_the_paper():
    c = TrainConfig()
    assert (c.g_lr, c.d_lr, c.beta_1, c.beta_2, c.adam_epsilon) == (2e-4, 2e-4, 0.5, 0.999, 1e-8)
    # The quickstart's loop; the presets set the references' batch, EMA 0.999 and no ramp.
    assert (c.batch_size, c.max_steps, c.ema_decay, c.ema_ramp) == (10, 2000, 0.99, True)
    assert (c.lambda1, c.lambda2, c.lambda3, c.damsm_stages) == (1.0, 0.5, 0.0, "last")  # presets: lambda3 5/50, MSMT "all"
    assert (c.gamma1, c.gamma2, c.gamma3) == (4.0, 5.0, 10.0)
    assert (c.precision, c.strategy, c.resume, c.run_dir, c.jit_compile) == ("auto", "default", True, None, False)
    assert c.max_nonfinite_steps == 20
    assert c.d_warmup_steps == 500  # not in the references: the presets set 0
    # The references' code (eqs 22-23 as AttnGAN/DM-GAN run them): summed G terms, wrong pairs.
    assert (c.g_adv_factor, c.d_mismatch_term) == (1.0, "on")


def test_bad_values_name_the_flag():
    with pytest.raises(configlib.ConfigError, match=r"--precision='fp16' is not one of"):
        TrainConfig(precision="fp16")
    with pytest.raises(configlib.ConfigError, match=r"--batch_size=0 must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(configlib.ConfigError, match=r"--ema_decay=1.5 must be <= 1.0"):
        TrainConfig(ema_decay=1.5)
    with pytest.raises(configlib.ConfigError, match=r"--run_dir is empty"):
        TrainConfig(run_dir="  ")
    with pytest.raises(configlib.ConfigError, match="--strategy='tpu'"):
        TrainConfig(strategy="tpu")
    with pytest.raises(configlib.ConfigError, match=r"--d_mismatch_term='yes' is not one of"):
        TrainConfig(d_mismatch_term="yes")
    with pytest.raises(configlib.ConfigError, match=r"--g_adv_factor=-0.5 must be >= 0.0"):
        TrainConfig(g_adv_factor=-0.5)


def test_pipeline_seed_is_the_seed_of_a_deterministic_run():
    assert TrainConfig(seed=7, deterministic=True).pipeline_seed == 7
    assert TrainConfig(seed=7).pipeline_seed is None  # a faster, nondeterministic pipeline


def test_total_steps():
    assert TrainConfig(max_steps=7, epochs=3).total_steps(100) == 7
    assert TrainConfig(max_steps=0, epochs=3).total_steps(100) == 300
    with pytest.raises(configlib.ConfigError, match="--batch_size=20"):
        TrainConfig(max_steps=0, batch_size=20).total_steps(0)


def test_flags_round_trip():
    fv = flags.FlagValues()
    flagutil.define_flags(TrainConfig, flag_values=fv)
    fv(["prog", "--noresume", "--precision=mixed_float16", "--g_lr=0.001", "--run_dir=/tmp/r",
        "--damsm_stages=last", "--max_steps=10", "--g_adv_factor=0.5", "--d_mismatch_term=off"])
    c = flagutil.from_flags(TrainConfig, flag_values=fv)
    assert c == TrainConfig(resume=False, precision="mixed_float16", g_lr=0.001, run_dir="/tmp/r",
                            damsm_stages="last", max_steps=10, g_adv_factor=0.5,
                            d_mismatch_term="off")
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= set(fv)


def test_damsm_dir_defaults_to_the_datasets():
    from msmt_tf.training.damsm_config import DAMSMConfig

    assert DAMSMConfig().resolved_damsm_dir("cub") == os.path.join("runs", "cub_damsm")
    assert DAMSMConfig(damsm_dir="enc").resolved_damsm_dir("cub") == "enc"
