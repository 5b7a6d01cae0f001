"""runtime.entropy: the range coder, frequency tables and the per-bundle EntropyModel.

Known answers come from the spec (docs/bitstream.md) — by hand, or from the tiny exact
big-integer reference coder below, which shares no code with runtime.entropy.
"""

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.entropy import (
    PRECISION,
    EntropyModel,
    FrequencyTable,
    RangeDecoder,
    RangeEncoder,
    ideal_bits,
)
from runtime.errors import CodecError

# --- an independent reference: exact big-integer interval arithmetic, no carry handling needed --


def ref_encode(steps):
    """steps: (cum, freq, precision) per coded symbol -> the bytes the spec says are written.

    The interval [low, low + range) is kept exactly, in units of 2**-(32 + 8 * shifts); at the end
    the value with the most trailing zero bytes (then the smallest) in the interval is written.
    """
    low, rng, shifts = 0, 0xFFFFFFFF, 0
    for cum, freq, p in steps:
        r = rng >> p
        low, rng = low + r * cum, r * freq
        while rng < 1 << 24:
            low, rng, shifts = low << 8, rng << 8, shifts + 1
    nbytes = 4 + shifts
    for k in range(nbytes + 1):
        unit = 1 << (8 * (nbytes - k))
        v = -(-low // unit) * unit
        if v < low + rng:
            return v.to_bytes(nbytes, "big").rstrip(b"\0")
    raise AssertionError("unreachable")


def ref_decode(data, tables):
    """Decode one symbol per table in ``tables`` from ``data`` with exact big integers."""
    low, rng, shifts, out = 0, 0xFFFFFFFF, 0, []
    for t in tables:
        value = int.from_bytes(data[: 4 + shifts].ljust(4 + shifts, b"\0"), "big")
        r = rng >> t.precision
        v = (value - low) // r
        i = max(j for j in range(t.n) if t.cum[j] <= v)
        out.append(t.lo + i)
        low, rng = low + r * t.cum[i], r * t.freqs[i]
        while rng < 1 << 24:
            low, rng, shifts = low << 8, rng << 8, shifts + 1
    return out


def encode(symbols, table):
    enc = RangeEncoder()
    enc.encode_many(symbols, table)
    return enc.finish()


def decode(data, count, table):
    dec = RangeDecoder(data)
    out = dec.decode_many(count, table)
    dec.finish()
    return out


tables_st = st.builds(
    lambda lo, counts, p: FrequencyTable.from_counts(lo, counts, p),
    st.integers(-300, 300),
    st.lists(st.integers(0, 10_000), min_size=1, max_size=40),
    st.integers(6, 16),
)


# --- known answers -------------------------------------------------------------------------------

def test_hand_worked_example():
    """Table [1, 2, 1] at precision 2, symbols 1, 2, 0 (docs/bitstream.md §3):
    r = 0xFFFFFFFF >> 2 = 0x3FFFFFFF; low = 0x3FFFFFFF; range = 0x7FFFFFFE
    r = 0x1FFFFFFF; low += 3r -> 0x9FFFFFFC; range = 0x1FFFFFFF
    r = 0x07FFFFFF; low unchanged; range = 0x07FFFFFF (>= 2**24, no byte written)
    flush: low + range = 0xA7FFFFFB <= 2**32, low != 0 -> ceil(low / 2**24) = 0xA0."""
    t = FrequencyTable(0, [1, 2, 1], precision=2)
    assert encode([1, 2, 0], t) == b"\xa0"
    assert decode(b"\xa0", 3, t) == [1, 2, 0]


def test_hand_worked_empty_and_first_symbols():
    t = FrequencyTable(0, [1, 2, 1], precision=2)
    assert encode([], t) == b""  # low = 0: nothing to flush
    assert encode([0, 0, 0], t) == b""  # cum = 0 keeps low = 0: the zero code value
    # symbol 2 alone: r = 0x3FFFFFFF, low = 3r = 0xBFFFFFFD, range = r;
    # low + range = 0xFFFFFFFC <= 2**32 -> one byte ceil(0xBFFFFFFD / 2**24) = 0xC0
    assert encode([2], t) == b"\xc0"


def test_from_counts_by_hand():
    # T = 8, n = 3, S = 4: freq = 1 + [0, 5 // 4, 15 // 4] = [1, 2, 4]; R = 1 goes to the largest
    # remainder (0, 1, 3) -> index 2: [1, 2, 5]
    assert FrequencyTable.from_counts(0, [0, 1, 3], precision=3).freqs == (1, 2, 5)
    # ties go to the smaller index: T = 8, n = 2, S = 2: freq = 1 + [3, 3] = [4, 4], R = 0
    assert FrequencyTable.from_counts(0, [1, 1], precision=3).freqs == (4, 4)
    # T = 16, n = 3, S = 3: freq = 1 + [4, 4, 4] = [5, 5, 5]; R = 1, remainders all 1 -> index 0
    assert FrequencyTable.from_counts(0, [1, 1, 1], precision=4).freqs == (6, 5, 5)
    assert FrequencyTable.from_counts(0, [0, 0, 0], precision=4).freqs == (6, 5, 5)  # uniform
    assert FrequencyTable.uniform(3).freqs == (21846, 21845, 21845)
    assert FrequencyTable.from_counts(7, [5]).degenerate


@settings(max_examples=150, deadline=None)
@given(st.integers(-50, 50), st.lists(st.integers(0, 2**31), min_size=1, max_size=300), st.integers(9, 16))
def test_from_counts_properties(lo, counts, p):
    t = FrequencyTable.from_counts(lo, counts, p)
    assert t.n == len(counts) and t.lo == lo
    if t.n > 1:
        assert sum(t.freqs) == 2**p and min(t.freqs) >= 1
    # monotone: a larger count never gets a smaller frequency
    order = np.argsort(counts, kind="stable")
    assert all(t.freqs[a] <= t.freqs[b] for a, b in zip(order, order[1:]) if counts[a] < counts[b])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_matches_the_reference_coder(data):
    tables = data.draw(st.lists(tables_st.filter(lambda t: not t.degenerate), min_size=1, max_size=4))
    seq = data.draw(st.lists(st.tuples(st.integers(0, len(tables) - 1), st.integers(0, 10**6)), max_size=120))
    pairs = [(tables[k], tables[k].lo + x % tables[k].n) for k, x in seq]
    enc = RangeEncoder()
    for t, s in pairs:
        enc.encode(s, t)
    out = enc.finish()
    assert out == ref_encode([(t.cum[s - t.lo], t.freqs[s - t.lo], t.precision) for t, s in pairs])
    assert ref_decode(out, [t for t, _ in pairs]) == [s for _, s in pairs]
    dec = RangeDecoder(out)
    assert [dec.decode(t) for t, _ in pairs] == [s for _, s in pairs]
    dec.finish()


def test_committed_coder_vectors():
    import json
    from pathlib import Path

    for case in json.loads((Path(__file__).parent / "vectors" / "vectors.json").read_text())["coder"]:
        t = FrequencyTable(case["lo"], case["freqs"], case["precision"])
        steps = [(t.cum[s - t.lo], t.freqs[s - t.lo], t.precision) for s in case["symbols"]]
        assert ref_encode(steps).hex() == case["bytes"], case["name"]
        assert decode(bytes.fromhex(case["bytes"]), len(case["symbols"]), t) == case["symbols"], case["name"]


# --- round trips, extremes, flush and overhead ------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(tables_st, st.lists(st.integers(0, 10**6), max_size=400))
def test_round_trip(table, raw):
    symbols = [table.lo + x % table.n for x in raw]
    out = encode(symbols, table)
    assert decode(out, len(symbols), table) == symbols
    if table.degenerate:
        assert out == b""


@pytest.mark.parametrize("p", [1, 2, 8, 16])
def test_extremes_of_the_support(p):
    t = FrequencyTable.from_counts(-5, [1] + [1000] * 6 + [1], p) if p > 3 else FrequencyTable.uniform(2, -5, p)
    for symbols in ([t.lo] * 200, [t.hi] * 200, [t.lo, t.hi] * 100):
        assert decode(encode(symbols, t), len(symbols), t) == symbols


def test_out_of_support_symbol_raises():
    t = FrequencyTable(-1, [1000, 64536])
    for bad in (-2, 1, 10**9):
        with pytest.raises(CodecError, match="support"):
            encode([0, bad], t)
    with pytest.raises(CodecError, match="support"):
        encode([4], FrequencyTable(3, [65536]))


def test_degenerate_tables_code_nothing():
    t = FrequencyTable(7, [65536])
    assert t.degenerate and t.hi == 7
    assert encode([7] * 1000, t) == b""
    assert RangeDecoder(b"").decode_many(5, t) == [7] * 5
    assert ideal_bits(t, [7, 7]) == 0.0


def test_flush_is_at_most_one_byte_and_overhead_is_small():
    rng = np.random.default_rng(0)
    overheads = []
    for _ in range(400):
        n = int(rng.integers(2, 60))
        t = FrequencyTable.from_counts(int(rng.integers(-30, 5)), rng.integers(0, 1000, n))
        m = int(rng.integers(0, 300))
        symbols = (rng.choice(n, m, p=np.array(t.freqs) / 2**16) + t.lo).tolist()
        out = encode(symbols, t)
        dec = RangeDecoder(out)
        dec.decode_many(m, t)
        assert len(out) <= dec._shifts + 1  # normalisation bytes + a flush of at most 1 byte
        ideal = ideal_bits(t, symbols) / 8
        assert len(out) <= math.ceil(ideal) + 1
        overheads.append(len(out) - ideal)
    assert np.mean(overheads) < 0.5 and max(overheads) < 1.01


def test_corrupted_streams_raise_only_codec_error():
    rng = np.random.default_rng(1)
    t = FrequencyTable.from_counts(-3, [1, 5, 50, 200, 50, 5, 1])
    for _ in range(3000):
        data = rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        try:
            decode(data, int(rng.integers(0, 100)), t)
        except CodecError:
            pass


def test_decoder_refuses_what_no_encoder_writes():
    t = FrequencyTable.from_counts(0, [1, 2, 3, 4])
    good = encode([1, 2, 3, 3, 2], t)
    with pytest.raises(CodecError, match="past"):
        decode(good + b"\x01" * 6, 5, t)
    with pytest.raises(CodecError, match="zero"):
        decode(good + b"\x00", 5, t)
    with pytest.raises(CodecError, match="outside the table"):  # v >= 2**p: code value beyond the table
        decode(b"\xff\xff\xff\xff", 1, FrequencyTable(0, [1, 2, 1], precision=2))


def test_speed_per_symbol():
    x = np.arange(-12, 13)
    t = FrequencyTable.from_counts(-12, np.round(np.exp(-0.5 * (x / 2.0) ** 2) * 1e5).astype(int))
    symbols = np.clip(np.round(np.random.default_rng(0).standard_normal(2000) * 2), -12, 12).astype(int).tolist()
    t0 = time.perf_counter()
    out = encode(symbols, t)
    t1 = time.perf_counter()
    assert decode(out, 2000, t) == symbols
    t2 = time.perf_counter()
    assert t1 - t0 < 0.1 and t2 - t1 < 0.1  # ~0.3 µs/symbol measured; generous under load


# --- EntropyModel -----------------------------------------------------------------------------

def small_model(seed=0, levels=3, channels=5, grid=(2, 3)):
    rng = np.random.default_rng(seed)
    tables = [[FrequencyTable(c - 2, [1 << PRECISION]) if (lv + c) % 4 == 3 else
               FrequencyTable.from_counts(-2 - lv - c, rng.integers(0, 500, 5 + 2 * (lv + c)))
               for c in range(channels)] for lv in range(levels)]
    gains = rng.uniform(0.05, 2, (levels, channels)).astype(np.float32)
    return EntropyModel(gains, tables, grid)


def test_entropy_bin_round_trip_and_layout():
    m = small_model()
    data = m.to_bytes()
    assert data[:4] == b"GCEM" and data[4] == 1 and data[5] == 16
    assert EntropyModel.from_bytes(data) == m
    expected = 14 + 4 * 15 + sum(4 + (0 if t.degenerate else 2 * t.n) for row in m.tables for t in row)
    assert len(data) == expected


def test_entropy_bin_other_precision_round_trip():
    tables = [[FrequencyTable.from_counts(-1, [3, 9, 3], 12), FrequencyTable(4, [1])]]
    m = EntropyModel(np.ones((1, 2), np.float32), tables, (3, 1))
    back = EntropyModel.from_bytes(m.to_bytes())
    assert back == m and back.precision == 12
    s = np.array([[[-1, 4]], [[1, 4]], [[0, 4]]])
    np.testing.assert_array_equal(back.decode(m.encode(0, s))[1], s)
    with pytest.raises(CodecError, match="precision"):
        EntropyModel(np.ones((1, 2), np.float32), [[tables[0][0], FrequencyTable.uniform(3)]])


def test_entropy_bin_corruption_raises_only_codec_error():
    data = small_model().to_bytes()
    for n in range(len(data)):
        with pytest.raises(CodecError):
            EntropyModel.from_bytes(data[:n])
    with pytest.raises(CodecError, match="trailing"):
        EntropyModel.from_bytes(data + b"\0")
    rng = np.random.default_rng(0)
    for _ in range(2000):
        d = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            d[int(rng.integers(0, len(d)))] = int(rng.integers(0, 256))
        try:
            EntropyModel.from_bytes(bytes(d))
        except CodecError:
            pass
    for bad in (b"XXXX" + data[4:], data[:4] + b"\x02" + data[5:], data[:5] + b"\x11" + data[6:]):
        with pytest.raises(CodecError):
            EntropyModel.from_bytes(bad)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2))
