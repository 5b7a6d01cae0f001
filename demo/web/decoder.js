// gancodec in the browser: decode a latent.bin (format 2) with no server.
//
// A second implementation of the decoder, written from docs/bitstream.md: the entropy decoder
// below mirrors runtime/entropy.py (FrequencyTable, RangeDecoder, contexts, EntropyModel with
// entropy.bin versions 1, 2 and 3, the parametric tables) and the file reader mirrors
// runtime/bitstream.py (read_header, unpack_latent, unpack_image), name for name, with the same
// checks in the same order and the same error messages. Everything between the bytes of a file and
// the decoded symbols is integer arithmetic on Numbers (every value of the coder < 2^33, of a
// version-3 table's derivation < 2^53, so exact: floor division is Math.floor(a / b), never the
// 32-bit operators); the symbols are then dequantized in
// float32 (Math.fround), run through the bundle's generator.onnx with onnxruntime-web (WASM, CPU)
// and converted to uint8 exactly as runtime.images.from_unit_range does.
//
// The top part (down to "the page") needs no DOM and no onnxruntime: tests/web_vectors.mjs runs
// it under node against tests/vectors/. startPage() is the page itself (index.html calls it).

export class CodecError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CodecError';
  }
}

// --- runtime/entropy.py ------------------------------------------------------------------------

export const PRECISION = 16;
export const MAX_PRECISION = 16;
export const TOP = 2 ** 24; // normalisation threshold: range is kept >= 2**24 between symbols
export const CARRY = 2 ** 32;

export const ENTROPY_MAGIC = 'GCEM';
export const ENTROPY_VERSION = 3; // the newest: parametric tables; versions 1 (K = 1) and 2 (K stored
// frequency lists per context) are still read
export const MAX_CONTEXTS = 64;
export const MAX_LEVELS = 256;
export const MAX_CHANNELS = 4096;
export const MAX_GRID_SIDE = 1024;
export const MAX_SYMBOLS = 2 ** 22; // H * W * C
export const MAX_ENTROPY_BYTES = 64 * 2 ** 20;
const ENTROPY_HEADER_BYTES = 14; // magic, version, precision, L, C, H, W
const CONTEXTS_FIELD_BYTES = 1; // versions 2 and 3, after the header: K contexts
const SEGMENTS_FIELD_BYTES = 2; // version 3, after K: Q, the CDF segments per channel (uint16)

/** Integer frequencies of the symbols lo .. lo + n - 1, summing to 2**precision (n = 1: degenerate). */
export class FrequencyTable {
  constructor(lo, freqs, precision = PRECISION) {
    freqs = Array.from(freqs, Number);
    if (!Number.isInteger(precision) || precision < 1 || precision > MAX_PRECISION) {
      throw new CodecError(`frequency precision must be 1..${MAX_PRECISION} bits, got ${precision}`);
    }
    if (freqs.length === 0) throw new CodecError('a frequency table needs at least one symbol');
    const total = 2 ** precision;
    if (freqs.length > 1) {
      let min = Infinity;
      let sum = 0;
      for (const f of freqs) {
        if (f < min) min = f;
        sum += f;
      }
      if (min < 1 || sum !== total) {
        throw new CodecError(`frequencies must be >= 1 and sum to 2**${precision} (got min ${min}, sum ${sum})`);
      }
    }
    this.lo = lo;
    this.precision = precision;
    this.freqs = freqs.length > 1 ? freqs : [total];
    const cum = new Array(this.freqs.length + 1);
    cum[0] = 0;
    for (let i = 0; i < this.freqs.length; i++) cum[i + 1] = cum[i] + this.freqs[i];
    this.cum = cum; // cum[i] = sum of freqs[:i]; cum[n] = 2**precision
  }

  get n() { return this.freqs.length; }
  get hi() { return this.lo + this.freqs.length - 1; }
  get degenerate() { return this.freqs.length === 1; }

  /** Near-uniform table: each symbol gets 2**p // n, the first 2**p % n one more. */
  static uniform(n, lo = 0, precision = PRECISION) {
    const total = 2 ** precision;
    if (!Number.isInteger(n) || n < 1 || n > total) {
      throw new CodecError(`a uniform table needs 1..${total} symbols, got ${n}`);
    }
    const base = Math.floor(total / n);
    const extra = total % n;
    const freqs = [];
    for (let i = 0; i < n; i++) freqs.push(i < extra ? base + 1 : base);
    return new FrequencyTable(lo, freqs, precision);
  }

  /**
   * Frequencies from nonnegative integer counts (a histogram), integer arithmetic only. With n
   * symbols, T = 2**precision and S = sum(counts) (< 2**53): n == 1 -> degenerate, S == 0 ->
   * uniform; else freq[i] = 1 + counts[i] * (T - n) // S, and the R = T - sum(freq) missing units
   * go, one each, to the symbols with the largest remainders counts[i] * (T - n) % S, ties to the
   * smaller index.
   */
  static fromCounts(lo, counts, precision = PRECISION) {
    counts = Array.from(counts, Number);
    const n = counts.length;
    const total = 2 ** precision;
    if (n === 0 || n > total) throw new CodecError(`a table needs 1..${total} symbols at precision ${precision}, got ${n}`);
    if (counts.some((c) => c < 0)) throw new CodecError('counts must be nonnegative');
    if (n === 1) return new FrequencyTable(lo, [total], precision);
    const s = counts.reduce((a, b) => a + b, 0);
    if (s === 0) return FrequencyTable.uniform(n, lo, precision);
    const spare = total - n;
    const freqs = new Array(n);
    const remainders = new Float64Array(n);
    let missing = total;
    for (let i = 0; i < n; i++) {
      const scaled = counts[i] * spare; // < 2**46 for the weights of a version-3 table: all exact
      const quotient = Math.floor(scaled / s);
      freqs[i] = 1 + quotient;
      remainders[i] = scaled - quotient * s;
      missing -= freqs[i];
    }
    if (missing > 0) { // largest remainder first, ties to the smaller index:
      const threshold = remainders.slice().sort()[n - missing]; // the missing-th largest
      for (let i = 0; i < n; i++) { // fewer than missing lie above it: each gets its unit
        if (remainders[i] > threshold) {
          freqs[i] += 1;
          missing -= 1;
        }
      }
      for (let i = 0; i < n && missing > 0; i++) { // the rest go to the first ones at the threshold
        if (remainders[i] === threshold) {
          freqs[i] += 1;
          missing -= 1;
        }
      }
    }
    return new FrequencyTable(lo, freqs, precision);
  }
}

/** bisect_right(cum, v) - 1: the index i with cum[i] <= v < cum[i + 1]. */
function findSymbol(cum, v) {
  let lo = 0;
  let hi = cum.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (v < cum[mid]) hi = mid;
    else lo = mid + 1;
  }
  return lo - 1;
}

/** Decode symbols from coded bytes; reads zero bytes past the end of data. */
export class RangeDecoder {
  constructor(data) {
    this._data = Uint8Array.from(data);
    this._pos = 4; // the first 4 bytes are read by the constructor
    this._shifts = 0; // normalisation steps = bytes the encoder wrote before its flush
    const d = this._data;
    const at = (i) => (i < d.length ? d[i] : 0);
    this._code = at(0) * 2 ** 24 + at(1) * 2 ** 16 + at(2) * 2 ** 8 + at(3); // offset of the code value from low
    this._range = CARRY - 1;
  }

  /** Decode one symbol with table. */
  decode(table) {
    return this.decodeMany(1, table)[0];
  }

  /** Decode count symbols, all with table; CodecError on an impossible code value. */
  decodeMany(count, table) {
    const lo = table.lo;
    if (table.n === 1) return new Array(count).fill(lo);
    const cum = table.cum;
    const p = table.precision;
    const total = cum[cum.length - 1];
    const data = this._data;
    const size = data.length;
    let pos = this._pos;
    let shifts = this._shifts;
    let code = this._code;
    let rng = this._range;
    const out = [];
    for (let k = 0; k < count; k++) {
      const r = rng >>> p; // rng < 2**32: >>> is exact
      const v = Math.floor(code / r);
      if (v >= total) {
        throw new CodecError('entropy decoding failed: code value outside the table (corrupted file)');
      }
      const i = findSymbol(cum, v);
      const c = cum[i];
      code -= r * c;
      rng = r * (cum[i + 1] - c);
      while (rng < TOP) {
        code = (code * 256 + (pos < size ? data[pos] : 0)) % CARRY;
        pos += 1;
        shifts += 1;
        rng *= 256;
      }
      out.push(lo + i);
    }
    this._code = code;
    this._range = rng;
    this._pos = pos;
    this._shifts = shifts;
    return out;
  }

