"""The one trainer (training.rd.Trainer) on every Keras backend it supports, its recipes
(training.recipe) and its resumable state (training.run.save_state)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import CodecError
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed: the second Keras backend "
                                                       "(pip install '.[gpu]'; make install does)")

# A Trainer on another backend, TensorFlow blocked: loads the state file, evaluates the loss on the
# fixed inputs, takes one step on them and evaluates again; prints the three as JSON.
BACKEND_SCRIPT = """
import json, sys
sys.modules["tensorflow"] = None  # this path must not need TensorFlow
import numpy as np
from training.config import TrainConfig
from training.rd import Trainer
from training.run import load_state
args = json.loads(sys.argv[1])
cfg = TrainConfig(**args["cfg"]).resolved()
tr = Trainer(cfg)
load_state(args["run"], tr.groups())
with np.load(args["inputs"], allow_pickle=False) as f:
    x, level, noise = f["x"], f["level"], f["noise"]
from keras import ops
def loss():
    return {k: float(ops.convert_to_numpy(v)) for k, v in tr.losses(ops.convert_to_tensor(x), ops.convert_to_tensor(level),
            ops.convert_to_tensor(noise), ops.convert_to_tensor(np.float32(args["w_adv"]))).items()}
before = loss()
tr.set_lr(1.0, cfg.lr)
step = tr.step(x, args["w_adv"], level, noise)
print(json.dumps({"backend": tr.backend, "before": before, "step": step, "after": loss()}))
"""


def _tiny(tiny_npz, out, **kw):
    return tiny_config(tiny_npz, out, rate_contexts=4, **kw).resolved()


def _run_backend(backend: str, payload: dict) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, json.dumps(payload)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_torch
def test_one_step_loss_equals_between_backends(tiny_npz, tmp_path):
    """The same state and inputs give the same loss terms on TensorFlow and on PyTorch (within
    1e-5 relative), before and after one step (gradients and Adam included)."""
    from keras import ops

    from training.rd import Trainer, batch_at
    from training.run import save_state

    cfg = _tiny(tiny_npz, tmp_path / "r")
    tr = Trainer(cfg)
    rng = np.random.default_rng(5)
    from training.data import load_dataset

    train_u8, _ = load_dataset(cfg.data, cfg.image_size, cfg.seed)
    x, level, noise = batch_at(train_u8, 1, cfg.batch, cfg, tr.latent)
    tr.coded.assign((rng.random((cfg.levels, cfg.channels)) < 0.7).astype(np.float32))  # some channels not coded
    save_state(tmp_path / "r", tr.groups(), {"step": 0})
    np.savez(tmp_path / "inputs.npz", x=x, level=level, noise=noise)
    payload = {"cfg": dataclasses.asdict(cfg), "run": str(tmp_path / "r"), "inputs": str(tmp_path / "inputs.npz"),
               "w_adv": 2.0}

    def loss():
        return {k: float(ops.convert_to_numpy(v)) for k, v in tr.losses(
            ops.convert_to_tensor(x), ops.convert_to_tensor(level), ops.convert_to_tensor(noise),
            ops.convert_to_tensor(np.float32(2.0))).items()}

    before = loss()
    tr.set_lr(1.0, cfg.lr)
    step = tr.step(x, 2.0, level, noise)
    ours = {"backend": tr.backend, "before": before, "step": step, "after": loss()}
    theirs = _run_backend("torch", payload)
    assert (ours["backend"], theirs["backend"]) == ("tensorflow", "torch")
    for when in ("before", "step"):
        for key, value in ours[when].items():
            assert theirs[when][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (when, key)
    # after one Adam step (lr · sign(g) at the first step: a weight whose gradient is at float noise
    # moves either way, and a latent on a rounding boundary can change context) the loss agrees to
    # 2e-5 (measured: 6e-6, against a move of 2e-3 by the step itself)
    moved = abs(ours["after"]["loss"] - ours["before"]["loss"])
    assert theirs["after"]["loss"] == pytest.approx(ours["after"]["loss"], rel=2e-5)
    assert moved > 50 * 2e-5 * abs(ours["after"]["loss"])


@needs_torch
def test_trains_on_torch_without_tensorflow_and_exports(tiny_npz, tmp_path):
    """`training.train --backend torch` with TensorFlow blocked trains and checkpoints; the run's
    weights then export (TensorFlow) to a bundle that decodes."""
    out = tmp_path / "torch-run"
    script = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.argv = ['training.train'] + sys.argv[1:]; "
              "runpy.run_module('training.train', run_name='__main__')")
    args = ["--data", tiny_npz, "--out", out, "--image-size", "16", "--channels", "8", "--levels", "3",
            "--rd-e-widths", "8,16", "--rd-g-widths", "16,16", "--rd-d-widths", "8,16", "--steps", "4",
            "--batch", "16", "--eval-every", "2", "--ckpt-every", "2", "--eval-images", "8", "--backend", "torch",
            "--threads", "1"]
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "torch" and summary["steps"] == 4
    assert (out / "ckpt" / "state.npz").exists()

    from export.onnx import export_run
    from runtime.codec import Codec

    export_run(out, tmp_path / "bundle")
    codec = Codec(str(tmp_path / "bundle"))
    from training.data import load_dataset

    _, val = load_dataset(tiny_npz, 16)
    result = codec.compress([val[0]], level=1, effort="base", fallback=False)[0]
    np.testing.assert_array_equal(codec.decompress(result.data), result.reconstruction)


RECIPE = """
[config]
mode = "rd"
image_size = 16
channels = 8
levels = 3
rd_e_widths = [8, 16]
rd_g_widths = [16, 16]
rd_d_widths = [8, 16]
lam_min = 0.002
lam_max = 0.05
rate_contexts = 4
eval_every = 2
ckpt_every = 2
eval_images = 8

