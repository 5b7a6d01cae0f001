"""Regenerate the bitstream test vectors in tests/vectors/ (layout: tests/vectors/README.md).

    python -m tests.vectors.make [--check]

Three entropy models: ``entropy.bin`` (version 1, K = 1) with its files, unchanged since the format
was introduced, ``entropy_ctx.bin`` (version 2, K = 4 contexts) with the ``latent_ctx_*`` files, and
``entropy_param.bin`` (version 3, parametric tables) with the ``latent_param_*`` files.

Everything here is deterministic (integer tables, fixed symbols, a lossless WebP), so running it
again writes the same bytes; ``--check`` only compares and exits 1 on a difference (the test
suite does the same through :func:`build`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np

from runtime import bitstream, entropy
from runtime.entropy import EntropyModel, FrequencyTable, RangeEncoder, contexts

HERE = Path(__file__).resolve().parent
MODEL_ID = hashlib.sha256(b"gancodec test vector model").digest()
LEVELS, CHANNELS, GRID = 3, 4, (2, 3)
# the context model (entropy_ctx.bin, version 2): K contexts, precision below 16 on purpose
CTX_LEVELS, CTX_CHANNELS, CTX_GRID, CTX_K, CTX_PRECISION = 3, 6, (2, 3), 4, 14
# degenerate (level, channel) -> its certain symbol; a nonzero one must not count towards z
CTX_DEGENERATE = {(0, 0): 0, (1, 3): 2, (2, 5): -1, (2, 1): 0}


def vector_model() -> EntropyModel:
    """L=3 levels, C=4 channels, 2x3 grid; integer 'Laplacian' counts; a few degenerate tables."""
    tables = []
    for level in range(LEVELS):
        row = []
        for c in range(CHANNELS):
            if (level, c) in ((0, 1), (2, 3)):
                row.append(FrequencyTable(c - 1, [1 << entropy.PRECISION]))  # degenerate
                continue
            half = 2 + 2 * level + c  # support -half..half (c = 3 at level 1: asymmetric below)
            lo = -half + (1 if c == 3 else 0)
            counts = [4096 >> min(12, abs(lo + i) * (1 + c)) for i in range(2 * half + 1 - (lo + half))]
            row.append(FrequencyTable.from_counts(lo, counts))
        tables.append(row)
    inv_gains = np.array([[2.0 ** -(level + 1) * (1 + c / 8) for c in range(CHANNELS)]
                          for level in range(LEVELS)], dtype=np.float32)
    return EntropyModel(inv_gains, tables, GRID)


def vector_context_model() -> EntropyModel:
    """L=3, C=6, 2x3 grid, K=4 contexts at precision 14 (entropy.bin version 2).

    Context k's tables spread wider as k grows (more nonzero channels before: a busier position),
    every context of a channel is distinct, supports hold 0 and are asymmetric on some channels.
    Degenerate: (0, 0) (so channel 1 is the first coded one, with m = 0), (1, 3) with the nonzero
    symbol 2 (not coded, so not counted in z), (2, 1) and (2, 5).
    """
    rows = []
    for level in range(CTX_LEVELS):
        row = []
        for c in range(CTX_CHANNELS):
            if (level, c) in CTX_DEGENERATE:
                row.append([FrequencyTable(CTX_DEGENERATE[level, c], [1])] * CTX_K)
                continue
            lo, hi = -1 - (level + c) % 3, 1 + (level + 2 * c) % 4
            row.append([FrequencyTable.from_counts(
                lo, [(1 << 14) >> min(14, abs(v) * (CTX_K + 1 - k) + (v < 0)) for v in range(lo, hi + 1)],
                CTX_PRECISION) for k in range(CTX_K)])
        rows.append(row)
    inv_gains = np.array([[1.5 ** -level * (0.75 + c / 16) for c in range(CTX_CHANNELS)]
                          for level in range(CTX_LEVELS)], dtype=np.float32)
    return EntropyModel(inv_gains, rows, CTX_GRID)


# the parametric model (entropy_param.bin, version 3): the context model's shape, Q segments, and
# knots with a repeated value (a point mass) and a wide step (a 3-byte varint)
PARAM_SEGMENTS = 8


def vector_param_model() -> EntropyModel:
    """L=3, C=6, 2x3 grid, K=4 contexts at precision 14, tables derived from parameters
    (entropy.bin version 3): the degenerate cells of the context model, knots per channel (units
    2**-12) with a point mass on channel 2 and a step of 20,000 units on channel 4, steps per cell,
    and every parameter byte different across a cell's contexts."""
    rng = np.random.default_rng(5)
    coded = np.ones((CTX_LEVELS, CTX_CHANNELS), bool)
    for level, c in CTX_DEGENERATE:
        coded[level, c] = False
    knots = np.sort(np.rint(rng.laplace(0, 3000, (CTX_CHANNELS, PARAM_SEGMENTS + 1))).astype(np.int64), axis=1)
    knots[2, 3:6] = knots[2, 3]
    knots[4, -1] = knots[4, -2] + 20000
    steps = np.rint(np.array([[2.0 ** (16 - level) * (0.6 + c / 10) for c in range(CTX_CHANNELS)]
                              for level in range(CTX_LEVELS)])).astype(np.int64)
    params = rng.integers(0, 256, (CTX_LEVELS, CTX_CHANNELS, CTX_K))
    params[0, 1] = [0x87, 0x00, 0xFF, 0x3C]  # neutral, coolest with the zero least likely, hottest ...
    inv_gains = np.array([[1.25 ** -level * (0.8 + c / 20) for c in range(CTX_CHANNELS)]
                          for level in range(CTX_LEVELS)], dtype=np.float32)
    return EntropyModel.from_parameters(inv_gains, steps, knots, coded, params, CTX_GRID, CTX_PRECISION)