  /** Decode one symbol per table, in order (a 1x1 latent grid). */
  decodeEach(tables) {
    const out = [];
    for (const table of tables) out.push(this.decode(table));
    return out;
  }

  /** Refuse input the encoder cannot have produced (bytes past its flush, a trailing zero). */
  finish() {
    const data = this._data;
    if (data.length > this._shifts + 1) {
      throw new CodecError(`coded data has ${data.length - this._shifts - 1} byte(s) past its end (corrupted file)`);
    }
    if (data.length > 0 && data[data.length - 1] === 0) {
      throw new CodecError('coded data ends with a zero byte, which no encoder writes (corrupted file)');
    }
  }
}

// --- contexts ---

/**
 * The context of every symbol of one (H, W, C) latent (symbols: H*W*C, channel fastest), integer
 * arithmetic only. coded[c]: channel c's tables are not degenerate at this level. For channel c
 * at position (h, w), with m = the number of coded channels before c and z = how many of them
 * hold a nonzero symbol at (h, w): context = 0 if m == 0, else min(k - 1, (k * z) // m).
 */
export function contexts(symbols, coded, k) {
  const c = coded.length;
  const out = new Int32Array(symbols.length);
  if (k <= 1) return out;
  for (let p = 0; p < symbols.length; p += c) {
    let z = 0;
    let m = 0;
    for (let ch = 0; ch < c; ch++) {
      out[p + ch] = m > 0 ? Math.min(k - 1, Math.floor((k * z) / m)) : 0;
      if (coded[ch]) {
        m += 1;
        if (symbols[p + ch] !== 0) z += 1;
      }
    }
  }
  return out;
}

// --- parametric tables (entropy.bin version 3) ---
//
// A version-3 entropy.bin stores no frequency lists: per channel, the Q + 1 knots of a
// piecewise-linear CDF of its latent (shared by every level), a bitmap of the coded (level,
// channel) cells, each coded cell's quantization step, and one byte per (level, coded channel,
// reachable context): a temperature and a zero weight. Every table is derived from these integers
// by integer arithmetic only (docs/bitstream.md section 6): every value stays below 2^53, so
// Numbers are exact, with Math.floor(a / b) for floor division.

export const KNOT_BITS = 12; // knots are stored in units of 2**-12 of the latent
export const EDGE_BITS = 16; // knots, edges and quantization steps are compared in units of 2**-16
export const SEGMENT_BITS = 16; // each of the Q CDF segments holds 2**16 units of probability mass
export const MAX_KNOT = 2 ** 27; // |knot| in units of 2**-12: keeps every product < 2**53
export const MAX_SEGMENTS = 4096;
export const MAX_STEP = 2 ** 24 - 1; // a coded cell's quantization step (uint24, units of 2**-16)
export const MAX_KNOT_STEP = 2 ** 21 - 1; // a knot's step from the one before (a varint of at most 3 bytes)
// LOG2_THRESHOLDS[i] = ceil(2**15 * 2**((i + 1) / 16)): the fractional sixteenths of log2
export const LOG2_THRESHOLDS = [34219, 35734, 37316, 38968, 40694, 42495, 44377, 46341, 48393, 50536, 52773,
  55109, 57549, 60097, 62758];
// POW2_STEPS[i] = round(2**30 * 2**(-i / 16)): 2**(-t / 16) in units of 2**-30
export const POW2_STEPS = [1073741824, 1028218693, 984625594, 942880699, 902905651, 864625413, 827968132,
  792865000, 759250125, 727060411, 696235434, 666717336, 638450708, 611382493, 585461881, 560640218];
// a context's parameter byte: high nibble a -> temperature ALPHA16[a] / 16, low nibble b -> the
// zero symbol's code length shortened by ZERO16[b] / 16 bit
export const ALPHA16 = [5, 6, 7, 8, 9, 10, 12, 14, 16, 19, 22, 26, 30, 35, 41, 48];
export const ZERO16 = [-28, -24, -20, -16, -12, -8, -4, 0, 4, 8, 12, 16, 20, 24, 28, 32];
export const NEUTRAL_PARAM = (ALPHA16.indexOf(16) << 4) | ZERO16.indexOf(0); // the marginal itself (0x87)
const EDGE_SCALE = 2 ** (EDGE_BITS - KNOT_BITS);
const SEGMENT = 2 ** SEGMENT_BITS;
const POWERS_OF_TWO = Array.from({ length: 31 }, (_, i) => 2 ** i);

/** [lo, hi] of one (level, channel): the first and last knot (units of 2**-12) divided by the
 * cell's quantization step (units of 2**-16, >= 1) and rounded to a symbol (half up), widened by one. */
export function parametricSupport(knotsC, step) {
  const s = Math.max(step, 1);
  const x0 = knotsC[0] * EDGE_SCALE;
  const xq = knotsC[knotsC.length - 1] * EDGE_SCALE;
  return [Math.floor((2 * x0 + s) / (2 * s)) - 1, Math.floor((2 * xq + s) / (2 * s)) + 1];
}

/** floor(16 * log2(x)) as the spec defines it for an integer 1 <= x < 2**53: 16 times the bit
 * length minus one, plus how many LOG2_THRESHOLDS the 16-bit mantissa reaches. */
export function log2_16(x) {
  let b = 0; // bit_length(x) - 1
  let y = x;
  while (y >= 2 ** 32) {
    y = Math.floor(y / 2 ** 32);
    b += 32;
  }
  b += 31 - Math.clz32(y); // y < 2**32: clz32 is exact
  const mant = b <= 15 ? x * 2 ** (15 - b) : Math.floor(x / 2 ** (b - 15));
  let frac = 0;
  while (frac < LOG2_THRESHOLDS.length && LOG2_THRESHOLDS[frac] <= mant) frac += 1;
  return 16 * b + frac;
}

/** Probability mass of each symbol lo..hi of one (level, channel) under the channel's
 * piecewise-linear CDF, in units of 2**-16 per segment (they sum to Q * 2**16). */
export function marginalMasses(knotsC, step, lo, hi) {
  const x = Array.from(knotsC, (v) => v * EDGE_SCALE);
  const q = x.length - 1;
  const full = q * SEGMENT;
  const masses = new Array(hi - lo + 1);
  let before = 0; // F at the lower edge of the symbol
  let i = -1; // the largest i with x[i] <= e (the edges rise with k)
  for (let k = lo + 1; k <= hi; k++) {
    const e = Math.floor(((2 * k - 1) * step) / 2); // the lower edge of symbol k
    while (i < q && x[i + 1] <= e) i += 1;
    let cdf;
    if (i < 0) cdf = 0;
    else if (i >= q) cdf = full;
    else cdf = i * SEGMENT + Math.floor(((e - x[i]) * SEGMENT) / (x[i + 1] - x[i]));
    masses[k - 1 - lo] = cdf - before;
    before = cdf;
  }
  masses[hi - lo] = full - before;
  return masses;
}

/** Per parameter byte of params, the integer weights of the symbols lo.. (masses: the marginal's):
 * 2**(-t / 16) (units 2**-30) of the tempered code length t (spec section 6). */
export function temperedCounts(masses, lo, params) {
  const n = masses.length;
  const total = masses.reduce((a, b) => a + b, 0);
  const top = log2_16(total + 1);
  const length = masses.map((m) => top - log2_16(m + 1)); // code length in 1/16 bit, >= 0
  const zeroAt = lo <= 0 && 0 < lo + n ? -lo : -1; // the index of the symbol 0, if in the support
  return Array.from(params, (param) => {
    const alpha = ALPHA16[Math.floor(param / 16)];
    const t = new Array(n);
    let min = Infinity;
    for (let v = 0; v < n; v++) {
      t[v] = Math.floor((alpha * length[v]) / 16);
      if (v === zeroAt) t[v] -= ZERO16[param % 16];
      if (t[v] < min) min = t[v];
    }
    for (let v = 0; v < n; v++) {
      const d = t[v] - min; // >= 0, and 0 for at least one symbol
      const shift = Math.floor(d / 16);
      t[v] = shift <= 30 ? Math.floor(POW2_STEPS[d % 16] / POWERS_OF_TWO[shift]) : 0;
    }
    return t;
  });
}

