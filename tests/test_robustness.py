"""Issue 7: hostile files, bad images, model mismatch, and nothing lost."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from runtime import bitstream
from runtime.bundle import load_bundle
from runtime.errors import CodecError
from tests.conftest import ROOT, run_module, synthetic_images


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    from runtime.bundle import load_bundle

    return load_bundle(tiny_bundle)


def _valid_file(bundle, level=5, seed=0, size=None):
    model = bundle.entropy
    raw = np.rint(np.random.default_rng(seed).standard_normal(bundle.latent_shape) * 3)
    return bitstream.pack_latent(model.clip(level, raw)[0], level, model, bundle.model_id_bytes, size=size)


def _webp_file(bundle, seed=0, size=None):
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
        buf, "WEBP", quality=30)
    return bitstream.pack_webp(buf.getvalue(), bundle.model_id_bytes, size=size)


def _decode_or_codec_error(data, bundle):
    from runtime.codec import decode_file_bytes

    try:
        image, _ = decode_file_bytes(data, str(bundle.directory))
    except CodecError:
        return "rejected"
    assert image.dtype == np.uint8 and image.ndim == 3
    return "decoded"


# -- decoder fuzzing ---------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_files_decode_or_raise_codec_error(bundle, data):
    from benchmarks.fuzz import mutate

    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if data.draw(st.integers(0, 9)) == 0:
        valid = _webp_file(bundle, seed % 1000)
    else:
        valid = _valid_file(bundle, level=data.draw(st.integers(0, bundle.levels - 1)), seed=seed % 1000,
                            size=data.draw(st.one_of(st.none(), st.tuples(st.integers(1, 500), st.integers(1, 500)))))
    _, hostile = mutate(valid, bundle.model_id_bytes, rng, _valid_file(bundle, seed=seed % 7))
    _decode_or_codec_error(hostile, bundle)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=400))
def test_random_bytes_decode_or_raise_codec_error(bundle, blob):
    _decode_or_codec_error(blob, bundle)


def test_fuzz_command_reports_zero_failures(tiny_bundle):
    r = run_module("benchmarks.fuzz", "--seconds", "5", "--model", tiny_bundle)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"(\d+) inputs tried.*?(\d+) decoded, (\d+) rejected, (\d+) failures", r.stdout)
    assert m and int(m.group(1)) > 50 and int(m.group(4)) == 0


def test_hostile_size_field_is_refused_before_allocating(bundle):
    for data, seed in ((_valid_file(bundle, size=(10, 10)), bitstream.crc8(bundle.model_id_bytes)),
                       (_webp_file(bundle, size=(10, 10)), 0)):
        # version 3's 12 bits a side cannot exceed the 4096 cap; version 2's 16 bits can
        data = bytearray([(data[0] & 0x3F) | 0x80, data[1]]) + b"\xff\xff\xff\xff" + data[5:]  # 65536 x 65536
        data[-1] = bitstream.crc8(bytes(data[:-1]), seed)
        with pytest.raises(CodecError, match="beyond"):
            bitstream.read_header(bytes(data))


def test_largest_any_size_grid_is_refused_before_allocating():
    """A 4096 x 4096 size (the most 12 bits hold) names a 512 x 512 x 64 grid on the shipped
    any-size bundle: beyond the 2^22-symbol cap, refused before a symbol is decoded."""
    from runtime.bundle import PROJECT_MODELS
    from runtime.codec import Codec

    b = load_bundle(PROJECT_MODELS / "flowers128")
    symbols, _ = b.entropy.clip(0, np.zeros(b.latent_shape, np.int32))
    data = bitstream.pack_latent(symbols, 0, b.entropy, b.model_id_bytes)
    header = bitstream.Header("latent", bitstream.model_id_prefix(b.model_id_bytes), (4096, 4096)).to_bytes()
    body = header + data[2:-1]
    hostile = body + bytes([bitstream.crc8(body, bitstream.crc8(b.model_id_bytes))])
    with pytest.raises(CodecError, match="beyond the caps"):
        Codec(b).decompress(hostile)


# -- encoder input hardening --------------------------------------------------------------------

def _write_inputs(d: Path) -> dict:
    base = Image.fromarray(synthetic_images(1, 24, seed=2)[0])
    files = {}
    files["empty.png"] = b""
    files["text.png"] = b"hello, I am not an image"
    png = d / "_full.png"
    base.save(png)
    files["truncated.png"] = png.read_bytes()[:60]
    jpg = d / "_full.jpg"
    base.save(jpg, quality=90)
    files["truncated.jpg"] = jpg.read_bytes()[:200]
    for name, data in files.items():
        (d / name).write_bytes(data)
    ok = {}
    Image.new("RGB", (1, 1), (200, 10, 10)).save(d / "one.png")
    Image.fromarray((np.arange(24 * 24).reshape(24, 24) * 100).astype(np.uint16)).save(d / "sixteen.png")
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "rgba.png")
    base.convert("L").save(d / "gray.png")
    base.convert("CMYK").save(d / "cmyk.jpg")
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.new("RGB", (3000, 40), (0, 90, 0)).save(d / "wide.png")
    for n in ("one.png", "sixteen.png", "palette.png", "rgba.png", "gray.png", "cmyk.jpg", "anim.gif", "wide.png"):
        ok[n] = d / n
    bad = {n: d / n for n in files}
    return {"ok": ok, "bad": bad}


def test_image_conversion_of_every_mode(tmp_path):
    from runtime.images import load_image

    inputs = _write_inputs(tmp_path)
    for name, path in inputs["ok"].items():
        pixels, original = load_image(path, 16)
        assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8, name
    for path in inputs["bad"].values():
        with pytest.raises(CodecError):
            load_image(path, 16)


def test_decompression_bomb_is_refused(tmp_path):
    from runtime.images import load_image

    big = tmp_path / "big.png"
    Image.new("1", (10000, 10000)).save(big)  # 100 MP, a tiny file
    with pytest.raises(CodecError, match="too large"):
        load_image(big, 16)


def test_encode_cli_on_odd_inputs(tiny_bundle, tmp_path):
    inputs = _write_inputs(tmp_path)
    out = tmp_path / "out"
    r = run_module("runtime.encode", *inputs["ok"].values(), "--model", tiny_bundle, "--out-dir", out, "--steps", "0")
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("*.bin"))) == len(inputs["ok"])
    for name, path in inputs["bad"].items():
        target = tmp_path / f"{name}.bin"
        r = run_module("runtime.encode", path, "--model", tiny_bundle, "-o", target, "--steps", "0")
        assert r.returncode == 2, name
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not target.exists()


# -- output safety ------------------------------------------------------------------------------

def _hostile_latent(bundle, payload: bytes) -> bytes:
    """A v2 latent header with the bundle's id, then ``payload`` (no valid CRC)."""
    return bitstream.Header("latent", bundle.model_id_prefix, None).to_bytes() + payload


