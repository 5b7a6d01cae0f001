"""Golden files of the shipped bundles (tests/golden/, made by ``python -m tests.golden.make``):
every shipped bundle decodes its committed latent.bin files to the committed symbols and PNGs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from runtime.bundle import PROJECT_MODELS

GOLDEN = Path(__file__).resolve().parent / "golden"
SHIPPED = sorted(d.name for d in PROJECT_MODELS.iterdir() if (d / "manifest.json").is_file())


def test_every_shipped_bundle_has_golden_files():
    assert SHIPPED, "no shipped bundles in models/"
    missing = [name for name in SHIPPED if not (GOLDEN / name / "golden.json").is_file()]
    assert not missing, f"no golden files for {missing}: run python -m tests.golden.make"


@pytest.mark.parametrize("name", SHIPPED)
def test_golden_files_decode_identically(name):
    from PIL import Image

    from runtime import bitstream
    from runtime.bundle import load_bundle
    from runtime.codec import decode_file_bytes
    from runtime.output import png_bytes

    golden = json.loads((GOLDEN / name / "golden.json").read_text())
    bundle = load_bundle(PROJECT_MODELS / name)
    assert golden["model_id"] == bundle.model_id, "bundle changed: regenerate the golden files"
    moved, not_identical = [], []
    for entry in golden["files"]:  # every file is checked; the failures are reported together
        data = (GOLDEN / name / entry["file"]).read_bytes()
        grid = bundle.grid(*entry["size"]) if entry.get("size") else None  # an any-size file
        _, level, symbols = bitstream.unpack_latent(data, bundle.model_id_bytes, bundle.entropy, grid)
        assert level == entry["level"], entry["file"]
        np.testing.assert_array_equal(symbols, np.asarray(entry["symbols"]), err_msg=entry["file"])
        image, found = decode_file_bytes(data)  # the model found from the header, as the CLI does
        assert found.model_id == bundle.model_id
        expected = np.asarray(Image.open(GOLDEN / name / entry["png"]).convert("RGB"))
        diff = np.abs(image.astype(int) - expected.astype(int))
        if diff.max() > 1:
            moved.append(f"{entry['file']}: decoded pixels moved by {diff.max()} (> 1 LSB)")
        elif hashlib.sha256(png_bytes(image)).hexdigest() != entry["png_sha256"]:
            not_identical.append(entry["file"])
    assert not moved, "; ".join(moved)
    if not_identical:  # onnxruntime's kernels may round differently on another CPU: allowed, said so
        pytest.skip(f"{len(not_identical)} of {len(golden['files'])} files within 1 LSB but not bit-identical "
                    f"on this machine: {', '.join(not_identical)}")
