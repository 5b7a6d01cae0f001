"""The classic codecs (JPEG, WebP, AVIF via Pillow) behind one interface: the benchmarks compare
with them and the encoder falls back to WebP per image when it meets a target better. Every size
is the length of the whole file Pillow writes, headers included.

- JPEG: Pillow, ``optimize=True`` (Huffman tables optimised), 4:2:0, quality 1..95.
- WebP: Pillow/libwebp lossy, ``method=6`` (slowest, best), quality 0..100.
- AVIF: Pillow's AVIF support (or the pillow-avif-plugin), quality 0..100, speed 6.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, features

if not features.check("avif"):  # older Pillow: the plugin registers the format
    try:
        import pillow_avif  # noqa: F401
    except ImportError:
        pass


@dataclass(frozen=True)
class ClassicCodec:
    name: str
    pil_format: str
    qualities: tuple[int, ...]
    options: tuple[tuple[str, object], ...] = ()

    def available(self) -> bool:
        Image.init()  # registers every plugin, so SAVE is complete
        return self.pil_format in Image.SAVE

    def encode(self, pixels: np.ndarray, quality: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, format=self.pil_format, quality=int(quality), **dict(self.options))
        return buf.getvalue()

    @staticmethod
    def decode(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)

    def sweep(self, pixels: np.ndarray) -> list[tuple[int, bytes]]:
        """(quality, file bytes) at every quality of the range."""
        return [(q, self.encode(pixels, q)) for q in self.qualities]

    def closest_to_size(self, pixels: np.ndarray, target_bytes: int) -> tuple[int, bytes]:
        """The highest quality whose file is at most ``target_bytes``; the smallest file if none fits."""
        best = None
        smallest = None
        for q in self.qualities:
            data = self.encode(pixels, q)
            if smallest is None or len(data) < len(smallest[1]):
                smallest = (q, data)
            if len(data) <= target_bytes and (best is None or len(data) >= len(best[1])):
                best = (q, data)
        return best if best is not None else smallest

    def best_fitting(self, pixels: np.ndarray, fits) -> tuple[int, bytes] | None:
        """The highest quality whose file satisfies ``fits(data)`` (sizes grow with quality, so a
        binary search), or None when even the lowest quality does not."""
        return self._boundary(pixels, fits, highest=True)

    def lowest_reaching(self, pixels: np.ndarray, good) -> tuple[int, bytes] | None:
        """The lowest quality whose file satisfies ``good(data)`` (e.g. reaches a PSNR), or None."""
        return self._boundary(pixels, good, highest=False)

    def _boundary(self, pixels: np.ndarray, ok, highest: bool) -> tuple[int, bytes] | None:
        """Binary search over the qualities for the last (``highest``) or first quality whose file
        satisfies ``ok``, assuming ``ok`` flips only once along the quality range."""
        qs = self.qualities
        lo, hi, best = 0, len(qs) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            data = self.encode(pixels, qs[mid])
            if ok(data):
                best = (qs[mid], data)
                lo, hi = (mid + 1, hi) if highest else (lo, mid - 1)
            else:
                lo, hi = (lo, mid - 1) if highest else (mid + 1, hi)
        return best


JPEG = ClassicCodec("JPEG", "JPEG", tuple(range(1, 96, 2)), (("optimize", True),))
WEBP = ClassicCodec("WebP", "WEBP", tuple(range(0, 101)), (("method", 6),))
AVIF = ClassicCodec("AVIF", "AVIF", tuple(range(0, 101, 4)), (("speed", 6),))
CLASSIC_CODECS = {c.name: c for c in (JPEG, WEBP, AVIF)}


def available_codecs() -> dict[str, ClassicCodec]:
    """The classic codecs this Pillow can write."""
    return {k: c for k, c in CLASSIC_CODECS.items() if c.available()}
