"""The static browser decoder (demo/web/): its JS entropy decoder under node against the test
vectors, export.web, and the whole page in Debian's Chromium against the Python decoder."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.web import CHROMIUM, DecoderPage, launch, serve
from export import web
from runtime import bitstream, metrics
from runtime.codec import Codec, decode_file_bytes
from runtime.entropy import EntropyModel
from runtime.errors import CodecError
from tests.conftest import synthetic_images

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
NODE_SCRIPT = ROOT / "tests" / "web_vectors.mjs"
MAX_ABS_DIFF = 2  # float kernels (WASM vs native onnxruntime) may differ in the last bit
MIN_PSNR = 50.0


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found: the JS decoder's tests need Node.js (apt-get install nodejs)")
    return node


def run_node(*extra) -> dict:
    proc = subprocess.run([node_or_skip(), str(NODE_SCRIPT), str(VECTORS), *map(str, extra)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads((VECTORS / "vectors.json").read_text())


@pytest.fixture(scope="module")
def js(vectors) -> dict:
    return run_node()


def python_decode(data: bytes, vectors: dict) -> dict:
    """What the Python reference makes of a file, in the node script's terms."""
    model = EntropyModel.from_bytes((VECTORS / vectors["entropy_bin"]).read_bytes())
    try:
        header = bitstream.read_header(data)
        if header.kind == "webp":
            _, rgb = bitstream.unpack_webp(data)
            return {"kind": "webp", "width": rgb.shape[1], "height": rgb.shape[0]}
        _, level, symbols = bitstream.unpack_latent(data, bytes.fromhex(vectors["model_id"]), model)
        return {"kind": "latent", "level": level, "symbols": symbols.ravel().tolist()}
    except CodecError as exc:
        return {"error": str(exc)}


# -- the JS entropy decoder and file reader under node ----------------------------------------------

def test_js_parses_entropy_bin_like_python(js, vectors):
    assert js["crc_check"] == 0xF4  # CRC-8/SMBUS check value of b"123456789"
    model = js["model"]
    expected = vectors["model"]
    for key in ("levels", "channels", "grid", "precision", "tables"):
        assert model[key] == expected[key], key
    np.testing.assert_array_equal(np.float32(model["inv_gains"]), np.float32(expected["inv_gains"]))


def test_js_range_decoder_decodes_every_coder_stream(js, vectors):
    assert [c["name"] for c in js["coder"]] == [c["name"] for c in vectors["coder"]]
    for got, want in zip(js["coder"], vectors["coder"]):
        assert "error" not in got, (want["name"], got)
        assert got["symbols"] == want["symbols"], want["name"]


def test_js_decodes_every_vector_file(js, vectors):
    model_id = bytes.fromhex(vectors["model_id"])
    for got, want in zip(js["files"], vectors["files"]):
        name = want["file"]
        assert got["file"] == name
        if want["kind"] == "invalid":
            assert "error" in got, (name, got)
            assert want["error"] in got["error"], (name, got["error"])
            # worded exactly like the Python decoder's CodecError
            assert got["error"] == python_decode((VECTORS / name).read_bytes(), vectors)["error"], name
            continue
        assert "error" not in got, (name, got)
        assert got["kind"] == want["kind"], name
        assert got["size"] == want["size"], name
        if want["kind"] == "latent":
            assert got["level"] == want["level"], name
            assert got["symbols"] == np.ravel(want["symbols"]).tolist(), name
            np.testing.assert_array_equal(np.float32(got["latent"]), np.ravel(np.float32(want["latent"])))
        else:
            data = (VECTORS / name).read_bytes()
            header = bitstream.read_header(data)
            assert bytes.fromhex(got["webp"]) == bitstream.webp_file(data[header.length:-1]), name
            assert [got["height"], got["width"]] == list(np.shape(want["rgb"])[:2]), name
    assert bitstream.model_id_prefix(model_id) == vectors["model_id_prefix"]


