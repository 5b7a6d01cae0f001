"""Shared fixtures: tiny synthetic data and a tiny trained + exported bundle (no ../shared)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent

# -- in CI a skipped browser or packaging test is a failure ---------------------------------------
#: test files whose skips mean a CI machine is missing what it should have (Chromium, Node.js/npm,
#: the installed script, the network to PyPI/npm), plus every test marked ``browser``
GUARDED_FILES = ("test_web.py", "test_packaging.py")
_guarded_skips: list[str] = []


def _guarded(report) -> bool:
    return Path(report.fspath).name in GUARDED_FILES or "browser" in report.keywords


def pytest_runtest_logreport(report):
    if report.skipped and _guarded(report):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _guarded_skips.append(f"{report.nodeid}: {reason}")


def skips_fail_the_run() -> bool:
    """CI=true and no GANCODEC_ALLOW_SKIP (which should say why the skips are expected)."""
    return os.environ.get("CI", "").lower() in ("true", "1") and not os.environ.get("GANCODEC_ALLOW_SKIP")


def pytest_sessionfinish(session, exitstatus):
    if _guarded_skips and skips_fail_the_run() and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _guarded_skips and skips_fail_the_run():
        terminalreporter.section("skipped browser/packaging tests fail CI", red=True)
        for line in _guarded_skips:
            terminalreporter.write_line(line)
        terminalreporter.write_line("CI=true: these tests must run here; set GANCODEC_ALLOW_SKIP='<why>' to allow it")


def synthetic_images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth coloured blobs: structured enough for a generator to learn something in few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.35)]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        fg, bg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        out[i] = np.clip(bg + (fg - bg) * blob[..., None], 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, train=synthetic_images(96, 16, 0), val=synthetic_images(16, 16, 1))
    return path


def tiny_config(data, out, **kw):
    from training.train import TrainConfig

    base = dict(data=str(data), out=str(out), mode="rd", image_size=16, channels=8, levels=3,
                rd_e_widths=[8, 16], rd_g_widths=[16, 16], rd_d_widths=[8, 16], steps=6, batch=16,
                ckpt_every=3, eval_every=3, eval_images=8, eval_steps=3, lam_min=0.002, lam_max=0.05,
                latent_dim=8, g_widths=[16, 8, 8], d_widths=[8, 16], e_widths=[8, 8, 16])
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_run(tiny_npz, tmp_path_factory) -> Path:
    from training.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(tiny_npz, out, steps=40, eval_every=20, ckpt_every=20), quiet=True)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    """A real exported bundle (ONNX + Keras mirror + encoder + manifest) of a tiny trained model."""
    from export.onnx import export_run

    out = tmp_path_factory.mktemp("models") / "tiny"
    export_run(tiny_run, out)
    return out


@pytest.fixture
def models_env(tiny_bundle, monkeypatch):
    """Make the tiny bundle discoverable by id through $GANCODEC_MODELS."""
    monkeypatch.setenv("GANCODEC_MODELS", str(tiny_bundle.parent))
    return tiny_bundle


def run_module(module: str, *args, env=None, cwd=ROOT, input=None, timeout=300):
    """Run ``python -m module args`` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, input=input, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_any_bundle(tmp_path_factory) -> Path:
    """A real any-size bundle: trained on 16×16 random crops of 32×32 images (a train/ and val/
    folder of PNGs), exported with dynamic spatial dimensions."""
    from PIL import Image

    from export.onnx import export_run
    from training.train import train

    data = tmp_path_factory.mktemp("crops")
    for split, n, seed in (("train", 48, 0), ("val", 8, 1)):
        (data / split).mkdir()
        for i, im in enumerate(synthetic_images(n, 32, seed)):
            Image.fromarray(im).save(data / split / f"{i:03d}.png")
    run = tmp_path_factory.mktemp("runs") / "tiny_any"
    train(tiny_config(data, run, crop=True, steps=40, eval_every=20, ckpt_every=20), quiet=True)
    out = tmp_path_factory.mktemp("models_any") / "tiny_any"
    export_run(run, out)
    return out