/** Per parameter byte of params, the frequencies of the symbols lo..hi of one coded (level,
 * channel): the marginal's masses, tempered, then FrequencyTable.fromCounts. */
export function parametricFreqs(knotsC, step, lo, hi, params, precision = PRECISION) {
  const masses = marginalMasses(knotsC, step, lo, hi);
  return temperedCounts(masses, lo, params).map((w) => FrequencyTable.fromCounts(lo, w, precision).freqs);
}

/** count LEB128 values from data[pos..] of at most 3 bytes each, none overlong (a last byte of 0
 * after others): {values, pos} (the position after them). CodecError otherwise. */
export function decodeVarints(data, pos, count) {
  const values = new Array(count);
  const size = data.length;
  for (let i = 0; i < count; i++) {
    let v = 0;
    let scale = 1;
    let done = false;
    for (let length = 1; length <= 3; length++) {
      if (pos >= size) throw new CodecError('entropy.bin truncated inside the knots');
      const byte = data[pos];
      pos += 1;
      v += (byte & 0x7f) * scale;
      scale *= 128;
      if (byte < 0x80) {
        if (byte === 0 && length > 1) throw new CodecError('entropy.bin: an overlong knot step');
        done = true;
        break;
      }
    }
    if (!done) throw new CodecError('entropy.bin: a knot step longer than 3 bytes');
    values[i] = v;
  }
  return { values, pos };
}

/** The contexts a channel can have when m coded channels precede it (contexts()), ascending. */
export function reachableContexts(k, m) {
  if (k <= 1 || m === 0) return [0];
  const out = new Set();
  for (let z = 0; z <= m; z++) out.add(Math.min(k - 1, Math.floor((k * z) / m)));
  return [...out].sort((a, b) => a - b);
}

/** levels * channels * k booleans (level, channel, context order): the contexts each coded
 * (level, channel) can have (the stored parameters); coded: levels * channels booleans. */
export function reachableMask(coded, levels, channels, k) {
  const mask = new Uint8Array(levels * channels * k);
  const rows = Array.from({ length: channels }, (_, m) => reachableContexts(k, m)); // by coded channels before
  for (let level = 0; level < levels; level++) {
    let before = 0;
    for (let c = 0; c < channels; c++) {
      const cell = level * channels + c;
      if (!coded[cell]) continue;
      for (const ctx of rows[before]) mask[cell * k + ctx] = 1;
      before += 1;
    }
  }
  return mask;
}

/** Per-level rows built on first use (Python's _LazyRows): an array whose element level is
 * build(level), made when it is first read (decoding a file needs one level's tables). */
function lazyRows(count, build) {
  const rows = new Array(count);
  const cache = new Array(count).fill(null);
  for (let level = 0; level < count; level++) {
    Object.defineProperty(rows, level, {
      enumerable: true,
      get() {
        if (cache[level] === null) cache[level] = build(level);
        return cache[level];
      },
    });
  }
  return rows;
}

// --- the per-bundle model ---

/** Inverse gains and frequency tables of one bundle, per rate level, latent channel and context. */
export class EntropyModel {
  /**
   * invGains: Float32Array of levels * channels values (level-major); tables[level][c]: a
   * FrequencyTable (K = 1) or an array of K FrequencyTables sharing one support, one per context;
   * grid: [H, W]. The latent is an (H, W, C) array of integer symbols. contextTables[level][c]
   * holds the K tables of channel c at level, tables[level][c] the first of them.
   */
  constructor(invGains, levels, channels, tables, grid = [1, 1]) {
    const [h, w] = grid;
    if (!(levels >= 1 && levels <= MAX_LEVELS)) {
      throw new CodecError(`entropy model: ${levels} levels (allowed 1..${MAX_LEVELS})`);
    }
    if (!(channels >= 1 && channels <= MAX_CHANNELS)) {
      throw new CodecError(`entropy model: ${channels} channels (allowed 1..${MAX_CHANNELS})`);
    }
    if (!(h >= 1 && h <= MAX_GRID_SIDE && w >= 1 && w <= MAX_GRID_SIDE && h * w * channels <= MAX_SYMBOLS)) {
      throw new CodecError(`entropy model: latent grid ${h}x${w}x${channels} beyond the caps`);
    }
    if (!invGains.every((g) => Number.isFinite(g) && g > 0)) {
      throw new CodecError('entropy model: inverse gains must be finite and positive');
    }
    if (tables.length !== levels || tables.some((row) => row.length !== channels)) {
      throw new CodecError(`entropy model: tables must be ${levels} x ${channels}`);
    }
    const rows = tables.map((row) => row.map((t) => (t instanceof FrequencyTable ? [t] : Array.from(t))));
    const k = rows[0][0].length;
    if (!(k >= 1 && k <= MAX_CONTEXTS)) {
      throw new CodecError(`entropy model: ${k} contexts (allowed 1..${MAX_CONTEXTS})`);
    }
    for (const row of rows) {
      for (const ctx of row) {
        if (ctx.length !== k || !ctx.every((t) => t instanceof FrequencyTable)) {
          throw new CodecError(`entropy model: every channel needs ${k} FrequencyTable objects`);
        }
        if (ctx.some((t) => t.lo !== ctx[0].lo || t.n !== ctx[0].n)) {
          throw new CodecError('entropy model: the context tables of a channel must share one support');
        }
        if (!(ctx[0].lo >= -32768 && ctx[0].lo <= 32767 && ctx[0].n <= 65535)) {
          throw new CodecError('entropy model: table support does not fit entropy.bin');
        }
      }
    }
    const precisions = new Set();
    for (const row of rows) for (const ctx of row) for (const t of ctx) if (!t.degenerate) precisions.add(t.precision);
    if (precisions.size > 1) throw new CodecError('entropy model: all tables must share one precision');
    const coded = rows.flatMap((row) => row.map((ctx) => !ctx[0].degenerate));
    this._setup(invGains, levels, channels, rows, [h, w], k, precisions.size ? [...precisions][0] : PRECISION, coded);
  }

  _setup(invGains, levels, channels, rows, grid, k, precision, coded) {
    this.precision = precision;
    this.invGains = Float32Array.from(invGains);
    this.contextTables = rows; // an array, or lazyRows (version 3: a level's tables are derived when first used)
    this.tables = lazyRows(levels, (level) => rows[level].map((ctx) => ctx[0]));
    this.contexts = k;
    this.grid = grid;
    this.levels = levels;
    this.channels = channels;
    this.levelTable = FrequencyTable.uniform(levels);
    this._coded = Array.from({ length: levels }, (_, l) => Array.from(coded.slice(l * channels, (l + 1) * channels), Boolean));
    this._parameters = null; // {steps, knots, coded, params} of a version-3 model
  }

  /** Booleans: the channels coded at level (the rest have a degenerate table). */
  coded(level) { return this._coded[level].slice(); }

  /** The context of every symbol (H*W*C, channel fastest) at level (contexts()). */
  contextsOf(level, symbols) { return contexts(symbols, this.coded(level), this.contexts); }

  /** Shape [H, W, C] of one latent's symbols. */
  get shape() { return [this.grid[0], this.grid[1], this.channels]; }

