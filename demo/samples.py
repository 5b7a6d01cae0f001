"""The demo's logic, kept out of the page so it can be tested without Streamlit.

Everything here calls the runtime (codec, images, metrics, bitstream, and runtime.classic for
JPEG/WebP/AVIF); nothing re-implements a metric or an image conversion. The only pixel
operation of its own is :func:`enlarge`, a nearest-neighbour blow-up for display.

Samples come from the project's data sets (``../shared/data/<dataset>.npz``, the ``val`` split, or
a folder ``<dataset>/val/`` of images, at their own size for an any-size bundle) when present,
otherwise from the generator itself, so a fresh machine still has something to try.
``$GANCODEC_SAMPLES_DIR`` points elsewhere; set it to an empty string to use generated samples only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime import bitstream, metrics
from runtime.codec import decode_file_bytes
from runtime.errors import CodecError
from runtime.images import from_unit_range, load_image, to_model_size

ENV_SAMPLES = "GANCODEC_SAMPLES_DIR"
DEFAULT_SAMPLES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MAX_IMAGE_UPLOAD_MB = 20
MAX_LATENT_UPLOAD_MB = 1  # Streamlit's smallest per-widget limit (= the format's largest file)
MAX_DEMO_SIDE = 512  # an any-size bundle codes an upload at its size, shrunk to fit this for the page's speed
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
NUM_SAMPLES = 6
DISPLAY_SIDE = 256  # enlarged images are about this many pixels wide


# -- samples ----------------------------------------------------------------------------------------

def samples_dir() -> Path | None:
    """Where the data sets' .npz files are looked for (None: generated samples only)."""
    value = os.environ.get(ENV_SAMPLES)
    if value is None:
        return DEFAULT_SAMPLES_DIR
    return Path(value) if value.strip() else None


def dataset_samples(dataset: str, size: int | None, n: int = NUM_SAMPLES, directory: Path | None = None):
    """``n`` images of ``<directory>/<dataset>.npz``'s val split (or of the folder
    ``<directory>/<dataset>/val/``) at model size (``size`` None: at their own size), or None if
    unavailable."""
    directory = samples_dir() if directory is None else directory
    if directory is None or not dataset or "/" in dataset or "\\" in dataset:
        return None
    folder = Path(directory) / dataset / "val"
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        idx = np.unique(np.linspace(0, len(files) - 1, min(n, len(files))).astype(int)) if files else []
        try:
            return [(f"{dataset} val {files[i].stem}", load_image(files[i], size)[0]) for i in idx] or None
        except CodecError:
            return None
    path = Path(directory) / f"{dataset}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "val" not in npz.files:
                return None
            val = npz["val"]
        if val.ndim != 4 or val.shape[-1] != 3 or val.dtype != np.uint8 or len(val) == 0:
            return None
        idx = np.unique(np.linspace(0, len(val) - 1, min(n, len(val))).astype(int))
        return [(f"{dataset} val #{i}", val[i] if size is None else to_model_size(val[i], size)) for i in idx]
    except (OSError, ValueError, CodecError):
        return None


def generated_samples(bundle, n: int = NUM_SAMPLES, seed: int = 0):
    """``n`` images the generator draws from random latents (always available)."""
    z = np.random.default_rng(seed).standard_normal((n, *bundle.latent_shape)).astype(np.float32)
    pixels = from_unit_range(bundle.generate(z))
    return [(f"generated #{i + 1}", pixels[i]) for i in range(n)]


def sample_images(bundle, n: int = NUM_SAMPLES, directory: Path | None = None):
    """(where they come from, [(label, uint8 (H, W, 3))]): the model's data set when present (at
    model size, or at their own for an any-size bundle), else images the generator draws."""
    dataset = str(bundle.manifest.get("dataset", ""))
    found = dataset_samples(dataset, None if bundle.any_size else bundle.image_size, n, directory)
    if found:
        return f"validation images of {dataset}", found
    return "images drawn by the generator itself (the data set is not on this machine)", generated_samples(bundle, n)


# -- uploads ----------------------------------------------------------------------------------------

