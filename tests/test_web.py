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


def python_decode(data: bytes, vectors: dict, entropy_bin: str | None = None) -> dict:
    """What the Python reference makes of a file, in the node script's terms (decoded with the
    vectors' entropy.bin named ``entropy_bin``, by default the top-level one)."""
    model = EntropyModel.from_bytes((VECTORS / (entropy_bin or vectors["entropy_bin"])).read_bytes())
    try:
        header = bitstream.read_header(data)
        if header.kind == "image":
            _, rgb = bitstream.unpack_image(data)
            return {"kind": "image", "width": rgb.shape[1], "height": rgb.shape[0]}
        _, level, symbols = bitstream.unpack_latent(data, bytes.fromhex(vectors["model_id"]), model)
        return {"kind": "latent", "level": level, "symbols": symbols.ravel().tolist()}
    except CodecError as exc:
        return {"error": str(exc)}


def python_parse_entropy(data: bytes) -> dict:
    """What the Python reference makes of an entropy.bin, in the node script's terms."""
    try:
        m = EntropyModel.from_bytes(data)
    except CodecError as exc:
        return {"error": str(exc)}
    return {"levels": m.levels, "channels": m.channels, "grid": list(m.grid), "contexts": m.contexts}


def python_describe_entropy(data: bytes) -> dict:
    """An entropy.bin in full as the Python reference reads it, in the terms of the node script's
    describe() (every table; a version-3 model's stored parameters as vectors.json lays them out)."""
    try:
        m = EntropyModel.from_bytes(data)
    except CodecError as exc:
        return {"error": str(exc)}
    out = {
        "levels": m.levels, "channels": m.channels, "grid": list(m.grid), "precision": m.precision,
        "contexts": m.contexts, "inv_gains": m.inv_gains.tolist(),
        "tables": [[{"lo": t.lo, "freqs": None if t.degenerate else list(t.freqs)} for t in row] for row in m.tables],
        "context_tables": [[{"lo": ctx[0].lo, "freqs": None if ctx[0].degenerate else [list(t.freqs) for t in ctx]}
                            for ctx in row] for row in m.context_tables],
    }
    if m._parameters is not None:  # version 3
        steps, knots, coded, params = m._parameters
        out.update(segments=knots.shape[1] - 1, steps=steps.tolist(), knots=knots.tolist(),
                   coded=coded.astype(int).tolist(), params=params.tolist())
    return out


# -- the JS entropy decoder and file reader under node ----------------------------------------------

def test_js_parses_entropy_bin_like_python(js, vectors):
    assert js["crc_check"] == 0xF4  # CRC-8/SMBUS check value of b"123456789"
    model = js["model"]
    expected = vectors["model"]
    for key in ("levels", "channels", "grid", "precision", "tables"):
        assert model[key] == expected[key], key
    assert model["contexts"] == 1 and js["models"][vectors["entropy_bin"]] == model
    np.testing.assert_array_equal(np.float32(model["inv_gains"]), np.float32(expected["inv_gains"]))


def test_js_parses_context_entropy_bin_like_python(js, vectors):
    """entropy.bin version 2: K context tables per (level, channel), sharing one support."""
    expected = vectors["context_model"]
    model = js["models"][expected["entropy_bin"]]
    assert (VECTORS / expected["entropy_bin"]).read_bytes()[4] == 2 and expected["contexts"] > 1
    for key in ("levels", "channels", "grid", "precision", "contexts"):
        assert model[key] == expected[key], key
    assert model["context_tables"] == expected["tables"]
    assert model["tables"] == [[{"lo": t["lo"], "freqs": t["freqs"] and t["freqs"][0]} for t in row]
                               for row in expected["tables"]]
    np.testing.assert_array_equal(np.float32(model["inv_gains"]), np.float32(expected["inv_gains"]))
    python = EntropyModel.from_bytes((VECTORS / expected["entropy_bin"]).read_bytes())
    assert [[{"lo": ctx[0].lo, "freqs": None if ctx[0].degenerate else [list(t.freqs) for t in ctx]}
             for ctx in row] for row in python.context_tables] == model["context_tables"]


