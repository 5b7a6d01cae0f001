"""The latent.bin file format, version 3: header, payload kinds, integrity. THE one definition.

Layout (docs/bitstream.md gives the reasoning behind every bit and a byte-by-byte spec)::

    byte 0      bits 7-6  format version, 0b01 for version 3 (0b10: version 2, still read;
                          a version-1 file starts 0xC7 = 0b11…)
                bit  5    payload kind: 0 latent (range-coded), 1 image (WebP or AVIF)
                bit  4    size flag: a width and height follow (a latent file of an any-size
                          bundle: the coded image's size, absent = the bundle's image size; any
                          other file: the original size the decoded image is resized back to)
                bits 3-0  model id bits 11..8
    byte 1      model id bits 7..0 (model id = the first 12 bits of SHA-256(generator.onnx))
    [3]         width - 1 (12 bits), height - 1 (12 bits), big-endian (only with the size flag;
                version 2 had 2 + 2 bytes, uint16 each)
    payload     latent: the range-coded rate level and symbols (runtime.entropy);
                image: a WebP file without its 12-byte RIFF header, or a whole AVIF file
                (told apart by their first bytes: a VP8/VP8L/VP8X chunk or an ftyp box)
    last byte   CRC-8 (poly 0x07) over every byte before it, its register seeded by first running
                it over the full 32-byte model id (latent) or not seeded (image)

Fixed overhead: 3 bytes (6 with the size). This module imports numpy, Pillow (image payloads
only, lazily) and the standard library. Both image formats decode with the base install's Pillow
(>= 11.3, whose wheels include AVIF); JPEG XL would need a plugin, so it is never a payload.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np

from runtime.entropy import EntropyModel
from runtime.errors import CodecError

VERSION = 3
VERSION_BITS = 0b01  # the top 2 bits of byte 0
V2_BITS = 0b10  # version 2: read (its size field is 2 + 2 bytes), never written
V1_MAGIC = 0xC7  # byte 0 of every format-1 file
KINDS = ("latent", "image")
HEADER_BYTES = 2
SIZE_BYTES = 3  # 12 + 12 bits
SIZE_BYTES_V2 = 4
CRC_BYTES = 1
MIN_FILE_BYTES = HEADER_BYTES + CRC_BYTES
MODEL_ID_BITS = 12
MAX_FILE_BYTES = 1 << 20  # far above any real file (a 2048x2048 image at the finest level is ~0.5 MB)
MAX_SIDE = 4096  # what 12 bits hold; a stored size is capped before anything is allocated from it
MAX_RESTORE_PIXELS = 16_777_216
MAX_IMAGE_SIDE = 4096  # an image payload's own size, checked before its pixels are decoded
RIFF_HEADER_BYTES = 12  # "RIFF" + uint32 LE size + "WEBP", rebuilt on decode
WEBP_CHUNKS = (b"VP8 ", b"VP8L", b"VP8X")
AVIF_BRANDS = (b"avif", b"avis")  # the major brand of an AVIF file's ftyp box


# --- integrity ---------------------------------------------------------------------------------

def _crc8_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_CRC8 = _crc8_table()


def crc8(data: bytes, crc: int = 0) -> int:
    """CRC-8/SMBUS (poly 0x07, init 0, no reflection, no final xor); ``crc`` continues a run."""
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


def model_id_prefix(model_id: bytes) -> int:
    """The 12-bit model id written in the header: the first 12 bits of the 32-byte SHA-256."""
    if not isinstance(model_id, (bytes, bytearray)) or len(model_id) != 32:
        raise ValueError("model_id must be the 32-byte SHA-256 digest")
    return (model_id[0] << 4) | (model_id[1] >> 4)


def _crc_seed(kind: str, model_id: bytes | None) -> int:
    return crc8(model_id) if kind == "latent" else 0


# --- header ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Header:
    """What the first bytes of a latent.bin say."""

    kind: str  # "latent" or "image"
    model_id_prefix: int  # 12 bits
    size: tuple[int, int] | None  # original (width, height) when stored
    version: int = VERSION

    @property
    def length(self) -> int:
        """Header bytes before the payload."""
        return HEADER_BYTES + ((SIZE_BYTES if self.version == VERSION else SIZE_BYTES_V2) if self.size else 0)

    @property
    def model_id_hex(self) -> str:
        """The 12-bit id as 3 hex digits (a prefix of the bundle's SHA-256 hex)."""
        return f"{self.model_id_prefix:03x}"

    def to_bytes(self) -> bytes:
        byte0 = (VERSION_BITS << 6) | (KINDS.index(self.kind) << 5) | (int(bool(self.size)) << 4) \
            | (self.model_id_prefix >> 8)
        out = bytes([byte0, self.model_id_prefix & 0xFF])
        if self.version != VERSION:
            raise ValueError(f"only version {VERSION} headers are written")
        if self.size:
            out += (((self.size[0] - 1) << 12) | (self.size[1] - 1)).to_bytes(SIZE_BYTES, "big")
        return out


# Files users pass to the decoder by mistake, by their leading bytes (named in the error only when
# a file fails to decode, so no real latent.bin is ever refused for its first bytes).
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
                    (b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"),
                    (b"MM\x00*", "a TIFF image"))


def foreign_format(data: bytes) -> str | None:
    """What a file that is not a latent.bin probably is ("a PNG image", "a WebP image", …), or None."""
    data = bytes(data[:16])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "an AVIF image"
    return next((name for magic, name in IMAGE_SIGNATURES if data.startswith(magic)), None)


def read_header(data: bytes) -> Header:
    """Parse the header; structural checks only (length, version, size caps), not the CRC."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError("latent data must be bytes")
    data = bytes(data)
    if len(data) > MAX_FILE_BYTES:
        raise CodecError(f"file too large for a latent.bin ({len(data)} bytes)")
    if len(data) < MIN_FILE_BYTES:
        raise CodecError(f"file too short for a latent.bin ({len(data)} bytes)")
    byte0 = data[0]
    if byte0 == V1_MAGIC:
        raise CodecError("this file was written by an older version of gancodec (format 1); "
                         "re-encode it with this version")
    if byte0 >> 6 not in (VERSION_BITS, V2_BITS):
        raise CodecError("not a gancodec latent.bin (unknown format version bits "
                         f"{byte0 >> 6:02b}; written by a newer version?)")
    version = VERSION if byte0 >> 6 == VERSION_BITS else 2
    kind = KINDS[(byte0 >> 5) & 1]
    size = None
    if byte0 & 0x10:
        n = SIZE_BYTES if version == VERSION else SIZE_BYTES_V2
        if len(data) < HEADER_BYTES + n + CRC_BYTES:
            raise CodecError("file truncated inside the header")
        if version == VERSION:
            packed = int.from_bytes(data[HEADER_BYTES:HEADER_BYTES + n], "big")
            size = ((packed >> 12) + 1, (packed & 0xFFF) + 1)
        else:
            w, h = struct.unpack_from(">HH", data, HEADER_BYTES)
            size = (w + 1, h + 1)
        _check_size(size)
    return Header(kind, ((byte0 & 0x0F) << 8) | data[1], size, version)


def _check_size(size: tuple[int, int]) -> None:
    w, h = size
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE and w * h <= MAX_RESTORE_PIXELS):
        raise CodecError(f"original size {w}x{h} is beyond what a latent.bin may restore "
                         f"(at most {MAX_SIDE} per side and {MAX_RESTORE_PIXELS // 1_000_000} MP)")


def _frame(kind: str, model_id: bytes, payload: bytes, size) -> bytes:
    prefix = model_id_prefix(model_id)
    if size is not None:
        size = (int(size[0]), int(size[1]))
        _check_size(size)
    body = Header(kind, prefix, size).to_bytes() + payload
    data = body + bytes([crc8(body, _crc_seed(kind, model_id))])
    if len(data) > MAX_FILE_BYTES:
        raise CodecError(f"file would be {len(data)} bytes, above the format's {MAX_FILE_BYTES}")
    return data


def _payload(data: bytes, header: Header, model_id: bytes | None) -> bytes:
    """Check the CRC and return the payload bytes."""
    if crc8(data[:-1], _crc_seed(header.kind, model_id)) != data[-1]:
        raise CodecError("integrity check failed: the file is corrupted"
                         + (" or was written by another model" if header.kind == "latent" else ""))
    return data[header.length:-1]


# --- latent payload ----------------------------------------------------------------------------

def pack_latent(symbols: np.ndarray, level: int, model: EntropyModel, model_id: bytes,
                size: tuple[int, int] | None = None) -> bytes:
    """Build a latent.bin: the rate level and the (H, W, C) integer symbols, range-coded.

    model_id: the full 32-byte SHA-256 of the bundle's generator.onnx (its first 12 bits go in
    the header; all 32 bytes seed the CRC, so a file only verifies under the model that wrote
    it). Symbols outside their table's support raise CodecError: clip with ``model.clip`` first.
    """
    return _frame("latent", model_id, model.encode(level, symbols), size)


def unpack_latent(data: bytes, model_id: bytes, model: EntropyModel,
                  grid=None) -> tuple[Header, int, np.ndarray]:
    """Check and decode a latent file for the model with this id: (header, level, int32 (H, W, C)).
    ``grid``: the latent's (H, W), or a function of the header that gives it (an any-size bundle's
    grid follows the stored size); default the entropy model's own."""
    header = read_header(data)
    data = bytes(data)
    if header.kind != "latent":
        raise CodecError("this file holds an image payload, not a latent")
    mine = model_id_prefix(model_id)
    if header.model_id_prefix != mine:
        raise CodecError(f"file was written by model {header.model_id_hex}…, not by this model ({mine:03x}…)")
    if len(data) < header.length + CRC_BYTES:
        raise CodecError("file truncated inside the header")
    if callable(grid):
        grid = grid(header)
    level, symbols = model.decode(_payload(data, header, model_id), grid)
    return header, level, symbols


