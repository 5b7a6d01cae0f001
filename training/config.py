"""THE training configuration: :class:`TrainConfig` (every setting of a run, saved as
``<run>/config.json``), its validation, and reading/writing it; the one place the settings'
defaults and help texts live: the CLIs' options are generated from its fields
(:func:`add_config_arguments`, :func:`config_from_args`; :func:`default` for one default). Imported by the
trainer (training.train, training.rd), the run machinery (training.run) and export; imports no
other training module at load time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import CodecError

CONFIG_NAME = "config.json"
# rd: default (encoder, generator) widths per design; gdn uses two of each
RD_WIDTHS = {"gdn": ([128, 128], [128, 128]), "conv": ([48, 96], [128, 96, 64, 32])}


def _opt(help: str, **more) -> dict:
    """``field`` metadata of a CLI option: its help text and any of ``choices``/``metavar``."""
    return {"help": help, **more}


def _default(value, help: str, **more):
    """A field with default ``value`` (a list: a fresh copy per instance) and its CLI metadata."""
    if isinstance(value, list):
        return field(default_factory=lambda: list(value), metadata=_opt(help, **more))
    return field(default=value, metadata=_opt(help, **more))


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as ``<run>/config.json``. Each field is also an option
    of ``python -m training.train`` (:func:`add_config_arguments`): ``--image-size`` for
    ``image_size``, its help text and choices in the field's metadata, its default the field's."""

    data: str = field(metadata=_opt(".npz (keys train/val) or a folder of images"))
    out: str = field(metadata=_opt("run directory, e.g. runs/airplane"))
    mode: str = _default("rd", "rd: variable-rate rate-distortion GAN codec; gan: the reference design; "
                               "recon: global-latent codec", choices=["rd", "gan", "recon"])
    image_size: int = _default(32, "training size (with --crop: the crop's side)")
    latent_dim: int = _default(128, "gan/recon: global latent dimension")
    g_widths: list = _default([192, 96, 48, 24], "gan/recon: generator widths")
    d_widths: list = _default([64, 128, 256], "gan/recon: discriminator widths")
    e_widths: list = _default([32, 64, 128, 192], "recon: encoder widths")
    norm: str = _default("auto", "gan/recon: generator normalisation (auto: batch for gan, none for recon)",
                         choices=["auto", "batch", "none"])
    steps: int = _default(10000, "training steps")
    batch: int = _default(64, "batch size")
    lr: float = _default(0.0, "learning rate (0: 2e-4 gan, 5e-4 recon, 3e-4 rd)")
    warmup: int = _default(0, "rd: steps of linear learning-rate warm-up at the start of the run (of each "
                              "stage of a recipe), e.g. when a fresh discriminator meets a trained codec",
                           metavar="N")
    seed: int = _default(0, "random seed (data split, initialisation, shuffling)")
    ckpt_every: int = _default(500, "steps between checkpoints")
    eval_every: int = _default(500, "steps between validations (model selection)")
    eval_images: int = _default(64, "validation images evaluated")
    eval_steps: int = _default(150, "gan/recon: inversion steps per validation")
    w_mse: float = _default(1.0, "recon: MSE weight")
    w_ssim: float = _default(0.05, "recon: SSIM weight")
    w_adv: float = _default(0.003, "recon: adversarial weight")
    noise_bits: list = _default([3, 4, 5, 6], "recon: bit depths whose quantization steps widen the latent noise")
    flip: bool = _default(True, "do not flip training images left-right at random")  # CLI: --no-flip
    crop: bool = _default(False, "rd: train on random --image-size crops of the images at their stored size, "
                                 "validate on whole images (a model for images of any size)")
    # rd mode (training/rd.py): spatial latent (S/f, S/f, channels), `levels` rate levels
    channels: int = _default(64, "rd: latent channels")
    levels: int = _default(8, "rd: trained rate levels")
    lam_min: float = _default(0.0003, "rd: lowest rate-distortion weight")
    lam_max: float = _default(0.2, "rd: highest rate-distortion weight")
    w_adv_rd: float = _default(8.0, "rd: adversarial weight (relative to MSE on 0..255)")
    rd_arch: str = _default("gdn", "rd: network design (gdn: 5x5 stride-2 convolutions with GDN, after Balle "
                                   "et al.; conv: LeakyReLU convolutions, the first design)", choices=["gdn", "conv"])
    rd_e_widths: list | None = _default(None, "rd: encoder widths (gdn: one per stride-2 stage, 2 -> S/8, "
                                              "3 -> S/16; conv: 2; default: per --rd-arch, RD_WIDTHS)")
    rd_g_widths: list | None = _default(None, "rd: generator widths (gdn: as many as the encoder's; conv: 4; "
                                              "default: per --rd-arch, RD_WIDTHS)")
    rd_d_widths: list = _default([32, 64, 128], "rd: discriminator widths")
    rd_g_blocks: int = _default(0, "rd (gdn): residual blocks in the generator after its first stage "
                                   "(decoder cost)", metavar="N")
    rd_e_blocks: int = _default(0, "rd (gdn): residual blocks in the encoder before its latent "
                                   "(encoder cost only)", metavar="N")
    init_from: str = _default("", "rd: start a new run from a shipped bundle's weights and gains "
                                  "(e.g. models/airplane)", metavar="BUNDLE")
    coded_only: bool = _default(True, "rd: price every channel in the training rate and its contexts, as training "
                                      "did before it counted only the channels the file codes at each level "
                                      "(runtime.entropy.coded_channels), as the coder does")  # CLI: --no-coded-only
    rate_contexts: int = _default(1, "rd: train the rate under K entropy contexts, as the file's coder uses "
                                     "them (runtime.entropy.contexts; 1: one factorized density per channel)",
                                  metavar="K")

    def resolved(self) -> "TrainConfig":
        c = dataclasses.replace(self)
        if c.mode not in ("gan", "recon", "rd"):
            raise CodecError(f"mode must be 'rd', 'gan' or 'recon', got {c.mode!r}")
        if c.norm == "auto":
            c.norm = "batch" if c.mode == "gan" else "none"
        if not c.lr:
            c.lr = {"gan": 2e-4, "recon": 5e-4, "rd": 3e-4}[c.mode]
        if c.rd_arch not in RD_WIDTHS:
            raise CodecError(f"--rd-arch must be 'gdn' or 'conv', got {c.rd_arch!r}")
        e_w, g_w = RD_WIDTHS[c.rd_arch]
        c.rd_e_widths = list(c.rd_e_widths or e_w)
        c.rd_g_widths = list(c.rd_g_widths or g_w)
        if c.rd_arch == "conv" and (len(c.rd_e_widths), len(c.rd_g_widths)) != (2, 4):
            raise CodecError("--rd-arch conv takes 2 encoder widths and 4 generator widths")
        if c.rd_arch == "gdn" and not 1 <= len(c.rd_e_widths) == len(c.rd_g_widths) <= 4:
            raise CodecError("--rd-arch gdn takes as many generator widths as encoder widths (1 to 4)")
        from training.models import downsampling

        f = downsampling(c.rd_arch, c.rd_e_widths)
        if c.mode == "rd" and c.image_size % f:
            raise CodecError(f"rd mode with these widths needs an image size divisible by {f}, got {c.image_size}")
        if (c.rd_g_blocks or c.rd_e_blocks) and c.rd_arch != "gdn":
            raise CodecError("--rd-g-blocks / --rd-e-blocks need --rd-arch gdn")
        if not (0 <= c.rd_g_blocks <= 8 and 0 <= c.rd_e_blocks <= 8):
            raise CodecError("--rd-g-blocks / --rd-e-blocks must be 0..8")
        if not 1 <= c.rate_contexts <= 64:
            raise CodecError(f"--rate-contexts must be 1..64, got {c.rate_contexts}")
        if c.warmup < 0:
            raise CodecError("--warmup must be 0 or more")
        for name in ("steps", "batch", "latent_dim", "ckpt_every", "eval_every"):
            if getattr(c, name) <= 0:
                raise CodecError(f"--{name.replace('_', '-')} must be positive")
        return c


