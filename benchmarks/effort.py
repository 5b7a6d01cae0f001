"""Encode effort vs quality and speed: PSNR, MS-SSIM and bytes against the number of refinement
steps (0 = the amortized encoder alone, then 5, 10, 15, 30, 60), at one fixed rate level and at one
per-image byte budget, timed per image at batch 64 — the evidence behind ``DEFAULT_STEPS`` — and
the base encoder (``effort="base"``: no TensorFlow, the base install's encoder) beside them.

    python -m benchmarks.effort --model models/NAME --data PATH.npz [--limit 64] [--level L]
        [--target-bytes B] [--steps 0,5,10,15,30,60] [--batch 64] [--out DIR] [--stem NAME]

At a fixed level refinement trades bits for distortion along the level's λ (bytes may move); under
a budget (model alone, no WebP fallback) every file stays ≤ B and only the quality should rise.
Writes benchmarks/results/effort_<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.rd import (
    RESULTS_DIR,
    cli,
    encode_set,
    load_split,
    md_table,
    now,
    parse_int_list,
    quiet_tensorflow,
    save_results,
    summarise,
)
from runtime.codec import DEFAULT_STEPS, Codec
from runtime.errors import CodecError

STEPS = (0, 5, 10, 15, 30, 60)
TARGET_BYTES = 150


def effort(model, data, limit: int = 64, level: int | None = None, target_bytes: int = TARGET_BYTES,
           steps_list=STEPS, batch: int = 64) -> dict:
    """Rows of (mode, steps) -> bytes, PSNR, MS-SSIM, ms per image; mode 'level' and 'budget'."""
    codec = Codec(model)
    level = codec.default_level if level is None else int(level)
    if not 0 <= level < codec.levels:
        raise CodecError(f"--level must be 0..{codec.levels - 1} for this model, got {level}")
    if target_bytes < 1:
        raise CodecError("--target-bytes must be positive")
    if any(s < 0 for s in steps_list):
        raise CodecError("--steps must be >= 0")
    images = load_split(data, codec.bundle.image_size, "val", limit)
    codec.compress(list(images[:2]), level=level, steps=2)  # load TF and trace once, untimed
    codec.compress(list(images[:2]), target_bytes=int(target_bytes), steps=2, fallback=False)  # every level's tables
    rows = []
    for mode, rate in (("level", {"level": level}), ("budget", {"target_bytes": int(target_bytes), "fallback": False})):
        for encoder, steps in [("base", 0)] + [("full", s) for s in steps_list]:
            t0 = time.perf_counter()
            per_image = encode_set(codec, images, steps, batch, effort=encoder, **rate)
            ms = (time.perf_counter() - t0) * 1000 / len(images)
            point = summarise("gancodec", f"{steps} steps", steps, per_image, keep_per_image=False)
            rows.append({"mode": mode, "setting": f"level {level}" if mode == "level" else f"≤ {target_bytes} B",
                         "encoder": encoder, "steps": steps, "bytes": point["bytes"], "bytes_max": point["bytes_max"],
                         "psnr": point["psnr"], "ms_ssim": point["ms_ssim"], "ms_per_image": ms})
    return {"kind": "effort", "model": codec.bundle.name, "model_id": codec.bundle.model_id, "data": str(data),
            "images": len(images), "level": level, "target_bytes": int(target_bytes), "batch": batch,
            "default_steps": DEFAULT_STEPS, "created": now(), "rows": rows}


def markdown(result: dict) -> str:
    rows = [[r["setting"], "base encoder (no TensorFlow)" if r.get("encoder") == "base" else
             f"{r['steps']}" + (" (default)" if r["steps"] == result["default_steps"] else ""),
             f"{r['bytes']:.1f}", f"{r['psnr']:.2f}", f"{r['ms_ssim']:.4f}", f"{r['ms_per_image']:.1f}"]
            for r in result["rows"]]
    return (f"### Encode effort — {result['model']} ({result['images']} val images, batch {result['batch']})\n\n"
            "Refinement steps against quality and time, at a fixed level and under a per-image budget "
            "(model alone). 0 steps = the amortized encoder alone; the base encoder runs without TensorFlow "
            "(the encoder's latent fitted by dead zone at the chosen level and finer ones).\n\n"
            + md_table(["rate", "steps", "bytes", "PSNR (dB)", "MS-SSIM", "ms / image"], rows) + "\n")


def run(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.effort", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=64)
    p.add_argument("--level", type=int, help="fixed rate level (default: the bundle's default level)")
    p.add_argument("--target-bytes", type=int, default=TARGET_BYTES, help=f"per-image budget (default {TARGET_BYTES})")
    p.add_argument("--steps", default=",".join(map(str, STEPS)))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--stem", help="output file stem (default effort_<model>)")
    a = p.parse_args(argv)
    quiet_tensorflow()
    result = effort(a.model, a.data, a.limit, a.level, a.target_bytes, parse_int_list(a.steps, "--steps"), a.batch)
    save_results(a.out, a.stem or f"effort_{result['model']}", result, markdown(result))
    return 0


def main(argv=None) -> int:
    return cli(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