def test_model_round_trip_bits_clip(seed, level):
    m = small_model(seed % 7)
    rng = np.random.default_rng(seed)
    raw = rng.integers(-12, 13, m.shape)
    symbols, clipped = m.clip(level, raw)
    assert clipped == int(np.count_nonzero(symbols != raw))
    for c, t in enumerate(m.tables[level]):
        assert symbols[..., c].min() >= t.lo and symbols[..., c].max() <= t.hi
    payload = m.encode(level, symbols)
    got_level, got = m.decode(payload)
    assert got_level == level and got.dtype == np.int32
    np.testing.assert_array_equal(got, symbols)
    bits = m.bits(level, symbols)
    direct = (16 - math.log2(m.level_table.freqs[level])) + sum(
        ideal_bits(t, symbols[..., c].ravel()) for c, t in enumerate(m.tables[level]))
    assert bits == pytest.approx(direct)
    assert len(payload) <= math.ceil(bits / 8) + 1
    assert np.all(np.isinf(m.bits(level, raw))) or clipped == 0
    batch = m.bits(level, np.stack([symbols, symbols]))
    assert batch.shape == (2,) and batch[0] == pytest.approx(bits)


def test_extremes_of_every_table():
    m = small_model(3)
    h, w = m.grid
    for level in range(m.levels):
        for pick in ("lo", "hi", "mix"):
            s = np.empty(m.shape, np.int32)
            for c, t in enumerate(m.tables[level]):
                s[..., c] = t.lo if pick == "lo" else t.hi
                if pick == "mix":
                    s[0, :, c] = t.lo
            got_level, got = m.decode(m.encode(level, s))
            assert got_level == level
            np.testing.assert_array_equal(got, s)


