"""The latent.bin file format: header, quantization, entropy coding, integrity. THE one definition.

Layout (see docs/bitstream.md for the reasoning behind every field)::

    byte 0        magic 0xC7
    byte 1        bits 7-6  format version (1)
                  bits 5-4  coding mode: 0 range coder, 1 bzip2, 2 raw fixed-length
                  bits 3-1  B - 2, B = quantization bits in 2..9
                  bit  0    size flag: original width and height follow
    bytes 2-3     model id: the first 2 bytes of the SHA-256 of the bundle's generator.onnx
    [bytes 4-7]   width - 1, height - 1 as big-endian uint16 (only with the size flag)
    payload       the coded latent (length = what is left)
    last byte     CRC-8 (poly 0x07) over the full 32-byte model id followed by every byte before it

Quantization: the latent has a N(0, 1) prior per dimension (the exported generator is normalised
so that this holds). With B bits the step is Δ = 2^(3 - B) (B = 3 → Δ = 1, each extra bit halves
it) and symbols are q = clip(round(z / Δ), -Q, Q) with Q = ceil(6 / Δ) (±6 standard deviations).

Entropy model: each symbol is coded with constriction's range coder under a Gaussian of mean 0
and standard deviation 1/Δ (the prior in units of the step) quantized to the integers
[-Q, Q]. Both sides compute it from B alone.

This module imports numpy, constriction and the standard library only (decode path).
"""

from __future__ import annotations

import bz2
import math
import struct
from dataclasses import dataclass

import numpy as np

from runtime.errors import CodecError

MAGIC = 0xC7
VERSION = 1
MODES = {"range": 0, "bzip2": 1, "raw": 2}
MODE_NAMES = {v: k for k, v in MODES.items()}
MIN_BITS, MAX_BITS = 2, 9
ID_BYTES = 2
MAX_FILE_BYTES = 1 << 16  # far above any real file (a 256-d latent at 9 bits is < 400 bytes)
CLIP_SIGMAS = 6.0
MAX_SIDE = 8192  # a stored original size is capped before anything is allocated from it
MAX_RESTORE_PIXELS = 24_000_000


def quant_step(bits: int) -> float:
    """Quantization step Δ for ``bits`` (Δ = 2^(3 - bits))."""
    _check_bits(bits)
    return 2.0 ** (3 - bits)


def quant_limit(bits: int) -> int:
    """Largest symbol magnitude Q for ``bits`` (±CLIP_SIGMAS standard deviations)."""
    return int(math.ceil(CLIP_SIGMAS / quant_step(bits)))


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise CodecError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")


