"""python -m benchmarks.table [--models airplane,automobile,flowers] [--limit N] [--steps N]
[--target-bytes B] [--data-dir DIR] [--out DIR]

Reproduces Table 1 of the reference report: per shipped model, the means over its data set's
validation split of L1 (sum of absolute errors per image, 0–255 scale), MSE, PSNR (mean of
per-image PSNRs) and MS-SSIM, plus SSIM and file bytes, next to the reference values. Each image
is encoded with a per-image budget of ``--target-bytes`` (default 55, the size of the reference
report's files), the model alone (no WebP fallback). Metrics are those of :mod:`runtime.metrics` (MS-SSIM uses 3 scales at
32×32, see there, so it is not necessarily the reference's exact MS-SSIM).

A ``--models`` entry is a shipped name (airplane, automobile, flowers: ``models/NAME`` on its data
set in ``--data-dir``) or ``MODEL=DATA`` for any bundle and data set (no reference values).
Writes ``table.json`` and ``table.md`` in ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.rd import (
    RESULTS_DIR,
    cli,
    encode_set,
    fmt,
    load_split,
    md_table,
    now,
    quiet_tensorflow,
    save_results,
    summarise,
)
from runtime.codec import DEFAULT_STEPS
from runtime.errors import CodecError

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT.parent / "shared" / "data"
MODELS_DIR = ROOT / "models"
# Table 1 of the reference report (means over the validation split).
REFERENCE = {
    "airplane": {"dataset": "cifar10_airplane", "l1": 84741.75, "mse": 4189.84, "psnr": 16.87, "ms_ssim": 0.9313},
    "automobile": {"dataset": "cifar10_automobile", "l1": 206785.75, "mse": 20089.51, "psnr": 6.99,
                   "ms_ssim": 0.6641},
    "flowers": {"dataset": "flowers64", "l1": 104047.25, "mse": 6389.83, "psnr": 13.06, "ms_ssim": 0.7960},
}
TARGET_BYTES = 55  # the reference report's files are about 55 bytes
COLUMNS = (("l1", "L1", 0, False), ("mse", "MSE", 2, False), ("psnr", "PSNR", 2, True),
           ("ms_ssim", "MS-SSIM", 4, True))


def resolve_entries(models: list[str], data_dir: Path) -> list[dict]:
    """``--models`` items -> [{label, model, data, reference}]."""
    entries = []
    for item in models:
        if "=" in item:
            model, data = item.split("=", 1)
            entries.append({"label": None, "model": model, "data": data, "reference": None})
        elif item in REFERENCE:
            ref = REFERENCE[item]
            entries.append({"label": item, "model": str(MODELS_DIR / item),
                            "data": str(Path(data_dir) / f"{ref['dataset']}.npz"), "reference": ref})
        else:
            raise CodecError(f"unknown model {item!r}: use one of {', '.join(REFERENCE)} or MODEL=DATA.npz")
    if not entries:
        raise CodecError("no models given")
    return entries


def evaluate(model, data, limit: int | None = None, steps: int = DEFAULT_STEPS, target_bytes: int = TARGET_BYTES,
             batch: int = 64, progress: bool = True) -> dict:
    """Encode the val split of ``data`` with ``model`` (a Codec, or a bundle spec), every image
    within ``target_bytes`` (model alone, no WebP fallback); returns one table row."""
    from runtime.codec import Codec

    codec = model if isinstance(model, Codec) else Codec(model)
    bundle = codec.bundle
    t0 = time.perf_counter()
    images = load_split(data, bundle.image_size, "val", limit)
    per_image = encode_set(codec, images, steps, batch, target_bytes=int(target_bytes), fallback=False)
    point = summarise("gancodec", f"≤{target_bytes} B", target_bytes, per_image, keep_per_image=False)
    return {"model": bundle.name, "directory": str(bundle.directory), "model_id": bundle.model_id,
            "data": str(data), "n_images": point["n"], "target_bytes": int(target_bytes), "steps": steps,
            "mean_level": float(np.mean(per_image["level"])), "seconds": time.perf_counter() - t0,
            **{k: point[k] for k in ("bytes", "bytes_max", "bpp", "l1", "mse", "psnr", "psnr_of_mean_mse", "ssim",
                                     "ms_ssim")}}


def build_table(models: list[str], limit: int | None = None, steps: int = DEFAULT_STEPS, data_dir: Path = DATA_DIR,
                batch: int = 64, progress: bool = True, target_bytes: int = TARGET_BYTES) -> dict:
    from runtime.codec import Codec

    entries = resolve_entries(models, data_dir)
    for entry in entries:  # every model and data set checked before the long work starts
        entry["codec"] = Codec(entry["model"])
        if not Path(entry["data"]).exists():
            raise CodecError(f"{entry['data']}: no such data set")
    rows = []
    for entry in entries:
        row = evaluate(entry["codec"], entry["data"], limit, steps, target_bytes, batch=batch, progress=progress)
        row["label"] = entry["label"] or row["model"]
        row["reference"] = None if entry["reference"] is None else {
            k: entry["reference"][k] for k, *_ in COLUMNS}
        rows.append(row)
    return {"kind": "table", "created": now(), "limit": limit, "steps": steps, "target_bytes": target_bytes,
            "rows": rows}


def table_markdown(result: dict) -> str:
    """The table itself (Markdown), ours next to the reference values."""
    headers = ["model", "images", "budget", "bytes"]
    for _, name, _, _ in COLUMNS:
        headers += [name, f"{name} (ref)"]
    headers += ["SSIM"]
    rows = []
    for r in result["rows"]:
        ref = r["reference"] or {}
        cells = [r["label"], r["n_images"], f"≤ {r['target_bytes']} B", f"{r['bytes']:.1f}"]
        for key, _, digits, higher in COLUMNS:
            ours, theirs = r[key], ref.get(key)
            mark = ""
            if theirs is not None:
                mark = " ✓" if (ours > theirs if higher else ours < theirs) else ""
            cells += [fmt(ours, digits) + mark, fmt(theirs, digits)]
        cells += [fmt(r["ssim"], 4)]
        rows.append(cells)
    return md_table(headers, rows)


def markdown(result: dict) -> str:
    limit = f", first {result['limit']} images" if result["limit"] else ""
    return "\n".join([
        "# Table 1: reconstruction quality on the validation splits", "",
        f"Means over the validation split{limit}, every image within {result['target_bytes']} bytes "
        f"(`compress(target_bytes={result['target_bytes']}, fallback=False)`: the model alone), "
        f"{result['steps']} refinement steps; bytes are whole latent.bin files. "
        "L1 = sum of absolute errors per image (0–255), MSE on 0–255, PSNR = mean of per-image PSNRs. "
        "✓ = better than the reference. Created " + result["created"] + ".", "",
        table_markdown(result), ""])


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.table", description=__doc__.split("\n\n")[1])
    p.add_argument("--models", default=",".join(REFERENCE),
                   help="comma-separated: airplane, automobile, flowers or MODEL=DATA.npz (default: the three)")
    p.add_argument("--limit", type=int, help="only the first N validation images per model")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"refinement steps (default {DEFAULT_STEPS})")
    p.add_argument("--target-bytes", type=int, default=TARGET_BYTES,
                   help=f"per-image byte budget (default {TARGET_BYTES}, the reference report's file size)")
    p.add_argument("--batch", type=int, default=64, help="images encoded together (default 64)")
    p.add_argument("--data-dir", default=str(DATA_DIR), help="folder of the shipped data sets (default ../shared/data)")
    p.add_argument("--out", default=str(RESULTS_DIR), help="output directory (default benchmarks/results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def run(argv=None) -> int:
    args = parse_args(argv)
    quiet_tensorflow()
    if args.steps < 0:
        raise CodecError("--steps must be >= 0")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.target_bytes < 1:
        raise CodecError("--target-bytes must be positive")
    result = build_table(models, args.limit, args.steps, Path(args.data_dir), args.batch, not args.no_progress,
                         args.target_bytes)
    save_results(args.out, "table", result, markdown(result))
    return 0


def main(argv=None) -> int:
    return cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
