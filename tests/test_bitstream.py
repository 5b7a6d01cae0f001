"""runtime.bitstream, format version 3 (version 2 read): header, CRC, latent and image (WebP, AVIF) payloads, test vectors."""

import hashlib
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from runtime import bitstream, metrics
from runtime.entropy import EntropyModel, FrequencyTable
from runtime.errors import CodecError
from tests.vectors import make as vectors

VECTORS = Path(__file__).parent / "vectors"
MODEL_ID = hashlib.sha256(b"model-a").digest()
OTHER_ID = hashlib.sha256(b"model-b").digest()


def model(levels=4, channels=6, grid=(2, 2), seed=0):
    rng = np.random.default_rng(seed)
    tables = [[FrequencyTable(0, [65536]) if c == 1 else
               FrequencyTable.from_counts(-4 - lv, rng.integers(1, 300, 9 + 2 * lv)) for c in range(channels)]
              for lv in range(levels)]
    return EntropyModel(np.full((levels, channels), 0.5, np.float32), tables, grid)


MODEL = model()


def symbols_for(level, seed=1, m=MODEL):
    raw = np.rint(np.random.default_rng(seed).standard_normal(m.shape) * 2).astype(np.int32)
    return m.clip(level, raw)[0]


def webp_bytes(w=8, h=6, lossless=True):
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "WEBP", lossless=lossless, quality=80)
    return buf.getvalue(), img


# --- known answers -----------------------------------------------------------------------------

def test_crc8_check_value():
    assert bitstream.crc8(b"123456789") == 0xF4  # CRC-8/SMBUS check value
    assert bitstream.crc8(b"") == 0 and bitstream.crc8(b"\x01") == 0x07


def test_header_bits_by_hand():
    mid = bytes([0xAB, 0xCD]) + bytes(30)  # 12-bit id 0xABC
    assert bitstream.model_id_prefix(mid) == 0xABC
    # byte 0 = 0b01 (version 3) | kind 0 | size 0 | 0xA = 0x4A; byte 1 = 0xBC
    assert bitstream.Header("latent", 0xABC, None).to_bytes() == b"\x4a\xbc"
    assert bitstream.Header("image", 0xABC, None).to_bytes() == b"\x6a\xbc"  # kind bit 5
    # size flag bit 4; 640x480 -> 639 << 12 | 479 = 0x27F1DF (12 + 12 bits)
    assert bitstream.Header("latent", 0xABC, (640, 480)).to_bytes() == b"\x5a\xbc\x27\xf1\xdf"
    assert bitstream.Header("latent", 0xABC, (4096, 1)).to_bytes() == b"\x5a\xbc\xff\xf0\x00"
    m = EntropyModel(np.ones((1, 1), np.float32), [[FrequencyTable(3, [65536])]])
    data = bitstream.pack_latent(np.full((1, 1, 1), 3), 0, m, mid)  # nothing to code: empty payload
    assert data == b"\x4a\xbc" + bytes([bitstream.crc8(b"\x4a\xbc", bitstream.crc8(mid))])
    assert bitstream.unpack_latent(data, mid, m)[1:] == (0, np.full((1, 1, 1), 3))
    # version 2 is still read: bits 0b10 and a 2 + 2 byte size
    v2 = b"\x9a\xbc\x02\x7f\x01\xdf"
    v2 += bytes([bitstream.crc8(v2, bitstream.crc8(mid))])
    header, level, _ = bitstream.unpack_latent(v2, mid, m)
    assert (header.version, header.size, header.length, level) == (2, (640, 480), 6, 0)
    with pytest.raises(ValueError):
        bitstream.Header("latent", 0xABC, None, version=2).to_bytes()  # never written
    with pytest.raises(CodecError, match="beyond what a latent.bin may restore"):
        bitstream.pack_latent(np.full((1, 1, 1), 3), 0, m, mid, size=(4097, 1))


def test_header_known_answers_for_odd_sizes():
    """tests/vectors/vectors.json "headers": the exact bytes for odd and extreme sizes, both ways."""
    cases = _description()["headers"]
    assert len(cases) >= 6 and {tuple(c["size"] or ()) for c in cases} >= {(48, 80), (81, 47), (4096, 4096)}
    for case in cases:
        size = tuple(case["size"]) if case["size"] else None
        header = bitstream.Header(case["kind"], case["model_id_prefix"], size)
        assert header.to_bytes().hex() == case["hex"], case
        data = bytes.fromhex(case["hex"]) + bytes(2)
        assert bitstream.read_header(data) == header, case