def test_dequantize_is_float32_product():
    m = small_model()
    s = np.arange(np.prod(m.shape)).reshape(m.shape) - 10
    y = m.dequantize(1, s)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, s.astype(np.float32) * m.inv_gains[1])


def test_model_validation():
    t = FrequencyTable.uniform(4)
    with pytest.raises(CodecError):
        EntropyModel(np.ones((1, 2), np.float32), [[t]])  # wrong table count
    with pytest.raises(CodecError):
        EntropyModel(np.array([[np.nan]], np.float32), [[t]])
    with pytest.raises(CodecError):
        EntropyModel(np.array([[0.0]], np.float32), [[t]])
    m = EntropyModel(np.ones((1, 1), np.float32), [[t]])
    assert m.level_table.degenerate and m.bits(0, np.zeros((1, 1, 1), int)) == 2.0
    with pytest.raises(CodecError, match="level"):
        m.encode(1, np.zeros((1, 1, 1), int))
    with pytest.raises(CodecError, match="shape"):
        m.encode(0, np.zeros((2, 1, 2), int))  # channels are the model's; the grid is any
    with pytest.raises(CodecError, match="caps"):
        m.decode(m.encode(0, np.zeros((2, 1, 1), int)), (0, 1))


def test_any_grid_round_trips():
    """The tables are position-free: a latent on any grid codes, and decodes on the same grid."""
    m = context_model()
    rng = np.random.default_rng(5)
    for grid in [(1, 1), (3, 5), (7, 2)]:
        for level in range(m.levels):
            q, _ = m.clip(level, rng.integers(-3, 4, (*grid, m.channels)))
            lv, back = m.decode(m.encode(level, q), grid)
            assert lv == level and np.array_equal(back, q)


