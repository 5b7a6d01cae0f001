// Run the browser decoder's pure part (demo/web/decoder.js) over tests/vectors/ under node and
// print what it decoded as JSON; tests/test_web.py compares that with vectors.json.
//
//     node tests/web_vectors.mjs tests/vectors [--files F...] [--entropy E...]
//
// --files: more latent.bin files to decode with the vectors' model (e.g. mutated ones);
// --entropy: more entropy.bin files to parse. Their results are in "extra" / "entropy".
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  CodecError, EntropyModel, FrequencyTable, RangeDecoder, crc8, hexToBytes, readHeader, unpackLatent, unpackWebp,
} from '../demo/web/decoder.js';

const dir = process.argv[2];
const lists = { '--files': [], '--entropy': [] };
let current = null;
for (const arg of process.argv.slice(3)) {
  if (arg in lists) current = lists[arg];
  else current.push(arg);
}
const vectors = JSON.parse(readFileSync(join(dir, 'vectors.json'), 'utf8'));
const read = (name) => new Uint8Array(readFileSync(join(dir, name)));
const readPath = (path) => new Uint8Array(readFileSync(path));
const toHex = (bytes) => Buffer.from(bytes).toString('hex');

function attempt(fn) {
  try {
    return fn();
  } catch (exc) {
    if (!(exc instanceof CodecError)) throw exc; // anything else is a bug in the port
    return { error: exc.message };
  }
}

const model = EntropyModel.fromBytes(read(vectors.entropy_bin));
const modelId = hexToBytes(vectors.model_id);
const out = {
  crc_check: crc8(new TextEncoder().encode('123456789')),
  model: {
    levels: model.levels,
    channels: model.channels,
    grid: model.grid,
    precision: model.precision,
    inv_gains: Array.from({ length: model.levels }, (_, l) => Array.from(model.invGains.subarray(l * model.channels, (l + 1) * model.channels))),
    tables: model.tables.map((row) => row.map((t) => ({ lo: t.lo, freqs: t.degenerate ? null : t.freqs }))),
  },
  coder: vectors.coder.map((c) => ({
    name: c.name,
    ...attempt(() => {
      const dec = new RangeDecoder(Buffer.from(c.bytes, 'hex'));
      const symbols = dec.decodeMany(c.symbols.length, new FrequencyTable(c.lo, c.freqs, c.precision));
      dec.finish();
      return { symbols };
    }),
  })),
  files: vectors.files.map((f) => ({ file: f.file, ...decodeFile(read(f.file)) })),
  extra: lists['--files'].map((path) => ({ file: path, ...decodeFile(readPath(path)) })),
  entropy: lists['--entropy'].map((path) => ({
    file: path,
    ...attempt(() => {
      const m = EntropyModel.fromBytes(readPath(path));
      return { levels: m.levels, channels: m.channels, grid: m.grid };
    }),
  })),
};

function decodeFile(data) {
  return attempt(() => {
    const header = readHeader(data);
    if (header.kind === 'webp') {
      const { webp, width, height } = unpackWebp(data);
      return { kind: 'webp', size: header.size, webp: toHex(webp), width, height };
    }
    const { level, symbols } = unpackLatent(data, modelId, model);
    return {
      kind: 'latent', size: header.size, level,
      symbols: Array.from(symbols), latent: Array.from(model.dequantize(level, symbols)),
    };
  });
}
process.stdout.write(JSON.stringify(out));
