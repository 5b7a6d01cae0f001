import hashlib

import numpy as np
import pytest

from runtime import bitstream
from runtime.errors import CodecError

MODEL_ID = hashlib.sha256(b"model-a").digest()
OTHER_ID = hashlib.sha256(b"model-b").digest()


@pytest.mark.parametrize("mode", ["range", "bzip2", "raw"])
@pytest.mark.parametrize("bits", list(range(bitstream.MIN_BITS, bitstream.MAX_BITS + 1)))
def test_latent_round_trip_is_exact(mode, bits):
    rng = np.random.default_rng(bits)
    symbols, _ = bitstream.quantize(rng.standard_normal(64) * 1.5, bits)
    data = bitstream.pack(symbols, bits, MODEL_ID, mode)
    header, decoded = bitstream.unpack(data, MODEL_ID, 64)
    np.testing.assert_array_equal(decoded, symbols)
    assert (header.bits, header.mode, header.size) == (bits, mode, None)


def test_size_field_round_trip():
    symbols = np.zeros(16, np.int32)
    data = bitstream.pack(symbols, 4, MODEL_ID, size=(640, 480))
    header, _ = bitstream.unpack(data, MODEL_ID, 16)
    assert header.size == (640, 480)
    assert len(data) == len(bitstream.pack(symbols, 4, MODEL_ID)) + 4


def test_fixed_overhead_is_five_bytes():
    symbols = np.zeros(32, np.int32)
    data = bitstream.pack(symbols, 4, MODEL_ID, "raw")
    payload = bitstream.encode_symbols(symbols, 4, "raw")
    assert len(data) - len(payload) == 5


def test_range_coder_beats_raw_and_bzip2():
    rng = np.random.default_rng(0)
    sizes = {m: 0 for m in bitstream.MODES}
    for _ in range(20):
        symbols, _ = bitstream.quantize(rng.standard_normal(128), 4)
        for m in sizes:
            sizes[m] += len(bitstream.pack(symbols, 4, MODEL_ID, m))
    assert sizes["range"] < sizes["raw"] < sizes["bzip2"]


def test_quantization_step_and_clipping():
    assert bitstream.quant_step(3) == 1.0
    assert bitstream.quant_step(4) == 0.5
    q, clipped = bitstream.quantize(np.array([0.26, -0.74, 100.0]), 4)
    assert q.tolist() == [1, -1, bitstream.quant_limit(4)]
    assert clipped == 1
    np.testing.assert_allclose(bitstream.dequantize(q[:2], 4), [0.5, -0.5])


@pytest.mark.parametrize("bits", [1, 10, 3.5])
def test_bad_bits(bits):
    with pytest.raises(CodecError):
        bitstream.quantize(np.zeros(4), bits)


def _valid():
    symbols, _ = bitstream.quantize(np.random.default_rng(1).standard_normal(64), 5)
    return bitstream.pack(symbols, 5, MODEL_ID)


def test_wrong_magic_version_and_model():
    data = bytearray(_valid())
    with pytest.raises(CodecError, match="magic"):
        bitstream.unpack(b"\x00" + bytes(data[1:]), MODEL_ID, 64)
    bad_version = bytearray(data)
    bad_version[1] = (bad_version[1] & 0x3F) | (2 << 6)
    with pytest.raises(CodecError, match="version"):
        bitstream.unpack(bytes(bad_version), MODEL_ID, 64)
    with pytest.raises(CodecError, match="model"):
        bitstream.unpack(bytes(data), OTHER_ID, 64)


def test_truncated_and_corrupted_files_raise_codec_error():
    data = _valid()
    for n in range(len(data)):
        with pytest.raises(CodecError):
            bitstream.unpack(data[:n], MODEL_ID, 64)
    failures = 0
    for i in range(4, len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            try:
                bitstream.unpack(bytes(flipped), MODEL_ID, 64)
            except CodecError:
                continue
            failures += 1
    assert failures == 0  # a CRC-8 detects every single-bit error


def test_same_prefix_other_model_fails_integrity():
    data = _valid()
    impostor = MODEL_ID[:2] + bytes(30)
    with pytest.raises(CodecError, match="integrity"):
        bitstream.unpack(data, impostor, 64)