  /** Parse entropy.bin (docs/bitstream.md section 6), checking every field. */
  static fromBytes(bytes) {
    const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    if (data.length > MAX_ENTROPY_BYTES) throw new CodecError(`entropy.bin too large (${data.length} bytes)`);
    if (data.length < ENTROPY_HEADER_BYTES) throw new CodecError(`entropy.bin truncated (${data.length} bytes)`);
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const magic = String.fromCharCode(data[0], data[1], data[2], data[3]);
    const version = data[4];
    const precision = data[5];
    const levels = view.getUint16(6, true);
    const channels = view.getUint16(8, true);
    const h = view.getUint16(10, true);
    const w = view.getUint16(12, true);
    if (magic !== ENTROPY_MAGIC) throw new CodecError('not a gancodec entropy.bin (wrong magic)');
    if (version !== 1 && version !== 2 && version !== ENTROPY_VERSION) {
      throw new CodecError(`entropy.bin version ${version} is not supported (this reads 1..${ENTROPY_VERSION})`);
    }
    if (!(precision >= 1 && precision <= MAX_PRECISION)) {
      throw new CodecError(`entropy.bin: precision ${precision} outside 1..${MAX_PRECISION}`);
    }
    if (!(levels >= 1 && levels <= MAX_LEVELS && channels >= 1 && channels <= MAX_CHANNELS && h >= 1
          && h <= MAX_GRID_SIDE && w >= 1 && w <= MAX_GRID_SIDE && h * w * channels <= MAX_SYMBOLS)) {
      throw new CodecError(`entropy.bin: dimensions ${levels} levels x ${h}x${w}x${channels} beyond the caps`);
    }
    let pos = ENTROPY_HEADER_BYTES;
    let k = 1;
    if (version === 3) return EntropyModel._fromParametric(data, view, pos, levels, channels, [h, w], precision);
    if (version >= 2) {
      if (data.length < pos + CONTEXTS_FIELD_BYTES) throw new CodecError('entropy.bin truncated before its context count');
      k = data[pos];
      pos += CONTEXTS_FIELD_BYTES;
      if (!(k >= 2 && k <= MAX_CONTEXTS)) {
        throw new CodecError(`entropy.bin: ${k} contexts (version 2 allows 2..${MAX_CONTEXTS})`);
      }
    }
    const gainsEnd = pos + 4 * levels * channels;
    if (data.length < gainsEnd) throw new CodecError('entropy.bin truncated inside the inverse gains');
    const invGains = new Float32Array(levels * channels);
    for (let i = 0; i < levels * channels; i++) invGains[i] = view.getFloat32(pos + 4 * i, true);
    if (version === 1) {
      return new EntropyModel(invGains, levels, channels, readTablesV1(data, view, gainsEnd, levels, channels, precision), [h, w]);
    }
    const model = new EntropyModel(invGains, levels, channels,
                                   readTablesPacked(data, view, gainsEnd, levels, channels, k, precision), [h, w]);
    model.precision = precision; // as Python's _from_packed: the file's, even if every table is degenerate
    return model;
  }

  /**
   * A model whose tables are derived from parameters (entropy.bin version 3, docs/bitstream.md
   * section 6; Python's EntropyModel.from_parameters): invGains levels * channels float32
   * (level-major); steps levels * channels, each coded cell's quantization step (units 2**-16);
   * knots: per channel its Q + 1 nondecreasing integers (units 2**-12); coded levels * channels
   * booleans; params levels * channels * K bytes (level, channel, context order; only the
   * reachable contexts of coded cells matter, the rest become NEUTRAL_PARAM). Every field is
   * checked (CodecError); the tables of a level are derived when it is first used.
   */
  static fromParameters(invGains, levels, channels, steps, knots, coded, params, grid = [1, 1], precision = PRECISION) {
    const [h, w] = grid;
    if (!(levels >= 1 && levels <= MAX_LEVELS && channels >= 1 && channels <= MAX_CHANNELS && h >= 1
          && h <= MAX_GRID_SIDE && w >= 1 && w <= MAX_GRID_SIDE && h * w * channels <= MAX_SYMBOLS)) {
      throw new CodecError(`entropy model: dimensions ${levels} levels x ${h}x${w}x${channels} beyond the caps`);
    }
    if (!Number.isInteger(precision) || precision < 1 || precision > MAX_PRECISION) {
      throw new CodecError(`entropy model: precision ${precision} outside 1..${MAX_PRECISION}`);
    }
    const cells = levels * channels;
    const q = knots.length ? knots[0].length - 1 : 0;
    if (knots.length !== channels || !(q >= 1 && q <= MAX_SEGMENTS) || knots.some((row) => row.length !== q + 1)) {
      throw new CodecError(`entropy model: knots must be (${channels}, Q + 1) with Q in 1..${MAX_SEGMENTS}`);
    }
    if (coded.length !== cells || steps.length !== cells || invGains.length !== cells) {
      throw new CodecError(`entropy model: the coded map and the steps must be ${levels} x ${channels}`);
    }
    const k = params.length / cells;
    if (!(Number.isInteger(k) && k >= 1 && k <= MAX_CONTEXTS)) {
      throw new CodecError(`entropy model: params must be (${levels}, ${channels}, K), K in 1..${MAX_CONTEXTS}`);
    }
    for (let j = 0; j < params.length; j++) {
      if (!(Number.isInteger(params[j]) && params[j] >= 0 && params[j] <= 255)) {
        throw new CodecError('entropy model: a context parameter is not a byte');
      }
    }
    if (knots.some((row) => row.some((v) => !(Math.abs(v) <= MAX_KNOT)))) {
      throw new CodecError(`entropy model: a knot beyond +-${MAX_KNOT} (units of 2**-${KNOT_BITS})`);
    }
    if (knots.some((row) => row.some((v, i) => i > 0 && !(v - row[i - 1] >= 0 && v - row[i - 1] <= MAX_KNOT_STEP)))) {
      throw new CodecError(`entropy model: knots must rise by 0..${MAX_KNOT_STEP} units each`);
    }
    for (let i = 0; i < cells; i++) {
      if (!(Number.isFinite(invGains[i]) && invGains[i] > 0)) {
        throw new CodecError('entropy model: inverse gains must be finite and positive');
      }
    }
    for (let i = 0; i < cells; i++) {
      if (coded[i] && !(Number.isInteger(steps[i]) && steps[i] >= 1 && steps[i] <= MAX_STEP)) {
        throw new CodecError(`entropy model: coded cell (${Math.floor(i / channels)}, ${i % channels}) has the step `
                             + `${steps[i]} (allowed 1..${MAX_STEP})`);
      }
    }
    const lo = new Array(cells).fill(0);
    const hi = new Array(cells).fill(0);
    const maxN = Math.min(2 ** precision, 65535);
    for (let i = 0; i < cells; i++) {
      if (!coded[i]) continue;
      [lo[i], hi[i]] = parametricSupport(knots[i % channels], steps[i]);
      if (lo[i] < -32768 || hi[i] > 32767 || hi[i] - lo[i] + 1 > maxN) {
        throw new CodecError(`entropy model: coded cell (${Math.floor(i / channels)}, ${i % channels}) has the support `
                             + `[${lo[i]}, ${hi[i]}], beyond int16 or 2**${precision} symbols`);
      }
    }
    const mask = reachableMask(coded, levels, channels, k);
    const used = new Uint8Array(params.length);
    for (let j = 0; j < params.length; j++) used[j] = mask[j] ? params[j] : NEUTRAL_PARAM;
    const degenerate = new FrequencyTable(0, [1]);

    const build = (level) => {
      const row = [];
      for (let c = 0; c < channels; c++) {
        const i = level * channels + c;
        if (!coded[i]) {
          row.push(new Array(k).fill(degenerate));
          continue;
        }
        const ctxParams = Array.from(used.subarray(i * k, (i + 1) * k));
        const unique = [...new Set(ctxParams)]; // contexts with the same parameter byte share one table
        const freqs = parametricFreqs(knots[c], steps[i], lo[i], hi[i], unique, precision);
        const tables = freqs.map((f) => new FrequencyTable(lo[i], f, precision));
        row.push(ctxParams.map((param) => tables[unique.indexOf(param)]));
      }
      return row;
    };

    const self = Object.create(EntropyModel.prototype);
    self._setup(invGains, levels, channels, lazyRows(levels, build), [h, w], k, precision, Array.from(coded, Boolean));
    self._parameters = { steps: Array.from(steps, (v, i) => (coded[i] ? v : 0)), knots: knots.map((row) => Array.from(row)),
                         coded: Array.from(coded, Boolean), params: Array.from(used) };
    return self;
  }

