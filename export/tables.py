"""Refit a bundle's entropy tables in place (entropy.bin version 3, parametric):

    python -m export.tables models/NAME --data PATH

The networks stay as they are; entropy.bin, the model id (generator.onnx records the tables'
hash) and the manifest's validation figures change. Needs no TensorFlow: the latents come from
the bundle's encoder.onnx. ``make tables-NAME`` runs it with the data set the bundle was trained on.
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
    a = p.parse_args(argv)

    def run():
        path = Path(a.bundle) / "entropy.bin"
        old = path.stat().st_size if path.exists() else 0
        manifest = rewrite_tables(a.bundle, a.data)
        print(f"wrote {a.bundle}: entropy.bin {old:,} -> {path.stat().st_size:,} bytes, "
              f"model id {manifest['model_id'][:16]}…")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
