"""The classic codecs this project is compared with: defined once in :mod:`runtime.classic`
(the encoder's fallback uses the same definitions, AVIF at a faster speed)."""

from runtime.classic import (
    AVIF_BEST,
    CLASSIC_CODECS,
    JPEG,
    JXL,
    WEBP,
    ClassicCodec,
    available_codecs,
)

__all__ = ["AVIF_BEST", "CLASSIC_CODECS", "JPEG", "JXL", "WEBP", "ClassicCodec", "available_codecs"]
