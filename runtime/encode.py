"""python -m runtime.encode IMAGE... [--model DIR|NAME|ID] [-o OUT.bin | --out-dir DIR]
[--level L | --target-bytes N | --target-psnr DB] [--steps N] [--no-fallback] [--keep-size | --resize S]
[--json] [--verbose]

Thin CLI over :meth:`runtime.codec.Codec.compress`: prints bytes, bpp, rate level (or the fallback's WebP/AVIF), PSNR,
SSIM and MS-SSIM per image (JSON lines with --json) and a ``warning: …`` line on stderr when a
result is worse than asked (target missed, image unlike the training set); errors are one line
``error: …`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime.codec import DEFAULT_STEPS, EFFORTS
from runtime.errors import CodecError, run_cli
from runtime.quiet import quiet_tensorflow


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m runtime.encode",
                                description="Compress images into latent.bin files with a GAN generator.")
    p.add_argument("images", nargs="+", help="image files (any Pillow-readable format)")
    p.add_argument("--model", help="bundle directory, name (airplane, automobile, flowers) or model id")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--out", help="output file (one image only)")
    out.add_argument("--out-dir", help="write DIR/<stem>.bin for every image")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--level", type=int, help="rate level 0 (smallest) .. levels-1 (default: the model's middle level)")
    rate.add_argument("--target-bytes", type=int, help="largest file size; picks the rate level per image")
    rate.add_argument("--target-psnr", type=float, help="smallest PSNR in dB; picks the rate level per image")
    p.add_argument("--no-fallback", action="store_true",
                   help="with a target: never store a WebP or AVIF payload, even where it meets the target better")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"refinement steps (gradient descent on the latent, then polishing its rounding; "
                        f"0: the encoder's latent alone; default {DEFAULT_STEPS})")
    p.add_argument("--effort", choices=EFFORTS, default="auto",
                   help="full: refine with TensorFlow's gradients (the train extra); base: the base install "
                        "alone (encoder latent, rate control, dead-zone fits; no TensorFlow); auto (default): "
                        "full where TensorFlow is installed, else base")
    p.add_argument("--keep-size", action="store_true",
                   help="a fixed-size model (32x32): store the original size, decode resizes back to it "
                        "(a model trained on crops always codes an image at its own size)")
    p.add_argument("--resize", type=int, metavar="S",
                   help="a model trained on crops: code the image center-cropped and resized to SxS "
                        "instead of at its own size")
    p.add_argument("--batch", type=int, default=64, help="images inverted together (default 64)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    return p.parse_args(argv)


ENCODER_NAMES = {"full": "full encoder: TensorFlow refinement", "base": "base encoder: no TensorFlow"}


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
    from runtime.codec import Codec, resolve_effort
    from runtime.metrics import bits_per_pixel
    from runtime.output import write_atomic

    if args.batch < 1:
        raise CodecError("--batch must be at least 1")
    effort = resolve_effort(args.effort)
    steps = args.steps if effort == "full" else 0  # the base encoder has no gradient steps
    outputs = output_paths(args)
    codec = Codec(args.model)
    pixels, originals = codec.prepare(args.images, args.resize)  # validates every input before any work
    bar = None
    if len(pixels) * steps >= 200:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(pixels) * steps, desc="encode", unit="step·img", file=sys.stderr, leave=False)
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

        results = codec.compress(list(pixels[chunk]), level=args.level, target_bytes=args.target_bytes,
                                 target_psnr=args.target_psnr, steps=steps, keep_size=args.keep_size,
                                 original_sizes=originals[chunk], fallback=not args.no_fallback,
                                 progress=progress, resize=args.resize, effort=effort)
        for k, res in enumerate(results):
            i = start + k
            write_atomic(outputs[i], res.data)
            row = {"input": str(args.images[i]), "output": str(outputs[i]), "model": codec.bundle.name,
                   "encoder": res.encoder,
                   "payload": res.kind, "level": res.level, "bytes": res.num_bytes,
                   "size": [int(res.reconstruction.shape[1]), int(res.reconstruction.shape[0])],
                   "bpp": round(bits_per_pixel(res.num_bytes, res.reconstruction.shape[1],
                                               res.reconstruction.shape[0]), 4),
                   "psnr": round(res.quality["psnr"], 3), "ssim": round(res.quality["ssim"], 4),
                   "ms_ssim": round(res.quality["ms_ssim"], 4), "clipped": res.clipped,
                   "warnings": res.warnings}
            for w in res.warnings:
                print(f"warning: {args.images[i]}: {w}", file=sys.stderr, flush=True)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                how = f"level {res.level}" if res.kind == "latent" else f"{res.kind.upper().replace('WEBP', 'WebP')} payload"
                print(f"{row['input']} -> {row['output']}: {row['bytes']} bytes, {row['bpp']:.3f} bpp, "
                      f"{how}, PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}, "
                      f"MS-SSIM {row['ms_ssim']:.4f} ({row['model']}, {ENCODER_NAMES[res.encoder]})", flush=True)
    if bar is not None:
        bar.close()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_tensorflow(args.verbose)
    return run_cli(run, args)


if __name__ == "__main__":
    sys.exit(main())
