"""Refit a bundle's entropy tables in place (entropy.bin version 3, parametric):

    python -m export.tables models/NAME --data PATH

The networks stay as they are; entropy.bin, the model id (generator.onnx records the tables'
hash) and the manifest's validation figures change. Needs no TensorFlow: the latents come from
the bundle's encoder.onnx. ``make tables-NAME`` runs it with the data set the bundle was trained on.

``--int8-generator`` (needs TensorFlow) also rounds the generator's convolution kernels to int8
with a float16 scale per kernel, as the exporter does since 2026-12-06 (the output layer stays
float16): generator.onnx about 0.55x the bytes, its Keras mirror rewritten to the same function.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.onnx import rewrite_tables
from runtime.errors import run_cli


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.tables", description=__doc__.splitlines()[0])
    p.add_argument("bundle", help="bundle directory (models/NAME), rewritten in place")
    p.add_argument("--data", required=True, help="the bundle's data set (.npz or image folder)")
    p.add_argument("--int8-generator", action="store_true",
                   help="also round the generator's kernels to int8 as the exporter does (needs TensorFlow)")
    a = p.parse_args(argv)

    def run():
        path, onnx = Path(a.bundle) / "entropy.bin", Path(a.bundle) / "generator.onnx"
        old = [p.stat().st_size if p.exists() else 0 for p in (path, onnx)]
        manifest = rewrite_tables(a.bundle, a.data, int8_generator=a.int8_generator)
        print(f"wrote {a.bundle}: entropy.bin {old[0]:,} -> {path.stat().st_size:,} bytes, "
              f"generator.onnx {old[1]:,} -> {onnx.stat().st_size:,} bytes, model id {manifest['model_id'][:16]}…")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