def default(name: str):
    """TrainConfig's default of field ``name`` (a fresh list for list fields); KeyError for a field
    without one (data, out)."""
    f = TrainConfig.__dataclass_fields__[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"TrainConfig.{name} has no default")


def _ints(text: str) -> list[int]:
    """A list-of-ints option's value: ``"a,b,c"`` -> ``[a, b, c]``."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


_TYPES = {"int": int, "float": float, "str": str, "list": _ints, "list | None": _ints}


def flag(name: str) -> str:
    """The CLI option of field ``name``: ``--image-size`` for ``image_size``; a bool field that
    defaults to true is switched off by ``--no-NAME`` (``--no-flip``)."""
    opt = name.replace("_", "-")
    return f"--no-{opt}" if TrainConfig.__dataclass_fields__[name].default is True else f"--{opt}"


def add_config_arguments(parser: argparse.ArgumentParser, names=None, defaults=None) -> None:
    """Add an option per TrainConfig field (or per field in ``names``) to ``parser``: its flag
    (:func:`flag`), help text, choices and metavar from the field's metadata, its default the
    field's (``defaults`` may override some: training.train's --data, which a --recipe may name),
    lists written ``a,b,c``, bools as switches; fields without a default are required."""
    defaults = defaults or {}
    for f in dataclasses.fields(TrainConfig):
        if names is not None and f.name not in names:
            continue
        meta = dict(f.metadata)
        help_text = meta.pop("help").replace("%", "%%")
        kw = {"dest": f.name, **meta}
        if f.name in defaults:
            value = defaults[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            parser.add_argument(flag(f.name), required=True, help=help_text, **kw)
            continue
        else:
            value = default(f.name)
        if f.type == "bool":
            action = "store_false" if flag(f.name).startswith("--no-") else "store_true"
            parser.add_argument(flag(f.name), action=action, default=value, help=help_text, **kw)
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        if value is not None and value != "" and "default:" not in help_text:
            help_text += f" (default: {shown})"
        if _TYPES[f.type] is _ints:
            kw.setdefault("metavar", "N,N,...")
        parser.add_argument(flag(f.name), type=_TYPES[f.type], default=value, help=help_text, **kw)


def config_from_args(ns: argparse.Namespace, **override) -> TrainConfig:
    """The TrainConfig of parsed options (:func:`add_config_arguments`); fields without an option
    in ``ns`` keep their defaults, ``override`` sets fields outright."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: (list(v) if isinstance(v, list) else v) for k, v in vars(ns).items() if k in names}
    return TrainConfig(**{**values, **override})


def save_config(cfg: TrainConfig, run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(cfg), indent=2))


def load_config(run: Path) -> TrainConfig:
    data = json.loads((Path(run) / CONFIG_NAME).read_text())
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    data.setdefault("rd_arch", "conv")  # runs from before the GDN design
    return TrainConfig(**{k: v for k, v in data.items() if k in known})
