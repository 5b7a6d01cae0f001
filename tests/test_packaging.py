"""Issue 12: the wheel, the ``gancodec`` command, portable base dependencies, a quiet encoder."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, run_module, synthetic_images

# The machines an edge user has: Linux aarch64 (Raspberry Pi, Jetson, Graviton), macOS arm64,
# Windows x64, Linux x86_64.
EDGE_PLATFORMS = ["manylinux_2_28_aarch64", "macosx_11_0_arm64", "win_amd64", "manylinux_2_28_x86_64"]
BASE_PACKAGES = {"numpy", "pillow", "onnxruntime"}
# What TensorFlow / absl / XLA print on a CPU machine (taken from a real encode run).
TF_NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:|absl::InitializeLog|cuInit|CUDA error|remapper failed|"
                      r"oneDNN|cuda drivers|cpu_feature_guard|TF_ENABLE_ONEDNN_OPTS|XLA", re.M)


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[ <>=!~;\[]", requirement, maxsplit=1)[0].lower()


def _reachable(host: str, port: int = 443) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False


def _cli(*args, env=None, timeout=120):
    """``gancodec ARGS`` as the console script runs it (runtime.cli.main), TensorFlow unimportable."""
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "from runtime.cli import main; sys.exit(main(sys.argv[1:]))")
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=timeout)


# --- dependencies ------------------------------------------------------------------------------

def test_base_install_is_the_decoder_only():
    deps = _pyproject()["project"]["dependencies"]
    assert {_name(d) for d in deps} == BASE_PACKAGES, (
        "the base install is the decoder (numpy, Pillow, onnxruntime); put anything else in an extra")


@pytest.mark.slow
@pytest.mark.parametrize("platform", EDGE_PLATFORMS)
def test_base_dependencies_resolve_from_wheels(platform, tmp_path):
    """Every base requirement, and everything it pulls in, has a wheel for ``platform``.

    Resolves the dependencies read from pyproject.toml with pip (``--dry-run``: only metadata is
    fetched), so adding a dependency without wheels for an edge platform makes this fail.
    """
    if not _reachable("pypi.org"):
        pytest.skip("no network: pypi.org is unreachable, cannot check wheel availability")
    deps = _pyproject()["project"]["dependencies"]
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--only-binary=:all:", "--platform", platform, "--python-version", "3.11", "--implementation", "cp",
           "--target", str(tmp_path / "target"), "--report", str(report), *deps]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert res.returncode == 0, f"base dependencies have no wheels for {platform}:\n{res.stderr[-2000:]}"
    installed = {item["metadata"]["name"].lower(): item["download_info"]["url"]
                 for item in json.loads(report.read_text())["install"]}
    assert BASE_PACKAGES <= set(installed)
    assert all(url.endswith(".whl") for url in installed.values()), installed


# --- the wheel ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps`` of a copy of the source tree (the checkout itself is left alone)."""
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")
    project = _pyproject()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    for package in project["tool"]["setuptools"]["packages"]:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                          "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (whl,) = out.glob("gancodec-*.whl")
    return whl


def test_wheel_holds_the_packages_and_the_command(wheel):
    from runtime import __version__

    names = zipfile.ZipFile(wheel).namelist()
    for module in ("runtime/cli.py", "runtime/info.py", "runtime/quiet.py", "runtime/decode.py",
                   "runtime/encode.py", "runtime/bitstream.py", "runtime/bundle.py", "training/train.py",
                   "export/onnx.py"):
        assert module in names
    assert not [n for n in names if n.startswith("models/") or n.endswith((".onnx", ".keras"))]
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(info).decode()
    assert re.search(r"^gancodec = runtime\.cli:main$", entry_points, re.M), entry_points
    metadata = zipfile.ZipFile(wheel).read(info.replace("entry_points.txt", "METADATA")).decode()
    assert f"\nVersion: {__version__}\n" in metadata
    unconditional = re.findall(r"^Requires-Dist: ([^;\n]+)$", metadata, re.M)
    assert {_name(r) for r in unconditional} == BASE_PACKAGES


# --- the gancodec command ----------------------------------------------------------------------

def test_help_lists_the_commands():
    res = _cli("--help")
    assert res.returncode == 0, res.stderr
    for command in ("encode", "decode", "info", "train", "export"):
        assert command in res.stdout


def test_version():
    from runtime import __version__

    res = _cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"gancodec {__version__}"


def test_unknown_command_is_a_usage_error():
    res = _cli("compress", "x.png")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_command_help_is_the_module_help():
    res = _cli("decode", "--help")
    assert res.returncode == 0 and "--out-dir" in res.stdout


@pytest.mark.parametrize("content", [None, b"", b"hello, world", bytes(range(256)) * 2])
def test_info_on_a_bad_file_is_one_line_and_exit_2(tmp_path, content):
    path = tmp_path / "bad.bin"
    if content is not None:
        path.write_bytes(content)
    res = _cli("info", path)
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], res.stderr


@pytest.fixture(scope="module")
def tiny_file(tiny_bundle, tmp_path_factory) -> Path:
    """A latent.bin written by the tiny bundle through the public API."""
    from runtime import Codec

    path = tmp_path_factory.mktemp("info") / "x.bin"
    path.write_bytes(Codec(str(tiny_bundle)).compress([synthetic_images(1, 16, 5)[0]], steps=0)[0].data)
    return path