def test_js_agrees_with_python_on_mutated_files(vectors, tmp_path):
    """Random damage to the valid files (most with the CRC fixed up, so the range decoder sees
    hostile payloads): node and Python decode the same symbols or refuse with the same message."""
    rng = np.random.default_rng(13)
    model_id = bytes.fromhex(vectors["model_id"])
    sources = [(VECTORS / f["file"]).read_bytes() for f in vectors["files"] if f["kind"] == "latent"]
    paths, expected = [], []
    for i in range(300):
        data = bytearray(sources[i % len(sources)])
        for _ in range(rng.integers(1, 4)):
            op = rng.integers(0, 3)
            if op == 0 and len(data) > 0:
                data[rng.integers(0, len(data))] ^= 1 << rng.integers(0, 8)
            elif op == 1 and len(data) > 3:
                del data[rng.integers(2, len(data) - 1)]
            else:
                data.insert(rng.integers(2, len(data)), int(rng.integers(0, 256)))
        if i % 4 and len(data) >= 3:  # re-seal the CRC most of the time
            header_kind = "latent" if not data[0] & 0x20 else "webp"
            seed = bitstream.crc8(model_id) if header_kind == "latent" else 0
            data[-1] = bitstream.crc8(bytes(data[:-1]), seed)
        path = tmp_path / f"m{i}.bin"
        path.write_bytes(bytes(data))
        paths.append(path)
        expected.append(python_decode(bytes(data), vectors))
    got = run_node("--files", *paths)["extra"]
    for path, g, want in zip(paths, got, expected):
        if "error" in want:
            assert g.get("error") == want["error"], (path.name, g, want)
        elif want["kind"] == "latent":
            assert (g.get("level"), g.get("symbols")) == (want["level"], want["symbols"]), path.name
        else:
            assert (g.get("width"), g.get("height")) == (want["width"], want["height"]), path.name


def test_js_refuses_bad_entropy_bin_like_python(tmp_path):
    good = (VECTORS / "entropy.bin").read_bytes()
    first_table = 14 + 4 * 3 * 4
    cases = {
        "truncated_header": good[:10],
        "magic": b"XXXX" + good[4:],
        "version": good[:4] + b"\x02" + good[5:],
        "precision": good[:5] + b"\x11" + good[6:],
        "levels": good[:6] + b"\x00\x00" + good[8:],
        "gains": good[:20],
        "negative_gain": good[:14] + struct.pack("<f", -1.0) + good[18:],
        "table_n0": good[:first_table + 2] + b"\x00\x00" + good[first_table + 4:],
        "zero_freq": good[:first_table + 4] + b"\x00\x00" + good[first_table + 6:],
        "truncated_table": good[:-3],
        "trailing": good + b"\x00",
    }
    paths = []
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    got = run_node("--entropy", *paths)["entropy"]
    for path, g in zip(paths, got):
        with pytest.raises(CodecError) as info:
            EntropyModel.from_bytes(path.read_bytes())
        assert g.get("error") == str(info.value), path.name


# -- export.web -----------------------------------------------------------------------------------

def test_export_writes_web_bundle_and_index(tiny_bundle, tmp_path):
    out = tmp_path / "models" / "tiny"
    entry = web.export_bundle(tiny_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    original = json.loads((tiny_bundle / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["entropy.bin", "generator.onnx", "manifest.json"]
    assert manifest["model_id"] == original["model_id"] == entry["model_id"]
    for key in ("name", "image_size", "latent_grid", "channels", "levels", "dataset"):
        assert manifest[key] == original[key], key
    assert manifest["files"] == {k: original["files"][k] for k in ("generator.onnx", "entropy.bin")}
    index = json.loads((tmp_path / "models" / "index.json").read_text())
    assert index == {"models": [entry]} and entry["path"] == "tiny/"
    # a second export elsewhere in the same directory joins the index; re-exporting replaces
    web.export_bundle(tiny_bundle, tmp_path / "models" / "tiny-copy")
    web.export_bundle(tiny_bundle, out)
    index = json.loads((tmp_path / "models" / "index.json").read_text())
    assert [m["path"] for m in index["models"]] == ["tiny/", "tiny-copy/"]
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]


def test_export_refuses_bad_bundles(tiny_bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "entropy.bin").write_bytes(b"GCEM")
    with pytest.raises(CodecError, match="does not match its manifest"):
        web.export_bundle(broken, tmp_path / "web" / "broken")
    assert not (tmp_path / "web" / "broken").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"format": 1}))
    with pytest.raises(CodecError, match="format 1"):
        web.export_bundle(old, tmp_path / "web" / "old")


def test_export_cli(tiny_bundle, tmp_path):
    from tests.conftest import run_module

    proc = run_module("export.web", tiny_bundle, "--out", tmp_path / "site" / "tiny")
    assert proc.returncode == 0, proc.stderr
    assert "exported" in proc.stdout and (tmp_path / "site" / "index.json").is_file()
    proc = run_module("export.web", tmp_path / "nothing")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "no such model directory" in proc.stderr