def test_js_parses_param_entropy_bin_like_python(js, vectors):
    """entropy.bin version 3: the K context tables of every (level, channel) derived from the stored
    integers (knots, steps, coded map, parameter bytes), compared table by table."""
    expected = vectors["param_model"]
    data = (VECTORS / expected["entropy_bin"]).read_bytes()
    model = js["models"][expected["entropy_bin"]]
    assert data[4] == 3 and expected["contexts"] > 1
    for key in ("levels", "channels", "grid", "precision", "contexts", "segments", "steps", "knots", "coded", "params"):
        assert model[key] == expected[key], key
    np.testing.assert_array_equal(np.float32(model["inv_gains"]), np.float32(expected["inv_gains"]))
    assert len(model["context_tables"]) == len(expected["tables"]) == expected["levels"]
    for level, (got_row, want_row) in enumerate(zip(model["context_tables"], expected["tables"])):
        assert len(got_row) == len(want_row) == expected["channels"]
        for c, (got, want) in enumerate(zip(got_row, want_row)):
            assert got == want, (level, c)
            assert (want["freqs"] is None) == (not expected["coded"][level][c]), (level, c)
    assert model["tables"] == [[{"lo": t["lo"], "freqs": t["freqs"] and t["freqs"][0]} for t in row]
                               for row in expected["tables"]]
    assert_same_description(model, python_describe_entropy(data), expected["entropy_bin"])