# --- round trips -------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(st.integers(0, 3), st.integers(0, 2**32 - 1),
       st.one_of(st.none(), st.tuples(st.integers(1, 4096), st.integers(1, 4096))))
def test_latent_round_trip(level, seed, size):
    s = symbols_for(level, seed)
    data = bitstream.pack_latent(s, level, MODEL, MODEL_ID, size=size)
    header, got_level, got = bitstream.unpack_latent(data, MODEL_ID, MODEL)
    assert (header.kind, header.size, got_level) == ("latent", size, level)
    np.testing.assert_array_equal(got, s)
    payload = len(data) - header.length - 1
    assert header.length == (5 if size else 2)
    assert payload <= math.ceil(MODEL.bits(level, s) / 8) + 1  # within a byte of the ideal


def test_fixed_overhead_is_three_bytes():
    s = symbols_for(2)
    assert len(bitstream.pack_latent(s, 2, MODEL, MODEL_ID)) == len(MODEL.encode(2, s)) + 3
    assert len(bitstream.pack_latent(s, 2, MODEL, MODEL_ID, size=(33, 33))) == len(MODEL.encode(2, s)) + 6


def test_extremes_of_every_channel_round_trip():
    for level in range(MODEL.levels):
        for pick in (0, 1):
            s = np.stack([np.full(MODEL.grid, t.hi if pick else t.lo) for t in MODEL.tables[level]], -1)
            _, got_level, got = bitstream.unpack_latent(bitstream.pack_latent(s, level, MODEL, MODEL_ID), MODEL_ID, MODEL)
            assert got_level == level
            np.testing.assert_array_equal(got, s)


def test_out_of_support_symbols_raise():
    s = symbols_for(0)
    s[0, 0, 0] = 99
    with pytest.raises(CodecError, match="support"):
        bitstream.pack_latent(s, 0, MODEL, MODEL_ID)
    s = symbols_for(0)
    s[0, 0, 1] = 1  # channel 1 is degenerate at 0
    with pytest.raises(CodecError, match="support"):
        bitstream.pack_latent(s, 0, MODEL, MODEL_ID)
    with pytest.raises(CodecError):
        bitstream.pack_latent(symbols_for(0), 4, MODEL, MODEL_ID)


def test_webp_round_trip_without_bundle():
    webp, img = webp_bytes()
    data = bitstream.pack_webp(webp, MODEL_ID, size=(100, 80))
    assert len(data) == len(webp) - 12 + 6
    header, rgb = bitstream.unpack_image(data)
    assert (header.kind, header.size, header.model_id_prefix) == ("image", (100, 80), bitstream.model_id_prefix(MODEL_ID))
    np.testing.assert_array_equal(rgb, img)
    assert data[-1] == bitstream.crc8(data[:-1])  # not seeded with the model id
    with pytest.raises(CodecError, match="image payload"):
        bitstream.unpack_latent(data, MODEL_ID, MODEL)
    with pytest.raises(CodecError, match="latent"):
        bitstream.unpack_image(bitstream.pack_latent(symbols_for(0), 0, MODEL, MODEL_ID))


def avif_bytes(w=20, h=12, quality=90):
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 12, y * 20, (x + y) * 6], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="AVIF", quality=quality, speed=8)
    return buf.getvalue(), img


def test_avif_round_trip_without_bundle():
    """An AVIF payload is the whole AVIF file; it decodes with the base install's Pillow alone."""
    avif, img = avif_bytes()
    data = bitstream.pack_avif(avif, MODEL_ID)
    assert len(data) == len(avif) + 3 and data[2:-1] == avif
    header, rgb = bitstream.unpack_image(data)
    assert header.kind == "image" and rgb.shape == img.shape
    assert metrics.psnr(rgb, img) > 30
    assert bitstream.image_file(data[2:-1])[0] == "AVIF"
    with pytest.raises(CodecError, match="not an AVIF file"):
        bitstream.pack_avif(webp_bytes()[0], MODEL_ID)
    broken = bytearray(data)
    broken[30:60] = bytes(30)
    broken[-1] = bitstream.crc8(bytes(broken[:-1]))
    with pytest.raises(CodecError, match="AVIF payload could not be decoded"):
        bitstream.unpack_image(bytes(broken))