  /**
   * Version 3 (Python's EntropyModel._from_parametric): K, Q, the coded bitmap, the inverse gains
   * of the cells not coded, then each coded cell's inverse gain and step, the knots, the parameter
   * bytes of the reachable contexts; checked in Python's order, with its messages.
   */
  static _fromParametric(data, view, pos, levels, channels, grid, precision) {
    if (data.length < pos + CONTEXTS_FIELD_BYTES + SEGMENTS_FIELD_BYTES) {
      throw new CodecError('entropy.bin truncated before its context and segment counts');
    }
    const k = data[pos];
    const q = view.getUint16(pos + CONTEXTS_FIELD_BYTES, true);
    pos += CONTEXTS_FIELD_BYTES + SEGMENTS_FIELD_BYTES;
    if (!(k >= 1 && k <= MAX_CONTEXTS)) throw new CodecError(`entropy.bin: ${k} contexts (version 3 allows 1..${MAX_CONTEXTS})`);
    if (!(q >= 1 && q <= MAX_SEGMENTS)) throw new CodecError(`entropy.bin: ${q} CDF segments (allowed 1..${MAX_SEGMENTS})`);
    const cells = levels * channels;
    const bitsEnd = pos + Math.floor((cells + 7) / 8);
    if (data.length < bitsEnd) throw new CodecError('entropy.bin truncated inside the coded map');
    const coded = new Array(cells);
    let nCoded = 0;
    for (let i = 0; i < 8 * (bitsEnd - pos); i++) {
      const bit = (data[pos + (i >>> 3)] >>> (i & 7)) & 1; // bit i of the map: bit (i & 7) of byte (i >> 3), LSB first
      if (i >= cells) {
        if (bit) throw new CodecError('entropy.bin: padding bits after the coded map are not zero');
        continue;
      }
      coded[i] = bit === 1;
      nCoded += bit;
    }
    const cellsEnd = bitsEnd + 4 * (cells - nCoded) + 7 * nCoded;
    if (data.length < cellsEnd) throw new CodecError('entropy.bin truncated inside the inverse gains and steps');
    const invGains = new Float32Array(cells);
    const steps = new Array(cells).fill(0);
    let plain = bitsEnd; // the inverse gains of the cells not coded
    let packed = bitsEnd + 4 * (cells - nCoded); // then (inv_gain, uint16 step, its high byte) per coded cell
    for (let i = 0; i < cells; i++) {
      if (coded[i]) {
        invGains[i] = view.getFloat32(packed, true);
        steps[i] = view.getUint16(packed + 4, true) + data[packed + 6] * 2 ** 16;
        packed += 7;
      } else {
        invGains[i] = view.getFloat32(plain, true);
        plain += 4;
      }
    }
    const knots = [];
    pos = cellsEnd;
    for (let c = 0; c < channels; c++) {
      if (data.length < pos + 4) throw new CodecError(`entropy.bin truncated at the knots of channel ${c}`);
      const row = [view.getInt32(pos, true)];
      const { values, pos: next } = decodeVarints(data, pos + 4, q);
      for (const d of values) row.push(row[row.length - 1] + d);
      knots.push(row);
      pos = next;
    }
    const mask = reachableMask(coded, levels, channels, k);
    const count = mask.reduce((a, b) => a + b, 0);
    if (data.length > pos + count) {
      throw new CodecError(`entropy.bin has ${data.length - pos - count} byte(s) more than its parameters need`);
    }
    if (data.length < pos + count) throw new CodecError('entropy.bin truncated inside the context parameters');
    const params = new Uint8Array(cells * k).fill(NEUTRAL_PARAM);
    for (let j = 0; j < mask.length; j++) { // level, channel, context order
      if (mask[j]) params[j] = data[pos++];
    }
    return EntropyModel.fromParameters(invGains, levels, channels, steps, knots, coded, params, grid, precision);
  }

  /** Symbols (H*W*C, channel fastest) -> float32 latent symbol * invGains[level, c] (float32 product). */
  dequantize(level, symbols) {
    const c = this.channels;
    const out = new Float32Array(symbols.length);
    for (let k = 0; k < symbols.length; k++) {
      out[k] = Math.fround(Math.fround(symbols[k]) * this.invGains[level * c + (k % c)]);
    }
    return out;
  }

  /** Inverse of EntropyModel.encode: {level, symbols: Int32Array (H, W, C) row-major} on grid [H, W]
   * (default: the model's own). */
  decode(payload, grid = null) {
    const [h, w] = grid || this.grid;
    if (!(Number.isInteger(h) && Number.isInteger(w) && h >= 1 && h <= MAX_GRID_SIDE && w >= 1
          && w <= MAX_GRID_SIDE && h * w * this.channels <= MAX_SYMBOLS)) {
      throw new CodecError(`latent grid ${h}x${w}x${this.channels} beyond the caps`);
    }
    const dec = new RangeDecoder(payload);
    const level = dec.decode(this.levelTable);
    if (level >= this.levels) { // unreachable with the uniform table; kept as a guard
      throw new CodecError('entropy decoding failed: rate level out of range (corrupted file)');
    }
    const c = this.channels;
    const positions = h * w;
    const symbols = new Int32Array(positions * c);
    if (this.contexts === 1) {
      if (positions === 1) {
        dec.decodeEach(this.tables[level]).forEach((s, k) => { symbols[k] = s; });
      } else {
        this.tables[level].forEach((table, ch) => { // channel by channel, h * w symbols each
          dec.decodeMany(positions, table).forEach((s, k) => { symbols[k * c + ch] = s; });
        });
      }
    } else {
      const k = this.contexts;
      const nonzero = new Array(positions).fill(0); // z per position (see contexts())
      let before = 0; // m: coded channels decoded so far
      this.contextTables[level].forEach((tables, ch) => {
        if (tables[0].degenerate) { // not coded, not counted
          for (let p = 0; p < positions; p++) symbols[p * c + ch] = tables[0].lo;
          return;
        }
        const decoded = before === 0
          ? dec.decodeMany(positions, tables[0])
          : dec.decodeEach(nonzero.map((z) => tables[Math.min(k - 1, Math.floor((k * z) / before))]));
        decoded.forEach((s, p) => {
          symbols[p * c + ch] = s;
          if (s !== 0) nonzero[p] += 1;
        });
        before += 1;
      });
    }
    dec.finish();
    return { level, symbols };
  }
}

/** Version 1's tables: per level and channel (lo, n), then n frequencies unless n == 1. */
function readTablesV1(data, view, pos, levels, channels, precision) {
  const total = 2 ** precision;
  const tables = [];
  for (let level = 0; level < levels; level++) {
    const row = [];
    for (let c = 0; c < channels; c++) {
      if (data.length < pos + 4) throw new CodecError(`entropy.bin truncated at table (${level}, ${c})`);
      const lo = view.getInt16(pos, true);
      const n = view.getUint16(pos + 2, true);
      pos += 4;
      if (n === 0 || n > total) {
        throw new CodecError(`entropy.bin: table (${level}, ${c}) has ${n} symbols `
                             + `(allowed 1..${total} at precision ${precision})`);
      }
      if (n === 1) {
        row.push(new FrequencyTable(lo, [1])); // degenerate: its precision is irrelevant
        continue;
      }
      if (data.length < pos + 2 * n) throw new CodecError(`entropy.bin truncated in table (${level}, ${c})`);
      const freqs = [];
      for (let i = 0; i < n; i++) freqs.push(view.getUint16(pos + 2 * i, true));
      pos += 2 * n;
      if (Math.min(...freqs) < 1 || freqs.reduce((a, b) => a + b, 0) !== total) {
        throw new CodecError(`entropy.bin: table (${level}, ${c}) frequencies must be >= 1 and sum to 2**${precision}`);
      }
      row.push(new FrequencyTable(lo, freqs, precision));
    }
    tables.push(row);
  }
  if (pos !== data.length) throw new CodecError(`entropy.bin has ${data.length - pos} unexpected trailing byte(s)`);
  return tables;
}

/**
 * Version 2 (Python's EntropyModel._from_packed): every support (lo, n), then every coded
 * channel's K frequency rows. Checked in Python's order: all supports, then the file length, then
 * every row (sum and minimum). Returns tables[level][c] = K FrequencyTables.
 */