def test_js_reads_the_header_known_answers(js, vectors):
    assert len(js["headers"]) == len(vectors["headers"]) >= 6
    for got, want in zip(js["headers"], vectors["headers"]):
        assert got == {"kind": want["kind"], "size": want["size"], "model_id_prefix": want["model_id_prefix"],
                       "length": len(want["hex"]) // 2}, want


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
            data = (VECTORS / name).read_bytes()
            assert got["error"] == python_decode(data, vectors, want.get("entropy_bin"))["error"], name
            continue
        assert "error" not in got, (name, got)
        assert got["kind"] == want["kind"], name
        assert got["size"] == want["size"], name
        if want["kind"] == "latent":
            assert got["level"] == want["level"], name
            assert got["symbols"] == np.ravel(want["symbols"]).tolist(), name
            if "contexts" in want:
                assert got["contexts"] == np.ravel(want["contexts"]).tolist(), name
            np.testing.assert_array_equal(np.float32(got["latent"]), np.ravel(np.float32(want["latent"])))
        else:
            data = (VECTORS / name).read_bytes()
            header = bitstream.read_header(data)
            assert (got["format"], bytes.fromhex(got["bytes"])) == bitstream.image_file(data[header.length:-1]), name
            assert [got["height"], got["width"]] == list(np.shape(want["rgb"])[:2]), name
    assert bitstream.model_id_prefix(model_id) == vectors["model_id_prefix"]
    assert {f.get("entropy_bin") for f in vectors["files"] if f["kind"] == "latent"} == {
        vectors["entropy_bin"], vectors["context_model"]["entropy_bin"],
        vectors["param_model"]["entropy_bin"]}  # every model (entropy.bin versions 1, 2 and 3) is exercised


def test_js_agrees_with_python_on_mutated_files(vectors, tmp_path):
    """Random damage to the valid files (most with the CRC fixed up, so the range decoder sees
    hostile payloads): node and Python decode the same symbols or refuse with the same message.
    Files of all three vector models (K = 1, the context model and the parametric one)."""
    rng = np.random.default_rng(13)
    model_id = bytes.fromhex(vectors["model_id"])
    sources = [((VECTORS / f["file"]).read_bytes(), f["entropy_bin"]) for f in vectors["files"]
               if f["kind"] == "latent"]
    expected, by_model = [], {}
    for i in range(600):
        source, entropy_bin = sources[i % len(sources)]
        data = bytearray(source)
        for _ in range(rng.integers(1, 4)):
            op = rng.integers(0, 3)
            if op == 0 and len(data) > 0:
                data[rng.integers(0, len(data))] ^= 1 << rng.integers(0, 8)
            elif op == 1 and len(data) > 3:
                del data[rng.integers(2, len(data) - 1)]
            else:
                data.insert(rng.integers(2, len(data)), int(rng.integers(0, 256)))
        if i % 4 and len(data) >= 3:  # re-seal the CRC most of the time
            header_kind = "latent" if not data[0] & 0x20 else "image"
            seed = bitstream.crc8(model_id) if header_kind == "latent" else 0
            data[-1] = bitstream.crc8(bytes(data[:-1]), seed)
        path = tmp_path / f"m{i}.bin"
        path.write_bytes(bytes(data))
        by_model.setdefault(entropy_bin, []).append(path)
        expected.append((path, python_decode(bytes(data), vectors, entropy_bin)))
    args = [a for name, files in by_model.items() for a in ("--model", name, "--files", *files)]
    got = {g["file"]: g for g in run_node(*args)["extra"]}
    assert len(got) == len(expected)
    for path, want in expected:
        g = got[str(path)]
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
        "version": good[:4] + b"\x02" + good[5:],  # a version-1 body read as version 2
        "version_3": good[:4] + b"\x03" + good[5:],
        "precision": good[:5] + b"\x11" + good[6:],
        "levels": good[:6] + b"\x00\x00" + good[8:],
        "gains": good[:20],
        "negative_gain": good[:14] + struct.pack("<f", -1.0) + good[18:],
        "table_n0": good[:first_table + 2] + b"\x00\x00" + good[first_table + 4:],
        "zero_freq": good[:first_table + 4] + b"\x00\x00" + good[first_table + 6:],
        "truncated_table": good[:-3],
        "trailing": good + b"\x00",
    }
    ctx = (VECTORS / "entropy_ctx.bin").read_bytes()  # version 2: L = 3, C = 6, K = 4, precision 14
    supports = 15 + 4 * 3 * 6
    freqs = supports + 4 * 3 * 6
    assert struct.unpack_from("<H", ctx, freqs - 2)[0] == 1  # (2, 5), the last table, is degenerate
    # every table degenerate (n = 1): no frequencies at all, a valid file that both must accept
    only_degenerate = ctx[:supports] + b"".join(
        struct.pack("<hH", struct.unpack_from("<h", ctx, supports + 4 * i)[0], 1) for i in range(3 * 6))
    cases.update({
        "v2_no_context_count": ctx[:14],
        "v2_k0": ctx[:14] + b"\x00" + ctx[15:],
        "v2_k65": ctx[:14] + b"\x41" + ctx[15:],
        "v2_k_other": ctx[:14] + b"\x03" + ctx[15:],  # K = 3: the frequency rows no longer add up
        "v2_precision_0": ctx[:5] + b"\x00" + ctx[6:],
        "v2_gains": ctx[:40],
        "v2_supports": ctx[: supports + 7],
        "v2_n0": ctx[: supports + 6] + b"\x00\x00" + ctx[supports + 8 :],
        "v2_n_too_big": ctx[: supports + 6] + struct.pack("<H", (1 << 14) + 1) + ctx[supports + 8 :],
        "v2_degenerate_becomes_coded": ctx[: freqs - 2] + b"\x02\x00" + ctx[freqs:],
        "v2_freqs_truncated": ctx[:-1],
        "v2_freqs_truncated_row": ctx[:-2],
        "v2_sum_last_context": ctx[:-2] + struct.pack("<H", struct.unpack_from("<H", ctx, len(ctx) - 2)[0] + 1),
        "v2_trailing": ctx + b"\x00\x00",
        "v2_only_degenerate_tables": only_degenerate,
    })
    paths = []
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    out = run_node("--entropy", *paths)
    for path, g in zip(paths, out["entropy"]):
        want = python_parse_entropy(path.read_bytes())
        assert path.name == "v2_only_degenerate_tables" or "error" in want, path.name
        assert {k: v for k, v in g.items() if k != "file"} == want, path.name
    # the committed bad version-2 files (tests/vectors/bad_entropy_ctx_*.bin)
    bad = json.loads((VECTORS / "vectors.json").read_text())["bad_entropy_bins"]
    assert [g["file"] for g in out["bad_entropy_bins"]] == [b["file"] for b in bad] and bad
    for g, b in zip(out["bad_entropy_bins"], bad):
        want = python_parse_entropy((VECTORS / b["file"]).read_bytes())
        assert b["error"] in want["error"] and g.get("error") == want["error"], b["file"]