def _check_upload_size(data: bytes, limit_mb: int, what: str) -> None:
    if not data:
        raise CodecError(f"the uploaded {what} is empty")
    if len(data) > limit_mb * 1024 * 1024:
        raise CodecError(f"the uploaded {what} is too large ({len(data) / 1e6:.1f} MB; the limit is {limit_mb} MB)")


def image_from_upload(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Uploaded file bytes -> (uint8 RGB, original (w, h)); CodecError for a bad upload. ``size``:
    the model size (center crop and resize); None (an any-size bundle): the upload at its own
    size, shrunk to fit :data:`MAX_DEMO_SIDE` if larger (aspect kept)."""
    _check_upload_size(data, MAX_IMAGE_UPLOAD_MB, "image")
    pixels, original = load_image(data, size)
    if size is None and max(original) > MAX_DEMO_SIDE:
        from PIL import Image

        scale = MAX_DEMO_SIDE / max(original)
        fit = (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))
        pixels = np.asarray(Image.fromarray(pixels).resize(fit, Image.Resampling.LANCZOS), dtype=np.uint8)
    return pixels, original


@dataclass
class Decoded:
    image: np.ndarray
    bundle: object  # None for an image payload (it needs no model)
    level: int | None  # rate level of a latent file; None for an image payload
    kind: str  # "latent", or an image payload's format: "webp" or "avif"
    num_bytes: int


def decode_upload(data: bytes) -> Decoded:
    """Decode an uploaded latent.bin (onnxruntime only); the model is found by the header's id."""
    _check_upload_size(data, MAX_LATENT_UPLOAD_MB, "latent.bin")
    header = bitstream.read_header(data)
    image, bundle = decode_file_bytes(data)
    level = None
    if header.kind == "latent":
        level = bitstream.unpack_latent(data, bundle.model_id_bytes, bundle.entropy, bundle.file_grid)[1]
    kind = "latent" if header.kind == "latent" else bitstream.image_file(data[header.length:-1])[0].lower()
    return Decoded(image, bundle, level, kind, len(data))


# -- comparison -------------------------------------------------------------------------------------

@dataclass
class Row:
    """One codec's result on the same image."""

    name: str
    image: np.ndarray  # uint8 (S, S, 3) as decoded
    num_bytes: int
    bpp: float
    psnr: float
    ssim: float
    note: str = ""


def codec_row(name: str, original: np.ndarray, reconstruction: np.ndarray, num_bytes: int, note: str = "") -> Row:
    h, w = original.shape[:2]
    return Row(name, reconstruction, num_bytes, metrics.bits_per_pixel(num_bytes, w, h),
               float(metrics.psnr(reconstruction, original)), float(metrics.ssim(reconstruction, original)), note)


def classic_rows(original: np.ndarray, target_bytes: int) -> list[Row]:
    """JPEG, WebP and AVIF (those this Pillow writes) at the highest quality within ``target_bytes``."""
    from runtime.classic import available_codecs

    rows = []
    for name, codec in available_codecs().items():
        quality, data = codec.closest_to_size(original, target_bytes)
        note = f"quality {quality}"
        if len(data) > target_bytes:
            note += f"; ⚠ cannot get this small (its smallest file is {len(data) / target_bytes:.1f}× larger)"
        rows.append(codec_row(name, original, codec.decode(data), len(data), note))
    return rows


def compare(original: np.ndarray, result) -> list[Row]:
    """This codec's EncodeResult followed by the classic codecs at (at most) the same file size."""
    if result.kind != "latent":
        name = "WebP" if result.kind == "webp" else result.kind.upper()
        note = f"{name} payload: {name} met the target better than the model"
    else:
        note = f"rate level {result.level}" + (f", {result.clipped} latent values clipped" if result.clipped else "")
    ours = codec_row("gancodec", original, result.reconstruction, result.num_bytes, note)
    return [ours] + classic_rows(original, result.num_bytes)


# -- display ----------------------------------------------------------------------------------------

def enlarge(pixels: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """Nearest-neighbour blow-up by an integer factor so single pixels stay visible (display only)."""
    factor = max(1, side // max(pixels.shape[:2]))
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)