def _bad_param_entropy_bins(good: bytes) -> dict[str, tuple[bytes, str]]:
    """Version-3 entropy.bin files a reader must refuse, with a substring of the reference error."""
    cells = CTX_LEVELS * CTX_CHANNELS
    bits = 17
    coded = cells - len(CTX_DEGENERATE)
    first_step = bits + (cells + 7) // 8 + 4 * len(CTX_DEGENERATE) + 4  # the first coded cell's step
    knots = first_step - 4 + 7 * coded
    zero_step = bytearray(good)
    zero_step[first_step : first_step + 3] = bytes(3)
    padding = bytearray(good)
    padding[bits + (cells + 7) // 8 - 1] |= 0x80  # bit 23 of the map: past its 18 cells
    overlong = bytearray(good)
    overlong[knots + 4 : knots + 5] = b"\x80\x00"  # the first varint as 2 bytes, the last 0
    return {
        "bad_entropy_param_segments.bin": (good[:15] + b"\x00\x00" + good[17:], "CDF segments (allowed 1..4096)"),
        "bad_entropy_param_padding.bin": (bytes(padding), "padding bits after the coded map"),
        "bad_entropy_param_step.bin": (bytes(zero_step), "has the step 0"),
        "bad_entropy_param_overlong.bin": (bytes(overlong), "overlong knot step"),
        "bad_entropy_param_truncated.bin": (good[:-1], "truncated inside the context parameters"),
        "bad_entropy_param_trailing.bin": (good + b"\x00", "more than its parameters need"),
    }


def _reachable(model: EntropyModel, level: int) -> set[tuple[int, int, int]]:
    """(channel, context, symbol) for every coded channel, every context it can have (given the
    number m of coded channels before it) and both ends of its support."""
    k, want, m = model.contexts, set(), 0
    for c, t in enumerate(model.tables[level]):
        if t.degenerate:
            continue
        for ctx in {0} if m == 0 else {min(k - 1, k * z // m) for z in range(m + 1)}:
            want |= {(c, ctx, t.lo), (c, ctx, t.hi)}
        m += 1
    return want


def _covering_extremes(model: EntropyModel, level: int, seed: int) -> list[np.ndarray]:
    """A few latents (greedy over seeded random patterns of lo / hi / 0) that together put both
    ends of every coded channel's support under every context that channel can have."""
    rng = np.random.default_rng(seed)
    lo, hi = model.support(level), model._hi[level]
    coded = model.coded(level)
    want, chosen = _reachable(model, level), []
    while want:
        best, best_gain = None, set()
        for _ in range(400):
            nonzero = rng.random(model.shape) < rng.random()
            s = np.where(nonzero, np.where(rng.random(model.shape) < 0.5, lo, hi), 0)
            s, _ = model.clip(level, s)
            ctx = contexts(s, coded, model.contexts)
            got = {(c, int(ctx[h, w, c]), int(s[h, w, c])) for h in range(model.grid[0])
                   for w in range(model.grid[1]) for c in np.flatnonzero(coded)} & want
            if len(got) > len(best_gain):
                best, best_gain = s, got
        chosen.append(best)
        want -= best_gain
    return chosen


def _context_latent_cases(model: EntropyModel, prefix: str = "latent_ctx") -> list[tuple[str, int, np.ndarray, tuple | None]]:
    rng = np.random.default_rng(77)
    cases = []
    for level in range(CTX_LEVELS):  # spread varying by position, as in real latents
        scale = rng.choice([0.3, 2.5], size=(*model.grid, 1))
        s, _ = model.clip(level, np.rint(rng.standard_normal(model.shape) * scale).astype(np.int32))
        cases.append((f"{prefix}_level{level}.bin", level, s, None))
    cases.append((f"{prefix}_zeros.bin", 1, model.clip(1, np.zeros(model.shape, np.int32))[0], None))
    for level in range(CTX_LEVELS):
        for i, s in enumerate(_covering_extremes(model, level, 100 + level)):
            cases.append((f"{prefix}_extremes_l{level}_{i}.bin", level, s, None))
    s, _ = model.clip(2, rng.integers(-3, 4, model.shape))
    cases.append((f"{prefix}_size.bin", 2, s, (1920, 1080)))
    return cases


# Any-size bundles code a latent on the grid their stored size implies (the decoder is told the
# grid): odd, non-square grids with odd sizes in the header.
GRID_CASES = (("latent_ctx_grid_3x5.bin", (3, 5), (37, 22)), ("latent_ctx_grid_1x7.bin", (1, 7), (49, 1)),
              ("latent_ctx_grid_6x1.bin", (6, 1), (3, 41)))


def _grid_cases(model: EntropyModel) -> list[tuple[str, int, np.ndarray, tuple, tuple]]:
    rng = np.random.default_rng(31)
    cases = []
    for i, (name, grid, size) in enumerate(GRID_CASES):
        scale = rng.choice([0.3, 2.5], size=(*grid, 1))
        level = i % model.levels
        s = np.rint(rng.standard_normal((*grid, model.channels)) * scale).astype(np.int32)
        s = np.clip(s, model.support(level), model._hi[level])
        s[..., ~model.coded(level)] = model.support(level)[~model.coded(level)]
        cases.append((name, level, s, size, grid))
    return cases


# Header known answers (docs/bitstream.md section 1): (kind, size) -> the header bytes
HEADER_CASES = (("latent", None), ("latent", (1, 1)), ("latent", (48, 80)), ("latent", (81, 47)),
                ("latent", (4096, 4096)), ("latent", (1, 4096)), ("latent", (127, 3)), ("image", (2048, 17)))


def _header_cases() -> list[dict]:
    prefix = bitstream.model_id_prefix(MODEL_ID)
    return [{"kind": kind, "size": size and list(size), "model_id_prefix": prefix,
             "hex": bitstream.Header(kind, prefix, size).to_bytes().hex()} for kind, size in HEADER_CASES]


def _v2_file(v3: bytes) -> bytes:
    """The same latent file in format 2 (read, never written): version bits 0b10, 2 + 2 size bytes."""
    header = bitstream.read_header(v3)
    w, h = header.size
    body = bytes([(v3[0] & 0x3F) | 0x80, v3[1]]) + (w - 1).to_bytes(2, "big") \
        + (h - 1).to_bytes(2, "big") + v3[header.length:-1]
    return _recrc(body)


def _bad_context_entropy_bins(good: bytes) -> dict[str, tuple[bytes, str]]:
    """Version-2 entropy.bin files a reader must refuse, with a substring of the reference error."""
    levels, channels = CTX_LEVELS, CTX_CHANNELS
    supports = 15 + 4 * levels * channels
    first = supports + 4 * levels * channels  # freqs of the first coded table, context 0
    n = int.from_bytes(good[supports + 6 : supports + 8], "little")  # (0, 1): the first coded channel
    zero = bytearray(good)
    at = first + 2 * (2 * n)  # (0, 1) context 2, symbol 0: move its units onto symbol 1
    moved = int.from_bytes(zero[at : at + 2], "little")
    zero[at : at + 2] = bytes(2)
    zero[at + 2 : at + 4] = (int.from_bytes(zero[at + 2 : at + 4], "little") + moved).to_bytes(2, "little")
    return {
        "bad_entropy_ctx_one_context.bin": (good[:14] + b"\x01" + good[15:], "contexts (version 2 allows 2..64)"),
        "bad_entropy_ctx_zero_freq.bin": (bytes(zero), "context 2) frequencies must be >= 1"),
        "bad_entropy_ctx_supports.bin": (good[: supports + 10], "truncated inside the table supports"),
        "bad_entropy_ctx_trailing.bin": (good + b"\x00", "more than its tables need"),
    }


def _describe_context_model(model: EntropyModel, name: str) -> dict:
    return {"entropy_bin": name, "levels": model.levels, "channels": model.channels, "grid": list(model.grid),
            "precision": model.precision, "contexts": model.contexts, "inv_gains": model.inv_gains.tolist(),
            "tables": [[{"lo": ctx[0].lo, "freqs": None if ctx[0].degenerate else [list(t.freqs) for t in ctx]}
                        for ctx in row] for row in model.context_tables]}


def _extreme(model: EntropyModel, level: int, take_hi: bool) -> np.ndarray:
    h, w = model.grid
    s = np.empty(model.shape, np.int32)
    for c, t in enumerate(model.tables[level]):
        for k in range(h * w):
            s[k // w, k % w, c] = (t.hi if (k % 2 == 0) == take_hi else t.lo)
    return s


def _latent_cases(model: EntropyModel) -> list[tuple[str, int, np.ndarray, tuple | None]]:
    rng = np.random.default_rng(2024)
    cases = []
    for level in range(LEVELS):
        s, _ = model.clip(level, np.rint(rng.standard_normal(model.shape) * 1.5).astype(np.int32))
        cases.append((f"latent_level{level}.bin", level, s, None))
    cases.append(("latent_zeros.bin", 0, model.clip(0, np.zeros(model.shape, np.int32))[0], None))
    cases.append(("latent_extremes_hi.bin", 1, _extreme(model, 1, True), None))
    cases.append(("latent_extremes_lo.bin", 2, _extreme(model, 2, False), None))
    s, _ = model.clip(1, rng.integers(-3, 4, model.shape))
    cases.append(("latent_size.bin", 1, s, (640, 480)))
    return cases


def _webp_image() -> np.ndarray:
    y, x = np.mgrid[0:4, 0:5]
    return np.stack([x * 60, y * 80, (x + y) * 30], axis=-1).astype(np.uint8)


def _coder_cases() -> list[dict]:
    """Raw range-coder streams (no file header) for unit-testing a port of the decoder."""
    cases = [{"name": "hand_example", "lo": 0, "precision": 2, "freqs": [1, 2, 1], "symbols": [1, 2, 0]}]
    t = FrequencyTable.from_counts(-2, [1, 30, 200, 30, 1])
    rng = np.random.default_rng(7)
    cases.append({"name": "gaussian_100", "lo": t.lo, "precision": t.precision, "freqs": list(t.freqs),
                  "symbols": (rng.choice(t.n, 100, p=np.array(t.freqs) / 65536) + t.lo).tolist()})
    skew = FrequencyTable(0, [1, 65535])  # symbol 1 pushes low up: runs of 0xFF bytes, carries
    for seed in range(100):
        sym = np.random.default_rng(seed).choice(2, 40, p=[0.5, 0.5]).tolist()
        calls = []
        original = entropy._propagate_carry
        entropy._propagate_carry = lambda out: (calls.append(bytes(out)), original(out))[1]
        try:
            enc = RangeEncoder()
            enc.encode_many(sym, skew)
            enc.finish()
        finally:
            entropy._propagate_carry = original
        if any(c.endswith(b"\xff") for c in calls):  # a carry that ripples through 0xFF bytes
            cases.append({"name": "carry_through_ff", "lo": 0, "precision": 16, "freqs": list(skew.freqs),
                          "symbols": sym})
            break
    else:
        raise AssertionError("no carry case found")
    cases.append({"name": "empty", "lo": 0, "precision": 16, "freqs": list(skew.freqs), "symbols": []})
    cases.append({"name": "all_likely_symbol", "lo": 0, "precision": 16, "freqs": list(skew.freqs),
                  "symbols": [1] * 50})
    cases.append({"name": "rare_symbol_at_cum_0", "lo": 5, "precision": 16, "freqs": list(skew.freqs),
                  "symbols": [5] * 7})
    for case in cases:
        table = FrequencyTable(case["lo"], case["freqs"], case["precision"])
        enc = RangeEncoder()
        enc.encode_many(case["symbols"], table)
        case["bytes"] = enc.finish().hex()
    return cases


def build() -> tuple[dict[str, bytes], dict]:
    """All vector files (name -> bytes) and the JSON description."""
    from PIL import Image

    model = vector_model()
    files: dict[str, bytes] = {"entropy.bin": model.to_bytes()}
    described = []
    for name, level, symbols, size in _latent_cases(model):
        files[name] = bitstream.pack_latent(symbols, level, model, MODEL_ID, size=size)
        described.append({"file": name, "kind": "latent", "entropy_bin": "entropy.bin", "level": level,
                          "size": size and list(size), "symbols": symbols.tolist(),
                          "latent": model.dequantize(level, symbols).tolist()})
    buf = io.BytesIO()
    Image.fromarray(_webp_image()).save(buf, "WEBP", lossless=True, quality=100, method=6)
    files["webp_4x5.bin"] = bitstream.pack_webp(buf.getvalue(), MODEL_ID)
    described.append({"file": "webp_4x5.bin", "kind": "image", "entropy_bin": "entropy.bin", "size": None, "rgb": _webp_image().tolist()})

    good = files["latent_level1.bin"]
    _, level1, symbols1, _ = _latent_cases(model)[1]
    other_id = hashlib.sha256(b"another model").digest()
    impostor = bytes([MODEL_ID[0], (MODEL_ID[1] & 0xF0) | (other_id[1] & 0x0F)]) + other_id[2:]
    bad = {
        "bad_v1.bin": (bytes([0xC7, 0x44]) + MODEL_ID[:2] + bytes(8) + b"\x00", "older version"),
        "bad_version.bin": (bytes([good[0] & 0x3F]) + good[1:], "not a gancodec latent.bin"),
        "bad_crc.bin": (good[:-1] + bytes([good[-1] ^ 0x01]), "integrity"),
        "bad_model_prefix.bin": (bitstream.pack_latent(symbols1, level1, model, other_id), "written by model"),
        "bad_same_prefix_other_model.bin": (bitstream.pack_latent(symbols1, level1, model, impostor), "integrity"),
        "bad_trailing_byte.bin": (_recrc(good[:-1] + b"\x01"), "past"),
        "bad_truncated.bin": (good[:2], "too short"),
    }
    for name, (data, error) in bad.items():
        files[name] = data
        described.append({"file": name, "kind": "invalid", "entropy_bin": "entropy.bin", "error": error})

    ctx_model = vector_context_model()
    files["entropy_ctx.bin"] = ctx_model.to_bytes()
    for name, level, symbols, size in _context_latent_cases(ctx_model):
        files[name] = bitstream.pack_latent(symbols, level, ctx_model, MODEL_ID, size=size)
        described.append({"file": name, "kind": "latent", "entropy_bin": "entropy_ctx.bin", "level": level,
                          "size": size and list(size), "symbols": symbols.tolist(),
                          "contexts": ctx_model.contexts_of(level, symbols).tolist(),
                          "latent": ctx_model.dequantize(level, symbols).tolist()})
    for name, level, symbols, size, grid in _grid_cases(ctx_model):
        files[name] = bitstream.pack_latent(symbols, level, ctx_model, MODEL_ID, size=size)
        described.append({"file": name, "kind": "latent", "entropy_bin": "entropy_ctx.bin", "level": level,
                          "size": list(size), "grid": list(grid), "symbols": symbols.tolist(),
                          "contexts": ctx_model.contexts_of(level, symbols).tolist(),
                          "latent": ctx_model.dequantize(level, symbols).tolist()})
    files["latent_ctx_size_v2.bin"] = _v2_file(files["latent_ctx_size.bin"])
    described.append({**next(d for d in described if d["file"] == "latent_ctx_size.bin"),
                      "file": "latent_ctx_size_v2.bin"})
    v2 = bytearray(files["latent_ctx_size_v2.bin"][:-1])
    v2[2:4] = (8191).to_bytes(2, "big")  # 8192 wide: beyond the 4096 cap that 12 bits hold
    files["bad_v2_size_cap.bin"] = _recrc(bytes(v2))
    described.append({"file": "bad_v2_size_cap.bin", "kind": "invalid", "entropy_bin": "entropy_ctx.bin",
                      "error": "beyond what a latent.bin may restore"})
    good = files["latent_ctx_level1.bin"]
    files["bad_ctx_trailing_byte.bin"] = _recrc(good[:-1] + b"\x01")
    described.append({"file": "bad_ctx_trailing_byte.bin", "kind": "invalid", "entropy_bin": "entropy_ctx.bin",
                      "error": "past"})
    bad_entropy = []
    for name, (data, error) in _bad_context_entropy_bins(files["entropy_ctx.bin"]).items():
        files[name] = data
        bad_entropy.append({"file": name, "error": error})
    param_model = vector_param_model()
    files["entropy_param.bin"] = param_model.to_bytes()
    for name, level, symbols, size in _context_latent_cases(param_model, "latent_param"):
        files[name] = bitstream.pack_latent(symbols, level, param_model, MODEL_ID, size=size)
        described.append({"file": name, "kind": "latent", "entropy_bin": "entropy_param.bin", "level": level,
                          "size": size and list(size), "symbols": symbols.tolist(),
                          "contexts": param_model.contexts_of(level, symbols).tolist(),
                          "latent": param_model.dequantize(level, symbols).tolist()})
    for name, (data, error) in _bad_param_entropy_bins(files["entropy_param.bin"]).items():
        files[name] = data
        bad_entropy.append({"file": name, "error": error})
    steps, knots, coded, params = param_model._parameters
    description = {
        "model_id": MODEL_ID.hex(),
        "model_id_prefix": bitstream.model_id_prefix(MODEL_ID),
        "entropy_bin": "entropy.bin",
        "model": {"levels": LEVELS, "channels": CHANNELS, "grid": list(GRID), "precision": model.precision,
                  "inv_gains": model.inv_gains.tolist(),
                  "tables": [[{"lo": t.lo, "freqs": list(t.freqs) if not t.degenerate else None}
                              for t in row] for row in model.tables]},
        "context_model": _describe_context_model(ctx_model, "entropy_ctx.bin"),
        # the derived tables of every (level, channel, context), and what they are derived from
        "param_model": {**_describe_context_model(param_model, "entropy_param.bin"), "segments": PARAM_SEGMENTS,
                        "steps": steps.tolist(), "knots": knots.tolist(), "coded": coded.astype(int).tolist(),
                        "params": params.tolist()},
        "coder": _coder_cases(),
        "headers": _header_cases(),
        "files": described,
        "bad_entropy_bins": bad_entropy,
    }
    return files, description


def _recrc(body: bytes) -> bytes:
    return body + bytes([bitstream.crc8(body, bitstream.crc8(MODEL_ID))])


def render(description: dict) -> str:
    return json.dumps(description, indent=1) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.vectors.make", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with the committed vectors, write nothing")
    a = p.parse_args(argv)
    files, description = build()
    files["vectors.json"] = render(description).encode()
    differ = [n for n, b in files.items() if not (HERE / n).exists() or (HERE / n).read_bytes() != b]
    if a.check:
        print("vectors up to date" if not differ else f"vectors differ: {', '.join(differ)}")
        return 1 if differ else 0
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files)} files to {HERE} ({len(differ)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
