// Run the browser decoder's pure part (demo/web/decoder.js) over tests/vectors/ under node and
// print what it decoded as JSON; tests/test_web.py compares that with vectors.json.
//
//     node tests/web_vectors.mjs tests/vectors [--model NAME] [--files F...] [--entropy E...] [--describe D...]
//
// --files: more latent.bin files to decode (e.g. mutated ones), with the vectors' default model
// or the entropy.bin NAME (in the vectors directory) of the last --model before them;
// --entropy: more entropy.bin files to parse; --describe: more entropy.bin files to parse and
// describe in full (every table, as "models" does). Their results are in "extra" / "entropy" /
// "described"; the vectors' own entropy.bin files are in "models" (the stored parameters of a
// version-3 one included), their bad ones in "bad_entropy_bins".
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  CodecError, EntropyModel, FrequencyTable, RangeDecoder, crc8, hexToBytes, readHeader, unpackImage, unpackLatent,
} from '../demo/web/decoder.js';

const dir = process.argv[2];
const vectors = JSON.parse(readFileSync(join(dir, 'vectors.json'), 'utf8'));
const lists = { '--files': [], '--entropy': [], '--describe': [] };
let current = null;
let modelName = vectors.entropy_bin;
let expectModel = false;
for (const arg of process.argv.slice(3)) {
  if (expectModel) {
    modelName = arg;
    expectModel = false;
  } else if (arg === '--model') expectModel = true;
  else if (arg in lists) current = lists[arg];
  else current.push({ path: arg, model: modelName });
}
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

const models = new Map(); // entropy.bin name in the vectors directory -> EntropyModel
const modelFor = (name) => {
  if (!models.has(name)) models.set(name, EntropyModel.fromBytes(read(name)));
  return models.get(name);
};
const fileModel = (f) => f.entropy_bin || vectors.entropy_bin;

function describe(m) {
  const described = {
    levels: m.levels,
    channels: m.channels,
    grid: m.grid,
    precision: m.precision,
    contexts: m.contexts,
    inv_gains: Array.from({ length: m.levels }, (_, l) => Array.from(m.invGains.subarray(l * m.channels, (l + 1) * m.channels))),
    tables: m.tables.map((row) => row.map((t) => ({ lo: t.lo, freqs: t.degenerate ? null : t.freqs }))),
    context_tables: m.contextTables.map((row) => row.map((ctx) => ({
      lo: ctx[0].lo, freqs: ctx[0].degenerate ? null : ctx.map((t) => t.freqs),
    }))),
  };
  if (m._parameters) { // version 3: what the tables were derived from, in vectors.json's layout
    const { steps, knots, coded, params } = m._parameters;
    const chunks = (flat, size) => Array.from({ length: flat.length / size }, (_, i) => flat.slice(i * size, (i + 1) * size));
    Object.assign(described, {
      segments: knots[0].length - 1,
      steps: chunks(steps, m.channels),
      knots,
      coded: chunks(coded.map(Number), m.channels),
      params: chunks(chunks(params, m.contexts), m.channels),
    });
  }
  return described;
}

const modelId = hexToBytes(vectors.model_id);
const names = new Set([vectors.entropy_bin, ...vectors.files.map(fileModel)]);
for (const key of ['context_model', 'param_model']) if (vectors[key]) names.add(vectors[key].entropy_bin);
for (const { model } of lists['--files']) names.add(model);
const out = {
  crc_check: crc8(new TextEncoder().encode('123456789')),
  model: describe(modelFor(vectors.entropy_bin)),
  models: Object.fromEntries([...names].map((name) => [name, describe(modelFor(name))])),
  coder: vectors.coder.map((c) => ({
    name: c.name,
    ...attempt(() => {
      const dec = new RangeDecoder(Buffer.from(c.bytes, 'hex'));
      const symbols = dec.decodeMany(c.symbols.length, new FrequencyTable(c.lo, c.freqs, c.precision));
      dec.finish();
      return { symbols };
    }),
  })),
  files: vectors.files.map((f) => ({ file: f.file, ...decodeFile(read(f.file), modelFor(fileModel(f)), f.grid) })),
  headers: (vectors.headers || []).map((h) => attempt(() => {
    const got = readHeader(new Uint8Array([...Buffer.from(h.hex, 'hex'), 0, 0]));
    return { kind: got.kind, size: got.size, model_id_prefix: got.modelIdPrefix, length: got.length };
  })),
  extra: lists['--files'].map(({ path, model }) => ({ file: path, ...decodeFile(readPath(path), modelFor(model)) })),
  bad_entropy_bins: (vectors.bad_entropy_bins || []).map((b) => parseEntropy(join(dir, b.file), b.file)),
  entropy: lists['--entropy'].map(({ path }) => parseEntropy(path, path)),
  described: lists['--describe'].map(({ path }) => ({
    file: path, ...attempt(() => describe(EntropyModel.fromBytes(readPath(path)))),
  })),
};

function parseEntropy(path, name) {
  return {
    file: name,
    ...attempt(() => {
      const m = EntropyModel.fromBytes(readPath(path));
      return { levels: m.levels, channels: m.channels, grid: m.grid, contexts: m.contexts };
    }),
  };
}

function decodeFile(data, model, grid = null) {
  return attempt(() => {
    const header = readHeader(data);
    if (header.kind === 'image') {
      const { format, file, width, height } = unpackImage(data);
      return { kind: 'image', size: header.size, format, bytes: toHex(file), width, height };
    }
    const { level, symbols } = unpackLatent(data, modelId, model, grid);
    return {
      kind: 'latent', size: header.size, level,
      symbols: Array.from(symbols), contexts: Array.from(model.contextsOf(level, symbols)),
      latent: Array.from(model.dequantize(level, symbols)),
    };
  });
}
process.stdout.write(JSON.stringify(out));