def test_image_caps_checked_before_decoding():
    webp, _ = webp_bytes(w=bitstream.MAX_IMAGE_SIDE + 1, h=1)
    with pytest.raises(CodecError, match="cap"):
        bitstream.unpack_image(bitstream.pack_webp(webp, MODEL_ID))
    neither = bitstream.Header("image", 0xABC, None).to_bytes() + b"PNG image data"
    with pytest.raises(CodecError, match="neither WebP"):
        bitstream.unpack_image(neither + bytes([bitstream.crc8(neither)]))
    with pytest.raises(CodecError, match="WebP"):
        bitstream.pack_webp(b"RIFF\x04\x00\x00\x00WEBP", MODEL_ID)
    png = io.BytesIO()
    Image.new("RGB", (2, 2)).save(png, "PNG")
    with pytest.raises(CodecError, match="WebP"):
        bitstream.pack_webp(png.getvalue(), MODEL_ID)


def test_corrupted_webp_raises_only_codec_error():
    data = bytearray(bitstream.pack_webp(webp_bytes(lossless=False)[0], MODEL_ID))
    rng = np.random.default_rng(0)
    for _ in range(300):
        d = bytearray(data)
        d[int(rng.integers(2, len(d) - 1))] = int(rng.integers(0, 256))
        d[-1] = bitstream.crc8(bytes(d[:-1]))
        try:
            _, rgb = bitstream.unpack_image(bytes(d))
            assert rgb.dtype == np.uint8 and rgb.ndim == 3
        except CodecError:
            pass


# --- refusing files ----------------------------------------------------------------------------

def _valid():
    return bitstream.pack_latent(symbols_for(3, 5), 3, MODEL, MODEL_ID)


def test_version_1_file_gets_older_version_error():
    v1 = bytes([0xC7, 0x46]) + MODEL_ID[:2] + bytes(20)
    with pytest.raises(CodecError, match="older version of gancodec"):
        bitstream.read_header(v1)
    for byte0 in (0x00, 0x3F, 0xC0, 0xFF):
        with pytest.raises(CodecError, match="not a gancodec"):
            bitstream.read_header(bytes([byte0]) + _valid()[1:])


def test_wrong_model_and_same_prefix_other_model():
    data = _valid()
    with pytest.raises(CodecError, match="written by model"):
        bitstream.unpack_latent(data, OTHER_ID, MODEL)
    impostor = MODEL_ID[:1] + bytes([MODEL_ID[1] & 0xF0 | (~MODEL_ID[1] & 0x0F)]) + bytes(30)
    assert bitstream.model_id_prefix(impostor) == bitstream.model_id_prefix(MODEL_ID)
    with pytest.raises(CodecError, match="integrity"):
        bitstream.unpack_latent(data, impostor, MODEL)


def test_size_caps():
    with pytest.raises(CodecError, match="beyond"):
        bitstream.pack_latent(symbols_for(0), 0, MODEL, MODEL_ID, size=(4097, 10))
    data = bytearray(bitstream.pack_latent(symbols_for(0), 0, MODEL, MODEL_ID, size=(10, 10)))
    data[2:5] = b"\xff\xff\xff"  # version 3: 12 bits a side hold at most 4096, the cap
    assert bitstream.read_header(bytes(data)).size == (4096, 4096)
    v2 = bytes([(data[0] & 0x3F) | 0x80, data[1]]) + b"\xff\xff\x00\x09" + bytes(data[5:])
    with pytest.raises(CodecError, match="beyond"):  # version 2's 16 bits can say 65536
        bitstream.read_header(v2)


def test_truncated_and_corrupted_files_raise_codec_error():
    data = _valid()
    passed = []  # a truncated file whose last byte happens to be its CRC (1 in 256) is a valid file
    for n in range(len(data)):
        try:
            bitstream.unpack_latent(data[:n], MODEL_ID, MODEL)
            passed.append(n)
        except CodecError:
            pass
    assert len(passed) <= 1, passed
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            with pytest.raises(CodecError):  # a CRC-8 catches every single-bit error
                bitstream.unpack_latent(bytes(flipped), MODEL_ID, MODEL)
    with pytest.raises(CodecError, match="too large"):
        bitstream.read_header(bytes(bitstream.MAX_FILE_BYTES + 1))
    with pytest.raises(CodecError):
        bitstream.read_header("not bytes")


