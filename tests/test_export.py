import json
import shutil

import numpy as np
import pytest

from export.onnx import EXTRA_LEVELS, SUBLEVELS, expand_levels
from runtime.errors import CodecError
from tests.conftest import run_module, tiny_config


def test_bundle_files_and_manifest(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    for key in ("format", "name", "model_id", "image_size", "latent_grid", "channels", "levels", "output_range",
                "dataset", "training", "validation", "parity_max_abs_diff", "files", "versions"):
        assert key in manifest, key
    assert manifest["format"] == 2 and manifest["image_size"] == 16
    assert manifest["latent_grid"] == [2, 2] and manifest["channels"] == 8
    assert manifest["training"]["mode"] == "rd" and manifest["training"]["trained_levels"] == 3
    assert manifest["levels"] == (3 - 1) * SUBLEVELS + 1 + EXTRA_LEVELS
    assert manifest["training"]["extra_levels"] == EXTRA_LEVELS
    assert set(manifest["files"]) == {"generator.onnx", "generator.keras", "encoder.onnx", "encoder.keras",
                                      "entropy.bin", "rate.npz"}
    assert all(v <= 1e-4 for v in manifest["parity_max_abs_diff"].values())
    val = manifest["validation"]
    assert val["images"] == 16 and len(val["bytes"]) == len(val["psnr"]) == manifest["levels"]
    assert val["bytes"][-1] > val["bytes"][0]


def test_onnx_is_self_describing(tiny_bundle):
    import onnx

    model = onnx.load(str(tiny_bundle / "generator.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["latent_grid"] == "2,2,8" and meta["image_size"] == "16" and meta["gancodec_role"] == "generator"
    assert [i.name for i in model.graph.input] == ["latent"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [2, 2, 8]
    enc = onnx.load(str(tiny_bundle / "encoder.onnx"))
    assert [i.name for i in enc.graph.input] == ["image"] and [o.name for o in enc.graph.output] == ["latent"]


def test_parity_check_cli(tiny_bundle):
    r = run_module("export.check", tiny_bundle)
    assert r.returncode == 0, r.stderr
    assert "max abs diff" in r.stdout


def test_expand_levels_interpolates_between_trained_levels():
    rate = {"log_gain": np.log([[1.0, 2.0], [4.0, 8.0], [16.0, 8.0]]).astype(np.float32),
            "log_inv_gain": -np.log([[1.0, 2.0], [4.0, 8.0], [16.0, 8.0]]).astype(np.float32),
            "lambdas": np.array([0.01, 0.04, 0.16], np.float32)}
    out = expand_levels(rate, sublevels=2, extra=0)
    np.testing.assert_allclose(out["gains"], [[1, 2], [2, 4], [4, 8], [8, 8], [16, 8]], rtol=1e-5)
    np.testing.assert_allclose(out["gains"] * out["inv_gains"], 1, rtol=1e-5)
    np.testing.assert_allclose(out["lambdas"], [0.01, 0.02, 0.04, 0.08, 0.16], rtol=1e-5)


def test_expand_levels_extends_past_the_finest_trained_level():
    """The extra levels continue the last trained interval's gain and λ slope (finer quantizers of
    the same latent): the gain · inverse-gain product stays the finest trained level's."""
    rate = {"log_gain": np.log([[1.0, 2.0], [4.0, 8.0], [16.0, 8.0]]).astype(np.float32),
            "log_inv_gain": -np.log([[2.0, 2.0], [8.0, 8.0], [32.0, 16.0]]).astype(np.float32),
            "lambdas": np.array([0.01, 0.04, 0.16], np.float32)}
    out = expand_levels(rate, sublevels=2, extra=3)
    assert out["gains"].shape == out["inv_gains"].shape == (5 + 3, 2) and out["lambdas"].shape == (8,)
    np.testing.assert_allclose(out["gains"][4:], [[16, 8], [32, 8], [64, 8], [128, 8]], rtol=1e-5)
    np.testing.assert_allclose(out["gains"][4:] * out["inv_gains"][4:], 0.5, rtol=1e-5)
    np.testing.assert_allclose(out["lambdas"][4:], [0.16, 0.32, 0.64, 1.28], rtol=1e-5)


def test_entropy_tables_cover_the_training_symbols(tiny_bundle, tiny_npz):
    """Every symbol of every training image, at every level, is inside its table: nothing clipped."""
    from runtime.codec import Codec

    codec = Codec(str(tiny_bundle))
    train = np.load(tiny_npz, allow_pickle=False)["train"]
    y = codec.analyze(train)
    for level in range(codec.levels):
        _, clipped = codec.quantize(codec.scale(y, np.full(len(y), level)), level)
        assert clipped.sum() == 0, level


def test_validation_figures_match_the_runtime(tiny_bundle, tiny_npz):
    """The manifest's per-level PSNR (the runtime's unlike-the-training-set warning) is what the
    runtime's decoder gives on the validation split."""
    from runtime import metrics
    from runtime.codec import Codec

    codec = Codec(str(tiny_bundle))
    val = np.load(tiny_npz, allow_pickle=False)["val"]
    y = codec.analyze(val)
    for level in (0, codec.levels // 2, codec.levels - 1):
        levels = np.full(len(y), level)
        symbols, _ = codec.quantize(codec.scale(y, levels), levels)
        psnr = float(np.mean(metrics.psnr(codec.synthesize(symbols, levels), val)))
        assert psnr == pytest.approx(codec.bundle.validation_psnr(level), abs=0.05)
        bits = float(np.mean(codec.bundle.entropy.bits(level, symbols)))
        assert bits / 8 == pytest.approx(codec.bundle.manifest["validation"]["bytes"][level], abs=0.05)


def test_modified_onnx_is_refused(tiny_bundle, tmp_path):
    from runtime.bundle import load_bundle

    copy = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, copy)
    data = bytearray((copy / "generator.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "generator.onnx").write_bytes(bytes(data))
    with pytest.raises(CodecError, match="does not match"):
        load_bundle(copy)
    r = run_module("export.check", copy)
    assert r.returncode == 2 and "error:" in r.stderr


def test_loading_works_without_tensorflow(tiny_bundle):
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "import numpy as np\n"
        "from runtime.bundle import load_bundle\n"
        f"b = load_bundle({str(tiny_bundle)!r})\n"
        "out = b.generate(np.zeros((2, *b.latent_shape), np.float32))\n"
        "assert b.entropy.levels == b.levels\n"
        "assert out.shape == (2, 16, 16, 3)\n"
        "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_export_refuses_missing_run_and_leaves_nothing(tmp_path):
    from export.onnx import export_run

    with pytest.raises(CodecError):
        export_run(tmp_path / "no-run", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_parity_leaves_no_bundle(tiny_run, tmp_path, monkeypatch):
    import export.onnx as exporter

    monkeypatch.setattr(exporter, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(CodecError, match="parity"):
        exporter.export_run(tiny_run, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_gan_and_recon_runs(tiny_npz, tmp_path):
    """Only rd runs make a format-2 bundle; the other modes still train (tests/test_training.py)."""
    from export.onnx import ExportError, export_run
    from training.train import train

    run = tmp_path / "gan"
    train(tiny_config(tiny_npz, run, mode="gan", steps=2, eval_every=2, ckpt_every=2, eval_steps=1), quiet=True)
    with pytest.raises(ExportError, match="only rd runs"):
        export_run(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    r = run_module("export.onnx", run, "--out", tmp_path / "out2")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: ") and "rd" in r.stderr


def test_onnx_kernels_are_stored_as_int8_or_float16_and_compute_the_mirrors_function(tiny_bundle):
    """The exporter rounds the large weight tensors to float16 values in both networks, and the
    generator's convolution kernels but its last to int8 × a float16 scale per kernel, and stores
    them so in the ONNX files; onnxruntime then computes what the Keras mirror computes."""
    import keras
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper

    from export.onnx import HALF_MIN_SIZE
    from training.models import int8_kernels

    for net in ("generator", "encoder"):
        proto = onnx.load(str(tiny_bundle / f"{net}.onnx"))
        half = [i for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT16]
        int8 = [i for i in proto.graph.initializer if i.data_type == TensorProto.INT8]
        assert half and all(numpy_helper.to_array(i).size >= HALF_MIN_SIZE for i in half + int8)
        assert bool(int8) == (net == "generator"), net
        assert not [i for i in proto.graph.initializer
                    if i.data_type == TensorProto.FLOAT and numpy_helper.to_array(i).size >= HALF_MIN_SIZE]
        mirror = keras.models.load_model(tiny_bundle / f"{net}.keras", compile=False)
        kernels = [w for w in mirror.get_weights() if w.ndim == 4 and w.size >= HALF_MIN_SIZE]
        for w in mirror.get_weights():
            if w.size < HALF_MIN_SIZE:
                continue
            q, s = int8_kernels(w)
            as_int8 = w.ndim == 4 and np.array_equal(q.astype(np.float32) * s, w)
            assert as_int8 or np.array_equal(w.astype(np.float16).astype(np.float32), w)
        # the generator's output kernel stays float16 (int8 there costs 1 dB at the finest levels)
        assert net == "encoder" or np.array_equal(kernels[-1].astype(np.float16).astype(np.float32), kernels[-1])
        x = np.random.default_rng(0).normal(size=(3,) + tuple(mirror.input_shape[1:])).astype(np.float32)
        sess = ort.InferenceSession(str(tiny_bundle / f"{net}.onnx"), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], mirror(x).numpy(), atol=1e-5)


def test_int8_kernels_are_exact_idempotent_and_within_half_a_step():
    """q · s is exact in float32, rounding twice changes nothing, every weight moves by about half
    its kernel's step, and an all-zero kernel stays zero."""
    from training.models import INT8_MAX, int8_kernels

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((3, 3, 16, 8)) * rng.uniform(1e-6, 2, (1, 1, 16, 8))).astype(np.float32)
    w[:, :, 0, 0] = 0
    q, s = int8_kernels(w)
    assert q.dtype == np.int8 and s.shape == (1, 1, 16, 8) and int(np.abs(q).max()) <= INT8_MAX
    np.testing.assert_array_equal(s.astype(np.float16).astype(np.float32), s)
    r = q.astype(np.float32) * s
    np.testing.assert_array_equal(r.astype(np.float64), q.astype(np.float64) * s.astype(np.float64))
    assert np.all(np.abs(r - w) <= s * 0.6) and not r[:, :, 0, 0].any()
    q2, s2 = int8_kernels(r)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(s2, s)
    np.testing.assert_array_equal(int8_kernels(np.transpose(r, (2, 3, 0, 1)), (2, 3))[0], np.transpose(q, (2, 3, 0, 1)))


def test_model_id_names_the_entropy_tables(tiny_bundle, tmp_path):
    """generator.onnx records entropy.bin's hash, so the model id (its hash) names the tables too; a
    bundle whose entropy.bin was swapped for other valid tables (manifest updated) is refused."""
    import onnx

    from runtime.bundle import ENTROPY_SHA256_KEY, load_bundle, sha256_file
    from runtime.entropy import EntropyModel

    meta = {p.key: p.value for p in onnx.load(str(tiny_bundle / "generator.onnx")).metadata_props}
    assert meta[ENTROPY_SHA256_KEY] == sha256_file(tiny_bundle / "entropy.bin")
    copy = tmp_path / "swapped"
    shutil.copytree(tiny_bundle, copy)
    model = EntropyModel.from_bytes((copy / "entropy.bin").read_bytes())
    other = EntropyModel(model.inv_gains * 1.5, model.context_tables, model.grid)
    (copy / "entropy.bin").write_bytes(other.to_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["entropy.bin"] = sha256_file(copy / "entropy.bin")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CodecError, match="not the one generator.onnx was exported with"):
        _ = load_bundle(copy).entropy
    assert load_bundle(tiny_bundle).entropy.levels == manifest["levels"]
