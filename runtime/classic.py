"""The classic codecs (JPEG, WebP, AVIF, JPEG XL via Pillow) behind one interface: the benchmarks
and the demo compare with them (:data:`CLASSIC_CODECS`, each at its best-compressing setting) and
the encoder falls back per image to WebP or AVIF when one meets a target better
(:data:`FALLBACK_CODECS`, AVIF at a speed an encoder can afford). Every size is the length of the
whole file Pillow writes, headers included.

- JPEG: Pillow, ``optimize=True`` (Huffman tables optimised), 4:2:0, quality 1..95.
- WebP: Pillow/libwebp lossy, ``method=6`` (slowest, best), quality 0..100.
- AVIF: Pillow's AVIF support (libavif/aom; in Pillow's wheels since 11.3), quality 0..100 in steps
  of 4; ``speed=0`` (slowest, best: ~0.2-0.35 s per 128x128 image here) for comparisons,
  ``speed=6`` (~10 ms) for the encoder's fallback.
- JPEG XL: the pillow-jxl-plugin (bench extra; libjxl), ``effort=9``, quality 0..98 in steps of 2
  (~45 ms per 128x128 image). Never a fallback payload: the base install cannot decode it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

try:  # JPEG XL: the plugin registers the format with Pillow (bench extra only)
    import pillow_jxl  # noqa: F401
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
        """The highest quality whose file is at most ``target_bytes`` (:meth:`best_fitting`); the
        lowest quality's file if none fits."""
        best = self.best_fitting(pixels, lambda d: len(d) <= target_bytes)
        return best if best is not None else (self.qualities[0], self.encode(pixels, self.qualities[0]))

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
AVIF = ClassicCodec("AVIF", "AVIF", tuple(range(0, 101, 4)), (("speed", 6),))  # the fallback's
AVIF_BEST = ClassicCodec("AVIF", "AVIF", AVIF.qualities, (("speed", 0),))  # comparisons
JXL = ClassicCodec("JPEG XL", "JXL", tuple(range(0, 99, 2)), (("effort", 9),))  # 100 = lossless: refused
CLASSIC_CODECS = {c.name: c for c in (JPEG, WEBP, AVIF_BEST, JXL)}
#: the image payloads the encoder may write: what the base install's Pillow decodes (not JPEG XL)
FALLBACK_CODECS = {c.name: c for c in (WEBP, AVIF)}


def available_codecs(codecs: dict[str, ClassicCodec] = CLASSIC_CODECS) -> dict[str, ClassicCodec]:
    """The codecs of ``codecs`` (default the comparison set) this Pillow can write."""
    return {k: c for k, c in codecs.items() if c.available()}