# --- contexts (entropy.bin version 2) -------------------------------------------------------------

def context_model(seed=0, levels=3, channels=6, grid=(2, 3), k=3):
    """K context tables per (level, channel) sharing one support; some channels degenerate."""
    rng = np.random.default_rng(seed)
    rows = []
    for lv in range(levels):
        row = []
        for c in range(channels):
            lo, n = -2 - (lv + c) % 3, 5 + 2 * ((lv + c) % 3)  # supports hold 0, as real ones do
            if (lv + c) % 4 == 3:
                row.append([FrequencyTable(lo, [1])] * k)
            else:
                row.append([FrequencyTable.from_counts(lo, rng.integers(0, 500, n)) for _ in range(k)])
        rows.append(row)
    return EntropyModel(rng.uniform(0.05, 2, (levels, channels)).astype(np.float32), rows, grid)


def test_context_rule_by_hand():
    from runtime.entropy import contexts

    # one position, channels 0..4; channel 2 is not coded (never counted)
    s = np.array([[[3, 0, 7, -1, 5]]])
    coded = np.array([True, True, False, True, True])
    # c=0: m=0 -> 0; c=1: m=1, z=1 -> min(3, 4*1//1)=3; c=2: m=2, z=1 -> 2; c=3: m=2, z=1 -> 2;
    # c=4: m=3, z=2 -> 4*2//3 = 2
    np.testing.assert_array_equal(contexts(s, coded, 4)[0, 0], [0, 3, 2, 2, 2])
    np.testing.assert_array_equal(contexts(s, coded, 1), np.zeros_like(s))