def test_payload_edits_with_valid_crc_raise_only_codec_error():
    data = _valid()
    rng = np.random.default_rng(0)
    seed = bitstream.crc8(MODEL_ID)
    for _ in range(3000):
        d = bytearray(data)
        op = int(rng.integers(0, 3))
        if op == 0:
            d[int(rng.integers(2, len(d) - 1))] = int(rng.integers(0, 256))
        elif op == 1:
            d = d[: int(rng.integers(3, len(d)))] + d[-1:]
        else:
            d = d[:-1] + rng.integers(0, 256, int(rng.integers(1, 6)), dtype=np.uint8).tobytes() + d[-1:]
        d[-1] = bitstream.crc8(bytes(d[:-1]), seed)
        try:
            _, level, s = bitstream.unpack_latent(bytes(d), MODEL_ID, MODEL)
            assert 0 <= level < MODEL.levels and s.shape == MODEL.shape
        except CodecError:
            pass


# --- committed test vectors --------------------------------------------------------------------

def _description():
    return json.loads((VECTORS / "vectors.json").read_text())


def test_vectors_decode_to_expected_values():
    desc = _description()
    model_id = bytes.fromhex(desc["model_id"])
    m = EntropyModel.from_bytes((VECTORS / desc["entropy_bin"]).read_bytes())
    assert m.levels == desc["model"]["levels"] and list(m.grid) == desc["model"]["grid"] and m.contexts == 1
    np.testing.assert_array_equal(m.inv_gains, np.array(desc["model"]["inv_gains"], np.float32))
    for row, expected in zip(m.tables, desc["model"]["tables"]):
        for t, e in zip(row, expected):
            assert t.lo == e["lo"] and (t.degenerate if e["freqs"] is None else list(t.freqs) == e["freqs"])
    models = {desc["entropy_bin"]: m}
    for key, version in (("context_model", 2), ("param_model", 3)):  # stored lists, derived tables
        ctx_desc = desc[key]
        ctx_bytes = (VECTORS / ctx_desc["entropy_bin"]).read_bytes()
        cm = EntropyModel.from_bytes(ctx_bytes)
        assert ctx_bytes[4] == version and cm.to_bytes() == ctx_bytes
        assert (cm.levels, cm.channels, list(cm.grid), cm.precision, cm.contexts) == tuple(
            ctx_desc[k] for k in ("levels", "channels", "grid", "precision", "contexts"))
        np.testing.assert_array_equal(cm.inv_gains, np.array(ctx_desc["inv_gains"], np.float32))
        for row, expected in zip(cm.context_tables, ctx_desc["tables"]):
            for ctx, e in zip(row, expected):
                assert len(ctx) == cm.contexts and all(t.lo == e["lo"] for t in ctx)
                if e["freqs"] is None:
                    assert all(t.degenerate for t in ctx)
                else:
                    assert [list(t.freqs) for t in ctx] == e["freqs"]
        models[ctx_desc["entropy_bin"]] = cm
    kinds, used = set(), set()
    for f in desc["files"]:
        data = (VECTORS / f["file"]).read_bytes()
        kinds.add(f["kind"])
        fm = models[f.get("entropy_bin", desc["entropy_bin"])]
        if f["kind"] == "latent":
            used.add(f["entropy_bin"])
            header, level, symbols = bitstream.unpack_latent(data, model_id, fm, f.get("grid"))
            assert header.model_id_prefix == desc["model_id_prefix"]
            assert level == f["level"] and header.size == (tuple(f["size"]) if f["size"] else None)
            np.testing.assert_array_equal(symbols, np.array(f["symbols"]))
            np.testing.assert_array_equal(fm.dequantize(level, symbols), np.array(f["latent"], np.float32))
            if "contexts" in f:
                np.testing.assert_array_equal(fm.contexts_of(level, symbols), np.array(f["contexts"]))
        elif f["kind"] == "image":
            header, rgb = bitstream.unpack_image(data)
            np.testing.assert_array_equal(rgb, np.array(f["rgb"], np.uint8))
        else:
            with pytest.raises(CodecError, match=f["error"]):
                header = bitstream.read_header(data)
                bitstream.unpack_latent(data, model_id, fm)
    assert kinds == {"latent", "image", "invalid"} and used == set(models)
    assert desc["bad_entropy_bins"]
    for b in desc["bad_entropy_bins"]:
        with pytest.raises(CodecError, match=re.escape(b["error"])):
            EntropyModel.from_bytes((VECTORS / b["file"]).read_bytes())


