"""Encode effort vs quality and speed: the amortized encoder alone, then 25 / 100 / 300 / 1000
refinement steps, at one bit depth, timed per image at batch 64 (issue 8's encoder targets).

    python -m benchmarks.effort --model models/NAME --data PATH.npz [--limit 64] [--bits B]
        [--steps 0,25,100,300,1000] [--prior-weights 0] [--out DIR]

Writes benchmarks/results/effort_<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.rd import RESULTS_DIR, cli, load_split, md_table, now, run_codec, save_results
from runtime import bitstream, metrics
from runtime.codec import DEFAULT_PRIOR_WEIGHT, Codec
from runtime.images import from_unit_range, to_unit_range


def encoder_alone(codec: Codec, images: np.ndarray, bits: int) -> dict:
    """E(x), quantized and decoded by onnxruntime, no search at all."""
    t0 = time.perf_counter()
    z = codec.bundle.encode_latents(to_unit_range(images))
    sizes, recons = [], []
    for latent in z:
        symbols, _ = bitstream.quantize(latent, bits)
        sizes.append(len(bitstream.pack(symbols, bits, codec.bundle.model_id_bytes)))
        recons.append(codec.decode_symbols(symbols, bits))
    ms = (time.perf_counter() - t0) * 1000 / len(images)
    recons = np.stack(recons)
    return {"setting": "E(x) only", "steps": None, "bytes": float(np.mean(sizes)),
            "psnr": float(np.mean(metrics.psnr(recons, images))),
            "ms_ssim": float(np.mean(metrics.ms_ssim(recons, images))), "ms_per_image": ms,
            "unquantized_psnr": float(np.mean(metrics.psnr(from_unit_range(codec.bundle.generate(z)), images)))}


def coding_modes(codec: Codec, images: np.ndarray, bits: int) -> dict:
    """Mean whole-file bytes of the same quantized latents coded by each mode (range, bzip2, raw)."""
    results = codec.encode_detailed(list(images), bits=bits)
    sizes = {m: [] for m in bitstream.MODES}
    for r in results:
        header, symbols = bitstream.unpack(r.data, codec.bundle.model_id_bytes, codec.bundle.latent_dim)
        for m in sizes:
            sizes[m].append(len(bitstream.pack(symbols, bits, codec.bundle.model_id_bytes, m)))
    return {m: float(np.mean(v)) for m, v in sizes.items()}


def effort(model, data, limit: int = 64, bits: int | None = None, steps_list=(0, 25, 100, 300, 1000),
           prior_weights=(DEFAULT_PRIOR_WEIGHT,), batch: int = 64) -> dict:
    codec = Codec(model)
    bits = codec.bundle.default_bits if bits is None else bits
    images = load_split(data, codec.bundle.image_size, "val", limit)
    rows = []
    if codec.bundle.has_encoder:
        rows.append(encoder_alone(codec, images, bits))
    codec.encode_detailed(list(images[:2]), bits=bits, steps=2)  # load TF and trace once, untimed
    for pw in prior_weights:
        for steps in steps_list:
            t0 = time.perf_counter()
            point = run_codec(codec, images, [bits], steps=steps, batch=batch, progress=False,
                              keep_per_image=False, prior_weight=pw)[0]
            ms = (time.perf_counter() - t0) * 1000 / len(images)
            rows.append({"setting": f"{steps} steps" + (f", prior {pw:g}" if len(prior_weights) > 1 else ""),
                         "steps": steps, "prior_weight": pw, "bytes": point["bytes"], "psnr": point["psnr"],
                         "ms_ssim": point["ms_ssim"], "ms_per_image": ms})
    modes = {b: coding_modes(codec, images, b) for b in (3, 4, 6, 8)}
    return {"model": codec.bundle.name, "model_id": codec.bundle.model_id, "data": str(data), "images": len(images),
            "bits": bits, "batch": batch, "date": now(), "rows": rows, "coding_modes": modes}


def markdown(result: dict) -> str:
    rows = [[r["setting"], f"{r['bytes']:.1f}", f"{r['psnr']:.2f}", f"{r['ms_ssim']:.4f}", f"{r['ms_per_image']:.1f}"]
            for r in result["rows"]]
    return (f"### Encode effort — {result['model']} ({result['images']} val images, {result['bits']} bits, "
            f"batch {result['batch']})\n\n"
            + md_table(["encoder", "bytes", "PSNR (dB)", "MS-SSIM", "ms / image"], rows) + "\n"
            + "\nSame latents, whole-file bytes by coding mode:\n\n"
            + md_table(["bits", "range coder", "raw", "bzip2"],
                       [[b, f"{m['range']:.1f}", f"{m['raw']:.1f}", f"{m['bzip2']:.1f}"]
                        for b, m in result.get("coding_modes", {}).items()]) + "\n")


def run(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.effort", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=64)
    p.add_argument("--bits", type=int)
    p.add_argument("--steps", default="0,25,100,300,1000")
    p.add_argument("--prior-weights", default=str(DEFAULT_PRIOR_WEIGHT))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default=str(RESULTS_DIR))
    a = p.parse_args(argv)
    result = effort(a.model, a.data, a.limit, a.bits, [int(s) for s in a.steps.split(",")],
                    [float(w) for w in a.prior_weights.split(",")], a.batch)
    save_results(a.out, f"effort_{result['model']}", result, markdown(result))
    return 0


def main(argv=None) -> int:
    return cli(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
