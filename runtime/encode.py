"""python -m runtime.encode IMAGE... [--model DIR|ID] [-o OUT.bin | --out-dir DIR] [--bits B]
[--steps N] [--json] [--target-bytes N | --target-psnr DB [--no-ladder]] [--mode range|bzip2|raw] [--keep-size]

With a target, every bundle of the model's data set (a ladder of latent sizes) is tried and the
best file per image is kept; the decoder finds the right bundle from the file's model id.

Thin CLI over :class:`runtime.codec.Codec`: prints bytes, bpp, PSNR, SSIM and MS-SSIM per image
(JSON lines with --json); errors are one line ``error: …`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime.codec import DEFAULT_STEPS
from runtime.errors import CodecError, run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m runtime.encode",
                                description="Compress images into latent.bin files with a GAN generator.")
    p.add_argument("images", nargs="+", help="image files (any Pillow-readable format)")
    p.add_argument("--model", help="bundle directory, name (airplane, automobile, flowers) or model id")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--out", help="output file (one image only)")
    out.add_argument("--out-dir", help="write DIR/<stem>.bin for every image")
    p.add_argument("--bits", type=int, help="quantization bits per latent value, 2..9 (default: the model's)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--target-bytes", type=int, help="largest file size; picks the bit depth per image")
    rate.add_argument("--target-psnr", type=float, help="smallest PSNR in dB; picks the bit depth per image")
    p.add_argument("--no-ladder", action="store_true",
                   help="with a target: use only --model, not the other bundles of its data set")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"refinement steps of latent inversion (default {DEFAULT_STEPS})")
    p.add_argument("--ssim-weight", type=float, default=0.05, help="weight of the (1-SSIM) term in the loss")
    p.add_argument("--prior-weight", type=float, default=None,
                   help="weight of the rate term ½·mean(z²) that keeps latents cheap to code")
    p.add_argument("--mode", choices=["range", "bzip2", "raw"], default="range", help="latent coding (default range)")
    p.add_argument("--keep-size", action="store_true", help="store the original size; decode restores it")
    p.add_argument("--batch", type=int, default=64, help="images inverted together (default 64)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    return p.parse_args(argv)


def output_paths(args) -> list[Path]:
    from runtime.output import output_in_dir, safe_stem

    if args.out:
        if len(args.images) != 1:
            raise CodecError("-o names one output; use --out-dir with several images")
        return [Path(args.out)]
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        paths = [output_in_dir(args.out_dir, im, ".bin") for im in args.images]
    else:
        paths = [Path(im).parent / (safe_stem(im) + ".bin") for im in args.images]
    dupes = {str(p) for p in paths if paths.count(p) > 1}
    if dupes:
        raise CodecError(f"several inputs would write the same output: {', '.join(sorted(dupes))}")
    return paths


def run(args) -> int:
    from runtime.codec import Codec, encode_to_target
    from runtime.metrics import bits_per_pixel
    from runtime.output import write_atomic

    if args.batch < 1:
        raise CodecError("--batch must be at least 1")
    outputs = output_paths(args)
    codec = Codec(args.model)
    size = codec.bundle.image_size
    pixels, originals = codec.prepare(args.images)  # validates every input before any work
    bar = None
    if len(pixels) * args.steps >= 200:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(pixels) * args.steps, desc="encode", unit="step·img", file=sys.stderr, leave=False)
        except ImportError:
            bar = None
    for start in range(0, len(pixels), args.batch):
        chunk = slice(start, start + args.batch)
        n = len(pixels[chunk])
        done = [0]

        def progress(steps_done, n=n, done=done):
            if bar is not None and steps_done > done[0]:
                bar.update((steps_done - done[0]) * n)
                done[0] = steps_done

        options = dict(steps=args.steps, ssim_weight=args.ssim_weight, mode=args.mode,
                       keep_size=args.keep_size, original_sizes=originals[chunk], progress=progress)
        if args.prior_weight is not None:
            options["prior_weight"] = args.prior_weight
        if args.target_bytes is not None or args.target_psnr is not None:
            pairs = encode_to_target(list(pixels[chunk]), codec.bundle, target_bytes=args.target_bytes,
                                     target_psnr=args.target_psnr, use_ladder=not args.no_ladder, **options)
        else:
            pairs = [(r, codec.bundle) for r in codec.encode_detailed(list(pixels[chunk]), bits=args.bits, **options)]
        for k, (res, bundle) in enumerate(pairs):
            i = start + k
            data = res.data
            write_atomic(outputs[i], data)
            row = {"input": str(args.images[i]), "output": str(outputs[i]), "model": bundle.name,
                   "bytes": len(data), "bpp": round(bits_per_pixel(len(data), size, size), 4),
                   "bits": res.bits, "psnr": round(res.quality["psnr"], 3),
                   "ssim": round(res.quality["ssim"], 4), "ms_ssim": round(res.quality["ms_ssim"], 4)}
            if res.clipped:
                print(f"warning: {args.images[i]}: {res.clipped} latent values clipped to ±6σ", file=sys.stderr)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{row['input']} -> {row['output']}: {row['bytes']} bytes, {row['bpp']:.3f} bpp, "
                      f"{row['bits']} bits, PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}, "
                      f"MS-SSIM {row['ms_ssim']:.4f} ({row['model']})", flush=True)
    if bar is not None:
        bar.close()
    return 0


def main(argv=None) -> int:
    return run_cli(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
