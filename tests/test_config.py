"""TrainConfig is the one source of the training settings: the CLIs' options, defaults and help
texts come from its fields (training.config.add_config_arguments)."""

import dataclasses

import pytest

from runtime.errors import CodecError
from training.config import TrainConfig, config_from_args, default, flag


def _options(parser) -> dict:
    return {opt: action for action in parser._actions for opt in action.option_strings}


def test_cli_defaults_are_the_dataclass_defaults():
    from training.train import parser

    a = parser().parse_args(["--data", "d.npz", "--out", "runs/x"])
    assert config_from_args(a) == TrainConfig("d.npz", "runs/x")
    assert (a.resume, a.threads, a.verbose) == (False, 0, False)


def test_every_field_has_a_flag_and_help_text():
    from training.train import parser

    options = _options(parser())
    for f in dataclasses.fields(TrainConfig):
        action = options.get(flag(f.name))
        assert action is not None, f"TrainConfig.{f.name} has no CLI option"
        assert action.dest == f.name and action.help and action.help == action.help.strip(), f.name
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no help text"


def test_cli_parses_lists_switches_and_choices():
    from training.train import parser

    a = parser().parse_args(["--data", "d", "--out", "o", "--rd-e-widths", "8,16", "--noise-bits", "4",
                             "--no-flip", "--crop", "--w-adv-rd", "2", "--rate-contexts", "8", "--mode", "gan"])
    cfg = config_from_args(a)
    assert (cfg.rd_e_widths, cfg.noise_bits, cfg.flip, cfg.crop) == ([8, 16], [4], False, True)
    assert (cfg.w_adv_rd, cfg.rate_contexts, cfg.mode) == (2.0, 8, "gan")
    for bad in (["--mode", "vae"], ["--rd-g-widths", "8,x"], ["--norm", "layer"]):
        with pytest.raises(SystemExit):
            parser().parse_args(["--data", "d", "--out", "o", *bad])
    from training.train import config_and_schedule

    with pytest.raises(CodecError, match="--data is required"):
        config_and_schedule(parser().parse_args(["--out", "o"]))  # --data (or --recipe) is required


def test_list_defaults_are_not_shared():
    a, b = TrainConfig("d", "o"), TrainConfig("d", "o")
    a.g_widths.append(1)
    assert b.g_widths == default("g_widths") != a.g_widths
    with pytest.raises(KeyError):
        default("data")