def test_context_entropy_bin_round_trip_and_layout():
    m = context_model()
    data = m.to_bytes()
    assert data[:4] == b"GCEM" and data[4] == 2 and data[14] == 3
    back = EntropyModel.from_bytes(data)
    assert back == m and back.contexts == 3 and back.to_bytes() == data
    coded = sum(t.n for row in m.tables for t in row if not t.degenerate)
    assert len(data) == 15 + 4 * 18 + 4 * 18 + 2 * 3 * coded


def test_context_entropy_bin_corruption_raises_only_codec_error():
    data = context_model().to_bytes()
    for n in range(len(data)):
        with pytest.raises(CodecError):
            EntropyModel.from_bytes(data[:n])
    with pytest.raises(CodecError, match="more than"):
        EntropyModel.from_bytes(data + b"\0\0")
    with pytest.raises(CodecError, match="contexts"):
        EntropyModel.from_bytes(data[:14] + b"\x01" + data[15:])
    rng = np.random.default_rng(1)
    for _ in range(1000):
        d = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            d[int(rng.integers(0, len(d)))] = int(rng.integers(0, 256))
        try:
            m = EntropyModel.from_bytes(bytes(d))
            for level in range(m.levels):
                m.context_tables[level]  # tables are built lazily: that must not fail either
        except CodecError:
            pass
    with pytest.raises(CodecError, match="share one support"):
        EntropyModel(np.ones((1, 1), np.float32), [[[FrequencyTable.uniform(3), FrequencyTable.uniform(4)]]])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2))
def test_context_model_round_trip_and_bits(seed, level):
    m = EntropyModel.from_bytes(context_model(seed % 5).to_bytes())
    rng = np.random.default_rng(seed)
    symbols, _ = m.clip(level, rng.integers(-9, 10, m.shape) * rng.integers(0, 2, m.shape))
    payload = m.encode(level, symbols)
    got_level, got = m.decode(payload)
    assert got_level == level
    np.testing.assert_array_equal(got, symbols)
    ctx = m.contexts_of(level, symbols)
    direct = (16 - math.log2(m.level_table.freqs[level])) + sum(
        m.context_tables[level][c][int(ctx[h, w, c])].costs()[int(symbols[h, w, c]) - m.tables[level][c].lo]
        for h in range(m.grid[0]) for w in range(m.grid[1]) for c in range(m.channels)
        if not m.tables[level][c].degenerate)
    assert m.bits(level, symbols) == pytest.approx(direct)
    assert len(payload) <= math.ceil(direct / 8) + 1
    costs = m.symbol_costs(level, symbols)
    assert costs.shape == (*m.shape, max(t.n for t in m.tables[level]))


