import json
import shutil

import numpy as np
import pytest

from runtime.errors import CodecError
from tests.conftest import run_module


def test_bundle_files_and_manifest(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    for key in ("format", "model_id", "latent_dim", "image_size", "output_range", "dataset", "training",
                "validation_inversion_psnr", "quantization", "versions", "files", "parity_max_abs_diff"):
        assert key in manifest, key
    assert manifest["latent_dim"] == 8 and manifest["image_size"] == 16
    assert set(manifest["files"]) == {"generator.onnx", "generator.keras", "encoder.onnx", "encoder.keras"}
    assert all(v <= 1e-4 for v in manifest["parity_max_abs_diff"].values())


def test_onnx_is_self_describing(tiny_bundle):
    import onnx

    model = onnx.load(str(tiny_bundle / "generator.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["latent_dim"] == "8" and meta["image_size"] == "16"
    assert [i.name for i in model.graph.input] == ["z"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value")  # dynamic batch


def test_parity_check_cli(tiny_bundle):
    r = run_module("export.check", tiny_bundle)
    assert r.returncode == 0, r.stderr
    assert "max abs diff" in r.stdout


def test_latent_prior_is_standard_normal_on_training_data(tiny_bundle, tiny_npz):
    from runtime.bundle import load_bundle
    from runtime.images import to_unit_range

    bundle = load_bundle(tiny_bundle)
    train = np.load(tiny_npz, allow_pickle=False)["train"]
    z = bundle.encode_latents(to_unit_range(train))
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-3)


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
        "out = b.generate(np.zeros((2, b.latent_dim), np.float32))\n"
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
