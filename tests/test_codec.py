import json

import numpy as np
import pytest
from PIL import Image

from runtime import metrics
from runtime.errors import CodecError
from tests.conftest import run_module, synthetic_images


@pytest.fixture(scope="module")
def codec(tiny_bundle):
    from runtime.codec import Codec

    return Codec(str(tiny_bundle))


@pytest.fixture(scope="module")
def images():
    return list(synthetic_images(6, 16, seed=7))


def test_round_trip_psnr_equals_reported(codec, images):
    results = codec.encode_detailed(images, bits=5, steps=10)
    assert len(results) == len(images)
    for img, res in zip(images, results):
        decoded = codec.decode(res.data)
        np.testing.assert_array_equal(decoded, res.reconstruction)
        assert metrics.psnr(decoded, img) == pytest.approx(res.quality["psnr"])
        assert res.num_bytes == len(res.data)


def test_refinement_does_not_make_things_worse(codec, images):
    start = codec.encode_detailed(images, bits=6, steps=0)
    refined = codec.encode_detailed(images, bits=6, steps=30)
    assert np.mean([r.quality["mse"] for r in refined]) <= np.mean([r.quality["mse"] for r in start]) + 1e-9


def test_more_bits_more_bytes(codec, images):
    small = codec.encode(images, bits=2, steps=0)
    large = codec.encode(images, bits=8, steps=0)
    assert sum(map(len, small)) < sum(map(len, large))


def test_target_bytes_and_psnr(codec, images):
    results = codec.encode_detailed(images, steps=6, target_bytes=12)
    for r in results:
        assert r.num_bytes <= 12 or r.bits == 2
    loose = codec.encode_detailed(images, steps=0, target_psnr=5.0)
    assert all(r.bits == 2 for r in loose)  # any latent beats 5 dB on these images


def test_decode_is_deterministic(codec, images):
    from runtime.output import png_bytes

    data = codec.encode(images[:1], steps=0)[0]
    assert png_bytes(codec.decode(data)) == png_bytes(codec.decode(data))


def test_keep_size(codec):
    img = Image.fromarray(synthetic_images(1, 16)[0]).resize((40, 24))
    data = codec.encode([np.asarray(img)], steps=0, keep_size=True)[0]
    assert codec.decode(data).shape == (24, 40, 3)
    assert codec.decode(data, keep_size=False).shape == (16, 16, 3)


def test_file_from_model_a_is_never_decoded_by_model_b(codec, images, tiny_run, tmp_path):
    from export.onnx import export_run
    from runtime.codec import Codec, decode_file_bytes

    other = tmp_path / "other"
    export_run(tiny_run, other)
    other_codec = Codec(str(other))
    assert other_codec.bundle.model_id != codec.bundle.model_id
    data = codec.encode(images[:1], steps=0)[0]
    with pytest.raises(CodecError, match="written by model"):
        other_codec.decode(data)
    with pytest.raises(CodecError, match="written by model"):
        decode_file_bytes(data, str(other))  # forcing --model does not bypass the id check


def test_encode_and_decode_cli(models_env, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(synthetic_images(2, 20, seed=3)):
        Image.fromarray(img).save(src / f"pic{i}.png")
    out = tmp_path / "bins"
    r = run_module("runtime.encode", src / "pic0.png", src / "pic1.png", "--model", models_env,
                   "--out-dir", out, "--steps", "5", "--json", env={"GANCODEC_MODELS": str(models_env.parent)})
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["bytes"] for row in rows] == [(out / f"pic{i}.bin").stat().st_size for i in range(2)]
    for key in ("bpp", "psnr", "ssim", "ms_ssim"):
        assert key in rows[0]
    # decode finds the model by id through $GANCODEC_MODELS, in a process where TensorFlow cannot load
    dec = run_module("tests.no_tf_decode", out / "pic0.bin", out / "pic1.bin", "--out-dir", tmp_path / "png",
                     env={"GANCODEC_MODELS": str(models_env.parent)})
    assert dec.returncode == 0, dec.stderr
    for i in range(2):
        png = np.asarray(Image.open(tmp_path / "png" / f"pic{i}.png"))
        src_img = np.asarray(Image.open(src / f"pic{i}.png").resize((16, 16), Image.Resampling.BOX))
        assert metrics.psnr(png, src_img) == pytest.approx(rows[i]["psnr"], abs=1e-3)
    # default output: next to the input
    dec2 = run_module("runtime.decode", out / "pic0.bin", env={"GANCODEC_MODELS": str(models_env.parent)})
    assert dec2.returncode == 0 and (out / "pic0.png").exists()


@pytest.mark.parametrize("content", [b"", b"\xc7", b"garbage that is not a latent", bytes(300)])
def test_decode_cli_bad_files(models_env, tmp_path, content):
    f = tmp_path / "bad.bin"
    f.write_bytes(content)
    target = tmp_path / "bad.png"
    r = run_module("runtime.decode", f, "-o", target, env={"GANCODEC_MODELS": str(models_env.parent)})
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not target.exists()


def test_unknown_model_id(models_env, tmp_path):
    from runtime import bitstream

    data = bitstream.pack(np.zeros(8, np.int32), 4, bytes(range(32)))
    f = tmp_path / "x.bin"
    f.write_bytes(data)
    r = run_module("runtime.decode", f, env={"GANCODEC_MODELS": str(models_env.parent)})
    assert r.returncode == 2 and "no model with id" in r.stderr


def test_encode_cli_bad_image(models_env, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = run_module("runtime.encode", bad, "--model", models_env, "-o", tmp_path / "o.bin")
    assert r.returncode == 2 and r.stderr.startswith("error: ")
    assert not (tmp_path / "o.bin").exists()


def test_decode_imports_no_tensorflow(models_env):
    code = ("import sys, runtime.decode, runtime.codec, runtime.bitstream, runtime.bundle\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]\n"
            "print(heavy)\n")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_ladder_rate_control_picks_per_image_and_decodes_by_id(tiny_run, tiny_bundle, images, tmp_path, monkeypatch):
    import shutil

    from export.onnx import export_run
    from runtime.bundle import load_bundle
    from runtime.codec import decode_file_bytes, encode_to_target, ladder

    shelf = tmp_path / "shelf"
    shutil.copytree(tiny_bundle, shelf / "a")
    export_run(tiny_run, shelf / "b")  # another rung of the same data set (its own model id)
    monkeypatch.setenv("GANCODEC_MODELS", str(shelf))
    rungs = ladder(load_bundle(shelf / "a"))
    assert len({b.model_id for b in rungs}) == 2
    picks = encode_to_target(images, str(shelf / "a"), target_bytes=14, steps=2)
    for res, bundle in picks:
        assert res.num_bytes <= 14 or res.bits == 2
        decoded, used = decode_file_bytes(res.data)
        assert used.model_id == bundle.model_id
        np.testing.assert_array_equal(decoded, res.reconstruction)
    only = encode_to_target(images, str(shelf / "a"), target_psnr=1.0, steps=0, use_ladder=False)
    assert {b.directory.name for _, b in only} == {"a"}