def test_context_extremes_of_every_channel_and_context():
    """±the clip of every channel, under every context each channel can have."""
    m = context_model(2, channels=8, grid=(3, 4), k=4)
    rng = np.random.default_rng(0)
    for level in range(m.levels):
        lo, hi = m.support(level), m._hi[level]
        seen = set()
        for p in np.linspace(0, 1, 200):  # from all zeros (context 0) to all nonzero (K - 1)
            s = np.where(rng.random(m.shape) < p, np.where(rng.random(m.shape) < 0.5, lo, hi), 0)
            s, _ = m.clip(level, s)
            got_level, got = m.decode(m.encode(level, s))
            assert got_level == level
            np.testing.assert_array_equal(got, s)
            ctx = m.contexts_of(level, s)
            seen |= {(c, int(k)) for c in np.flatnonzero(m.coded(level)) for k in np.unique(ctx[..., c])}
        for before, c in enumerate(np.flatnonzero(m.coded(level))):  # every context the rule allows
            k = m.contexts
            reachable = {0} if before == 0 else {min(k - 1, k * z // before) for z in range(before + 1)}
            assert {j for cc, j in seen if cc == c} == reachable


def test_contexts_save_bits_when_activity_is_shared():
    """Latents whose spread varies by position (as real ones do): the export's context tables must
    code them in fewer bits than one table per channel (the reason contexts exist)."""
    from export.onnx import entropy_parameters

    rng = np.random.default_rng(0)
    scale = rng.choice([0.2, 3.0], size=(3000, 2, 2, 1))
    y = rng.standard_normal((3000, 2, 2, 16)) * scale
    gains = np.ones((1, 16), np.float32)
    plain = entropy_parameters(y[:2000], gains, gains, 1)
    ctx = entropy_parameters(y[:2000], gains, gains, 8)
    q = np.rint(y[2000:]).astype(np.int64)
    q = np.clip(q, plain.support(0), plain._hi[0])
    assert np.all(ctx.support(0) == plain.support(0))
    assert ctx.bits(0, q).sum() < 0.9 * plain.bits(0, q).sum()
    assert sum(len(ctx.encode(0, s)) for s in q[:50]) < sum(len(plain.encode(0, s)) for s in q[:50])


# --- version 3: parametric tables ------------------------------------------------------------------

def _param_model(seed=0, levels=4, channels=7, k=4, segments=16, precision=PRECISION):
    from export.onnx import channel_knots

    rng = np.random.default_rng(seed)
    y = rng.laplace(0, 1, (400, channels)) * np.linspace(0.5, 3, channels)
    knots = channel_knots(y[:, None, None, :], segments)
    steps = rng.integers(2000, 60000, (levels, channels))
    coded = rng.random((levels, channels)) > 0.25
    params = rng.integers(0, 256, (levels, channels, k))
    inv = rng.uniform(0.05, 2, (levels, channels)).astype(np.float32)
    return EntropyModel.from_parameters(inv, steps, knots, coded, params, (3, 2), precision)


def test_parametric_constants_are_their_formulas():
    """The integer constants of docs/bitstream.md section 6, from the formulas the spec gives."""
    from runtime import entropy as em

    assert em.LOG2_THRESHOLDS == tuple(math.ceil(2 ** 15 * 2 ** (j / 16)) for j in range(1, 16))
    assert em.POW2_STEPS == tuple(round(2 ** 30 * 2 ** (-j / 16)) for j in range(16))
    assert em.ALPHA16[em.NEUTRAL_PARAM >> 4] == 16 and em.ZERO16[em.NEUTRAL_PARAM & 15] == 0
    assert len(set(em.ALPHA16)) == len(set(em.ZERO16)) == 16


@given(st.integers(1, 2 ** 52))
@settings(max_examples=300, deadline=None)
def test_log2_16_is_the_floor_of_16_log2_for_small_mantissas(x):
    """lg(x) = 16·(bits − 1) + the thresholds the 16-bit mantissa reaches: floor(16·log2(u·2^(b−15)))
    of the truncated mantissa u (exact integer check: 2^t ≤ u^16 · 2^(16·(b−15)))."""
    from runtime.entropy import log2_16

    b = x.bit_length() - 1
    u = x << (15 - b) if b <= 15 else x >> (b - 15)
    t = int(log2_16(np.array([x]))[0])
    scale = 16 * (b - 15)
    value = u ** 16 * 2 ** scale if scale >= 0 else None
    if value is not None:
        assert 2 ** t <= value < 2 ** (t + 1)
    else:  # x < 2**15: u = x · 2^(15 − b) exactly
        assert 2 ** (t - scale) <= u ** 16 < 2 ** (t + 1 - scale)


def test_counts_to_freqs_is_from_counts():
    from runtime.entropy import counts_to_freqs

    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        counts = rng.integers(0, 2 ** int(rng.integers(1, 31)), (3, n))
        counts[:, int(rng.integers(n))] += 1
        counts[0, : n // 2] = counts[0, n // 2]  # ties in the remainders
        p = int(rng.integers(max(6, n.bit_length() + 1), 17))
        f = counts_to_freqs(counts, p)
        for row, got in zip(counts, f):
            assert list(FrequencyTable.from_counts(0, row.tolist(), p).freqs) == got.tolist()


def test_parametric_model_round_trips_and_codes():
    """to_bytes / from_bytes give the same model and bytes; every derived table sums to 2^p with
    no zero; latents at every level decode to themselves; the neutral byte is the marginal."""
    from runtime import entropy as em

    m = _param_model(precision=14)
    data = m.to_bytes()
    assert data[4] == 3
    back = EntropyModel.from_bytes(data)
    assert back == m and back.to_bytes() == data
    rng = np.random.default_rng(2)
    for level in range(m.levels):
        for ctx in m.context_tables[level]:
            for t in ctx:
                assert t.degenerate or (sum(t.freqs) == 1 << 14 and min(t.freqs) >= 1)
        s, _ = m.clip(level, rng.integers(-40, 40, m.shape))
        assert back.decode(m.encode(level, s))[1].tolist() == s.tolist()
    knots, steps = m._parameters[1], m._parameters[0]
    level, c = (int(v) for v in np.argwhere(m._parameters[2])[0])
    lo, hi = int(m._lo[level, c]), int(m._hi[level, c])
    masses = em.marginal_masses(knots[c], int(steps[level, c]), lo, hi)
    assert masses.sum() == (knots.shape[1] - 1) << 16 and masses.min() >= 0
    neutral = em.parametric_freqs(knots[c], int(steps[level, c]), lo, hi, np.array([em.NEUTRAL_PARAM]))[0]
    marginal = FrequencyTable.from_counts(lo, masses.tolist())
    # the marginal, through 1/16-bit code lengths: within 5 % on every symbol holding mass
    big = masses > masses.sum() // 1000
    np.testing.assert_allclose(neutral[big], np.asarray(marginal.freqs)[big], rtol=0.05)


def test_parametric_entropy_bin_survives_mutations():
    """Mutated version-3 files either parse or raise CodecError, never anything else."""
    data = bytearray(_param_model(seed=3).to_bytes())
    rng = np.random.default_rng(4)
    for _ in range(400):
        bad = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(len(bad)))] = int(rng.integers(256))
        if rng.random() < 0.2:
            bad = bad[: int(rng.integers(len(bad)))]
        try:
            m = EntropyModel.from_bytes(bytes(bad))
            m.decoding_rows(int(rng.integers(m.levels)))
        except CodecError:
            pass


def test_fitted_parameters_code_near_the_empirical_entropy():
    """export.onnx.entropy_parameters on latents whose spread varies by position: the held-out
    symbols cost within 3 % of the empirical (training-histogram) entropy with one context, and
    contexts beat that."""
    from export.onnx import entropy_parameters, quantize_latents

    rng = np.random.default_rng(0)
    scale = rng.choice([0.3, 3.0], size=(6000, 2, 2, 1))
    y = rng.laplace(0, 1, (6000, 2, 2, 12)) * scale
    gains = np.full((2, 12), [[1.0], [2.5]], np.float32)
    plain = entropy_parameters(y[:4000], gains, 1 / gains, 1)
    ctx = entropy_parameters(y[:4000], gains, 1 / gains, 8)
    for level in range(2):
        q, _ = plain.clip(level, quantize_latents(y[4000:], gains[level]))
        train, _ = plain.clip(level, quantize_latents(y[:4000], gains[level]))
        entropy = 0.0
        for c in range(12):
            h = np.bincount(train[..., c].ravel() - plain.support(level)[c]).astype(float)
            p = h / h.sum()
            v = q[..., c].ravel() - plain.support(level)[c]
            entropy += -np.log2(np.maximum(p[np.minimum(v, len(p) - 1)], 1e-9)).sum()
        assert plain.bits(level, q).sum() < 1.03 * entropy
        assert ctx.bits(level, q).sum() < 0.97 * plain.bits(level, q).sum()
