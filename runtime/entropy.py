"""THE entropy coder of gancodec: a byte-oriented range coder with integer frequency tables.

docs/bitstream.md is this module's twin: it specifies every step below in exact integer
arithmetic so that another implementation (the browser decoder in demo/web/) decodes the same
symbols. Keep the two in step.

Coder (a Subbotin-style range coder with carry propagation):

* state: ``low`` (32 bits plus a carry), ``range`` (32 bits), start ``low = 0``,
  ``range = 0xFFFFFFFF``;
* a symbol with cumulative frequency ``cum`` and frequency ``freq`` out of ``2**precision``:
  ``r = range >> precision; low += r * cum; range = r * freq``; a ``low`` that reaches
  ``2**32`` adds 1 to the bytes already written (carry); then, while ``range < 2**24``, the top
  byte of ``low`` is written and ``low`` and ``range`` are shifted left by 8 bits;
* flush: at most ONE byte (``range >= 2**24`` after normalisation, so the final interval holds a
  multiple of ``2**24``), none when ``0`` or ``2**32`` lies in the interval; trailing zero bytes
  are then trimmed, because the decoder reads zeros past the end of its input.

Frequency tables sum to ``2**precision`` (PRECISION = 16 by default) and every symbol that can
be coded has a frequency >= 1. A table with a single symbol is *degenerate*: it codes nothing.

Per-bundle model (:class:`EntropyModel`, stored as ``entropy.bin``): for each rate level and
latent channel, an inverse gain (the dequantization step) and K frequency tables, one per
*context* (K = 1: no context). The context of a symbol is an integer function of symbols already
decoded (:func:`contexts`): how many of the earlier coded channels at the same latent position
are nonzero, as a fraction in K buckets. Detailed positions light up many channels, flat ones
few, so the context predicts each channel's spread (a hyperprior made of integers; −4 % of the
bits at 35 B, −9 % at 150 B on the airplane bundle with K = 8; K = 16, what the export writes, a further
−0.8 % at 40 B and −0.3 % at 175 B).

numpy and the standard library only: this is on the decode path.
"""

from __future__ import annotations

import itertools
import math
import struct
from bisect import bisect_right
from collections.abc import Iterable, Sequence

import numpy as np

from runtime.errors import CodecError

PRECISION = 16  # default frequency-table precision: totals are 2**16
MAX_PRECISION = 16  # frequencies must fit uint16 in entropy.bin and r = range >> p must stay >= 2**8
TOP = 1 << 24  # normalisation threshold: range is kept >= 2**24 between symbols
MASK32 = (1 << 32) - 1
CARRY = 1 << 32

# entropy.bin limits (a file is never trusted: every field is checked against these first)
ENTROPY_MAGIC = b"GCEM"
ENTROPY_VERSION = 3  # the newest: parametric tables (what export writes); versions 1 (K = 1) and 2
# (K stored frequency lists per context) are still read and written for models built from lists
MAX_CONTEXTS = 64
MAX_LEVELS = 256
MAX_CHANNELS = 4096
MAX_GRID_SIDE = 1024
MAX_SYMBOLS = 1 << 22  # H * W * C: a 2048x2048 image on a stride-8 grid of 64 channels
MAX_ENTROPY_BYTES = 64 << 20
_ENTROPY_HEADER = struct.Struct("<4sBBHHHH")  # magic, version, precision, L, C, H, W
_CONTEXTS_FIELD = struct.Struct("<B")  # versions 2 and 3, after the header: K contexts
_SEGMENTS_FIELD = struct.Struct("<H")  # version 3, after K: Q, the CDF segments per channel


# --- frequency tables ----------------------------------------------------------------------------