def test_onnxruntime_web_is_pinned():
    package = json.loads((web.WEB / "package.json").read_text())
    lock = json.loads((web.WEB / "package-lock.json").read_text())
    version = package["dependencies"]["onnxruntime-web"]
    assert version.count(".") == 2 and version.replace(".", "").isdigit(), version  # exact, no range
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == version
    assert lock["packages"][""]["dependencies"] == package["dependencies"]


# -- the page in Chromium -------------------------------------------------------------------------

def ensure_runtime() -> None:
    """onnxruntime-web next to the page (make web-runtime: npm ci + copy); skip without npm."""
    if all((web.WEB / web.ORT_DIR / f).is_file() for f in web.ORT_FILES):
        return
    if shutil.which("npm") is None:
        pytest.skip("onnxruntime-web missing and npm not found: install Node.js/npm, then make web-runtime")
    proc = subprocess.run(["make", "-s", "web-runtime"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"make web-runtime failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture
def site_url(tiny_bundle, tmp_path):
    """The page with the tiny bundle, built into tmp_path and served on localhost."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing (install Debian's chromium: make browser)")
    pytest.importorskip("playwright.sync_api")
    ensure_runtime()
    with serve(web.build_site(tmp_path / "site", [tiny_bundle])) as url:
        yield url


def webp_latent_file(pixels: np.ndarray, model_id: bytes) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="WEBP", quality=70)
    return bitstream.pack_webp(buf.getvalue(), model_id)


@pytest.mark.browser
def test_page_decodes_like_python(site_url, tiny_bundle, tmp_path):
    from playwright.sync_api import sync_playwright

    codec = Codec(tiny_bundle)
    images = synthetic_images(4, 16, 21)
    levels = [0, codec.levels // 2, codec.levels - 1, codec.default_level]
    files = {}
    for i, (image, level) in enumerate(zip(images, levels)):
        files[f"latent{i}.bin"] = codec.compress([image], level=level, steps=0)[0].data
    files["webp.bin"] = webp_latent_file(synthetic_images(1, 16, 5)[0], codec.bundle.model_id_bytes)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    corrupt = bytearray(files["latent1.bin"])
    corrupt[2] ^= 0x10
    other = bytes(b ^ 0xFF for b in codec.bundle.model_id_bytes)  # a model not on the page
    symbols = np.zeros(codec.bundle.latent_shape, np.int32)
    bad = {
        "corrupt.bin": (bytes(corrupt), "integrity check failed: the file is corrupted or was written by another model"),
        "v1.bin": (b"\xc7" + bytes(20), "written by an older version of gancodec (format 1)"),
        "foreign.bin": (bitstream.pack_latent(symbols, 0, codec.bundle.entropy, other),
                        f"no model with id {other.hex()[:3]}… is exported to this page"),
        "short.bin": (b"\x80\x00", "file too short for a latent.bin (2 bytes)"),
    }
    for name, (data, _) in bad.items():
        (tmp_path / name).write_bytes(data)

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = DecoderPage(browser, site_url)
            psnrs = []
            for name, data in files.items():
                status, pixels = page.decode(tmp_path / name)
                assert status == "done", (name, pixels)
                expected, _ = decode_file_bytes(data, model=str(tiny_bundle))
                assert pixels.shape == expected.shape, name
                diff = np.abs(pixels.astype(int) - expected.astype(int))
                assert diff.max() <= MAX_ABS_DIFF, (name, diff.max())
                psnrs.append(min(metrics.psnr(pixels, expected), 99.0))
                info = page.page.inner_text("#info")
                assert f"{len(data)} bytes" in info and "decoded in" in info, info
                if name.startswith("latent"):
                    assert "model tiny" in info, info
            assert np.mean(psnrs) >= MIN_PSNR, psnrs
            for name, (_, message) in bad.items():
                status, text = page.decode(tmp_path / name)
                assert status == "error", name
                assert text.startswith("error: ") and message in text and "\n" not in text, (name, text)
            # decoding works again after an error
            status, _ = page.decode(tmp_path / "latent0.bin")
            assert status == "done"
            assert not page.external, page.external

            # ?model=NAME forces the bundle: another model's file is refused as Python refuses it
            forced = DecoderPage(browser, site_url, "?model=tiny")
            status, text = forced.decode(tmp_path / "foreign.bin")
            assert status == "error" and f"file was written by model {other.hex()[:3]}…, not by this model" in text
            status, _ = forced.decode(tmp_path / "latent2.bin")
            assert status == "done"
            missing = DecoderPage(browser, site_url, "?model=nonesuch")
            assert "no model named nonesuch" in missing.page.inner_text("#message")
        finally:
            browser.close()
