"""The Streamlit demo: page logic through AppTest, helpers directly, and one real-browser run."""

from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import bitstream
from runtime.codec import DEFAULT_STEPS, Codec, decode_file_bytes
from runtime.errors import CodecError
from tests.conftest import synthetic_images

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "demo" / "app.py"
CHROMIUM = "/usr/bin/chromium"
RUN_TIMEOUT = 240  # the first encode of a test session imports TensorFlow


@pytest.fixture
def demo_env(models_env, monkeypatch, tmp_path):
    """Only the tiny bundle is visible and no data set: samples come from the generator."""
    monkeypatch.setattr("runtime.bundle.PROJECT_MODELS", tmp_path / "no-project-models")
    monkeypatch.setenv("GANCODEC_SAMPLES_DIR", "")
    return models_env


def app_test():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def huge_png_header(side: int = 20000) -> bytes:
    """A PNG that claims side×side pixels (a decompression bomb); only the header is real."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def errors(at) -> list[str]:
    return [e.value for e in at.error]


# -- page logic (AppTest) ---------------------------------------------------------------------------

def test_page_renders_with_bundle(demo_env):
    at = app_test()
    assert "gancodec" in at.title[0].value
    assert not errors(at)
    assert at.selectbox(key="model").value == str(demo_env)
    info = " ".join(m.value for m in at.sidebar.markdown)
    assert "tiny" in info and "16×16" in info and "**2×2×8 values**" in info and "**25 rate levels**" in info  # 17 interpolated + 8 extrapolated
    assert at.slider(key="level").value == Codec(demo_env).default_level
    assert at.select_slider(key="steps").value == DEFAULT_STEPS
    assert any("generator itself" in c.value for c in at.caption)  # no data set: generated samples
    assert not at.button(key="compress").disabled
    assert not at.success  # nothing compressed yet


def test_no_bundle_gives_clear_message(monkeypatch, tmp_path):
    monkeypatch.setattr("runtime.bundle.PROJECT_MODELS", tmp_path / "none")
    monkeypatch.setenv("GANCODEC_MODELS", str(tmp_path))
    at = app_test()
    assert any("No model bundle found" in e for e in errors(at))


def test_compress_sample_shows_result_and_comparison(demo_env):
    at = app_test()
    at.radio(key="sample").set_value(2)
    at.select_slider(key="steps").set_value(25)
    at.slider(key="level").set_value(12)
    at.button(key="compress").click().run()
    assert not at.exception, at.exception
    assert not errors(at)
    assert len(at.success) == 1 and "bytes" in at.success[0].value, at.success
    shown = at.session_state["result"]
    result, rows = shown["result"], shown["rows"]
    assert result.kind == "latent" and result.level == 12
    assert f"Compressed to {len(result.data)} bytes" in at.success[0].value and "rate level 12" in at.success[0].value
    assert rows[0].name == "gancodec" and {"JPEG", "WebP"} <= {r.name for r in rows}
    cells = [m.value for m in at.markdown if "bpp" in m.value and "PSNR" in m.value]
    assert len(cells) == len(rows)
    assert f"**{len(result.data)} bytes**" in cells[0]
    assert len(at.get("download_button")) == 1
    # The file offered for download decodes (onnxruntime) to the reconstruction shown.
    image, bundle = decode_file_bytes(result.data)
    assert bundle.model_id == Codec(demo_env).bundle.model_id
    np.testing.assert_array_equal(image, result.reconstruction)
    # A rerun (e.g. after the download click) keeps the result on the page.
    at.run()
    assert len(at.success) == 1


def budget_warnings(at) -> list[str]:
    return [w.value for w in at.warning if "cannot be met" in w.value]


def test_target_bytes_mode(demo_env):
    at = app_test()
    at.radio(key="rate_mode").set_value("target").run()
    at.select_slider(key="steps").set_value(0)
    at.number_input(key="target_bytes").set_value(14)
    at.button(key="compress").click().run()
    assert not at.exception and not errors(at), (at.exception, errors(at))
    result = at.session_state["result"]["result"]
    assert len(result.data) <= 14 and result.kind == "latent"
    assert not budget_warnings(at)
    at.number_input(key="target_bytes").set_value(2)  # below any file: told so, not an error
    at.button(key="compress").click().run()
    assert not at.exception and not errors(at), (at.exception, errors(at))
    assert len(at.session_state["result"]["result"].data) > 2
    (warning,) = budget_warnings(at)
    assert "Budget of 2 bytes cannot be met" in warning


def test_noise_upload_with_a_budget_falls_back_to_webp(demo_env):
    noise = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    at = app_test()
    at.file_uploader(key="image_file").set_value(("noise.png", png_bytes(noise), "image/png"))
    at.radio(key="rate_mode").set_value("target").run()
    at.select_slider(key="steps").set_value(0)
    at.number_input(key="target_bytes").set_value(300)
    at.button(key="compress").click().run()
    assert not at.exception and not errors(at), (at.exception, errors(at))
    result = at.session_state["result"]["result"]
    assert result.kind == "webp" and len(result.data) <= 300
    assert "WebP payload" in at.success[0].value
    assert any("WebP" in w.value for w in at.warning)
    at.file_uploader(key="latent_file").set_value(("latent.bin", result.data, "application/octet-stream"))
    at.run()
    assert not at.exception and not errors(at)
    assert any("Decoded" in s.value and "WebP payload" in s.value for s in at.success)


@pytest.fixture
def any_size_demo_env(tiny_any_bundle, monkeypatch, tmp_path):
    """Only the tiny any-size bundle is visible, and no data set."""
    monkeypatch.setattr("runtime.bundle.PROJECT_MODELS", tmp_path / "no-project-models")
    monkeypatch.setenv("GANCODEC_MODELS", str(tiny_any_bundle.parent))
    monkeypatch.setenv("GANCODEC_SAMPLES_DIR", "")
    return tiny_any_bundle


def test_any_size_upload_is_coded_at_its_size(any_size_demo_env):
    """An any-size bundle codes a 24x40 upload at 24x40 (not squashed to the model size); the
    download decodes to that size in the decode tab."""
    rng = np.random.default_rng(5)
    upload = np.clip(rng.normal(120, 30, (24, 40, 3)), 0, 255).astype(np.uint8)
    at = app_test()
    assert any("image size: **any**" in m.value for m in at.sidebar.markdown)
    at.file_uploader(key="image_file").set_value(("wide.png", png_bytes(upload), "image/png"))
    at.select_slider(key="steps").set_value(0)
    at.button(key="compress").click().run()
    assert not at.exception and not errors(at), (at.exception, errors(at))
    result = at.session_state["result"]["result"]
    assert result.reconstruction.shape == (24, 40, 3) and result.kind == "latent"
    assert any("40×24 pixels" in m.value for m in at.markdown)
    at.file_uploader(key="latent_file").set_value(("latent.bin", result.data, "application/octet-stream"))
    at.run()
    assert not at.exception and not errors(at)
    assert any("a 40×24 image" in s.value for s in at.success), [s.value for s in at.success]


def test_bad_latent_uploads_give_errors_not_tracebacks(demo_env):
    codec = Codec(demo_env)
    good = codec.compress([synthetic_images(1, 16, 3)[0]], level=16, steps=0)[0].data
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0x5A
    other_id = bytes(b ^ 0xFF for b in codec.bundle.model_id_bytes)  # a model that is not installed
    foreign = bitstream.pack_latent(np.zeros(codec.bundle.latent_shape, np.int32), 0, codec.bundle.entropy, other_id)
    cases = {
        "not a latent": b"hello, this is not a latent.bin",
        "corrupt": bytes(corrupt),
        "other model": foreign,
        "format 1": b"\xc7\x47\x12\x34" + bytes(20),
        "too large": b"\x8a" * (2 * 1024 * 1024),
        "empty": b"",
    }
    at = app_test()
    for name, data in cases.items():
        at.file_uploader(key="latent_file").set_value(("latent.bin", data, "application/octet-stream"))
        at.run()
        assert not at.exception, (name, at.exception)
        assert len(at.error) == 1, (name, errors(at))
        assert "Cannot decode this file" in at.error[0].value, name
    assert "no model with id" in decode_error(foreign)
    at.file_uploader(key="latent_file").set_value(("latent.bin", good, "application/octet-stream"))
    at.run()
    assert not at.exception and not errors(at)
    assert any("Decoded" in s.value and "tiny" in s.value and "rate level 16" in s.value for s in at.success)


def decode_error(data: bytes) -> str:
    from demo.samples import decode_upload

    with pytest.raises(CodecError) as info:
        decode_upload(data)
    return str(info.value)


def test_bad_image_uploads_give_errors_not_tracebacks(demo_env):
    good = png_bytes(synthetic_images(1, 40, 5)[0])
    cases = {
        "text": ("notes.txt", b"just some text, not an image"),
        "truncated": ("cut.png", good[: len(good) // 2]),
        "bomb": ("huge.png", huge_png_header()),
        "too large": ("big.png", b"\0" * (21 * 1024 * 1024)),
    }
    at = app_test()
    for name, (filename, data) in cases.items():
        at.file_uploader(key="image_file").set_value((filename, data, "application/octet-stream"))
        at.run()
        assert not at.exception, (name, at.exception)
        assert len(at.error) == 1 and "Cannot use this upload" in at.error[0].value, (name, errors(at))
        assert at.button(key="compress").disabled, name
    at.file_uploader(key="image_file").set_value(("fine.png", good, "image/png"))
    at.run()
    assert not errors(at)
    assert any("your upload fine.png (40×40)" in c.value for c in at.caption)
    at.select_slider(key="steps").set_value(0)
    at.button(key="compress").click().run()
    assert not at.exception and not errors(at)
    assert len(at.success) == 1 and "bytes" in at.success[0].value


# -- helpers ----------------------------------------------------------------------------------------

def test_samples_from_dataset_npz_or_generator(demo_env, tmp_path):
    from demo.samples import sample_images

    bundle = Codec(demo_env).bundle
    origin, picks = sample_images(bundle, n=4, directory=tmp_path)
    assert "generator" in origin and len(picks) == 4
    assert all(p.shape == (16, 16, 3) and p.dtype == np.uint8 for _, p in picks)
    val = synthetic_images(10, 32, 7)  # larger than the model: brought to model size
    np.savez(tmp_path / f"{bundle.manifest['dataset']}.npz", train=val[:2], val=val)
    origin, picks = sample_images(bundle, n=4, directory=tmp_path)
    assert bundle.manifest["dataset"] in origin and len(picks) == 4
    assert all(p.shape == (16, 16, 3) and p.dtype == np.uint8 for _, p in picks)


def test_any_size_samples_from_an_image_folder_keep_their_size(tiny_any_bundle, tmp_path):
    """A data set stored as <dataset>/val/*.jpg (flowers128): an any-size bundle's samples keep their size."""
    from demo.samples import sample_images
    from runtime.bundle import load_bundle

    bundle = load_bundle(tiny_any_bundle)
    folder = tmp_path / bundle.manifest["dataset"] / "val"
    folder.mkdir(parents=True)
    for i, img in enumerate(synthetic_images(3, 40, 9)):
        Image.fromarray(img[:24]).save(folder / f"{i:04d}_x.png")
    origin, picks = sample_images(bundle, n=4, directory=tmp_path)
    assert bundle.manifest["dataset"] in origin and len(picks) == 3
    assert all(p.shape == (24, 40, 3) and p.dtype == np.uint8 for _, p in picks)


def test_samples_dir_env(monkeypatch):
    from demo import samples

    monkeypatch.delenv("GANCODEC_SAMPLES_DIR", raising=False)
    assert samples.samples_dir() == ROOT.parent / "shared" / "data"
    monkeypatch.setenv("GANCODEC_SAMPLES_DIR", "")
    assert samples.samples_dir() is None
    monkeypatch.setenv("GANCODEC_SAMPLES_DIR", "/somewhere")
    assert samples.samples_dir() == Path("/somewhere")


def test_enlarge_is_nearest_neighbour():
    from demo.samples import enlarge

    px = synthetic_images(1, 32, 0)[0]
    big = enlarge(px, 256)
    assert big.shape == (256, 256, 3)
    np.testing.assert_array_equal(big[::8, ::8], px)


# -- real browser -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("streamlit did not become healthy")


@pytest.fixture
def streamlit_server(tiny_bundle, tmp_path):
    port = free_port()
    env = dict(os.environ)
    env.update(GANCODEC_MODELS=str(tiny_bundle.parent), GANCODEC_SAMPLES_DIR="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.mark.browser
def test_browser_upload_compress_download_decode(streamlit_server, tiny_bundle, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing (install Debian's chromium: make browser)")
    playwright = pytest.importorskip("playwright.sync_api")

    image_path = tmp_path / "upload.png"
    image_path.write_bytes(png_bytes(synthetic_images(1, 48, 11)[0]))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(60_000)
            page.goto(streamlit_server)
            page.get_by_text("gancodec: a learned codec for tiny images").wait_for()

            uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="upload your own image")
            uploader.locator('input[type="file"]').set_input_files(str(image_path))
            page.get_by_text("your upload upload.png (48×48)").wait_for()

            page.get_by_role("button", name="Compress", exact=True).click()
            done = page.get_by_text("Compressed to")
            done.wait_for(timeout=RUN_TIMEOUT * 1000)
            assert "bytes" in done.inner_text()
            for name in ("gancodec", "JPEG", "WebP"):  # the comparison columns
                page.get_by_text(name, exact=True).first.wait_for()
            page.get_by_role("button", name="Download latent.bin").wait_for()
            page.set_viewport_size({"width": 1400, "height": 1900})  # Streamlit scrolls inside the page
            page.wait_for_timeout(1000)  # let the images paint before the screenshot
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

            with page.expect_download() as download_info:
                page.get_by_role("button", name="Download latent.bin").click()
            latent_path = tmp_path / "latent.bin"
            download_info.value.save_as(str(latent_path))
            image, bundle = decode_file_bytes(latent_path.read_bytes(), model=str(tiny_bundle))
            assert image.shape == (16, 16, 3)

            page.get_by_role("tab", name="Decode a latent.bin").click()
            latent_uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Upload a latent.bin")
            latent_uploader.locator('input[type="file"]').set_input_files(str(latent_path))
            page.get_by_text("Decoded").wait_for()
            page.screenshot(path=str(tmp_path / "decode.png"), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
    keep = os.environ.get("GANCODEC_DEMO_SCREENSHOTS")
    if keep:  # handy for looking at the page: copy the screenshots out of tmp_path
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name in ("demo.png", "decode.png"):
            shutil.copy(tmp_path / name, Path(keep) / name)
