"""Re-check a shipped bundle: file hashes against the manifest, then TF mirror vs onnxruntime parity.

    python -m export.check models/NAME [--samples 64]

Prints the max abs difference per network and exits 2 when anything is off.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from runtime.errors import CodecError  # noqa: E402


def check_bundle(directory, samples: int = 64, seed: int = 0) -> dict:
    """Verify hashes and parity; returns {network: max abs diff}. Raises CodecError on failure."""
    from export.onnx import PARITY_TOLERANCE, parity
    from runtime.bundle import (
        ENCODER_KERAS,
        ENCODER_ONNX,
        GENERATOR_KERAS,
        GENERATOR_ONNX,
        load_bundle,
    )
    from runtime.inversion import load_mirror

    bundle = load_bundle(directory)
    _ = bundle.entropy  # parses and checks entropy.bin against the manifest
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((samples, *bundle.latent_shape)).astype(np.float32)
    diffs = {"generator": parity(load_mirror(bundle.path(GENERATOR_KERAS)), bundle.path(GENERATOR_ONNX), z)}
    if bundle.has_encoder:
        s = bundle.image_size
        x = rng.uniform(-1, 1, (samples, s, s, 3)).astype(np.float32)
        diffs["encoder"] = parity(load_mirror(bundle.path(ENCODER_KERAS)), bundle.path(ENCODER_ONNX), x)
    bad = {k: v for k, v in diffs.items() if not v <= PARITY_TOLERANCE}
    if bad:
        raise CodecError(f"{directory}: parity check failed: {bad} > {PARITY_TOLERANCE}")
    return diffs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.check", description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", help="bundle directories (models/NAME)")
    p.add_argument("--samples", type=int, default=64)
    a = p.parse_args(argv)
    status = 0
    for d in a.bundles:
        try:
            diffs = check_bundle(d, a.samples)
        except CodecError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        print(f"{d}: OK, hashes match; max abs diff " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return status


if __name__ == "__main__":
    sys.exit(main())
