"""The classic codecs this project is compared with: defined once in :mod:`runtime.classic`
(the encoder's WebP fallback uses the same definitions)."""

from runtime.classic import AVIF, CLASSIC_CODECS, JPEG, WEBP, ClassicCodec, available_codecs

__all__ = ["AVIF", "CLASSIC_CODECS", "JPEG", "WEBP", "ClassicCodec", "available_codecs"]