class FrequencyTable:
    """Integer frequencies of the symbols ``lo .. lo + n - 1``, summing to ``2**precision``.

    A table with one symbol (``n == 1``, whatever its one frequency says) is degenerate: that
    symbol is certain and coding it costs nothing (no coder call at all); degenerate tables are
    equal whatever their precision. Otherwise every frequency is >= 1.
    """

    __slots__ = ("lo", "freqs", "precision", "cum", "_costs")

    def __init__(self, lo: int, freqs: Sequence[int], precision: int = PRECISION):
        freqs = tuple(int(f) for f in freqs)
        if not isinstance(precision, (int, np.integer)) or not 1 <= precision <= MAX_PRECISION:
            raise CodecError(f"frequency precision must be 1..{MAX_PRECISION} bits, got {precision!r}")
        if not freqs:
            raise CodecError("a frequency table needs at least one symbol")
        total = 1 << int(precision)
        if len(freqs) > 1 and (min(freqs) < 1 or sum(freqs) != total):
            raise CodecError(f"frequencies must be >= 1 and sum to 2**{precision} "
                             f"(got min {min(freqs)}, sum {sum(freqs)})")
        self.lo = int(lo)
        self.precision = int(precision)
        self.freqs = freqs if len(freqs) > 1 else (total,)
        cum = [0]
        for f in self.freqs:
            cum.append(cum[-1] + f)
        self.cum = cum  # cum[i] = sum of freqs[:i]; cum[n] = 2**precision
        self._costs = None

    @property
    def n(self) -> int:
        """Number of symbols."""
        return len(self.freqs)

    @property
    def hi(self) -> int:
        """Largest symbol (inclusive)."""
        return self.lo + len(self.freqs) - 1

    @property
    def degenerate(self) -> bool:
        """True when the table has one symbol, which then costs 0 bits and is never coded."""
        return len(self.freqs) == 1

    def costs(self) -> np.ndarray:
        """Ideal code length in bits of each symbol, ``precision - log2(freq)`` (0 if degenerate)."""
        if self._costs is None:
            f = np.asarray(self.freqs, dtype=np.float64)
            self._costs = np.zeros(1) if self.degenerate else self.precision - np.log2(f)
        return self._costs

    def _key(self) -> tuple:
        return (self.lo,) if self.degenerate else (self.lo, self.freqs, self.precision)

    def __eq__(self, other) -> bool:
        return isinstance(other, FrequencyTable) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"FrequencyTable(lo={self.lo}, n={self.n}, precision={self.precision})"

    @classmethod
    def uniform(cls, n: int, lo: int = 0, precision: int = PRECISION) -> FrequencyTable:
        """Near-uniform table over ``n`` symbols: each gets ``2**p // n``, and the first
        ``2**p % n`` symbols one more (integer-only, so both sides build the same table)."""
        n = int(n)
        total = 1 << precision
        if not 1 <= n <= total:
            raise CodecError(f"a uniform table needs 1..{total} symbols, got {n}")
        base, extra = divmod(total, n)
        return cls(lo, [base + 1 if i < extra else base for i in range(n)], precision)

    @classmethod
    def from_counts(cls, lo: int, counts: Sequence[int], precision: int = PRECISION) -> FrequencyTable:
        """Frequencies from nonnegative integer counts (a histogram), integer arithmetic only.

        With ``n`` symbols, ``T = 2**precision`` and ``S = sum(counts)`` (see docs/bitstream.md):

        1. ``n == 1``: the degenerate table. ``S == 0``: :meth:`uniform`.
        2. ``freq[i] = 1 + counts[i] * (T - n) // S`` (every symbol keeps frequency >= 1);
        3. the ``R = T - sum(freq)`` (< n) missing units go, one each, to the symbols with the
           largest remainders ``counts[i] * (T - n) % S``, ties to the smaller index.
        """
        counts = [int(c) for c in counts]
        n = len(counts)
        total = 1 << int(precision)
        if n == 0 or n > total:
            raise CodecError(f"a table needs 1..{total} symbols at precision {precision}, got {n}")
        if min(counts) < 0:
            raise CodecError("counts must be nonnegative")
        if n == 1:
            return cls(lo, [total], precision)
        s = sum(counts)
        if s == 0:
            return cls.uniform(n, lo, precision)
        spare = total - n
        freqs = [1 + c * spare // s for c in counts]
        missing = total - sum(freqs)
        order = sorted(range(n), key=lambda i: (-(counts[i] * spare % s), i))
        for i in order[:missing]:
            freqs[i] += 1
        return cls(lo, freqs, precision)


# --- the range coder -----------------------------------------------------------------------------

class RangeEncoder:
    """Encode symbols one table at a time, then :meth:`finish` for the bytes.

    >>> t = FrequencyTable.from_counts(-2, [1, 4, 10, 4, 1])
    >>> enc = RangeEncoder(); enc.encode_many([0, 1, -2, 2], t); data = enc.finish()
    >>> RangeDecoder(data).decode_many(4, t)
    [0, 1, -2, 2]
    """

    def __init__(self):
        self._out = bytearray()
        self._low = 0
        self._range = MASK32
        self._finished = False

    def encode(self, symbol: int, table: FrequencyTable) -> None:
        """Code one symbol (nothing for a degenerate table; CodecError outside the table)."""
        self.encode_many((symbol,), table)

    def encode_many(self, symbols: Iterable[int], table: FrequencyTable) -> None:
        """Code every symbol of ``symbols`` with the same table."""
        self._encode_pairs(zip(symbols, itertools.repeat(table)))

    def encode_each(self, symbols: Sequence[int], tables: Sequence[FrequencyTable]) -> None:
        """Code ``symbols[k]`` with ``tables[k]`` for every k (a latent's order, one context each)."""
        if len(symbols) != len(tables):
            raise CodecError(f"{len(symbols)} symbols for {len(tables)} tables")
        self._encode_pairs(zip(symbols, tables))

    def _encode_pairs(self, pairs: Iterable[tuple[int, FrequencyTable]]) -> None:
        """Each (symbol, table) in turn, as its interval (nothing for a degenerate table); a symbol
        outside its table raises CodecError before anything of ``pairs`` is coded."""
        runs, precision, starts, freqs = [], None, [], []
        for s, table in pairs:
            lo, cum = table.lo, table.cum
            i, n = int(s) - lo, len(cum) - 1
            if not 0 <= i < n:
                raise CodecError(f"symbol {int(s)} outside the table's support [{lo}, {lo + n - 1}]")
            if n == 1:  # degenerate: certain symbol, 0 bits
                continue
            if table.precision != precision:
                runs.append((starts, freqs, precision))
                precision, starts, freqs = table.precision, [], []
            starts.append(cum[i])
            freqs.append(cum[i + 1] - cum[i])
        runs.append((starts, freqs, precision))
        for starts, freqs, precision in runs:
            self._code_intervals(starts, freqs, precision)

    def _code_intervals(self, starts: Sequence[int], freqs: Sequence[int], precision: int) -> None:
        """The coder's one loop: code each interval [start, start + freq) out of 2**precision
        (the callers have checked them: freq >= 1, start + freq <= 2**precision)."""
        if self._finished:
            raise CodecError("the encoder is already finished")
        out = self._out
        low, rng = self._low, self._range
        for c, f in zip(starts, freqs):
            r = rng >> precision
            low += r * c
            rng = r * f
            if low >= CARRY:
                low -= CARRY
                _propagate_carry(out)
            while rng < TOP:
                out.append(low >> 24)
                low = (low << 8) & MASK32
                rng <<= 8
        self._low, self._range = low, rng

    def finish(self) -> bytes:
        """Flush (0 or 1 byte), trim trailing zero bytes and return the coded bytes."""
        if not self._finished:
            self._finished = True
            low, rng, out = self._low, self._range, self._out
            if low + rng > CARRY:  # 2**32 lies in [low, low + range): carry, no byte
                _propagate_carry(out)
            elif low != 0:  # the smallest multiple of 2**24 >= low lies in the interval
                out.append((low + TOP - 1) >> 24)
            while out and out[-1] == 0:
                out.pop()
        return bytes(self._out)


def _propagate_carry(out: bytearray) -> None:
    i = len(out) - 1
    while i >= 0 and out[i] == 0xFF:
        out[i] = 0
        i -= 1
    if i < 0:  # impossible for a well-formed coder: every interval nests in the first one
        raise AssertionError("range coder carry out of the first byte")
    out[i] += 1


class RangeDecoder:
    """Decode symbols from coded bytes; reads zero bytes past the end of ``data``.

    Call :meth:`finish` after the last symbol to check that ``data`` held nothing the encoder
    could not have written (bytes past the flush, trailing zeros).
    """

    def __init__(self, data: bytes):
        self._data = bytes(data)
        self._pos = 4  # the first 4 bytes are read by the constructor
        self._shifts = 0  # normalisation steps = bytes the encoder wrote before its flush
        padded = self._data[:4] + bytes(max(0, 4 - len(self._data)))
        self._code = int.from_bytes(padded, "big")  # offset of the code value from low
        self._range = MASK32

    def decode(self, table: FrequencyTable) -> int:
        """Decode one symbol with ``table``."""
        return self.decode_many(1, table)[0]

    def decode_many(self, count: int, table: FrequencyTable) -> list[int]:
        """Decode ``count`` symbols, all with ``table``; CodecError on an impossible code value
        (one channel of ``count`` positions with a single context: the one decoding loop)."""
        rows = table.lo if table.n == 1 else [(table.cum, table.lo, table.precision)]
        return self.decode_with_contexts([rows], count, 1)

    def decode_with_contexts(self, channels: Sequence, positions: int, k: int) -> list[int]:
        """Decode a latent channel by channel, ``positions`` symbols each, every symbol with the
        table of its context (:func:`contexts`; kept inline here, since this is the decoder's hot
        loop). ``channels``: per channel, its K tables as ``(cum, lo, precision)`` tuples
        (:meth:`EntropyModel.decoding_rows`; K = 1 works too), or the int ``lo`` for a degenerate
        channel (its one symbol, never counted). Returns the symbols, channel-major."""
        data, pos, shifts = self._data, self._pos, self._shifts
        size = len(data)
        code, rng = self._code, self._range
        out = []
        append = out.append
        nonzero = [0] * positions
        before = 0
        for rows in channels:
            if isinstance(rows, int):  # degenerate channel: its symbol, never counted
                out.extend([rows] * positions)
                continue
            for j in range(positions):
                ctx = (k * nonzero[j]) // before if before else 0
                cum, lo, precision = rows[ctx if ctx < k else k - 1]
                r = rng >> precision
                v = code // r
                if v >= cum[-1]:
                    raise CodecError("entropy decoding failed: code value outside the table (corrupted file)")
                i = bisect_right(cum, v) - 1
                c = cum[i]
                code -= r * c
                rng = r * (cum[i + 1] - c)
                while rng < TOP:
                    code = ((code << 8) | (data[pos] if pos < size else 0)) & MASK32
                    pos += 1
                    shifts += 1
                    rng <<= 8
                symbol = lo + i
                append(symbol)
                if symbol:
                    nonzero[j] += 1
            before += 1
        self._code, self._range, self._pos, self._shifts = code, rng, pos, shifts
        return out

    def finish(self) -> None:
        """Refuse input the encoder cannot have produced: more bytes than its normalisation
        steps plus the 1-byte flush, or a trailing zero byte (the encoder trims those)."""
        if len(self._data) > self._shifts + 1:
            raise CodecError(f"coded data has {len(self._data) - self._shifts - 1} byte(s) past "
                             "its end (corrupted file)")
        if self._data and self._data[-1] == 0:
            raise CodecError("coded data ends with a zero byte, which no encoder writes (corrupted file)")


# --- contexts ---------------------------------------------------------------------------------------

def contexts(symbols, coded, k: int, xp=np):
    """The context of every symbol of (..., H, W, C) latents, integer arithmetic only.

    ``coded`` (C,) bool: the channels whose tables are not degenerate at this level (or any shape
    that broadcasts against the symbols, channels last: training's (N, 1, 1, C) masks of each
    image's level). For channel c at position (h, w), with m = the number of coded channels before
    c and z = how many of them hold a nonzero symbol at (h, w): context = 0 if m == 0, else
    min(k − 1, (k · z) // m). Channels are decoded in order, so the decoder knows z and m before it
    decodes channel c.

    The one definition of the rule: ``xp`` is numpy (the coder) or ``keras.ops`` (training, on
    integer-valued float tensors of any backend, ``coded`` a numpy array or a 0/1 tensor); only
    functions both share are used.
    """
    if k <= 1:
        return xp.zeros(xp.shape(symbols), "int64")
    if xp is np:  # a bool array: the coder's fast path
        coded = np.asarray(coded, bool)
        nonzero = (np.asarray(symbols) != 0) & coded
        m = np.cumsum(coded, axis=-1, dtype=np.int64) - coded
    else:
        coded = xp.cast(xp.convert_to_tensor(coded), "int64")
        nonzero = xp.where(xp.logical_and(xp.not_equal(symbols, 0), xp.not_equal(coded, 0)), 1, 0)
        m = xp.subtract(xp.cumsum(coded, axis=-1), coded)
    z = xp.subtract(xp.cumsum(nonzero, axis=-1, dtype="int64"), nonzero)
    return xp.where(m > 0, xp.minimum(k - 1, (k * z) // xp.maximum(m, 1)), 0)


DEGENERATE_FRACTION = 1e-4  # a channel nonzero in fewer training latents than this is not coded


def coded_channels(symbols: np.ndarray) -> np.ndarray:
    """(C,) bool: the channels of (..., C) training symbols at one level that the file codes (their
    table is not degenerate): nonzero in more than :data:`DEGENERATE_FRACTION` of the positions.
    Export builds the tables with it, and training prices the rate of exactly these channels."""
    flat = np.asarray(symbols).reshape(-1, np.shape(symbols)[-1])
    return np.count_nonzero(flat, axis=0) > DEGENERATE_FRACTION * len(flat)


# --- parametric tables (entropy.bin version 3) -----------------------------------------------------
#
# A version-3 entropy.bin stores no frequency lists: per channel, the quantiles of its latent
# (Q + 1 knots of a piecewise-linear CDF, shared by every level), a bitmap of the coded (level,
# channel) cells, each coded cell's quantization step, and one byte per (level, coded channel,
# reachable context): a temperature and a zero weight. Every table is derived from these integers by integer arithmetic only (docs/
# bitstream.md section 6), so every platform derives the same frequencies.

KNOT_BITS = 12  # knots are stored in units of 2**-12 of the latent
EDGE_BITS = 16  # knots, edges and quantization steps are compared in units of 2**-16
SEGMENT_BITS = 16  # each of the Q CDF segments holds 2**16 units of probability mass
MAX_KNOT = 1 << 27  # |knot| in units of 2**-12 (32768 in latent units): keeps every product < 2**53
MAX_SEGMENTS = 4096
MAX_STEP = (1 << 24) - 1  # a coded cell's quantization step (uint24, units of 2**-16: below 256)
MAX_KNOT_STEP = (1 << 21) - 1  # a knot's step from the one before (a varint of at most 3 bytes)
LOG_STEPS = 16  # code lengths in 1/16 bit
# LOG2_THRESHOLDS[i] = ceil(2**15 * 2**((i + 1) / 16)): the fractional sixteenths of log2
LOG2_THRESHOLDS = (34219, 35734, 37316, 38968, 40694, 42495, 44377, 46341, 48393, 50536, 52773,
                   55109, 57549, 60097, 62758)
# POW2_STEPS[i] = round(2**30 * 2**(-i / 16)): 2**(-t / 16) in units of 2**-30
POW2_STEPS = (1073741824, 1028218693, 984625594, 942880699, 902905651, 864625413, 827968132,
              792865000, 759250125, 727060411, 696235434, 666717336, 638450708, 611382493,
              585461881, 560640218)
# a context's parameter byte: high nibble a -> temperature ALPHA16[a] / 16, low nibble b -> the
# zero symbol's code length shortened by ZERO16[b] / 16 bit
ALPHA16 = (5, 6, 7, 8, 9, 10, 12, 14, 16, 19, 22, 26, 30, 35, 41, 48)
ZERO16 = (-28, -24, -20, -16, -12, -8, -4, 0, 4, 8, 12, 16, 20, 24, 28, 32)
NEUTRAL_PARAM = (ALPHA16.index(16) << 4) | ZERO16.index(0)  # the marginal itself (0x87)


def parametric_support(knots: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of every (level, channel): the first and last knot divided by the cell's
    quantization step and rounded to a symbol (half up), widened by one. ``knots`` (C, Q + 1) in
    units of 2**-12, ``steps`` (L, C) in units of 2**-16 (>= 1 where it matters)."""
    steps = np.maximum(np.asarray(steps, np.int64), 1)
    x0 = np.asarray(knots[:, 0], np.int64) << (EDGE_BITS - KNOT_BITS)
    xq = np.asarray(knots[:, -1], np.int64) << (EDGE_BITS - KNOT_BITS)
    return (2 * x0 + steps) // (2 * steps) - 1, (2 * xq + steps) // (2 * steps) + 1


def log2_16(x: np.ndarray) -> np.ndarray:
    """``floor(16 * log2(x))`` as the spec defines it for integers x >= 1 (< 2**53): 16 times the
    bit length minus one, plus how many LOG2_THRESHOLDS the 16-bit mantissa reaches."""
    x = np.asarray(x, np.int64)
    b = np.zeros(x.shape, np.int64)
    for shift in (32, 16, 8, 4, 2, 1):  # b = bit_length(x) - 1
        big = (x >> (b + shift)) > 0
        b = np.where(big, b + shift, b)
    mant = np.where(b <= 15, x << np.maximum(15 - b, 0), x >> np.maximum(b - 15, 0))
    frac = np.searchsorted(np.asarray(LOG2_THRESHOLDS, np.int64), mant, side="right")
    return 16 * b + frac


def marginal_masses(knots_c: np.ndarray, step: int, lo: int, hi: int) -> np.ndarray:
    """Probability mass of each symbol lo..hi of one (level, channel) under the channel's
    piecewise-linear CDF, in units of 2**-16 per segment (they sum to Q * 2**16)."""
    x = np.asarray(knots_c, np.int64) << (EDGE_BITS - KNOT_BITS)
    q = len(x) - 1
    k = np.arange(lo + 1, hi + 1, dtype=np.int64)
    e = ((2 * k - 1) * step) // 2  # the lower edge of symbol k
    i = np.searchsorted(x, e, side="right") - 1  # the largest i with x[i] <= e
    inside = (i >= 0) & (i < q)
    ic = np.clip(i, 0, q - 1)
    width = x[ic + 1] - x[ic]
    part = ((e - x[ic]) << SEGMENT_BITS) // np.where(inside, width, 1)
    cdf = np.where(i < 0, 0, np.where(i >= q, q << SEGMENT_BITS, (ic << SEGMENT_BITS) + part))
    return np.diff(np.concatenate([[0], cdf, [q << SEGMENT_BITS]]))


def parametric_freqs(knots_c: np.ndarray, step: int, lo: int, hi: int, params: np.ndarray,
                     precision: int = PRECISION) -> np.ndarray:
    """(P, n) frequencies of the symbols lo..hi of one coded (level, channel) for each parameter
    byte of ``params``: the marginal's masses, tempered, then :meth:`FrequencyTable.from_counts`."""
    masses = marginal_masses(knots_c, step, lo, hi)
    return counts_to_freqs(tempered_counts(masses, lo, params), precision)


def encode_varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 (7 bits a byte, low first, high bit = more follows) of each value."""
    out = bytearray()
    for v in np.asarray(values, np.int64).tolist():
        while v >= 0x80:
            out.append(0x80 | (v & 0x7F))
            v >>= 7
        out.append(v)
    return bytes(out)


def decode_varints(data: bytes, pos: int, count: int) -> tuple[np.ndarray, int]:
    """``count`` LEB128 values from ``data[pos:]`` of at most 3 bytes each, none overlong (a last
    byte of 0 after others); returns (values, the position after them). CodecError otherwise."""
    out = np.empty(count, np.int64)
    size = len(data)
    for i in range(count):
        v = shift = 0
        for length in range(1, 4):
            if pos >= size:
                raise CodecError("entropy.bin truncated inside the knots")
            byte = data[pos]
            pos += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                if byte == 0 and length > 1:
                    raise CodecError("entropy.bin: an overlong knot step")
                break
        else:
            raise CodecError("entropy.bin: a knot step longer than 3 bytes")
        out[i] = v
    return out, pos


def counts_to_freqs(counts: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """:meth:`FrequencyTable.from_counts` of every row of (R, n) integer counts at once (n >= 2,
    every row sum > 0): the same integers."""
    counts = np.asarray(counts, np.int64)
    n = counts.shape[-1]
    total = 1 << precision
    s = counts.sum(axis=-1, keepdims=True)
    scaled = counts * (total - n)
    freqs = 1 + scaled // s
    missing = total - freqs.sum(axis=-1, keepdims=True)
    order = np.argsort(-(scaled % s), axis=-1, kind="stable")  # largest remainder first, ties by index
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[None, :].repeat(len(order), 0), axis=-1)
    return freqs + (rank < missing)


def tempered_counts(masses: np.ndarray, lo: int, params: np.ndarray) -> np.ndarray:
    """(P, n) integer weights of the symbols lo.. for each parameter byte of ``params``:
    ``2**(-t / 16)`` (units 2**-30) of the tempered code length t (spec section 6)."""
    masses = np.asarray(masses, np.int64)
    total = int(masses.sum())
    length = log2_16(np.asarray(total + 1)) - log2_16(masses + 1)  # code length in 1/16 bit, >= 0
    params = np.asarray(params, np.int64)
    alpha = np.asarray(ALPHA16, np.int64)[params >> 4][:, None]
    zero = np.asarray(ZERO16, np.int64)[params & 15][:, None]
    t = (alpha * length[None, :]) >> 4
    if lo <= 0 < lo + len(masses):
        t[:, -lo] -= zero[:, 0]
    t -= t.min(axis=1, keepdims=True)
    shift = t >> 4
    return np.where(shift <= 30, np.asarray(POW2_STEPS, np.int64)[t & 15] >> np.minimum(shift, 30), 0)


def reachable_mask(coded: np.ndarray, k: int) -> np.ndarray:
    """(L, C, K) bool: the contexts each coded (level, channel) can have (the stored parameters)."""
    coded = np.asarray(coded, bool)
    before = np.cumsum(coded, axis=1) - coded
    rows = np.array([np.isin(np.arange(k), reachable_contexts(k, m)) for m in range(coded.shape[1])], bool)
    return rows[before] & coded[..., None]


def reachable_contexts(k: int, m: int) -> list[int]:
    """The contexts a channel can have when ``m`` coded channels precede it (:func:`contexts`)."""
    if k <= 1 or m == 0:
        return [0]
    return sorted({min(k - 1, (k * z) // m) for z in range(m + 1)})


# --- the per-bundle model --------------------------------------------------------------------------

class _LazyRows(Sequence):
    """Per-level rows of tables built on first use (a version-2 entropy.bin holds tens of thousands
    of tables, already checked when parsed; decoding a file needs one level's)."""

    def __init__(self, count: int, build):
        self._rows, self._build = [None] * count, build

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, level):
        if isinstance(level, slice):
            return [self[i] for i in range(*level.indices(len(self)))]
        if self._rows[level] is None:
            self._rows[level] = self._build(level)
        return self._rows[level]

    def __eq__(self, other) -> bool:
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))


class EntropyModel:
    """Inverse gains and frequency tables of one bundle, per rate level, latent channel and context.

    ``inv_gains[level, c]`` dequantizes channel ``c`` at ``level``:
    ``y_hat[h, w, c] = float32(symbol) * inv_gains[level, c]`` in float32.
    ``context_tables[level][c]`` holds the K tables of channel ``c`` at ``level``, one per context
    (:func:`contexts`); they share one support, and ``tables[level][c]`` is the first of them (the
    channel's only table when K = 1). ``grid = (H, W)``: the latent is an (H, W, C) array of
    integer symbols.

    ``tables``: per level and channel, a :class:`FrequencyTable` (K = 1) or a sequence of K.
    """

    def __init__(self, inv_gains: np.ndarray, tables: Sequence[Sequence], grid: tuple[int, int] = (1, 1)):
        inv_gains = np.array(inv_gains, dtype=np.float32)  # a private, read-only copy
        if inv_gains.ndim != 2:
            raise CodecError(f"inv_gains must be (levels, channels), got shape {inv_gains.shape}")
        levels, channels = inv_gains.shape
        h, w = (int(v) for v in grid)
        if not 1 <= levels <= MAX_LEVELS:
            raise CodecError(f"entropy model: {levels} levels (allowed 1..{MAX_LEVELS})")
        if not 1 <= channels <= MAX_CHANNELS:
            raise CodecError(f"entropy model: {channels} channels (allowed 1..{MAX_CHANNELS})")
        if not (1 <= h <= MAX_GRID_SIDE and 1 <= w <= MAX_GRID_SIDE and h * w * channels <= MAX_SYMBOLS):
            raise CodecError(f"entropy model: latent grid {h}x{w}x{channels} beyond the caps")
        if len(tables) != levels or any(len(row) != channels for row in tables):
            raise CodecError(f"entropy model: tables must be {levels} x {channels}")
        rows = [[(t,) if isinstance(t, FrequencyTable) else tuple(t) for t in row] for row in tables]
        k = len(rows[0][0])
        if not 1 <= k <= MAX_CONTEXTS:
            raise CodecError(f"entropy model: {k} contexts (allowed 1..{MAX_CONTEXTS})")
        for row in rows:
            for ctx in row:
                if len(ctx) != k or not all(isinstance(t, FrequencyTable) for t in ctx):
                    raise CodecError(f"entropy model: every channel needs {k} FrequencyTable objects")
                if any((t.lo, t.n) != (ctx[0].lo, ctx[0].n) for t in ctx):
                    raise CodecError("entropy model: the context tables of a channel must share one support")
                if not (-32768 <= ctx[0].lo <= 32767 and ctx[0].n <= 65535):
                    raise CodecError("entropy model: table support does not fit entropy.bin")
        precisions = {t.precision for row in rows for ctx in row for t in ctx if not t.degenerate}
        if len(precisions) > 1:
            raise CodecError("entropy model: all tables must share one precision")
        lo = np.array([[ctx[0].lo for ctx in row] for row in rows], dtype=np.int64)
        hi = np.array([[ctx[0].hi for ctx in row] for row in rows], dtype=np.int64)
        self._setup(inv_gains, rows, (h, w), k, precisions.pop() if precisions else PRECISION, lo, hi)

    def _setup(self, inv_gains, rows, grid, k, precision, lo, hi) -> None:
        if not np.all(np.isfinite(inv_gains)) or not np.all(inv_gains > 0):
            raise CodecError("entropy model: inverse gains must be finite and positive")
        self.precision = precision
        self.inv_gains = inv_gains
        self.inv_gains.setflags(write=False)
        self.context_tables = rows
        self.tables = _LazyRows(len(rows), lambda level: [ctx[0] for ctx in rows[level]])
        self.contexts = k
        self.grid = tuple(grid)
        self.levels, self.channels = inv_gains.shape
        self.level_table = FrequencyTable.uniform(self.levels)
        self._lo, self._hi = lo, hi
        self._coded = hi > lo  # (L, C): channels that are coded (not degenerate)
        self._cost_cache: dict[int, tuple[np.ndarray, int]] = {}
        self._rows_cache: dict[int, list] = {}
        self._cum_cache: dict[int, np.ndarray] = {}
        self._parameters = None  # (knots, coded, params) of a version-3 model

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape (H, W, C) of one latent's symbols at the bundle's own image size (the tables are
        position-free: :meth:`encode` and :meth:`decode` take any grid within the caps)."""
        return (*self.grid, self.channels)

    def __eq__(self, other) -> bool:
        return (isinstance(other, EntropyModel) and self.grid == other.grid
                and np.array_equal(self.inv_gains.view(np.uint32), other.inv_gains.view(np.uint32))
                and self.context_tables == other.context_tables)

    # -- serialisation --

    def to_bytes(self) -> bytes:
        """The entropy.bin bytes (layout in docs/bitstream.md): version 1 when K = 1, else 2."""
        h, w = self.grid
        if self.contexts == 1:
            parts = [_ENTROPY_HEADER.pack(ENTROPY_MAGIC, 1, self.precision, self.levels, self.channels, h, w),
                     self.inv_gains.astype("<f4").tobytes()]
            for row in self.tables:
                for t in row:
                    parts.append(struct.pack("<hH", t.lo, t.n))
                    if not t.degenerate:
                        parts.append(np.asarray(t.freqs, dtype="<u2").tobytes())
            return b"".join(parts)
        if self._parameters is not None:
            return self._parametric_bytes()
        parts = [_ENTROPY_HEADER.pack(ENTROPY_MAGIC, 2, self.precision, self.levels,
                                      self.channels, h, w),
                 _CONTEXTS_FIELD.pack(self.contexts), self.inv_gains.astype("<f4").tobytes()]
        supports = np.empty(self.levels * self.channels, [("lo", "<i2"), ("n", "<u2")])
        supports["lo"], supports["n"] = self._lo.ravel(), (self._hi - self._lo + 1).ravel()
        parts.append(supports.tobytes())
        for row in self.context_tables:
            for ctx in row:
                if not ctx[0].degenerate:
                    parts.append(np.asarray([t.freqs for t in ctx], dtype="<u2").tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> EntropyModel:
        """Parse entropy.bin, checking every field; CodecError (one line) on any problem."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CodecError("entropy.bin must be bytes")
        data = bytes(data)
        if len(data) > MAX_ENTROPY_BYTES:
            raise CodecError(f"entropy.bin too large ({len(data)} bytes)")
        if len(data) < _ENTROPY_HEADER.size:
            raise CodecError(f"entropy.bin truncated ({len(data)} bytes)")
        magic, version, precision, levels, channels, h, w = _ENTROPY_HEADER.unpack_from(data)
        if magic != ENTROPY_MAGIC:
            raise CodecError("not a gancodec entropy.bin (wrong magic)")
        if version not in (1, 2, ENTROPY_VERSION):
            raise CodecError(f"entropy.bin version {version} is not supported (this reads 1..{ENTROPY_VERSION})")
        if not 1 <= precision <= MAX_PRECISION:
            raise CodecError(f"entropy.bin: precision {precision} outside 1..{MAX_PRECISION}")
        if not (1 <= levels <= MAX_LEVELS and 1 <= channels <= MAX_CHANNELS and 1 <= h <= MAX_GRID_SIDE
                and 1 <= w <= MAX_GRID_SIDE and h * w * channels <= MAX_SYMBOLS):
            raise CodecError(f"entropy.bin: dimensions {levels} levels x {h}x{w}x{channels} beyond the caps")
        pos = _ENTROPY_HEADER.size
        k = 1
        if version == 3:
            return cls._from_parametric(data, pos, levels, channels, (h, w), precision)
        if version >= 2:
            if len(data) < pos + 1:
                raise CodecError("entropy.bin truncated before its context count")
            (k,) = _CONTEXTS_FIELD.unpack_from(data, pos)
            pos += 1
            if not 2 <= k <= MAX_CONTEXTS:
                raise CodecError(f"entropy.bin: {k} contexts (version 2 allows 2..{MAX_CONTEXTS})")
        gains_end = pos + 4 * levels * channels
        if len(data) < gains_end:
            raise CodecError("entropy.bin truncated inside the inverse gains")
        inv_gains = np.frombuffer(data, "<f4", levels * channels, pos).reshape(levels, channels).astype(np.float32)
        if version == 1:
            return cls(inv_gains, _read_tables_v1(data, gains_end, levels, channels, precision), (h, w))
        return cls._from_packed(data, gains_end, inv_gains, (h, w), k, precision)

    @classmethod
    def _from_packed(cls, data: bytes, pos: int, inv_gains: np.ndarray, grid, k: int, precision: int):
        """Version 2: every support, then every coded channel's K frequency rows, checked here at
        once with numpy; the FrequencyTable objects of a level are made when it is first used."""
        levels, channels = inv_gains.shape
        total = 1 << precision
        end = pos + 4 * levels * channels
        if len(data) < end:
            raise CodecError("entropy.bin truncated inside the table supports")
        supports = np.frombuffer(data, [("lo", "<i2"), ("n", "<u2")], levels * channels, pos)
        lo = supports["lo"].astype(np.int64).reshape(levels, channels)
        n = supports["n"].astype(np.int64).reshape(levels, channels)
        bad = np.argwhere((n == 0) | (n > total))
        if len(bad):
            level, c = (int(v) for v in bad[0])
            raise CodecError(f"entropy.bin: table ({level}, {c}) has {int(n[level, c])} symbols "
                             f"(allowed 1..{total} at precision {precision})")
        counts = np.where(n > 1, k * n, 0).ravel()
        if len(data) != end + 2 * int(counts.sum()):
            raise CodecError(f"entropy.bin has {len(data) - end - 2 * int(counts.sum())} byte(s) more "
                             "than its tables need" if len(data) > end + 2 * int(counts.sum())
                             else "entropy.bin truncated inside the frequency tables")
        freqs = np.frombuffer(data, "<u2", int(counts.sum()), end).astype(np.int64)
        rows_n = np.repeat(np.where(n > 1, n, 0).ravel(), np.where(n > 1, k, 0).ravel())
        starts = np.concatenate([[0], np.cumsum(rows_n)[:-1]]).astype(np.int64)
        if len(rows_n):
            sums = np.add.reduceat(freqs, starts) if len(freqs) else np.zeros(0, np.int64)
            mins = np.minimum.reduceat(freqs, starts) if len(freqs) else np.zeros(0, np.int64)
            wrong = np.flatnonzero((sums != total) | (mins < 1))
            if len(wrong):
                cell = np.flatnonzero(n.ravel() > 1)[wrong[0] // k]
                raise CodecError(f"entropy.bin: table ({cell // channels}, {cell % channels}, context "
                                 f"{wrong[0] % k}) frequencies must be >= 1 and sum to 2**{precision}")
        offsets = np.concatenate([[0], np.cumsum(counts)]).reshape(-1)

        def build(level: int) -> list:
            row = []
            for c in range(channels):
                i = level * channels + c
                if n[level, c] == 1:
                    row.append((FrequencyTable(int(lo[level, c]), [1]),) * k)
                    continue
                block = freqs[offsets[i] : offsets[i + 1]].reshape(k, -1).tolist()
                row.append(tuple(FrequencyTable(int(lo[level, c]), f, precision) for f in block))
            return row

        self = cls.__new__(cls)
        self._setup(inv_gains, _LazyRows(levels, build), grid, k, precision, lo, lo + n - 1)
        return self

    # -- version 3: parametric tables --

    @classmethod
    def from_parameters(cls, inv_gains: np.ndarray, steps: np.ndarray, knots: np.ndarray, coded: np.ndarray,
                        params: np.ndarray, grid: tuple[int, int] = (1, 1), precision: int = PRECISION) -> EntropyModel:
        """A model whose tables are derived from parameters (entropy.bin version 3, docs/bitstream.md
        section 6): ``steps`` (L, C) each coded cell's quantization step (units 2**-16), ``knots``
        (C, Q + 1) nondecreasing integers (units 2**-12) per channel, ``coded`` (L, C) bool,
        ``params`` (L, C, K) bytes (only the reachable contexts of coded cells are stored and
        matter; the rest become NEUTRAL_PARAM). Every field is checked; CodecError on any problem."""
        inv_gains = np.array(inv_gains, dtype=np.float32)
        if inv_gains.ndim != 2:
            raise CodecError(f"inv_gains must be (levels, channels), got shape {inv_gains.shape}")
        levels, channels = inv_gains.shape
        h, w = (int(v) for v in grid)
        if not (1 <= levels <= MAX_LEVELS and 1 <= channels <= MAX_CHANNELS and 1 <= h <= MAX_GRID_SIDE
                and 1 <= w <= MAX_GRID_SIDE and h * w * channels <= MAX_SYMBOLS):
            raise CodecError(f"entropy model: dimensions {levels} levels x {h}x{w}x{channels} beyond the caps")
        if not isinstance(precision, (int, np.integer)) or not 1 <= precision <= MAX_PRECISION:
            raise CodecError(f"entropy model: precision {precision!r} outside 1..{MAX_PRECISION}")
        knots, coded = np.array(knots, dtype=np.int64), np.array(coded, dtype=bool)
        steps, params = np.array(steps, dtype=np.int64), np.array(params, dtype=np.int64)
        if knots.ndim != 2 or knots.shape[0] != channels or not 1 <= knots.shape[1] - 1 <= MAX_SEGMENTS:
            raise CodecError(f"entropy model: knots must be ({channels}, Q + 1) with Q in 1..{MAX_SEGMENTS}")
        if coded.shape != (levels, channels) or steps.shape != (levels, channels):
            raise CodecError(f"entropy model: the coded map and the steps must be {levels} x {channels}")
        if params.ndim != 3 or params.shape[:2] != (levels, channels) or not 1 <= params.shape[2] <= MAX_CONTEXTS:
            raise CodecError(f"entropy model: params must be ({levels}, {channels}, K), K in 1..{MAX_CONTEXTS}")
        if np.any((params < 0) | (params > 255)):
            raise CodecError("entropy model: a context parameter is not a byte")
        if np.any(np.abs(knots) > MAX_KNOT):
            raise CodecError(f"entropy model: a knot beyond +-{MAX_KNOT} (units of 2**-{KNOT_BITS})")
        if np.any(np.diff(knots, axis=1) < 0) or np.any(np.diff(knots, axis=1) > MAX_KNOT_STEP):
            raise CodecError(f"entropy model: knots must rise by 0..{MAX_KNOT_STEP} units each")
        if not np.all(np.isfinite(inv_gains)) or not np.all(inv_gains > 0):
            raise CodecError("entropy model: inverse gains must be finite and positive")
        bad = coded & ((steps < 1) | (steps > MAX_STEP))
        if bad.any():
            level, c = (int(v) for v in np.argwhere(bad)[0])
            raise CodecError(f"entropy model: coded cell ({level}, {c}) has the step {int(steps[level, c])} "
                             f"(allowed 1..{MAX_STEP})")
        steps = np.where(coded, steps, 0)
        lo, hi = parametric_support(knots, steps)
        lo, hi = np.where(coded, lo, 0), np.where(coded, hi, 0)
        n = hi - lo + 1
        bad = coded & ((lo < -32768) | (hi > 32767) | (n > min(1 << precision, 65535)))
        if bad.any():
            level, c = (int(v) for v in np.argwhere(bad)[0])
            raise CodecError(f"entropy model: coded cell ({level}, {c}) has the support [{int(lo[level, c])}, "
                             f"{int(hi[level, c])}], beyond int16 or 2**{precision} symbols")
        k = params.shape[2]
        params = np.where(reachable_mask(coded, k), params, NEUTRAL_PARAM)

        def build(level: int) -> list:
            row = []
            for c in range(channels):
                if not coded[level, c]:
                    row.append((FrequencyTable(0, [1]),) * k)
                    continue
                l_, h_ = int(lo[level, c]), int(hi[level, c])
                unique, back = np.unique(params[level, c], return_inverse=True)
                freqs = parametric_freqs(knots[c], int(steps[level, c]), l_, h_, unique, precision).tolist()
                tables = [FrequencyTable(l_, f, precision) for f in freqs]
                row.append(tuple(tables[i] for i in back.ravel()))
            return row

        self = cls.__new__(cls)
        self._setup(inv_gains, _LazyRows(levels, build), (h, w), k, int(precision), lo, hi)
        for a in (steps, knots, coded, params):
            a.setflags(write=False)
        self._parameters = (steps, knots, coded, params)
        return self

    def _parametric_bytes(self) -> bytes:
        steps, knots, coded, params = self._parameters
        h, w = self.grid
        cells = np.empty(int(coded.sum()), [("inv", "<f4"), ("step", "<u2"), ("step_hi", "u1")])
        cells["inv"] = self.inv_gains[coded]
        cells["step"], cells["step_hi"] = steps[coded] & 0xFFFF, steps[coded] >> 16
        body = [struct.pack("<i", int(knots[c, 0])) + encode_varints(np.diff(knots[c])) for c in range(self.channels)]
        return b"".join([_ENTROPY_HEADER.pack(ENTROPY_MAGIC, 3, self.precision, self.levels, self.channels, h, w),
                         _CONTEXTS_FIELD.pack(self.contexts), _SEGMENTS_FIELD.pack(knots.shape[1] - 1),
                         np.packbits(coded.ravel(), bitorder="little").tobytes(),
                         self.inv_gains[~coded].astype("<f4").tobytes(), cells.tobytes(), *body,
                         params[reachable_mask(coded, self.contexts)].astype(np.uint8).tobytes()])

    @classmethod
    def _from_parametric(cls, data: bytes, pos: int, levels: int, channels: int, grid, precision: int):
        """Version 3 (docs/bitstream.md section 6): K, Q, the coded bitmap, the inverse gains of the
        cells not coded, then each coded cell's inverse gain and step, the knots, the parameter
        bytes; the tables are derived when a level is first used."""
        if len(data) < pos + 3:
            raise CodecError("entropy.bin truncated before its context and segment counts")
        (k,) = _CONTEXTS_FIELD.unpack_from(data, pos)
        (q,) = _SEGMENTS_FIELD.unpack_from(data, pos + 1)
        pos += 3
        if not 1 <= k <= MAX_CONTEXTS:
            raise CodecError(f"entropy.bin: {k} contexts (version 3 allows 1..{MAX_CONTEXTS})")
        if not 1 <= q <= MAX_SEGMENTS:
            raise CodecError(f"entropy.bin: {q} CDF segments (allowed 1..{MAX_SEGMENTS})")
        cells = levels * channels
        bits_end = pos + (cells + 7) // 8
        if len(data) < bits_end:
            raise CodecError("entropy.bin truncated inside the coded map")
        coded = np.unpackbits(np.frombuffer(data, np.uint8, bits_end - pos, pos), bitorder="little")
        if coded[cells:].any():
            raise CodecError("entropy.bin: padding bits after the coded map are not zero")
        coded = coded[:cells].reshape(levels, channels).astype(bool)
        n_coded = int(coded.sum())
        cells_end = bits_end + 4 * (cells - n_coded) + 7 * n_coded
        if len(data) < cells_end:
            raise CodecError("entropy.bin truncated inside the inverse gains and steps")
        inv_gains = np.empty((levels, channels), np.float32)
        inv_gains[~coded] = np.frombuffer(data, "<f4", cells - n_coded, bits_end)
        packed = np.frombuffer(data, [("inv", "<f4"), ("step", "<u2"), ("step_hi", "u1")], n_coded,
                               bits_end + 4 * (cells - n_coded))
        inv_gains[coded] = packed["inv"]
        steps = np.zeros((levels, channels), np.int64)
        steps[coded] = packed["step"].astype(np.int64) | (packed["step_hi"].astype(np.int64) << 16)
        knots = np.empty((channels, q + 1), np.int64)
        pos = cells_end
        for c in range(channels):
            if len(data) < pos + 4:
                raise CodecError(f"entropy.bin truncated at the knots of channel {c}")
            knots[c, 0] = struct.unpack_from("<i", data, pos)[0]
            deltas, pos = decode_varints(data, pos + 4, q)
            knots[c, 1:] = knots[c, 0] + np.cumsum(deltas)
        mask = reachable_mask(coded, k)
        count = int(mask.sum())
        if len(data) != pos + count:
            raise CodecError(f"entropy.bin has {len(data) - pos - count} byte(s) more than its "
                             "parameters need" if len(data) > pos + count
                             else "entropy.bin truncated inside the context parameters")
        params = np.full((levels, channels, k), NEUTRAL_PARAM, np.int64)
        params[mask] = np.frombuffer(data, np.uint8, count, pos)  # level, channel, context order
        return cls.from_parameters(inv_gains, steps, knots, coded, params, grid, precision)


    # -- numpy helpers for the encoder's rate control --

    def _check_level(self, level: int) -> int:
        if not isinstance(level, (int, np.integer)) or not 0 <= level < self.levels:
            raise CodecError(f"rate level must be an integer in 0..{self.levels - 1}, got {level!r}")
        return int(level)

    def decoding_rows(self, level: int) -> list:
        """Per channel at ``level``: its K tables as (cum, lo, precision), or the int lo when
        degenerate (what :meth:`RangeDecoder.decode_with_contexts` reads; cached)."""
        if level not in self._rows_cache:
            self._rows_cache[level] = [[(t.cum, t.lo, t.precision) for t in tables] if coded else tables[0].lo
                                       for tables, coded in zip(self.context_tables[level],
                                                                self._coded[level].tolist())]
        return self._rows_cache[level]

    def coded(self, level: int) -> np.ndarray:
        """(C,) bool: the channels coded at ``level`` (the rest have a degenerate table)."""
        return self._coded[self._check_level(level)]

    def contexts_of(self, level: int, symbols: np.ndarray) -> np.ndarray:
        """The context of every symbol of (..., H, W, C) symbols at ``level`` (:func:`contexts`)."""
        return contexts(symbols, self.coded(level), self.contexts)

    def code_lengths(self, level: int) -> tuple[np.ndarray, int]:
        """(C, K, width) array of per-symbol bits per context (inf past a table's end) and the width."""
        if level not in self._cost_cache:
            width = max(t.n for t in self.tables[level])
            costs = np.full((self.channels, self.contexts, width), np.inf)
            for c, ctx in enumerate(self.context_tables[level]):
                for j, t in enumerate(ctx):
                    costs[c, j, : t.n] = t.costs()
            self._cost_cache[level] = (costs, width)
        return self._cost_cache[level]

    def symbol_costs(self, level: int, symbols: np.ndarray, first: np.ndarray | None = None,
                     count: int = 0) -> np.ndarray:
        """Bits of symbol values at each position, under the contexts that ``symbols`` (..., H, W, C)
        give: what refinement trades. Without ``first``, every value of each table, (..., width);
        with ``first`` (..., H, W, C), the ``count`` values from ``first`` on, (..., count), where a
        value below its table costs what the table's lowest symbol does. ``inf`` past a table's end."""
        costs, width = self.code_lengths(self._check_level(level))
        ctx = self.contexts_of(level, symbols)
        if first is None:
            return costs[np.arange(self.channels), ctx]
        k = np.asarray(first)[..., None] + np.arange(count) - self._lo[level][:, None]
        own = costs[np.arange(self.channels)[:, None], ctx[..., None], np.clip(k, 0, width - 1)]
        return np.where(k < width, own, np.inf)

    def bits(self, level: int, symbols: np.ndarray) -> float | np.ndarray:
        """Ideal payload length in bits: the level's uniform code plus ``-log2 p`` of every symbol.

        ``symbols``: (H, W, C) -> float, or (N, H, W, C) -> (N,) array. A symbol outside its
        table's support costs ``inf`` (clip first). The coded payload is at most ~1 byte longer
        than ``ceil(bits / 8)``.
        """
        level = self._check_level(level)
        s = np.asarray(symbols)
        if s.ndim < 3 or s.shape[-1] != self.channels:
            raise CodecError(f"symbols have shape {s.shape}, the model expects (..., H, W, {self.channels})")
        costs, width = self.code_lengths(level)
        idx = s.astype(np.int64) - self._lo[level]
        inside = (idx >= 0) & (idx < width)
        ctx = self.contexts_of(level, s)
        flat = (np.arange(self.channels) * self.contexts + ctx) * width + np.where(inside, idx, 0)
        per = np.where(inside, costs.ravel()[flat], np.inf)
        lead = self.level_table.costs()[level] if self.levels > 1 else 0.0
        total = per.reshape(*s.shape[:-3], -1).sum(axis=-1) + lead
        return float(total) if np.ndim(total) == 0 else total

    def support(self, level: int) -> np.ndarray:
        """Lowest symbol of each channel's table at ``level``: (C,) int64."""
        return self._lo[self._check_level(level)]

    def clip(self, level: int, symbols: np.ndarray) -> tuple[np.ndarray, int]:
        """Clip symbols into each channel's table support; returns (int32 symbols, number clipped)."""
        level = self._check_level(level)
        s = np.asarray(symbols, dtype=np.int64)
        clipped = np.clip(s, self._lo[level], self._hi[level])
        return clipped.astype(np.int32), int(np.count_nonzero(clipped != s))

    def dequantize(self, level: int, symbols: np.ndarray) -> np.ndarray:
        """Symbols (..., C) -> float32 latent ``symbol * inv_gains[level, c]`` (float32 arithmetic)."""
        level = self._check_level(level)
        return np.asarray(symbols).astype(np.float32) * self.inv_gains[level]

    # -- coding a latent (the payload of a latent.bin) --

    def encode(self, level: int, symbols: np.ndarray) -> bytes:
        """Range-code the level, then each coded channel's H*W symbols (row-major), each symbol with
        its context's table."""
        level = self._check_level(level)
        s = np.asarray(symbols)
        if s.ndim != 3 or s.shape[2] != self.channels:
            raise CodecError(f"latent symbols have shape {s.shape}, the model expects (H, W, {self.channels})")
        self._check_grid(s.shape[:2])
        if not np.issubdtype(s.dtype, np.integer):
            raise CodecError("latent symbols must be integers")
        enc = RangeEncoder()
        enc.encode(level, self.level_table)
        flat = s.reshape(-1, self.channels).astype(np.int64)  # (positions, C): coded channel by channel
        idx = flat - self._lo[level]
        bad = (idx < 0) | (idx > self._hi[level] - self._lo[level])
        if bad.any():
            c = int(np.flatnonzero(bad.any(axis=0))[0])
            raise CodecError(f"symbol {int(flat[bad[:, c], c][0])} outside the table's support "
                             f"[{self._lo[level, c]}, {self._hi[level, c]}]")
        ctx = self.contexts_of(level, s).reshape(-1, self.channels)
        cum = self._cums(level)
        start = cum[np.arange(self.channels), ctx, idx]
        freq = cum[np.arange(self.channels), ctx, idx + 1] - start
        coded = self._coded[level]  # degenerate channels code nothing
        enc._code_intervals(start.T[coded].ravel().tolist(), freq.T[coded].ravel().tolist(), self.precision)
        return enc.finish()

    def _cums(self, level: int) -> np.ndarray:
        """(C, K, width + 1) cumulative frequencies of every table at ``level`` (cached)."""
        if level not in self._cum_cache:
            width = max(t.n for t in self.tables[level])
            cum = np.zeros((self.channels, self.contexts, width + 1), np.int64)
            for c, ctx in enumerate(self.context_tables[level]):
                for j, t in enumerate(ctx):
                    cum[c, j, : t.n + 1] = t.cum
            self._cum_cache[level] = cum
        return self._cum_cache[level]

    def _check_grid(self, grid) -> tuple[int, int]:
        h, w = (int(v) for v in grid)
        if not (1 <= h <= MAX_GRID_SIDE and 1 <= w <= MAX_GRID_SIDE and h * w * self.channels <= MAX_SYMBOLS):
            raise CodecError(f"latent grid {h}x{w}x{self.channels} beyond the caps")
        return h, w

    def decode(self, payload: bytes, grid=None) -> tuple[int, np.ndarray]:
        """Inverse of :meth:`encode`: (level, int32 symbols (H, W, C)) on ``grid`` (H, W) (default:
        the model's own); CodecError if corrupted."""
        h, w = self._check_grid(self.grid if grid is None else grid)
        dec = RangeDecoder(payload)
        level = dec.decode(self.level_table)
        if level >= self.levels:  # unreachable with the uniform table; kept as a guard
            raise CodecError("entropy decoding failed: rate level out of range (corrupted file)")
        positions = h * w
        values = dec.decode_with_contexts(self.decoding_rows(level), positions, self.contexts)
        dec.finish()
        out = np.array(values, dtype=np.int32).reshape(self.channels, positions)
        return level, np.ascontiguousarray(out.T.reshape(h, w, self.channels))


def _read_tables_v1(data: bytes, pos: int, levels: int, channels: int, precision: int) -> list:
    """Version 1's tables: per level and channel (lo, n), then n frequencies unless n == 1."""
    total = 1 << precision
    tables = []
    for level in range(levels):
        row = []
        for c in range(channels):
            if len(data) < pos + 4:
                raise CodecError(f"entropy.bin truncated at table ({level}, {c})")
            lo, n = struct.unpack_from("<hH", data, pos)
            pos += 4
            if n == 0 or n > total:
                raise CodecError(f"entropy.bin: table ({level}, {c}) has {n} symbols "
                                 f"(allowed 1..{total} at precision {precision})")
            if n == 1:
                row.append(FrequencyTable(lo, [1]))  # degenerate: its precision is irrelevant
                continue
            if len(data) < pos + 2 * n:
                raise CodecError(f"entropy.bin truncated in table ({level}, {c})")
            freqs = np.frombuffer(data, "<u2", n, pos)
            pos += 2 * n
            if int(freqs.min()) < 1 or int(freqs.sum(dtype=np.int64)) != total:
                raise CodecError(f"entropy.bin: table ({level}, {c}) frequencies must be >= 1 and sum to 2**{precision}")
            row.append(FrequencyTable(lo, freqs.tolist(), precision))
        tables.append(row)
    if pos != len(data):
        raise CodecError(f"entropy.bin has {len(data) - pos} unexpected trailing byte(s)")
    return tables


def ideal_bits(table: FrequencyTable, symbols: Iterable[int]) -> float:
    """Sum of ``-log2 p`` of ``symbols`` under ``table`` (for measurements)."""
    if table.degenerate:
        return 0.0
    return float(sum(table.precision - math.log2(table.freqs[int(s) - table.lo]) for s in symbols))