function readTablesPacked(data, view, pos, levels, channels, k, precision) {
  const total = 2 ** precision;
  const cells = levels * channels;
  const end = pos + 4 * cells;
  if (data.length < end) throw new CodecError('entropy.bin truncated inside the table supports');
  const lo = new Int32Array(cells);
  const n = new Int32Array(cells);
  let needed = 0; // frequencies stored after the supports
  for (let i = 0; i < cells; i++) {
    lo[i] = view.getInt16(pos + 4 * i, true);
    n[i] = view.getUint16(pos + 4 * i + 2, true);
  }
  for (let i = 0; i < cells; i++) {
    if (n[i] === 0 || n[i] > total) {
      throw new CodecError(`entropy.bin: table (${Math.floor(i / channels)}, ${i % channels}) has ${n[i]} symbols `
                           + `(allowed 1..${total} at precision ${precision})`);
    }
    if (n[i] > 1) needed += k * n[i];
  }
  const expected = end + 2 * needed;
  if (data.length > expected) {
    throw new CodecError(`entropy.bin has ${data.length - expected} byte(s) more than its tables need`);
  }
  if (data.length < expected) throw new CodecError('entropy.bin truncated inside the frequency tables');
  const rows = [];
  let at = end;
  for (let i = 0; i < cells; i++) { // first check every row, as Python does before building any table
    if (n[i] === 1) continue;
    for (let ctx = 0; ctx < k; ctx++) {
      let sum = 0;
      let min = Infinity;
      for (let j = 0; j < n[i]; j++) {
        const f = view.getUint16(at + 2 * j, true);
        sum += f;
        if (f < min) min = f;
      }
      if (sum !== total || min < 1) {
        throw new CodecError(`entropy.bin: table (${Math.floor(i / channels)}, ${i % channels}, context ${ctx}) `
                             + `frequencies must be >= 1 and sum to 2**${precision}`);
      }
      at += 2 * n[i];
    }
  }
  at = end;
  for (let level = 0; level < levels; level++) {
    const row = [];
    for (let c = 0; c < channels; c++) {
      const i = level * channels + c;
      if (n[i] === 1) {
        row.push(new Array(k).fill(new FrequencyTable(lo[i], [1]))); // degenerate at every context
        continue;
      }
      const ctxTables = [];
      for (let ctx = 0; ctx < k; ctx++) {
        const freqs = [];
        for (let j = 0; j < n[i]; j++) freqs.push(view.getUint16(at + 2 * j, true));
        at += 2 * n[i];
        ctxTables.push(new FrequencyTable(lo[i], freqs, precision));
      }
      row.push(ctxTables);
    }
    rows.push(row);
  }
  return rows;
}

// --- runtime/bitstream.py ----------------------------------------------------------------------

export const VERSION = 3;
export const VERSION_BITS = 0b01; // the top 2 bits of byte 0
export const V2_BITS = 0b10; // version 2: read (its size field is 2 + 2 bytes)
export const V1_MAGIC = 0xc7; // byte 0 of every format-1 file
export const KINDS = ['latent', 'image'];
export const HEADER_BYTES = 2;
export const SIZE_BYTES = 3; // 12 + 12 bits
export const SIZE_BYTES_V2 = 4;
export const CRC_BYTES = 1;
export const MIN_FILE_BYTES = HEADER_BYTES + CRC_BYTES;
export const MAX_FILE_BYTES = 2 ** 20;
export const MAX_SIDE = 4096;
export const MAX_RESTORE_PIXELS = 16777216;
export const MAX_IMAGE_SIDE = 4096;
export const WEBP_CHUNKS = ['VP8 ', 'VP8L', 'VP8X'];
export const AVIF_BRANDS = ['avif', 'avis'];

const CRC8_TABLE = (() => {
  const table = [];
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte;
    for (let k = 0; k < 8; k++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
    table.push(crc);
  }
  return table;
})();

/** CRC-8/SMBUS (poly 0x07, init 0, no reflection, no final xor); crc continues a run. */
export function crc8(data, crc = 0) {
  for (const b of data) crc = CRC8_TABLE[crc ^ b];
  return crc;
}

/** The 12-bit model id written in the header: the first 12 bits of the 32-byte SHA-256. */
export function modelIdPrefix(modelId) {
  if (!(modelId instanceof Uint8Array) || modelId.length !== 32) {
    throw new Error('modelId must be the 32-byte SHA-256 digest');
  }
  return (modelId[0] << 4) | (modelId[1] >> 4);
}

/** 64 hex digits -> Uint8Array(32). */
export function hexToBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const hex3 = (prefix) => prefix.toString(16).padStart(3, '0');

/** Parse the header; structural checks only (length, version, size caps), not the CRC. */
export function readHeader(data) {
  if (data.length > MAX_FILE_BYTES) throw new CodecError(`file too large for a latent.bin (${data.length} bytes)`);
  if (data.length < MIN_FILE_BYTES) throw new CodecError(`file too short for a latent.bin (${data.length} bytes)`);
  const byte0 = data[0];
  if (byte0 === V1_MAGIC) {
    throw new CodecError('this file was written by an older version of gancodec (format 1); '
                         + 're-encode it with this version');
  }
  if (byte0 >> 6 !== VERSION_BITS && byte0 >> 6 !== V2_BITS) {
    throw new CodecError('not a gancodec latent.bin (unknown format version bits '
                         + `${(byte0 >> 6).toString(2).padStart(2, '0')}; written by a newer version?)`);
  }
  const version = byte0 >> 6 === VERSION_BITS ? VERSION : 2;
  const sizeBytes = version === VERSION ? SIZE_BYTES : SIZE_BYTES_V2;
  const kind = KINDS[(byte0 >> 5) & 1];
  let size = null;
  if (byte0 & 0x10) {
    if (data.length < HEADER_BYTES + sizeBytes + CRC_BYTES) throw new CodecError('file truncated inside the header');
    size = version === VERSION
      ? [((data[2] << 4) | (data[3] >> 4)) + 1, (((data[3] & 0x0f) << 8) | data[4]) + 1]
      : [(data[2] << 8 | data[3]) + 1, (data[4] << 8 | data[5]) + 1];
    checkSize(size);
  }
  const prefix = ((byte0 & 0x0f) << 8) | data[1];
  return {
    kind,
    modelIdPrefix: prefix,
    modelIdHex: hex3(prefix),
    size, // [width, height] when stored: an any-size bundle's coded size, else the original size
    length: HEADER_BYTES + (size ? sizeBytes : 0), // header bytes before the payload
    version,
  };
}

function checkSize([w, h]) {
  if (!(w >= 1 && w <= MAX_SIDE && h >= 1 && h <= MAX_SIDE && w * h <= MAX_RESTORE_PIXELS)) {
    throw new CodecError(`original size ${w}x${h} is beyond what a latent.bin may restore `
                         + `(at most ${MAX_SIDE} per side and ${Math.floor(MAX_RESTORE_PIXELS / 1000000)} MP)`);
  }
}

/** Check the CRC and return the payload bytes. */
function payloadOf(data, header, modelId) {
  const seed = header.kind === 'latent' ? crc8(modelId) : 0;
  if (crc8(data.subarray(0, data.length - 1), seed) !== data[data.length - 1]) {
    throw new CodecError('integrity check failed: the file is corrupted'
                         + (header.kind === 'latent' ? ' or was written by another model' : ''));
  }
  return data.subarray(header.length, data.length - 1);
}

/**
 * Check and decode a latent file for the model with this id: {header, level, symbols}. grid:
 * the latent's [H, W], or a function of the header that gives it (an any-size bundle's grid
 * follows the stored size); default the entropy model's own.
 */
export function unpackLatent(data, modelId, model, grid = null) {
  const header = readHeader(data);
  if (header.kind !== 'latent') throw new CodecError('this file holds an image payload, not a latent');
  const mine = modelIdPrefix(modelId);
  if (header.modelIdPrefix !== mine) {
    throw new CodecError(`file was written by model ${header.modelIdHex}…, not by this model (${hex3(mine)}…)`);
  }
  if (data.length < header.length + CRC_BYTES) throw new CodecError('file truncated inside the header');
  const { level, symbols } = model.decode(payloadOf(data, header, modelId),
                                         typeof grid === 'function' ? grid(header) : grid);
  return { header, level, symbols };
}

/** Rebuild the WebP file from a WebP payload: "RIFF" + uint32le(len + 4) + "WEBP" + payload. */
export function webpFile(payload) {
  const out = new Uint8Array(12 + payload.length);
  out.set([0x52, 0x49, 0x46, 0x46], 0); // RIFF
  new DataView(out.buffer).setUint32(4, payload.length + 4, true);
  out.set([0x57, 0x45, 0x42, 0x50], 8); // WEBP
  out.set(payload, 12);
  return out;
}

