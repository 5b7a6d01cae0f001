"""Image loading and resizing: the one place where pixels enter the project.

Every consumer (encoder, training data loader, benchmarks, demo) calls
:func:`to_model_size` so that an image is cropped and resized the same way everywhere.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from runtime.errors import CodecError

# Pillow's decompression-bomb guard stays on; anything above this many pixels is refused.
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode (L, P, RGBA, I;16, CMYK, ...) to 8-bit RGB.

    Transparent pixels are composited on white; 16-bit images are scaled to 8 bits.
    """
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # animated images: first frame
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(np.round(arr * (255.0 if arr.max() <= 1.0 else 1.0)), 0, 255)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def to_model_size(img: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """Center-crop to a square and box-resize to ``size``×``size``; returns uint8 (size, size, 3)."""
    if isinstance(img, np.ndarray):
        arr = np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise CodecError(f"expected a uint8 RGB array (H, W, 3), got {arr.dtype} {arr.shape}")
        if arr.shape[0] == size and arr.shape[1] == size:
            return arr
        img = Image.fromarray(arr, "RGB")
    img = to_rgb(img)
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.uint8).copy()


def open_image(source: str | os.PathLike | bytes) -> Image.Image:
    """Open and fully decode an image file (path or bytes); raise CodecError if it is not one."""
    label = "<upload>" if isinstance(source, bytes) else os.fspath(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, bytes):
                if not source:
                    raise CodecError("empty image data")
                img = Image.open(io.BytesIO(source))
            else:
                if os.path.isdir(source):
                    raise CodecError(f"{label}: is a directory, not an image")
                if os.path.getsize(source) == 0:
                    raise CodecError(f"{label}: empty file")
                img = Image.open(source)
            if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError("too many pixels")
            img.load()
        img = ImageOps.exif_transpose(img) or img
    except CodecError:
        raise
    except FileNotFoundError:
        raise CodecError(f"{label}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise CodecError(f"{label}: image too large (over {MAX_IMAGE_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise CodecError(f"{label}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise CodecError(f"{label}: unreadable or truncated image ({exc})") from None
    if img.size[0] < 1 or img.size[1] < 1:
        raise CodecError(f"{label}: image has no pixels")
    return img


def load_image(source: str | os.PathLike | bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Load an image file at model size (``size`` None: at its own size); returns (uint8
    (size, size, 3), original (width, height))."""
    img = open_image(source)
    original = img.size
    try:
        if size is None:
            return np.asarray(to_rgb(img), dtype=np.uint8).copy(), original
        return to_model_size(img, size), original
    except (OSError, ValueError) as exc:
        raise CodecError(f"cannot convert image: {exc}") from None


def pad_to(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., H, W, 3) -> (..., height, width, 3), the last row and column repeated (edge padding:
    what an any-size bundle's networks see past an image's edge; the decoder crops it off)."""
    h, w = pixels.shape[-3], pixels.shape[-2]
    if (h, w) == (height, width):
        return pixels
    pad = [(0, 0)] * (pixels.ndim - 3) + [(0, height - h), (0, width - w), (0, 0)]
    return np.pad(pixels, pad, mode="edge")


def restore_size(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a decoded square back to the original aspect (the inverse of the center crop is a resize)."""
    img = Image.fromarray(pixels, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 [0,255] -> float32 [-1,1] (the generator's output range)."""
    return pixels.astype(np.float32) / 127.5 - 1.0


def from_unit_range(values: np.ndarray) -> np.ndarray:
    """float [-1,1] -> uint8 [0,255], rounded and clipped: what a decoder writes."""
    return np.clip(np.rint((np.asarray(values, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
