"""THE training configuration: :class:`TrainConfig` (every setting of a run, saved as
``<run>/config.json``), its validation and defaults, and reading/writing it. Imported by the
trainer (training.train, training.rd), the run machinery (training.run) and export; imports no
other training module at load time.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import CodecError

CONFIG_NAME = "config.json"
# rd: default (encoder, generator) widths per design; gdn uses two of each
RD_WIDTHS = {"gdn": ([128, 128], [128, 128]), "conv": ([48, 96], [128, 96, 64, 32])}


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as ``<run>/config.json``."""

    data: str
    out: str
    mode: str = "rd"
    image_size: int = 32
    latent_dim: int = 128
    g_widths: list = field(default_factory=lambda: [192, 96, 48, 24])
    d_widths: list = field(default_factory=lambda: [64, 128, 256])
    e_widths: list = field(default_factory=lambda: [32, 64, 128, 192])
    norm: str = "auto"  # generator normalisation: batch | none | auto (batch for gan, none for recon)
    steps: int = 10000
    batch: int = 64
    lr: float = 0.0
    seed: int = 0
    ckpt_every: int = 500
    eval_every: int = 500
    eval_images: int = 64
    eval_steps: int = 150
    w_mse: float = 1.0
    w_ssim: float = 0.05
    w_adv: float = 0.003
    noise_bits: list = field(default_factory=lambda: [3, 4, 5, 6])
    flip: bool = True
    crop: bool = False  # train on random image_size crops of the images at their stored size
    # rd mode (training/rd.py): spatial latent (S/f, S/f, channels), `levels` rate levels
    channels: int = 64
    levels: int = 8
    lam_min: float = 0.0003
    lam_max: float = 0.2
    w_adv_rd: float = 8.0
    rd_arch: str = "gdn"  # rd: gdn (Ballé et al.'s transforms with GDN) | conv (LeakyReLU, the first design)
    rd_e_widths: list | None = None  # None: RD_WIDTHS[rd_arch]
    rd_g_widths: list | None = None
    rd_d_widths: list = field(default_factory=lambda: [32, 64, 128])
    rd_g_blocks: int = 0  # rd (gdn): residual blocks in the generator after its first stage
    rd_e_blocks: int = 0  # rd (gdn): residual blocks in the encoder before its latent
    init_from: str = ""  # rd: start a new run from a bundle's weights and gains (models/NAME)
    rate_contexts: int = 1  # rd: training density per (channel, entropy context) (1: factorized)

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
        for name in ("steps", "batch", "latent_dim", "ckpt_every", "eval_every"):
            if getattr(c, name) <= 0:
                raise CodecError(f"--{name.replace('_', '-')} must be positive")
        return c


def save_config(cfg: TrainConfig, run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(cfg), indent=2))


def load_config(run: Path) -> TrainConfig:
    data = json.loads((Path(run) / CONFIG_NAME).read_text())
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    data.setdefault("rd_arch", "conv")  # runs from before the GDN design
    return TrainConfig(**{k: v for k, v in data.items() if k in known})