const chunkName = (bytes) => String.fromCharCode(...bytes.subarray(0, 4));

/** Width, height and animation flag from the first chunk of a WebP payload, before any pixel. */
export function webpInfo(payload) {
  const name = chunkName(payload);
  const d = payload.subarray(8);
  const u16 = (i) => d[i] | (d[i + 1] << 8);
  const u24 = (i) => d[i] | (d[i + 1] << 8) | (d[i + 2] << 16);
  if (name === 'VP8 ' && d.length >= 10 && d[3] === 0x9d && d[4] === 0x01 && d[5] === 0x2a) {
    return { width: u16(6) & 0x3fff, height: u16(8) & 0x3fff, animated: false };
  }
  if (name === 'VP8L' && d.length >= 5 && d[0] === 0x2f) {
    const bits = (d[1] | (d[2] << 8) | (d[3] << 16) | (d[4] << 24)) >>> 0;
    return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, animated: false };
  }
  if (name === 'VP8X' && d.length >= 10) {
    return { width: u24(4) + 1, height: u24(7) + 1, animated: Boolean(d[0] & 0x02) };
  }
  return null;
}

const isAvif = (d) => d.length >= 12 && chunkName(d.subarray(4)) === 'ftyp'
  && AVIF_BRANDS.includes(chunkName(d.subarray(8)));

/** An image payload -> {format: 'WEBP' | 'AVIF', file}: bitstream.image_file. */
export function imageFile(payload) {
  if (payload.length >= 8 && WEBP_CHUNKS.includes(chunkName(payload))) return { format: 'WEBP', file: webpFile(payload) };
  if (isAvif(payload)) return { format: 'AVIF', file: payload.slice() };
  throw new CodecError('image payload is neither WebP (VP8/VP8L/VP8X chunk) nor AVIF (ftyp box) (corrupted file)');
}

/**
 * Check an image-kind file: {header, format, file (the WebP or AVIF file), width, height}. The
 * pixels are decoded by the browser (decodeImage); no bundle is needed. A WebP's size is read
 * from its first chunk here; an AVIF's (null here) is checked once decoded.
 */
export function unpackImage(data) {
  const header = readHeader(data);
  if (header.kind !== 'image') throw new CodecError('this file holds a latent, not an image payload');
  const payload = payloadOf(data, header, null);
  const { format, file } = imageFile(payload);
  if (format === 'AVIF') return { header, format, file, width: null, height: null };
  const info = webpInfo(payload);
  if (info === null) throw new CodecError('WebP payload could not be decoded (corrupted file): bad chunk header');
  const { width: w, height: h } = info;
  if (!(w >= 1 && w <= MAX_IMAGE_SIDE && h >= 1 && h <= MAX_IMAGE_SIDE)) {
    throw new CodecError(`WebP payload is ${w}x${h}, beyond the ${MAX_IMAGE_SIDE}-pixel cap`);
  }
  if (info.animated) throw new CodecError('WebP payload is animated; a latent.bin holds one image');
  return { header, format, file, width: w, height: h };
}

// --- runtime/images.py -------------------------------------------------------------------------

