"""python -m runtime.decode FILE... [-o OUT.png | --out-dir DIR] [--model DIR|ID]

Thin CLI: reads latent.bin files, finds the model by the id in the header (unless --model is
given; a forced model must still match the id), decodes with onnxruntime on CPU and writes PNG.
Imports numpy, onnxruntime and Pillow only — never TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.errors import CodecError, run_cli

MAX_INPUT_BYTES = 1 << 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m runtime.decode", description="Decode latent.bin files to PNG.")
    p.add_argument("files", nargs="+", help="latent.bin files")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--out", help="output PNG (one file only)")
    out.add_argument("--out-dir", help="write DIR/<stem>.png for every file")
    p.add_argument("--model", help="bundle directory, name or model id (must match the file's id)")
    p.add_argument("--no-resize", action="store_true", help="ignore a stored original size; write model size")
    return p.parse_args(argv)


def read_input(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise CodecError(f"{path}: no such file")
    if p.stat().st_size > MAX_INPUT_BYTES:
        raise CodecError(f"{path}: too large to be a latent.bin ({p.stat().st_size} bytes)")
    return p.read_bytes()


def run(args) -> int:
    from runtime.codec import decode_file_bytes
    from runtime.output import output_in_dir, png_bytes, safe_stem, write_atomic

    if args.out and len(args.files) != 1:
        raise CodecError("-o names one output; use --out-dir with several files")
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    for f in args.files:
        if args.out:
            target = Path(args.out)
        elif args.out_dir:
            target = output_in_dir(args.out_dir, f, ".png")
        else:
            target = Path(f).parent / (safe_stem(f) + ".png")
        data = read_input(f)
        try:
            image, bundle = decode_file_bytes(data, args.model)
        except CodecError as exc:
            raise CodecError(f"{f}: {exc}") from None
        if args.no_resize:
            from runtime.bitstream import read_header, unpack_image
            from runtime.images import to_model_size

            if bundle is not None:
                image = to_model_size(image, bundle.image_size)
            elif read_header(data).size:  # an image payload holds the model-size image itself
                image = unpack_image(data)[1]
        write_atomic(target, png_bytes(image))
        print(f"{f} -> {target}: {image.shape[1]}x{image.shape[0]} ({bundle.name if bundle else _payload_name(data)})")
    return 0


def _payload_name(data: bytes) -> str:
    """"WebP payload" / "AVIF payload" for an image-kind file (already decoded, so well formed)."""
    from runtime.bitstream import image_file, read_header

    fmt = image_file(data[read_header(data).length:-1])[0]
    return f"{'WebP' if fmt == 'WEBP' else fmt} payload"


def main(argv=None) -> int:
    return run_cli(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