def assert_same_description(got: dict, want: dict, name: str) -> None:
    """The node script's describe() of an entropy.bin equals python_describe_entropy's (the inverse
    gains as float32: JSON writes a large integral float as an integer)."""
    got = {k: v for k, v in got.items() if k != "file"}
    if "inv_gains" in want and "inv_gains" in got:
        np.testing.assert_array_equal(np.float32(got.pop("inv_gains")), np.float32(want["inv_gains"]), name)
        want = {k: v for k, v in want.items() if k != "inv_gains"}
    assert got == want, name


def _param_layout(data: bytes) -> dict:
    """Where the fields of a version-3 entropy.bin start (docs/bitstream.md section 6)."""
    levels, channels = struct.unpack_from("<HH", data, 6)
    cells = levels * channels
    coded = sum(bin(b).count("1") for b in data[17 : 17 + (cells + 7) // 8])
    gains = 17 + (cells + 7) // 8
    steps = gains + 4 * (cells - coded)
    return {"map": 17, "gains": gains, "cells": steps, "knots": steps + 7 * coded}


def test_js_refuses_bad_param_entropy_bin_like_python(tmp_path):
    """Version 3: every field out of range, every truncation: node refuses with Python's message
    (or, for the few edits that leave a valid file, derives the same tables)."""
    good = (VECTORS / "entropy_param.bin").read_bytes()  # L = 3, C = 6, K = 4, Q = 8, precision 14
    at = _param_layout(good)
    assert good[4] == 3 and good[14] == 4 and struct.unpack_from("<H", good, 15)[0] == 8
    first_step = at["cells"] + 4  # the step of the first coded cell, after its inverse gain
    knots = at["knots"]
    cases = {
        "no_counts": good[:16],
        "k0": good[:14] + b"\x00" + good[15:],
        "k65": good[:14] + b"\x41" + good[15:],
        "k1": good[:14] + b"\x01" + good[15:],  # fewer reachable contexts: bytes left over
        "k8": good[:14] + b"\x08" + good[15:],
        "q0": good[:15] + struct.pack("<H", 0) + good[17:],
        "q4097": good[:15] + struct.pack("<H", 4097) + good[17:],
        "q7": good[:15] + struct.pack("<H", 7) + good[17:],
        "q9": good[:15] + struct.pack("<H", 9) + good[17:],
        "map_truncated": good[: at["map"] + 1],
        "padding": good[: at["gains"] - 1] + bytes([good[at["gains"] - 1] | 0x80]) + good[at["gains"] :],
        "map_one_more": good[: at["map"]] + bytes([good[at["map"]] ^ 1]) + good[at["map"] + 1 :],
        "gains_truncated": good[: at["gains"] + 5],
        "cells_truncated": good[: knots - 1],
        "gain_nan": good[: at["gains"]] + struct.pack("<f", float("nan")) + good[at["gains"] + 4 :],
        "gain_zero": good[: at["gains"]] + bytes(4) + good[at["gains"] + 4 :],
        "coded_gain_negative": good[: at["cells"]] + struct.pack("<f", -1.0) + good[at["cells"] + 4 :],
        "coded_gain_inf": good[: at["cells"]] + struct.pack("<f", float("inf")) + good[at["cells"] + 4 :],
        "step_0": good[:first_step] + bytes(3) + good[first_step + 3 :],
        "step_1": good[:first_step] + b"\x01\x00\x00" + good[first_step + 3 :],  # support beyond int16
        "step_max": good[:first_step] + b"\xff\xff\xff" + good[first_step + 3 :],  # valid: 3 symbols
        "step_high_byte": good[: first_step + 2] + b"\x01" + good[first_step + 3 :],
        "knots_truncated": good[: knots + 3],
        "varint_truncated": good[: knots + 5],
        "knot_beyond": good[:knots] + struct.pack("<i", -(1 << 27) - 1) + good[knots + 4 :],
        "knot_at_limit": good[:knots] + struct.pack("<i", -(1 << 27)) + good[knots + 4 :],
        "knot_step_4_bytes": good[: knots + 4] + b"\x80\x80\x80\x01" + good[knots + 5 :],
        "knot_step_overlong": good[: knots + 4] + b"\x81\x00" + good[knots + 5 :],
        "knot_step_3_bytes": good[: knots + 4] + b"\x81\x80\x01" + good[knots + 5 :],
        "params_truncated": good[:-1],
        "trailing": good + b"\x87",
        "version_2": good[:4] + b"\x02" + good[5:],
        "precision_8": good[:5] + b"\x08" + good[6:],  # fewer symbols allowed than the support has
        "precision_16": good[:5] + b"\x10" + good[6:],
        "precision_1": good[:5] + b"\x01" + good[6:],  # 2 symbols at most: every support is too wide
        "precision_17": good[:5] + b"\x11" + good[6:],
    }
    cases.update({f"prefix_{n}": good[:n] for n in range(len(good))})
    paths = []
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    out = run_node("--describe", *paths)["described"]
    assert len(out) == len(paths)
    valid = set()
    for path, g in zip(paths, out):
        want = python_describe_entropy(path.read_bytes())
        assert_same_description(g, want, path.name)
        if "error" not in want:
            valid.add(path.name)
    assert valid == {"step_max", "step_high_byte", "knot_step_3_bytes", "precision_8", "precision_16"}


def test_js_derives_mutated_param_tables_like_python(tmp_path):
    """Random edits of the stored integers of a version-3 entropy.bin (steps, knots, parameter
    bytes, coded map): node derives exactly Python's tables, or refuses with its message."""
    good = (VECTORS / "entropy_param.bin").read_bytes()
    at = _param_layout(good)
    rng = np.random.default_rng(31)
    paths, edited_valid = [], 0
    for i in range(300):
        data = bytearray(good)
        for _ in range(rng.integers(1, 4)):
            pos = int(rng.integers(at["map"] if i % 10 == 0 else at["cells"], len(data)))
            data[pos] = int(rng.integers(0, 256)) if i % 3 else data[pos] ^ (1 << int(rng.integers(0, 8)))
        path = tmp_path / f"p{i}.bin"
        path.write_bytes(bytes(data))
        paths.append(path)
    out = run_node("--describe", *paths)["described"]
    for path, g in zip(paths, out):
        want = python_describe_entropy(path.read_bytes())
        assert_same_description(g, want, path.name)
        edited_valid += "error" not in want and path.read_bytes() != good
    assert edited_valid >= 100  # most edits (parameter bytes, steps, knots) leave a valid, different model


def test_js_and_python_refuse_bad_gains_in_version_2(tmp_path):
    ctx = (VECTORS / "entropy_ctx.bin").read_bytes()
    cases = {"negative": struct.pack("<f", -1.0), "nan": struct.pack("<f", float("nan")), "zero": bytes(4)}
    paths = []
    for name, gain in cases.items():
        (tmp_path / name).write_bytes(ctx[:15] + gain + ctx[19:])
        paths.append(tmp_path / name)
    for path, g in zip(paths, run_node("--entropy", *paths)["entropy"]):
        assert g.get("error") == "entropy model: inverse gains must be finite and positive", path.name
        assert python_parse_entropy(path.read_bytes()) == {"error": g["error"]}, path.name


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
    if not registry_reachable():
        pytest.skip(f"onnxruntime-web missing and the npm registry ({NPM_REGISTRY}) is unreachable (offline?): "
                    "make web-runtime once online")
    proc = subprocess.run(["make", "-s", "web-runtime"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"make web-runtime failed:\n{proc.stdout}\n{proc.stderr}"


NPM_REGISTRY = "registry.npmjs.org"


def registry_reachable(host: str = NPM_REGISTRY, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the npm registry opens (npm ci needs it; a proxy npm is
    configured for counts as reachable)."""
    import socket

    if os.environ.get("npm_config_registry") or os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


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
    avif = io.BytesIO()
    Image.fromarray(synthetic_images(1, 16, 6)[0]).save(avif, format="AVIF", quality=80, speed=8)
    files["avif.bin"] = bitstream.pack_avif(avif.getvalue(), codec.bundle.model_id_bytes)
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


@pytest.fixture
def any_size_site_url(tiny_any_bundle, tmp_path):
    """The page with the tiny any-size bundle (trained on crops, dynamic ONNX shapes)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing (install Debian's chromium: make browser)")
    pytest.importorskip("playwright.sync_api")
    ensure_runtime()
    with serve(web.build_site(tmp_path / "site", [tiny_any_bundle])) as url:
        yield url


@pytest.mark.browser
def test_page_decodes_non_square_files_like_python(any_size_site_url, tiny_any_bundle, tmp_path):
    """An any-size bundle's files at their own, non-square, odd sizes: the page decodes each to the
    size in its header and the pixels Python decodes (the grid follows the size, the padding is
    cropped)."""
    from playwright.sync_api import sync_playwright

    codec = Codec(tiny_any_bundle)
    rng = np.random.default_rng(3)
    images = [np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8)
              for h, w in ((48, 80), (21, 37), (16, 16), (9, 50))]
    files = {}
    for i, image in enumerate(images):
        result = codec.compress([image], level=codec.levels - 1 - i, steps=0)[0]
        files[f"any{i}.bin"] = result.data
        (tmp_path / f"any{i}.bin").write_bytes(result.data)
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = DecoderPage(browser, any_size_site_url)
            for (name, data), image in zip(files.items(), images):
                status, pixels = page.decode(tmp_path / name)
                assert status == "done", (name, pixels)
                expected, _ = decode_file_bytes(data, model=str(tiny_any_bundle))
                assert pixels.shape == expected.shape == image.shape, name
                diff = np.abs(pixels.astype(int) - expected.astype(int))
                assert diff.max() <= MAX_ABS_DIFF, (name, diff.max())
                info = page.page.inner_text("#info")
                assert f"{image.shape[1]}×{image.shape[0]}" in info, info
        finally:
            browser.close()


def test_js_contexts_equal_python_and_training_on_random_symbols(tmp_path):
    """The context function, bit for bit: the JS decoder's contexts() under node, the coder's
    (runtime.entropy.contexts, numpy) and training's (training.rate.context_of, keras.ops), on
    random symbols, coded masks and context counts."""
    import json as _json

    from keras import ops

    from runtime.entropy import contexts
    from training.rate import context_of

    rng = np.random.default_rng(11)
    cases = []
    for k in (1, 2, 3, 8, 16):
        for c in (1, 5, 64):
            symbols = (rng.integers(-3, 4, (3, 2, c)) * (rng.random((3, 2, c)) < 0.5)).astype(np.int64)
            coded = rng.random(c) < 0.7
            cases.append({"k": k, "coded": coded.tolist(), "symbols": symbols.ravel().tolist(), "shape": symbols.shape})
    (tmp_path / "cases.json").write_text(_json.dumps(cases))
    script = ("import { readFileSync } from 'node:fs'; import { contexts } from '" + (ROOT / "demo/web/decoder.js").as_uri()
              + "'; const cases = JSON.parse(readFileSync(process.argv[1], 'utf8'));"
              " console.log(JSON.stringify(cases.map((c) => Array.from(contexts(Int32Array.from(c.symbols), c.coded, c.k)))));")
    proc = subprocess.run([node_or_skip(), "--input-type=module", "-e", script, str(tmp_path / "cases.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got_js = _json.loads(proc.stdout)
    for case, js in zip(cases, got_js):
        symbols = np.array(case["symbols"]).reshape(case["shape"])
        want = contexts(symbols, np.array(case["coded"]), case["k"])
        np.testing.assert_array_equal(np.array(js).reshape(symbols.shape), want)
        train = ops.convert_to_numpy(context_of(ops.convert_to_tensor(symbols[None].astype(np.float32)), case["k"],
                                                np.array(case["coded"])))
        np.testing.assert_array_equal(train[0], want)