def test_context_vectors_cover_every_context_of_every_channel():
    """The latent_ctx_extremes_* files put both ends of every coded channel's support under every
    context that channel can have (given how many coded channels come before it), at every level."""
    desc = _description()
    cm = EntropyModel.from_bytes((VECTORS / desc["context_model"]["entropy_bin"]).read_bytes())
    k = cm.contexts
    for level in range(cm.levels):
        seen = set()
        for f in desc["files"]:
            if f["file"].startswith(f"latent_ctx_extremes_l{level}_"):
                s, ctx = np.array(f["symbols"]), np.array(f["contexts"])
                seen |= {(c, int(x), int(v)) for c in range(cm.channels) for x, v in zip(ctx[..., c].ravel(), s[..., c].ravel())}
        m = 0
        for c, t in enumerate(cm.tables[level]):
            if t.degenerate:
                continue
            for x in {0} if m == 0 else {min(k - 1, k * z // m) for z in range(m + 1)}:
                assert (c, x, t.lo) in seen and (c, x, t.hi) in seen, (level, c, x)
            m += 1
        assert m < cm.channels  # every level has a degenerate channel


def test_vectors_are_what_the_generator_writes():
    """The committed bytes are reproducible (WebP bytes depend on libwebp: only decoded above)."""
    files, description = vectors.build()
    for name, data in files.items():
        if name != "webp_4x5.bin":
            assert (VECTORS / name).read_bytes() == data, name
    assert vectors.render(description) == (VECTORS / "vectors.json").read_text()


# --- a decoder written from docs/bitstream.md alone (no runtime import), run on the vectors ------

def _spec_crc8(data, crc=0):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _spec_from_counts(counts, p):
    """Section 3, from_counts (n >= 2): integer only, the missing units to the largest remainders."""
    n, total, s = len(counts), 1 << p, sum(counts)
    if s == 0:
        return [total // n + (1 if i < total % n else 0) for i in range(n)]
    freqs = [1 + c * (total - n) // s for c in counts]
    remainders = [c * (total - n) % s for c in counts]
    for i in sorted(range(n), key=lambda i: (-remainders[i], i))[: total - sum(freqs)]:  # ties: smaller i
        freqs[i] += 1
    return freqs


_SPEC_LOG2 = (34219, 35734, 37316, 38968, 40694, 42495, 44377, 46341, 48393, 50536, 52773, 55109, 57549, 60097, 62758)
_SPEC_ALPHA = (5, 6, 7, 8, 9, 10, 12, 14, 16, 19, 22, 26, 30, 35, 41, 48)
_SPEC_ZERO = (-28, -24, -20, -16, -12, -8, -4, 0, 4, 8, 12, 16, 20, 24, 28, 32)
_SPEC_POW = (1073741824, 1028218693, 984625594, 942880699, 902905651, 864625413, 827968132, 792865000,
             759250125, 727060411, 696235434, 666717336, 638450708, 611382493, 585461881, 560640218)


def _spec_support(knots, s):
    """Section 6, "Deriving the table", step 1: (lo, hi) of a coded cell with step s."""
    x = [v * 16 for v in knots]
    return (2 * x[0] + s) // (2 * s) - 1, (2 * x[-1] + s) // (2 * s) + 1


def _spec_derive(knots, s, p, param):
    """Section 6, "Deriving the table of a coded cell", steps 2-7: the frequencies of lo..hi."""
    x = [v * 16 for v in knots]  # step 1: units of 2^-16
    q = len(x) - 1
    lo, hi = _spec_support(knots, s)

    def cdf(e):  # step 2
        if e < x[0]:
            return 0
        if e >= x[q]:
            return q * 2**16
        i = max(j for j in range(q + 1) if x[j] <= e)
        return i * 2**16 + ((e - x[i]) * 2**16) // (x[i + 1] - x[i])

    def edge(v):  # step 3: the lower edge of v
        return ((2 * v - 1) * s) // 2

    masses = ([cdf(edge(lo + 1))] + [cdf(edge(v + 1)) - cdf(edge(v)) for v in range(lo + 1, hi)]
              + [q * 2**16 - cdf(edge(hi))])

    def lg(v):  # step 4
        b = v.bit_length() - 1
        u = v * 2 ** (15 - b) if b <= 15 else v // 2 ** (b - 15)
        return 16 * b + sum(1 for t in _SPEC_LOG2 if t <= u)

    lengths = [lg(q * 2**16 + 1) - lg(m + 1) for m in masses]
    t = [(_SPEC_ALPHA[param >> 4] * length) // 16 for length in lengths]  # step 5
    if lo <= 0 <= hi:
        t[0 - lo] -= _SPEC_ZERO[param & 15]
    t = [v - min(t) for v in t]
    weights = [_SPEC_POW[v & 15] // 2 ** (v >> 4) if v >> 4 <= 30 else 0 for v in t]  # step 6
    return _spec_from_counts(weights, p)  # step 7


def _spec_parametric(data, p, levels, channels):
    """Section 6, version 3 (after the 14-byte header): (gains, tables, K) as _spec_entropy_bin;
    a context a cell cannot have is not stored and gets None for its row."""
    import struct

    assert len(data) >= 17
    k, q = data[14], struct.unpack_from("<H", data, 15)[0]
    assert 1 <= k <= 64 and 1 <= q <= 4096
    cells = levels * channels
    pos = 17 + (cells + 7) // 8
    assert len(data) >= pos
    bits = [(data[17 + (i >> 3)] >> (i & 7)) & 1 for i in range(8 * ((cells + 7) // 8))]
    assert not any(bits[cells:])  # the padding bits are 0
    coded = [bit == 1 for bit in bits[:cells]]
    n_coded = sum(coded)
    assert len(data) >= pos + 4 * (cells - n_coded) + 7 * n_coded
    gains, steps = [0.0] * cells, [0] * cells
    for i in range(cells):  # the cells NOT coded, level-major
        if not coded[i]:
            gains[i] = struct.unpack_from("<f", data, pos)[0]
            pos += 4
    for i in range(cells):  # then every coded cell: inv_gain, step (uint16, then its high byte)
        if coded[i]:
            gains[i] = struct.unpack_from("<f", data, pos)[0]
            steps[i] = struct.unpack_from("<H", data, pos + 4)[0] + (data[pos + 6] << 16)
            pos += 7
            assert 1 <= steps[i] <= 2**24 - 1
    gains = np.array(gains, np.float32).reshape(levels, channels)
    assert np.all(np.isfinite(gains)) and np.all(gains > 0)
    knots = []
    for _ in range(channels):
        assert len(data) >= pos + 4
        x = [struct.unpack_from("<i", data, pos)[0]]
        pos += 4
        for _ in range(q):  # unsigned LEB128, at most 3 bytes, never overlong
            value = 0
            for length in range(3):
                assert pos < len(data)
                byte = data[pos]
                pos += 1
                value |= (byte & 0x7F) << (7 * length)
                if byte < 0x80:
                    assert not (byte == 0 and length > 0)
                    break
            else:
                raise AssertionError("a knot step longer than 3 bytes")
            x.append(x[-1] + value)
        assert all(abs(v) <= 2**27 for v in x)
        knots.append(x)
    params = {}
    for level in range(levels):
        m = 0  # coded channels before c at this level (section 4)
        for c in range(channels):
            if coded[level * channels + c]:
                for kappa in sorted({0} if m == 0 else {min(k - 1, (k * z) // m) for z in range(m + 1)}):
                    assert pos < len(data)
                    params[level, c, kappa] = data[pos]
                    pos += 1
                m += 1
    assert pos == len(data)
    tables = []
    for level in range(levels):
        tables.append([])
        for c in range(channels):
            s = steps[level * channels + c]
            if not coded[level * channels + c]:
                tables[-1].append((0, None, p))  # the degenerate table {0} at every context
                continue
            lo, hi = _spec_support(knots[c], s)
            assert -32768 <= lo and hi <= 32767 and hi - lo + 1 <= min(2**p, 65535)
            rows = [_spec_derive(knots[c], s, p, params[level, c, kappa]) if (level, c, kappa) in params else None
                    for kappa in range(k)]
            tables[-1].append((lo, rows, p))
    return gains, tables, k


def _spec_entropy_bin(data):
    """docs/bitstream.md section 6, versions 1, 2 and 3: (gains, tables, K, (H, W)) with
    tables[level][c] = (lo, None for a degenerate table or the K frequency rows, p) (version 3: the
    rows derived, None at a context the cell cannot have); an AssertionError for anything a reader
    must refuse."""
    import struct

    assert len(data) >= 14 and data[:4] == b"GCEM" and data[4] in (1, 2, 3)
    version, p, levels, channels, h, w = data[4], data[5], *struct.unpack_from("<HHHH", data, 6)
    assert 1 <= p <= 16 and 1 <= levels <= 256 and 1 <= channels <= 4096
    assert 1 <= h <= 1024 and 1 <= w <= 1024 and h * w * channels <= 1 << 22
    if version == 3:
        return (*_spec_parametric(data, p, levels, channels), (h, w))
    pos, k = 14, 1
    if version == 2:
        assert len(data) >= 15
        k, pos = data[14], 15
        assert 2 <= k <= 64
    assert len(data) >= pos + 4 * levels * channels
    gains = np.frombuffer(data, "<f4", levels * channels, pos).reshape(levels, channels)
    assert np.all(np.isfinite(gains)) and np.all(gains > 0)
    pos += 4 * levels * channels

    def row(n):  # n frequencies: each >= 1, sum 2^p
        nonlocal pos
        assert len(data) >= pos + 2 * n
        freqs = list(struct.unpack_from(f"<{n}H", data, pos))
        pos += 2 * n
        assert min(freqs) >= 1 and sum(freqs) == 1 << p
        return freqs

    if version == 1:
        tables = []
        for _ in range(levels):
            tables.append([])
            for _ in range(channels):
                assert len(data) >= pos + 4
                lo, n = struct.unpack_from("<hH", data, pos)
                pos += 4
                assert 1 <= n <= 1 << p
                tables[-1].append((lo, [row(n)] if n > 1 else None, p))
    else:
        assert len(data) >= pos + 4 * levels * channels
        supports = [struct.unpack_from("<hH", data, pos + 4 * i) for i in range(levels * channels)]
        pos += 4 * levels * channels
        assert all(1 <= n <= 1 << p for _, n in supports)
        tables = [[(lo, [row(n) for _ in range(k)] if n > 1 else None, p)
                   for lo, n in supports[level * channels : (level + 1) * channels]] for level in range(levels)]
    assert pos == len(data)
    return gains, tables, k, (h, w)


def _spec_decode_latent(data, model_id, entropy_bin, grid=None):
    gains, tables, k, (h, w) = _spec_entropy_bin(entropy_bin)
    h, w = grid or (h, w)
    version = {0b01: 3, 0b10: 2}[data[0] >> 6]
    assert not data[0] & 0x20
    assert ((data[0] & 0x0F) << 8 | data[1]) == (model_id[0] << 4 | model_id[1] >> 4)
    assert _spec_crc8(data[:-1], _spec_crc8(model_id)) == data[-1]
    if data[0] & 0x10:  # the size: 12 + 12 bits (version 3) or 16 + 16 (version 2), each side <= 4096
        n = 3 if version == 3 else 4
        packed = int.from_bytes(data[2 : 2 + n], "big")
        assert max(packed >> (4 * n), packed & ((1 << (4 * n)) - 1)) < 4096
    payload = data[(2 + (3 if version == 3 else 4)) if data[0] & 0x10 else 2 : -1]
    state = {"code": int.from_bytes(payload[:4].ljust(4, b"\0"), "big"), "range": 0xFFFFFFFF, "pos": 4, "shifts": 0}

    def decode(lo, freqs, p):
        if freqs is None:
            return lo
        cum = [sum(freqs[:i]) for i in range(len(freqs) + 1)]
        r = state["range"] >> p
        v = state["code"] // r
        assert v < 1 << p
        i = max(j for j in range(len(freqs)) if cum[j] <= v)
        state["code"] -= r * cum[i]
        state["range"] = r * freqs[i]
        while state["range"] < 1 << 24:
            byte = payload[state["pos"]] if state["pos"] < len(payload) else 0
            state["code"] = ((state["code"] << 8) | byte) & 0xFFFFFFFF
            state["pos"] += 1
            state["shifts"] += 1
            state["range"] <<= 8
        return lo + i

    levels = len(tables)
    n = 1 << 16
    level = decode(0, [n // levels + (1 if i < n % levels else 0) for i in range(levels)] if levels > 1 else None, 16)
    symbols = np.zeros((h, w, len(tables[level])), np.int64)
    z, m = [0] * (h * w), 0  # section 4, "Context": one counter z per position, one m
    for c, (lo, rows, p) in enumerate(tables[level]):
        for pos in range(h * w):
            if rows is None:  # degenerate: its lo, not coded, not counted
                symbols[pos // w, pos % w, c] = lo
                continue
            kappa = 0 if m == 0 else min(k - 1, k * z[pos] // m)
            assert rows[kappa] is not None  # version 3 stores (and derives) every context a cell can have
            symbols[pos // w, pos % w, c] = decode(lo, rows[kappa], p)
        if rows is not None:
            z = [zp + (symbols[pos // w, pos % w, c] != 0) for pos, zp in enumerate(z)]
            m += 1
    assert len(payload) <= state["shifts"] + 1 and (not payload or payload[-1] != 0)
    return level, symbols, symbols.astype(np.float32) * gains[level]


def test_spec_decoder_agrees_on_the_vectors():
    desc = _description()
    model_id = bytes.fromhex(desc["model_id"])
    decoded = set()
    for f in desc["files"]:
        if f["kind"] == "latent":
            entropy_bin = (VECTORS / f.get("entropy_bin", desc["entropy_bin"])).read_bytes()
            level, symbols, latent = _spec_decode_latent((VECTORS / f["file"]).read_bytes(), model_id, entropy_bin,
                                                         f.get("grid"))
            assert level == f["level"]
            np.testing.assert_array_equal(symbols, np.array(f["symbols"]))
            np.testing.assert_array_equal(latent, np.array(f["latent"], np.float32))
            decoded.add(entropy_bin[4])
        elif f["kind"] == "invalid" and f.get("entropy_bin") == desc["context_model"]["entropy_bin"]:
            with pytest.raises(AssertionError):
                _spec_decode_latent((VECTORS / f["file"]).read_bytes(), model_id,
                                    (VECTORS / f["entropy_bin"]).read_bytes())
    assert decoded == {1, 2, 3}  # every entropy.bin version
    ctx = desc["context_model"]
    _, tables, k, grid = _spec_entropy_bin((VECTORS / ctx["entropy_bin"]).read_bytes())
    assert (k, list(grid)) == (ctx["contexts"], ctx["grid"])
    assert [[{"lo": lo, "freqs": rows} for lo, rows, _ in row] for row in tables] == ctx["tables"]
    param = desc["param_model"]  # version 3: the derived tables, table by table
    gains, tables, k, grid = _spec_entropy_bin((VECTORS / param["entropy_bin"]).read_bytes())
    assert (k, list(grid), tables[0][0][2]) == (param["contexts"], param["grid"], param["precision"])
    np.testing.assert_array_equal(gains, np.array(param["inv_gains"], np.float32))
    derived = 0
    for level, (row, expected) in enumerate(zip(tables, param["tables"], strict=True)):
        for c, ((lo, rows, _), e) in enumerate(zip(row, expected, strict=True)):
            assert lo == e["lo"] and (rows is None) == (e["freqs"] is None) == (not param["coded"][level][c])
            for kappa, freqs in enumerate(rows or []):  # contexts the cell cannot have are not stored
                assert freqs is None or freqs == e["freqs"][kappa], (level, c, kappa)
                derived += freqs is not None
    assert derived > sum(map(sum, param["coded"]))  # contexts beyond 0 are derived too
    for b in desc["bad_entropy_bins"]:  # what section 6 says a reader refuses
        with pytest.raises(AssertionError):
            _spec_entropy_bin((VECTORS / b["file"]).read_bytes())