def test_info_prints_header_and_model(tiny_bundle, tiny_file):
    env = {"GANCODEC_MODELS": str(tiny_bundle.parent)}
    res = _cli("info", tiny_file, env=env)  # TensorFlow unimportable in the child
    assert res.returncode == 0, res.stderr
    assert f"{tiny_file}: {tiny_file.stat().st_size} bytes" in res.stdout
    assert "error" not in res.stderr
    assert re.search(r"^\s+model\s+tiny \(", res.stdout, re.M), res.stdout
    assert re.search(r"^\s+decodes\s+yes, 16x16", res.stdout, re.M), res.stdout
    row = json.loads(_cli("info", "--json", tiny_file, env=env).stdout)
    assert row["bytes"] == tiny_file.stat().st_size and row["header"] and row["models"][0]["name"] == "tiny"


def test_info_without_the_model(tiny_file, tmp_path):
    res = _cli("info", tiny_file, env={"GANCODEC_MODELS": str(tmp_path / "nothing-here")})
    assert res.returncode == 0, res.stderr
    assert re.search(r"^\s+model\s+not found", res.stdout, re.M), res.stdout


def test_console_script_when_installed():
    """The installed ``gancodec`` script (present once ``make install`` ran with this pyproject)."""
    script = Path(sys.executable).with_name("gancodec")
    if not script.exists():
        pytest.skip("no gancodec script next to this Python (reinstall: make install)")
    res = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "info" in res.stdout


# --- TensorFlow keeps quiet --------------------------------------------------------------------

def test_absl_filter_keeps_everything_else():
    from runtime.quiet import filter_absl_lines

    noise = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             b"I0000 00:00:1796092933.574891    2878 port.cc:153] oneDNN custom operations are on.\n"
             b"I0000 00:00:1796092933.575898    2878 cudart_stub.cc:31] Could not find cuda drivers\n"
             b"E0000 00:00:1796092936.525564    2878 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
             b"W1201 02:45:01.123456   77 some_file.cc:12] a warning\n")
    keep = b"/usr/lib/python3/site-packages/foo.py:1: UserWarning: something\n  warnings.warn(x)\n"
    assert filter_absl_lines(noise + keep + noise + b"no newline") == keep + b"no newline"


@pytest.mark.slow
def test_encode_cli_prints_no_tensorflow_log_lines(models_env, tmp_path):
    image = tmp_path / "tiny.png"
    Image.fromarray(synthetic_images(1, 16, 3)[0]).save(image)
    out = tmp_path / "tiny.bin"
    # A loud environment (the Makefile exports 2, which still prints errors): the CLI must win.
    res = run_module("runtime.encode", image, "--model", models_env, "-o", out, "--steps", "3",
                     env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert res.returncode == 0, res.stderr
    assert out.is_file() and np.frombuffer(out.read_bytes(), np.uint8).size > 0
    assert not TF_NOISE.search(res.stderr), res.stderr


@pytest.mark.parametrize("env, code", [({"CI": "true"}, 1), ({"CI": "true", "GANCODEC_ALLOW_SKIP": "no Chromium"}, 0),
                                       ({"CI": ""}, 0)])
def test_in_ci_a_skipped_browser_test_fails_the_run(tmp_path, env, code):
    """tests/conftest.py's hooks: with CI=true a skip in test_web.py / test_packaging.py (or a test
    marked browser) turns a green run red, unless GANCODEC_ALLOW_SKIP says why; other skips never."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import (pytest_runtest_logreport, "
                                          "pytest_sessionfinish, pytest_terminal_summary)  # noqa: F401\n")
    (tmp_path / "test_web.py").write_text("import pytest\n\ndef test_page():\n    pytest.skip('no chromium')\n")
    (tmp_path / "test_other.py").write_text("import pytest\n\ndef test_x():\n    pytest.skip('fine')\n")
    run_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    if "GANCODEC_ALLOW_SKIP" not in env:
        run_env.pop("GANCODEC_ALLOW_SKIP", None)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, env=run_env, timeout=300)
    assert res.returncode == code, res.stdout + res.stderr
    if code:
        assert "GANCODEC_ALLOW_SKIP" in res.stdout and "test_web.py::test_page: " in res.stdout
    (tmp_path / "test_web.py").unlink()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, env=run_env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr  # an unguarded skip is fine in CI


def test_encode_on_the_base_install_runs_the_base_encoder(tmp_path):
    """TensorFlow unimportable: `gancodec encode` with a shipped bundle picks the base encoder by
    itself, says so, meets the budget and writes a file that decodes; --effort full is a one-line
    error, not a traceback."""
    image = tmp_path / "blob.png"
    Image.fromarray(synthetic_images(1, 32, 5)[0]).save(image)
    out = tmp_path / "blob.bin"
    res = _cli("encode", image, "--model", "airplane", "-o", out, "--target-bytes", "51", "--json", timeout=300)
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["encoder"] == "base" and row["bytes"] <= 51 and out.stat().st_size == row["bytes"]
    assert _cli("decode", out, "-o", tmp_path / "blob_dec.png").returncode == 0
    text = _cli("encode", image, "--model", "airplane", "-o", tmp_path / "t.bin", "--target-bytes", "51")
    assert text.returncode == 0 and "base encoder: no TensorFlow" in text.stdout
    full = _cli("encode", image, "--model", "airplane", "-o", tmp_path / "f.bin", "--effort", "full")
    assert full.returncode == 2 and full.stderr.strip().startswith("error: ") and "TensorFlow" in full.stderr
    assert len(full.stderr.strip().splitlines()) == 1 and not (tmp_path / "f.bin").exists()
