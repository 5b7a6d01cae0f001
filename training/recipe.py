"""Training recipes and schedules: the whole training of a bundle as a file
(``training/recipes/NAME.toml``) that ``gancodec train --recipe NAME`` replays, and the stages a
plain run is (one).

A recipe holds the run's settings (``[config]``: TrainConfig fields, e.g. the design and the rate
range) and its stages (``[[stage]]``), in order. A stage is a cosine cycle of the learning rate
(after a linear warm-up of ``warmup`` steps) over ``steps`` steps, with its own ``lr``,
``w_adv_rd``, ``batch`` and ``warmup`` (others keep the run's). The networks, rate model,
discriminator and the optimizers' moments carry over from stage to stage. With a wall-clock budget
(``--seconds S``) the stages share S in proportion to their steps, and each stage's cosine runs
over its share of the time instead of its step count: the same schedule, scaled.

The run stores the recipe it replays (``<run>/recipe.json``: the stages, the budget, the file's
SHA-256); export copies that into the bundle's manifest. Imports nothing from TensorFlow or Keras.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import tomllib

from runtime.errors import CodecError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
RECIPE_NAME = "recipe.json"
# what a stage may change; everything else (the design, the rate range) is the run's
STAGE_FIELDS = ("steps", "lr", "w_adv_rd", "batch", "warmup")
FLOOR = 0.05  # the cosine's floor, a fraction of the stage's peak learning rate (keras CosineDecay alpha)


@dataclass
class Stage:
    steps: int
    lr: float
    w_adv_rd: float
    batch: int
    warmup: int = 0
    name: str = ""

    def factor(self, progress: float, step_in_stage: int) -> float:
        """The learning rate's fraction of ``lr`` at ``progress`` (0..1) through the stage, its
        ``step_in_stage``-th step (0-based): cosine to FLOOR, times the linear warm-up."""
        cos = FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return cos * min(1.0, (step_in_stage + 1) / self.warmup) if self.warmup > 0 else cos


@dataclass
class Schedule:
    """The stages of a run, and its wall-clock budget (None: each stage runs its steps)."""

    stages: list
    seconds: float | None = None
    recipe: str = ""  # the recipe's name, "" for a plain run
    sha256: str = ""

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_seconds(self, i: int) -> float | None:
        return None if self.seconds is None else self.seconds * self.stages[i].steps / self.total_steps

    def to_json(self) -> dict:
        return {"recipe": self.recipe, "sha256": self.sha256, "seconds": self.seconds,
                "stages": [dataclasses.asdict(s) for s in self.stages]}

    @classmethod
    def from_json(cls, data: dict) -> "Schedule":
        return cls([Stage(**s) for s in data["stages"]], data.get("seconds"), data.get("recipe", ""),
                   data.get("sha256", ""))


def single(cfg, seconds: float | None = None) -> Schedule:
    """A plain run's schedule: one stage of the config's steps, lr, w_adv_rd, batch and warmup."""
    return Schedule([Stage(cfg.steps, cfg.lr, cfg.w_adv_rd, cfg.batch, cfg.warmup, "train")], seconds)


def recipe_path(name: str) -> Path:
    """``NAME`` (a file of training/recipes) or a path to a .toml file."""
    p = Path(name)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise CodecError(f"--recipe {name}: no such file")
        return p
    p = RECIPES_DIR / f"{name}.toml"
    if not p.is_file():
        known = ", ".join(sorted(f.stem for f in RECIPES_DIR.glob("*.toml"))) or "none"
        raise CodecError(f"--recipe {name}: no such recipe (known: {known})")
    return p


def load_recipe(name: str) -> tuple[dict, list, str, str]:
    """(config fields, stage dicts, recipe name, SHA-256 of the file) of recipe ``name``."""
    from training.config import TrainConfig

    path = recipe_path(name)
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CodecError(f"{path}: not a valid TOML recipe ({exc})") from None
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"out"}
    config = data.get("config", {})
    stages = data.get("stage", [])
    unknown = sorted(set(config) - known)
    if unknown:
        raise CodecError(f"{path}: unknown setting(s) in [config]: {', '.join(unknown)}")
    if not isinstance(stages, list) or not stages:
        raise CodecError(f"{path}: a recipe needs at least one [[stage]]")
    for i, s in enumerate(stages, 1):
        bad = sorted(set(s) - set(STAGE_FIELDS) - {"name"})
        if bad:
            raise CodecError(f"{path}: stage {i} sets {', '.join(bad)}; a stage may set {', '.join(STAGE_FIELDS)}")
        if not isinstance(s.get("steps"), int) or s["steps"] <= 0:
            raise CodecError(f"{path}: stage {i} needs a positive integer 'steps'")
    return config, stages, path.stem, hashlib.sha256(raw).hexdigest()


def recipe_schedule(cfg, stages: list, name: str, sha: str, seconds: float | None = None) -> Schedule:
    """The Schedule of a recipe's stage dicts, fields they leave out taken from the resolved ``cfg``."""
    out = []
    for i, s in enumerate(stages, 1):
        out.append(Stage(steps=int(s["steps"]), lr=float(s.get("lr", cfg.lr)),
                         w_adv_rd=float(s.get("w_adv_rd", cfg.w_adv_rd)), batch=int(s.get("batch", cfg.batch)),
                         warmup=int(s.get("warmup", cfg.warmup)), name=str(s.get("name", f"stage{i}"))))
        if out[-1].batch <= 0 or out[-1].lr <= 0 or out[-1].warmup < 0:
            raise CodecError(f"recipe {name}: stage {i} needs a positive batch and lr and a warmup >= 0")
    return Schedule(out, seconds, name, sha)


def save_schedule(schedule: Schedule, run: Path) -> None:
    (Path(run) / RECIPE_NAME).write_text(json.dumps(schedule.to_json(), indent=2))


def load_schedule(run: Path) -> Schedule | None:
    path = Path(run) / RECIPE_NAME
    return Schedule.from_json(json.loads(path.read_text())) if path.exists() else None