/** np.rint: round half to even. */
function rint(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * from_unit_range: float32 [-1, 1] -> uint8, clip(rint((v + 1) * 127.5), 0, 255) in float32
 * arithmetic (a float32 sum or product computed in double and rounded once by Math.fround is the
 * float32 result). Returns RGBA pixels (alpha 255) for ImageData from (S, S, 3) values.
 */
export function fromUnitRange(values) {
  const n = values.length / 3;
  const out = new Uint8ClampedArray(4 * n);
  for (let k = 0; k < n; k++) {
    for (let ch = 0; ch < 3; ch++) {
      const t = Math.fround(Math.fround(values[3 * k + ch] + 1) * 127.5);
      out[4 * k + ch] = Math.min(255, Math.max(0, rint(t)));
    }
    out[4 * k + 3] = 255;
  }
  return out;
}

// --- the page ----------------------------------------------------------------------------------

const ORT_MODULE = './ort/ort.wasm.min.mjs';
const MODELS = 'models/';

let ortPromise = null;
function loadOrt() {
  if (!ortPromise) {
    ortPromise = import(ORT_MODULE).then((ort) => {
      ort.env.wasm.numThreads = 1; // no cross-origin isolation needed, any static host works
      ort.env.wasm.proxy = false;
      ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href; // served next to the page
      return ort;
    });
  }
  return ortPromise;
}

async function fetchBytes(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (exc) {
    throw new CodecError(`${what}: cannot load it (${exc.message})`);
  }
  if (!response.ok) throw new CodecError(`${what}: cannot load it (HTTP ${response.status})`);
  return new Uint8Array(await response.arrayBuffer());
}

async function sha256Hex(bytes) {
  if (!globalThis.crypto || !crypto.subtle) return null; // plain http on a non-local host
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A web bundle (written by python -m export.web): manifest, entropy model, onnxruntime session. */
async function loadBundle(entry) {
  const dir = `${MODELS}${entry.path || `${entry.name}/`}`;
  const started = performance.now();
  const manifest = JSON.parse(new TextDecoder().decode(await fetchBytes(`${dir}manifest.json`, `${dir}manifest.json`)));
  const [entropyBytes, onnxBytes, ort] = await Promise.all([
    fetchBytes(`${dir}entropy.bin`, `${dir}entropy.bin`),
    fetchBytes(`${dir}generator.onnx`, `${dir}generator.onnx`),
    loadOrt(),
  ]);
  const digest = await sha256Hex(onnxBytes);
  if (digest !== null && digest !== manifest.model_id) {
    throw new CodecError(`${dir}: generator.onnx does not match its manifest (modified or corrupted bundle)`);
  }
  const entropy = EntropyModel.fromBytes(entropyBytes);
  const [h, w] = manifest.latent_grid;
  const [eh, ew, ec] = entropy.shape;
  if (eh !== h || ew !== w || ec !== manifest.channels || entropy.levels !== manifest.levels) {
    throw new CodecError(`${dir}: entropy.bin does not match the manifest ((${eh}, ${ew}, ${ec}), ${entropy.levels} levels)`);
  }
  let session;
  try {
    session = await ort.InferenceSession.create(onnxBytes, { executionProviders: ['wasm'] });
  } catch (exc) {
    throw new CodecError(`${dir}generator.onnx: onnxruntime cannot load it (${exc.message})`);
  }
  const bundle = {
    name: manifest.name, manifest, entropy, session, ort,
    modelId: hexToBytes(manifest.model_id),
    downloadBytes: entropyBytes.length + onnxBytes.length,
  };
  await generate(bundle, new Float32Array(h * w * manifest.channels)); // warm-up: the first run is slow
  bundle.loadMs = performance.now() - started;
  return bundle;
}

/** Image pixels per latent position along each side (runtime.bundle.Bundle.stride). */
const strideOf = (manifest) => manifest.image_size / manifest.latent_grid[0];

/**
 * The latent grid [H, W] of a file for this bundle (runtime.bundle.Bundle.grid): an any-size
 * bundle's follows the header's size (the coded image: ceil(side / stride) positions), absent =
 * the bundle's image_size²; a fixed-size bundle's is its own.
 */
export function latentGrid(manifest, header) {
  if (!manifest.any_size || !header.size) return manifest.latent_grid;
  const f = strideOf(manifest);
  const [width, height] = header.size;
  return [Math.ceil(height / f), Math.ceil(width / f)];
}

/** Run generator.onnx on one dequantized latent on grid [H, W]: RGBA pixels of the image, cropped
 * to [width, height] from the top-left (an any-size bundle's coded size). */
async function generate(bundle, latent, grid = null, size = null) {
  const { ort, session, manifest } = bundle;
  const [h, w] = grid || manifest.latent_grid;
  const input = new ort.Tensor('float32', latent, [1, h, w, manifest.channels]);
  const outputs = await session.run({ [session.inputNames[0]]: input });
  const image = outputs[session.outputNames[0]];
  const f = strideOf(manifest);
  if (image.dims.join() !== [1, f * h, f * w, 3].join()) {
    throw new CodecError(`generator.onnx returned shape [${image.dims}], expected [1, ${f * h}, ${f * w}, 3]`);
  }
  const rgba = fromUnitRange(image.data);
  const [width, height] = size || [f * w, f * h];
  if (width === f * w && height === f * h) return { rgba, width, height };
  const out = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) out.set(rgba.subarray(y * f * w * 4, (y * f * w + width) * 4), y * width * 4);
  return { rgba: out, width, height };
}

/** Decode a WebP or AVIF file with the browser's own decoder: RGBA pixels. */
async function decodeImage({ format, file, width: w, height: h }) {
  const name = format === 'WEBP' ? 'WebP' : format;
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([file], { type: `image/${format.toLowerCase()}` }),
                                     { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (exc) {
    throw new CodecError(`${name} payload could not be decoded (corrupted file): ${exc.name}`);
  }
  const { width, height } = bitmap;
  if (w === null && !(width >= 1 && width <= MAX_IMAGE_SIDE && height >= 1 && height <= MAX_IMAGE_SIDE)) {
    throw new CodecError(`${name} payload is ${width}x${height}, beyond the ${MAX_IMAGE_SIDE}-pixel cap`);
  }
  if (w !== null && (width !== w || height !== h)) {
    throw new CodecError(`${name} payload decoded to an unexpected shape (corrupted file)`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff'; // like to_rgb: transparency over white
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0);
  return { rgba: ctx.getImageData(0, 0, width, height).data, width, height };
}

/**
 * The page's state: the exported models (models/index.json) and their loaded bundles. decode()
 * mirrors runtime.codec.decode_file_bytes: a forced model must match the file's id; otherwise
 * the file's 12-bit id picks the candidates and the CRC (seeded with the full id) decides.
 */
export class WebDecoder {
  constructor(index, forced = null) {
    this.models = index.models || [];
    this.forced = forced;
    this.bundles = new Map();
  }

  bundle(entry) {
    if (!this.bundles.has(entry.name)) {
      const promise = loadBundle(entry);
      promise.catch(() => this.bundles.delete(entry.name)); // a failed load may be retried
      this.bundles.set(entry.name, promise);
    }
    return this.bundles.get(entry.name);
  }

  candidates(header) {
    if (this.forced) {
      const entry = this.models.find((m) => m.name === this.forced || m.path === `${this.forced}/`);
      if (!entry) {
        throw new CodecError(`no model named ${this.forced} is exported to this page `
                             + `(exported: ${this.models.map((m) => m.name).join(', ') || 'none'})`);
      }
      return [entry];
    }
    const found = this.models.filter((m) => parseInt(m.model_id.slice(0, 3), 16) === header.modelIdPrefix);
    if (!found.length) {
      throw new CodecError(`no model with id ${header.modelIdHex}… is exported to this page `
                           + '(looked in models/index.json); export it with python -m export.web');
    }
    return found;
  }

  /** latent.bin bytes -> {rgba, width, height, kind, level, model, header, ms: {...}}. */
  async decode(data) {
    const header = readHeader(data);
    if (header.kind === 'image') {
      const t0 = performance.now();
      const unpacked = unpackImage(data);
      const image = await decodeImage(unpacked);
      return { ...image, header, kind: 'image', format: unpacked.format, level: null, model: this.forced,
               ms: { total: performance.now() - t0 } };
    }
    const errors = [];
    for (const entry of this.candidates(header)) { // 12-bit ids may collide: the CRC decides
      const bundle = await this.bundle(entry);
      const t0 = performance.now();
      let unpacked;
      try {
        unpacked = unpackLatent(data, bundle.modelId, bundle.entropy, (h) => latentGrid(bundle.manifest, h));
      } catch (exc) {
        if (!(exc instanceof CodecError)) throw exc;
        errors.push(exc);
        continue;
      }
      const t1 = performance.now();
      const latent = bundle.entropy.dequantize(unpacked.level, unpacked.symbols);
      const anySize = bundle.manifest.any_size && header.size;
      const image = await generate(bundle, latent, latentGrid(bundle.manifest, header), anySize ? header.size : null);
      const t2 = performance.now();
      return {
        ...image, header, kind: 'latent', level: unpacked.level, model: bundle.name, bundle,
        ms: { entropy: t1 - t0, generator: t2 - t1, total: t2 - t0 },
      };
    }
    throw errors[0];
  }
}

function describe(result, numBytes) {
  const parts = [`${numBytes} bytes`];
  if (result.kind === 'latent') {
    parts.push(`model ${result.model} (${result.bundle.manifest.model_id.slice(0, 12)}…)`, `level ${result.level}`);
  } else {
    parts.push(`${result.format === 'WEBP' ? 'WebP' : result.format} payload (model id ${result.header.modelIdHex}… chose it)`);
  }
  parts.push(`${result.width}×${result.height}`);
  if (result.bundle) {
    parts.push(`model downloaded and loaded once in ${result.bundle.loadMs.toFixed(0)} ms `
               + `(${(result.bundle.downloadBytes / 1e6).toFixed(2)} MB)`);
  }
  const size = result.header.size;
  if (size && (size[0] !== result.width || size[1] !== result.height)) parts.push(`original size ${size[0]}×${size[1]} (shown at model size)`);
  const ms = result.ms;
  parts.push(result.kind === 'latent'
    ? `decoded in ${ms.total.toFixed(1)} ms (entropy ${ms.entropy.toFixed(2)} ms, generator ${ms.generator.toFixed(1)} ms)`
    : `decoded in ${ms.total.toFixed(1)} ms`);
  return parts.join(' · ');
}

/** Wire up index.html: file input #latent, canvas #decoded, #message, #info, #models. */
export async function startPage(doc = document) {
  const input = doc.getElementById('latent');
  const canvas = doc.getElementById('decoded');
  const message = doc.getElementById('message');
  const info = doc.getElementById('info');
  const modelsLine = doc.getElementById('models');
  const setStatus = (status, file) => {
    canvas.dataset.status = status;
    if (file !== undefined) canvas.dataset.file = file;
  };
  const fail = (exc, file) => {
    message.textContent = `error: ${exc instanceof CodecError ? exc.message : `${exc.name}: ${exc.message}`}`;
    message.hidden = false;
    info.textContent = '';
    canvas.getContext('2d').clearRect(0, 0, canvas.width, canvas.height); // no stale image beside an error
    setStatus('error', file);
    if (!(exc instanceof CodecError)) console.error(exc);
  };

  const forced = new URLSearchParams(location.search).get('model');
  let decoder;
  try {
    const index = JSON.parse(new TextDecoder().decode(await fetchBytes(`${MODELS}index.json`, `${MODELS}index.json`)));
    decoder = new WebDecoder(index, forced);
    const names = decoder.models.map((m) => `${m.name} (${m.model_id.slice(0, 3)}…)`);
    modelsLine.textContent = `Models on this page: ${names.join(', ') || 'none'}`
      + (forced ? ` · forced: ${forced}` : ' · the file\'s model id picks one');
    if (forced) decoder.candidates({}); // an unknown ?model= is reported at once
  } catch (exc) {
    fail(exc instanceof CodecError ? exc : new CodecError(`${MODELS}index.json: ${exc.message}`));
    input.disabled = !decoder;
  }
  setStatus(canvas.dataset.status || 'idle');

  input.addEventListener('change', async () => {
    const file = input.files[0];
    if (!file || !decoder) return;
    setStatus('busy', file.name);
    message.hidden = true;
    info.textContent = `decoding ${file.name}…`;
    try {
      const data = new Uint8Array(await file.arrayBuffer());
      const result = await decoder.decode(data);
      canvas.width = result.width;
      canvas.height = result.height;
      canvas.style.setProperty('--aspect', `${result.width} / ${result.height}`);
      canvas.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(result.rgba), result.width, result.height), 0, 0);
      info.textContent = describe(result, data.length);
      for (const [key, ms] of Object.entries(result.ms)) canvas.dataset[`${key}Ms`] = ms.toFixed(2); // for benchmarks.web
      if (result.bundle) canvas.dataset.loadMs = result.bundle.loadMs.toFixed(1);
      setStatus('done', file.name);
    } catch (exc) {
      fail(exc, file.name);
    }
    input.value = ''; // choosing the same file again decodes it again
  });
}