def test_failed_run_does_not_clobber_existing_output(bundle, tiny_bundle, tmp_path):
    target = tmp_path / "keep.png"
    target.write_bytes(b"precious")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(_hostile_latent(bundle, b"garbage"))
    r = run_module("runtime.decode", bad, "-o", target, "--model", tiny_bundle)
    assert r.returncode == 2
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_out_dir_never_writes_outside(tmp_path):
    from runtime.output import output_in_dir, safe_stem

    out = tmp_path / "out"
    out.mkdir()
    for name in ["../../etc/passwd.png", "..", ".hidden.png", "a b/c.png", "x\x00y.png", "/abs/path.png"]:
        path = output_in_dir(out, name, ".bin")
        assert path.parent == out.resolve()
        assert not path.name.startswith(".")
    assert safe_stem("../../evil name!.png") == "evil_name_"


def test_atomic_write_replaces_or_leaves_intact(tmp_path):
    from runtime.output import write_atomic

    target = tmp_path / "f.bin"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(CodecError):
        write_atomic(tmp_path / "missing-dir" / "f.bin", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


# -- model integrity ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["generator.keras", "entropy.bin", "rate.npz"])
def test_bundle_with_modified_file_is_refused(tiny_bundle, tmp_path, name):
    import shutil

    from runtime.bundle import load_bundle

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / name, "ab") as f:
        f.write(b"\0")
    with pytest.raises(CodecError, match=name.replace(".", r"\.")):
        load_bundle(copy)
    (copy / "encoder.onnx").unlink()
    with pytest.raises(CodecError):
        load_bundle(copy)


def test_manifest_with_odd_file_names_is_refused(tiny_bundle, tmp_path):
    import json
    import shutil

    from runtime.bundle import load_bundle

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["../outside"] = "00"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CodecError, match="odd file"):
        load_bundle(copy)


# -- no pickle ----------------------------------------------------------------------------------

def test_every_np_load_refuses_pickle():
    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        if ".venv" in path.parts or path.name == "test_robustness.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bnp\.load\(", line) and "allow_pickle=False" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert offenders == []


@pytest.mark.parametrize("kind", ["v1", "latent", "image"])
def test_decode_subprocess_survives_hostile_file_without_traceback(bundle, tiny_bundle, tmp_path, kind):
    blob = tmp_path / "hostile.bin"
    if kind == "v1":  # a format-1 file: refused with a clear word
        blob.write_bytes(bytes([0xC7, 0x47, 0x12, 0x34]) + bytes(40))
    elif kind == "latent":  # the right id and a CRC that verifies, then a hostile payload
        data = bytearray(_hostile_latent(bundle, b"\xff" * 40 + b"\0"))
        data[-1] = bitstream.crc8(bytes(data[:-1]), bitstream.crc8(bundle.model_id_bytes))
        blob.write_bytes(bytes(data))
    else:  # a WebP payload that is not a WebP image
        data = bytearray(bitstream.Header("image", bundle.model_id_prefix, None).to_bytes() + b"VP8 " + bytes(40) + b"\0")
        data[-1] = bitstream.crc8(bytes(data[:-1]))
        blob.write_bytes(bytes(data))
    r = subprocess.run([sys.executable, "-m", "runtime.decode", str(blob), "--model", str(tiny_bundle)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    if kind == "v1":
        assert "older version" in r.stderr, r.stderr