# --- image payloads: WebP or AVIF ---------------------------------------------------------------

def pack_webp(webp: bytes, model_id: bytes, size: tuple[int, int] | None = None) -> bytes:
    """Build a latent.bin holding a WebP file (a fallback for images the model cannot reach).

    The 12-byte RIFF header ("RIFF", size, "WEBP") is implied and rebuilt on decode. The header's
    model id names the bundle that chose the fallback; the CRC is not seeded with it, so the image
    decodes without any bundle installed.
    """
    webp = bytes(webp)
    if (len(webp) < RIFF_HEADER_BYTES + 8 or webp[:4] != b"RIFF" or webp[8:12] != b"WEBP"
            or struct.unpack_from("<I", webp, 4)[0] != len(webp) - 8):
        raise CodecError("not a well-formed WebP file (RIFF/WEBP header or size mismatch)")
    if webp[12:16] not in WEBP_CHUNKS:
        raise CodecError("WebP file does not start with a VP8/VP8L/VP8X chunk")
    return _frame("image", model_id, webp[RIFF_HEADER_BYTES:], size)


def pack_avif(avif: bytes, model_id: bytes, size: tuple[int, int] | None = None) -> bytes:
    """Build a latent.bin holding a whole AVIF file (as :func:`pack_webp`; nothing is stripped:
    an AVIF file's boxes vary with the encoder)."""
    avif = bytes(avif)
    if not _is_avif(avif):
        raise CodecError("not an AVIF file (no ftyp box with brand avif/avis)")
    return _frame("image", model_id, avif, size)