[[stage]]
name = "one"
steps = 3
lr = 3e-4
w_adv_rd = 8.0
batch = 16

[[stage]]
name = "two"
steps = 3
lr = 1e-4
w_adv_rd = 2.0
batch = 8
warmup = 2
"""


def _recipe_run(tiny_npz, recipe: Path, out: Path, resume=False, stop_after=None):
    from training.config import TrainConfig
    from training.rd import train_rd
    from training.recipe import load_recipe, recipe_schedule

    fields, stages, name, sha = load_recipe(str(recipe))
    cfg = TrainConfig(**{**fields, "data": str(tiny_npz), "out": str(out)}).resolved()
    return train_rd(cfg, resume=resume, quiet=True, schedule=recipe_schedule(cfg, stages, name, sha),
                    stop_after=stop_after)


def _state(run: Path) -> dict:
    with np.load(run / "ckpt" / "state.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_recipe_interrupted_and_resumed_gives_the_same_weights(tiny_npz, tmp_path):
    """A two-stage recipe run stopped inside each stage and resumed each time ends with exactly the
    state (weights, rate model, optimizers, seed) of the uninterrupted run."""
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    whole = _recipe_run(tiny_npz, recipe, tmp_path / "whole")
    assert whole["steps"] == 6 and [s["name"] for s in whole["schedule"]["stages"]] == ["one", "two"]
    _recipe_run(tiny_npz, recipe, tmp_path / "cut", stop_after=2)
    assert json.loads(_state(tmp_path / "cut")["state"].tobytes())["step"] == 2
    _recipe_run(tiny_npz, recipe, tmp_path / "cut", resume=True, stop_after=2)  # crosses into stage two
    assert json.loads(_state(tmp_path / "cut")["state"].tobytes())["stage"] == 1
    _recipe_run(tiny_npz, recipe, tmp_path / "cut", resume=True)
    a, b = _state(tmp_path / "whole"), _state(tmp_path / "cut")
    assert set(a) == set(b)
    for key in set(a) - {"state"}:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    clock = ("elapsed", "stage_elapsed")  # wall-clock seconds differ, nothing else
    sa, sb = (json.loads(x["state"].tobytes()) for x in (a, b))
    assert {k: v for k, v in sa.items() if k not in clock} == {k: v for k, v in sb.items() if k not in clock}
    saved = json.loads((tmp_path / "cut" / "recipe.json").read_text())
    assert saved["recipe"] == "tiny" and len(saved["sha256"]) == 64
    # the bundle's manifest records the recipe, its hash and the steps trained
    from export.onnx import export_run

    training = export_run(tmp_path / "cut", tmp_path / "bundle")["training"]
    assert training["recipe"]["name"] == "tiny" and training["recipe"]["sha256"] == saved["sha256"]
    assert training["steps"] == 6 and training["lr"] == 1e-4 and training["w_adv"] == 2.0
    assert [st["name"] for st in training["recipe"]["stages"]] == ["one", "two"]
    # a resume under another recipe is refused
    recipe.write_text(RECIPE.replace("steps = 3\nlr = 1e-4", "steps = 4\nlr = 1e-4"))
    with pytest.raises(CodecError, match="another recipe"):
        _recipe_run(tiny_npz, recipe, tmp_path / "cut", resume=True)


def test_recipe_errors_are_one_line(tmp_path):
    from training.recipe import load_recipe

    with pytest.raises(CodecError, match="no such recipe"):
        load_recipe("nonesuch")
    bad = tmp_path / "bad.toml"
    for text, match in (("[config]\nbogus = 1\n[[stage]]\nsteps = 1\n", "unknown setting"),
                        ("[config]\n", "at least one"), ("[[stage]]\nsteps = 0\n", "positive integer"),
                        ("[[stage]]\nsteps = 2\nchannels = 4\n", "a stage may set"), ("[[stage", "not a valid TOML")):
        bad.write_text(text)
        with pytest.raises(CodecError, match=match):
            load_recipe(str(bad))


def test_shipped_recipes_parse_and_name_their_data():
    from training.config import TrainConfig
    from training.recipe import RECIPES_DIR, load_recipe, recipe_schedule

    names = sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))
    assert {"airplane", "automobile", "flowers", "flowers128"} <= set(names)
    for name in names:
        fields, stages, _, sha = load_recipe(name)
        assert fields["data"].startswith("../shared/data/")
        cfg = TrainConfig(**{**fields, "out": "x"}).resolved()
        sched = recipe_schedule(cfg, stages, name, sha, seconds=7200)
        assert sum(sched.stage_seconds(i) for i in range(len(stages))) == pytest.approx(7200)


def test_seconds_budget_scales_the_schedule(tiny_npz, tmp_path):
    """--seconds: the stages share the budget by their steps; the run stops at the budget."""
    from training.rd import train_rd
    from training.recipe import Schedule, Stage

    cfg = _tiny(tiny_npz, tmp_path / "s", eval_every=1000, ckpt_every=1000)
    sched = Schedule([Stage(100000, 3e-4, 8.0, 16, 0, "a"), Stage(300000, 1e-4, 2.0, 16, 0, "b")], seconds=6.0)
    summary = train_rd(cfg, quiet=True, schedule=sched)
    assert 6.0 <= summary["elapsed"] < 12.0
    assert 0 < summary["steps"] < 400000
    val = (tmp_path / "s" / "val.csv").read_text().splitlines()
    assert len(val) == 3  # a header and each stage's closing validation


def test_learning_rate_schedule():
    from training.recipe import FLOOR, Stage

    s = Stage(10, 1e-3, 2.0, 8, warmup=4)
    assert s.factor(0.0, 0) == pytest.approx(0.25)
    assert s.factor(0.0, 3) == pytest.approx(1.0)
    assert s.factor(0.5, 5) == pytest.approx(FLOOR + (1 - FLOOR) * 0.5)
    assert s.factor(1.0, 9) == pytest.approx(FLOOR)
    assert Stage(10, 1e-3, 2.0, 8).factor(0.0, 0) == 1.0


def test_cli_seconds_budget_ends_with_an_exported_bundle(tiny_npz, tmp_path):
    """`training.train --data … --seconds S --export DIR`: a wall-clock run that ends with a bundle
    whose manifest says how it was trained; an existing --export is refused before training."""
    from tests.conftest import run_module

    args = ["--data", tiny_npz, "--out", tmp_path / "run", "--image-size", "16", "--channels", "8", "--levels", "3",
            "--rd-e-widths", "8,16", "--rd-g-widths", "16,16", "--rd-d-widths", "8,16", "--batch", "16",
            "--eval-every", "10", "--eval-images", "8", "--seconds", "4", "--export", tmp_path / "bundle"]
    r = run_module("training.train", *args)
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["training"]["seconds"] == 4.0 and manifest["training"]["backend"] == "tensorflow"
    assert manifest["training"]["steps"] > 0
    r = run_module("training.train", *[a if a != tmp_path / "run" else tmp_path / "run2" for a in args])
    assert r.returncode == 2 and "already exists" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run2").exists()


def test_recipe_flags_override_its_settings_and_stages(tmp_path):
    """--recipe NAME: its data and init_from are relative to the project root; a flag given on the
    command line wins over the recipe's setting, a stage setting in every stage."""
    from training.train import config_and_schedule, parser

    cfg, sched = config_and_schedule(parser().parse_args(["--recipe", "flowers128", "--out", "x", "--seconds", "60"]))
    assert Path(cfg.init_from) == ROOT / "models" / "flowers" and Path(cfg.data) == (ROOT / "../shared/data/flowers128").resolve()
    assert sched.seconds == 60 and cfg.crop and cfg.image_size == 64
    cfg, sched = config_and_schedule(parser().parse_args(["--recipe", "flowers", "--out", "x", "--data", "d.npz",
                                                          "--batch", "16", "--channels", "32"]))
    assert (cfg.data, cfg.channels, cfg.rate_contexts) == ("d.npz", 32, 8)
    assert [s.batch for s in sched.stages] == [16, 16, 16] and [s.lr for s in sched.stages] == [3e-4, 1e-4, 1e-4]