def quantize(latent: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """float latent -> (int32 symbols, number of values that had to be clipped)."""
    step, limit = quant_step(bits), quant_limit(bits)
    q = np.rint(np.asarray(latent, dtype=np.float64) / step)
    clipped = int(np.count_nonzero(np.abs(q) > limit))
    return np.clip(q, -limit, limit).astype(np.int32), clipped


def dequantize(symbols: np.ndarray, bits: int) -> np.ndarray:
    """int symbols -> float32 latent."""
    return (np.asarray(symbols, dtype=np.float32) * np.float32(quant_step(bits))).astype(np.float32)


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
    """CRC-8/SMBUS (poly 0x07, init 0)."""
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


# --- header ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Header:
    """What the first bytes of a latent.bin say."""

    version: int
    mode: str
    bits: int
    model_id_prefix: bytes
    size: tuple[int, int] | None  # original (width, height) when stored

    @property
    def length(self) -> int:
        return 4 + (4 if self.size else 0)

    def to_bytes(self) -> bytes:
        flags = (self.version << 6) | (MODES[self.mode] << 4) | ((self.bits - MIN_BITS) << 1) | int(bool(self.size))
        out = bytes([MAGIC, flags]) + self.model_id_prefix
        if self.size:
            out += struct.pack(">HH", self.size[0] - 1, self.size[1] - 1)
        return out


def read_header(data: bytes) -> Header:
    """Parse and validate the header; raises CodecError for anything that is not a latent.bin."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError("latent data must be bytes")
    data = bytes(data)
    if len(data) > MAX_FILE_BYTES:
        raise CodecError(f"file too large for a latent.bin ({len(data)} bytes)")
    if len(data) < 5:
        raise CodecError(f"file too short for a latent.bin ({len(data)} bytes)")
    if data[0] != MAGIC:
        raise CodecError("not a gancodec latent.bin (wrong magic byte)")
    flags = data[1]
    version, mode = flags >> 6, (flags >> 4) & 0x3
    if version != VERSION:
        raise CodecError(f"unsupported format version {version} (this decoder reads version {VERSION})")
    if mode not in MODE_NAMES:
        raise CodecError(f"unknown coding mode {mode}")
    bits = ((flags >> 1) & 0x7) + MIN_BITS
    size = None
    if flags & 1:
        if len(data) < 9:
            raise CodecError("file truncated inside the header")
        w, h = struct.unpack(">HH", data[4:8])
        size = (w + 1, h + 1)
        _check_size(size)
    return Header(version, MODE_NAMES[mode], bits, data[2:4], size)


def _check_size(size: tuple[int, int]) -> None:
    w, h = size
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE and w * h <= MAX_RESTORE_PIXELS):
        raise CodecError(f"original size {w}x{h} is beyond what a latent.bin may restore "
                         f"(at most {MAX_SIDE} per side and {MAX_RESTORE_PIXELS // 1_000_000} MP)")


# --- payload coding ----------------------------------------------------------------------------

def _raw_width(bits: int) -> int:
    return int(math.ceil(math.log2(2 * quant_limit(bits) + 1)))


def _pack_raw(symbols: np.ndarray, bits: int) -> bytes:
    width, limit = _raw_width(bits), quant_limit(bits)
    values = (symbols.astype(np.int64) + limit).astype(np.uint32)
    bitarr = ((values[:, None] >> np.arange(width - 1, -1, -1)) & 1).astype(np.uint8).ravel()
    return np.packbits(bitarr).tobytes()


def _unpack_raw(payload: bytes, bits: int, count: int) -> np.ndarray:
    width, limit = _raw_width(bits), quant_limit(bits)
    if len(payload) != (count * width + 7) // 8:
        raise CodecError("payload length does not match the model's latent size (truncated or corrupted file)")
    bitarr = np.unpackbits(np.frombuffer(payload, np.uint8))[: count * width].reshape(count, width)
    values = (bitarr.astype(np.int64) << np.arange(width - 1, -1, -1)).sum(axis=1) - limit
    if np.any(np.abs(values) > limit):
        raise CodecError("symbol out of range (corrupted file)")
    return values.astype(np.int32)


def _gaussian(bits: int):
    import constriction

    limit = quant_limit(bits)
    return constriction.stream.model.QuantizedGaussian(-limit, limit), 1.0 / quant_step(bits)


def _pack_range(symbols: np.ndarray, bits: int) -> bytes:
    import constriction

    model, std = _gaussian(bits)
    enc = constriction.stream.queue.RangeEncoder()
    n = len(symbols)
    enc.encode(symbols.astype(np.int32), model, np.zeros(n), np.full(n, std))
    return enc.get_compressed().astype("<u4").tobytes()


def _unpack_range(payload: bytes, bits: int, count: int) -> np.ndarray:
    import constriction

    if len(payload) == 0 or len(payload) % 4:
        raise CodecError("payload is not a whole number of coder words (truncated or corrupted file)")
    if len(payload) > 4 * (count * 16 + 2):
        raise CodecError("payload far longer than the model's latent needs (corrupted file)")
    model, std = _gaussian(bits)
    try:
        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        symbols = dec.decode(model, np.zeros(count), np.full(count, std))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # constriction raises its own types (a Rust panic is a BaseException)
        raise CodecError(f"entropy decoding failed (corrupted file): {type(exc).__name__}") from None
    return np.asarray(symbols, dtype=np.int32)


def encode_symbols(symbols: np.ndarray, bits: int, mode: str = "range") -> bytes:
    """Code int symbols with the given mode; returns the payload."""
    _check_bits(bits)
    symbols = np.asarray(symbols, dtype=np.int32).ravel()
    if np.any(np.abs(symbols) > quant_limit(bits)):
        raise CodecError("symbols out of range for this bit depth")
    if mode == "range":
        return _pack_range(symbols, bits)
    if mode == "raw":
        return _pack_raw(symbols, bits)
    if mode == "bzip2":
        return bz2.compress(_pack_raw(symbols, bits), 9)
    raise CodecError(f"unknown coding mode {mode!r} (choose from {', '.join(MODES)})")


def decode_symbols(payload: bytes, bits: int, mode: str, count: int) -> np.ndarray:
    """Inverse of :func:`encode_symbols` for ``count`` symbols."""
    if mode == "range":
        return _unpack_range(payload, bits, count)
    if mode == "raw":
        return _unpack_raw(payload, bits, count)
    if mode == "bzip2":
        expected = (count * _raw_width(bits) + 7) // 8
        try:
            d = bz2.BZ2Decompressor()
            raw = d.decompress(payload, max_length=expected + 1)
        except (OSError, ValueError, EOFError) as exc:
            raise CodecError(f"bzip2 payload is corrupted ({exc})") from None
        return _unpack_raw(raw, bits, count)
    raise CodecError(f"unknown coding mode {mode!r}")


# --- whole files -------------------------------------------------------------------------------

def pack(symbols: np.ndarray, bits: int, model_id: bytes, mode: str = "range",
         size: tuple[int, int] | None = None) -> bytes:
    """Build a complete latent.bin from quantized symbols.

    model_id: the full 32-byte SHA-256 of the bundle's ONNX (the first 2 bytes go in the header;
    all 32 seed the CRC so a file is only accepted by the model that wrote it).
    """
    _check_bits(bits)
    if len(model_id) != 32:
        raise ValueError("model_id must be the 32-byte SHA-256 digest")
    if size is not None:
        _check_size(size)
    header = Header(VERSION, mode, bits, model_id[:ID_BYTES], tuple(size) if size else None)
    body = header.to_bytes() + encode_symbols(symbols, bits, mode)
    return body + bytes([crc8(body, crc8(model_id))])


def unpack(data: bytes, model_id: bytes, latent_dim: int) -> tuple[Header, np.ndarray]:
    """Check and decode a latent.bin for the model with this id; returns (header, symbols)."""
    header = read_header(data)
    data = bytes(data)
    if header.model_id_prefix != model_id[:ID_BYTES]:
        raise CodecError(
            f"file was written by model {header.model_id_prefix.hex()}…, not by this model ({model_id[:ID_BYTES].hex()}…)")
    if len(data) < header.length + 2:
        raise CodecError("file truncated: no payload")
    if crc8(data[:-1], crc8(model_id)) != data[-1]:
        raise CodecError("integrity check failed: the file is corrupted or was written by another model")
    payload = data[header.length : -1]
    return header, decode_symbols(payload, header.bits, header.mode, latent_dim)
