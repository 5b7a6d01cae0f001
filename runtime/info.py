"""python -m runtime.info FILE... [--json]  (also ``gancodec info``)

Thin CLI: prints what a latent.bin's header says (every field of the header object that
:func:`runtime.bitstream.read_header` returns, whatever the format version), the bundle its model
id points to on the search path (``models/`` and ``$GANCODEC_MODELS``), and whether the file
decodes with that bundle. A file whose header cannot be read (or an image file whose CRC fails) is one line ``error: …``, exit 2.
Imports numpy, onnxruntime and Pillow only — never TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys

from runtime.decode import read_input
from runtime.errors import CodecError, run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="gancodec info", description="Show a latent.bin's header fields and model.")
    p.add_argument("files", nargs="+", help="latent.bin files")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    return p.parse_args(argv)


def header_fields(header) -> dict:
    """The header object's fields, in declaration order (a dataclass, or any object's ``vars``)."""
    if dataclasses.is_dataclass(header):
        return {f.name: getattr(header, f.name) for f in dataclasses.fields(header)}
    if hasattr(header, "_asdict"):
        return dict(header._asdict())
    return {k: v for k, v in vars(header).items() if not k.startswith("_")}


def printable(value):
    """A header value as JSON-friendly text or number: bytes as hex, enums by name."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, (tuple, list)):
        return [printable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def model_id_field(fields: dict) -> str | None:
    """The name of the header field holding the model id (prefix), bytes or an integer."""
    for k in [k for k in fields if k.startswith("model")] + [k for k in fields if "model" in k]:
        if isinstance(fields[k], (bytes, bytearray, int)) and not isinstance(fields[k], bool):
            return k
    return None


def find_models(prefix) -> list:
    """Verified bundles on the search path whose model id starts with ``prefix`` (as in the header)."""
    from runtime import bundle as bundles

    return list(bundles.bundles_for_prefix(prefix))


def describe(data: bytes) -> dict:
    """Everything ``info`` reports about one file, as a JSON-friendly dict.

    Raises CodecError when the header cannot be read or an image file fails its integrity check
    (a latent file's check needs its model); a missing model or a file that does not
    decode is reported in the result, not raised.
    """
    from runtime import bitstream

    header = bitstream.read_header(data)
    if header.kind == "image":  # its CRC needs no model, so a bad one is a bad file, not a report
        bitstream.unpack_image(data)
    fields = header_fields(header)
    out = {"bytes": len(data), "header": {k: printable(v) for k, v in fields.items()}}
    if isinstance(getattr(header, "length", None), int):
        out["header_bytes"] = header.length
    id_field = model_id_field(fields)
    if id_field is not None:
        value = fields[id_field]
        out["header"][id_field] = getattr(header, "model_id_hex", None) or (
            f"{value:x}" if isinstance(value, int) else bytes(value).hex())
        try:
            models = find_models(value)
        except CodecError as exc:
            out["model_error"] = str(exc)
        else:
            out["models"] = [model_summary(b) for b in models]
    out["decodes"] = _decodes(data)
    return out


#: manifest entries worth a glance, shown when the bundle's manifest has them
MODEL_FACTS = ("image_size", "latent_dim", "latent_grid", "channels", "levels", "dataset")


def model_summary(bundle) -> dict:
    """Name, id, directory and the :data:`MODEL_FACTS` present in a bundle's manifest."""
    manifest = bundle.manifest
    return {"name": bundle.name, "model_id": manifest["model_id"], "directory": str(bundle.directory),
            **{k: manifest[k] for k in MODEL_FACTS if k in manifest}}


def _decodes(data: bytes) -> str:
    """Whether the file decodes, as ``runtime.decode`` would decode it (model found from the file)."""
    from runtime.codec import decode_file_bytes

    try:
        image, bundle = decode_file_bytes(data)
    except CodecError as exc:
        return f"no ({exc})"
    by = f" with {bundle.name}" if bundle is not None else ""
    return f"yes, {image.shape[1]}x{image.shape[0]}{by}"


def format_text(path: str, info: dict) -> str:
    """The human-readable report of :func:`describe`."""
    rows = [(k, _text(v, k)) for k, v in info["header"].items()]
    if "header_bytes" in info:
        rows.append(("header bytes", str(info["header_bytes"])))
    if "model_error" in info:
        rows.append(("model", f"error ({info['model_error']})"))
    elif "models" in info:
        if not info["models"]:
            rows.append(("model", "not found in models/ or $GANCODEC_MODELS"))
        for m in info["models"]:
            facts = ", ".join(f"{k.replace('_', ' ')} {_text(printable(m[k]), k)}" for k in MODEL_FACTS if k in m)
            rows.append(("model", f"{m['name']} ({m['model_id'][:16]}…, {facts}) in {m['directory']}"))
    if "decodes" in info:
        rows.append(("decodes", info["decodes"]))
    width = max(len(k) for k, _ in rows) if rows else 0
    return "\n".join([f"{path}: {info['bytes']} bytes"] + [f"  {k.ljust(width)}  {v}" for k, v in rows])


def _text(value, name: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        sep = "x" if ("size" in name or "grid" in name) and all(isinstance(v, int) for v in value) else ", "
        return sep.join(str(v) for v in value)
    return str(value)


def run(args) -> int:
    for f in args.files:
        data = read_input(f)
        try:
            info = describe(data)
        except CodecError as exc:
            raise CodecError(f"{f}: {exc}") from None
        if args.json:
            print(json.dumps({"file": str(f), **info}), flush=True)
        else:
            print(format_text(f, info), flush=True)
    return 0


def main(argv=None) -> int:
    return run_cli(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