def _is_avif(data: bytes) -> bool:
    return len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in AVIF_BRANDS


def webp_file(payload: bytes) -> bytes:
    """Rebuild the WebP file from a WebP payload (the inverse of the stripping in pack_webp)."""
    return b"RIFF" + struct.pack("<I", len(payload) + 4) + b"WEBP" + bytes(payload)


def image_file(payload: bytes) -> tuple[str, bytes]:
    """An image payload -> (format "WEBP" or "AVIF", the image file); CodecError if neither."""
    if len(payload) >= 8 and payload[:4] in WEBP_CHUNKS:
        return "WEBP", webp_file(payload)
    if _is_avif(payload):
        return "AVIF", bytes(payload)
    raise CodecError("image payload is neither WebP (VP8/VP8L/VP8X chunk) nor AVIF (ftyp box) (corrupted file)")


def unpack_image(data: bytes) -> tuple[Header, np.ndarray]:
    """Check and decode an image-kind file: (header, uint8 RGB (H, W, 3)). Needs no bundle."""
    header = read_header(data)
    data = bytes(data)
    if header.kind != "image":
        raise CodecError("this file holds a latent, not an image payload")
    fmt, file = image_file(_payload(data, header, None))
    from PIL import Image, features

    if fmt == "AVIF" and not features.check("avif"):
        raise CodecError("this file holds an AVIF image and this Pillow cannot decode AVIF "
                         "(pip install -U 'pillow>=11.3', whose wheels include it)")
    name = "WebP" if fmt == "WEBP" else fmt
    try:
        with warnings.catch_warnings():  # our own cap below refuses huge sizes; Pillow need not warn
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(file), formats=[fmt])
        with opened as im:
            w, h = im.size  # read from the file's header: no pixels decoded yet
            if not (1 <= w <= MAX_IMAGE_SIDE and 1 <= h <= MAX_IMAGE_SIDE):
                raise CodecError(f"{name} payload is {w}x{h}, beyond the {MAX_IMAGE_SIDE}-pixel cap")
            if getattr(im, "n_frames", 1) != 1:
                raise CodecError(f"{name} payload is animated; a latent.bin holds one image")
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except CodecError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, … for bad data
        raise CodecError(f"{name} payload could not be decoded (corrupted file): {type(exc).__name__}") from None
    if rgb.shape != (h, w, 3):
        raise CodecError(f"{name} payload decoded to an unexpected shape (corrupted file)")
    return header, rgb
