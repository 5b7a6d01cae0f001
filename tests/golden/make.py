"""Regenerate the golden files of every shipped bundle: ``python -m tests.golden.make``.

For each bundle in models/, a few latent.bin files at spread-out rate levels, written from symbols
drawn from the bundle's own frequency tables (seeded; no data-set image is involved), with the
expected level and symbols and the decoder's PNG (``<name>_<k>.png``) and its SHA-256 in
``tests/golden/<bundle>/golden.json``. ``tests/test_golden.py`` decodes them with every shipped
bundle, so a dependency upgrade that changes decoding is caught.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PER_BUNDLE = 4


ANY_SIZE = (80, 48)  # an any-size bundle also gets a file at this non-square (width, height)


def draw_symbols(model, level: int, rng: np.random.Generator, grid=None) -> np.ndarray:
    """Symbols (H, W, C) drawn from the level's integer tables (on ``grid``, default the model's)."""
    (h, w), c = grid or model.grid, model.channels
    out = np.zeros((h, w, c), np.int32)
    for ch, table in enumerate(model.tables[level]):
        p = np.asarray(table.freqs, np.float64) / (1 << table.precision)
        out[:, :, ch] = table.lo + rng.choice(table.n, size=(h, w), p=p)
    return out


def make(bundle_dir: Path, out_dir: Path) -> dict:
    from runtime.bundle import load_bundle
    from runtime.codec import Codec
    from runtime.output import png_bytes

    bundle = load_bundle(bundle_dir)
    codec = Codec(bundle)
    rng = np.random.default_rng(2026)
    levels = np.linspace(0, bundle.levels - 1, PER_BUNDLE).round().astype(int)
    sizes = [None] * len(levels)
    if bundle.any_size:
        levels, sizes = [*levels, levels[len(levels) // 2]], [*sizes, ANY_SIZE]
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (level, size) in enumerate(zip(levels, sizes)):
        symbols = draw_symbols(bundle.entropy, int(level), rng, size and bundle.grid(*size))
        data = codec.pack(symbols, int(level), size)
        png = png_bytes(codec.decompress(data))
        name = f"{bundle.name}_{k}"
        (out_dir / f"{name}.bin").write_bytes(data)
        (out_dir / f"{name}.png").write_bytes(png)
        entries.append({"file": f"{name}.bin", "png": f"{name}.png", "level": int(level), "size": size,
                        "symbols": symbols.tolist(), "png_sha256": hashlib.sha256(png).hexdigest()})
    manifest = {"bundle": bundle.name, "model_id": bundle.model_id, "files": entries}
    (out_dir / "golden.json").write_text(json.dumps(manifest) + "\n")
    return manifest


def main() -> int:
    from runtime.bundle import PROJECT_MODELS

    for d in sorted(PROJECT_MODELS.iterdir()):
        if (d / "manifest.json").is_file():
            m = make(d, HERE / d.name)
            print(f"{d.name}: {len(m['files'])} golden files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
