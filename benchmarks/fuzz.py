"""Fuzz the latent.bin decoder (format 2): mutate valid files and check that every input either
decodes or raises the codec's own error — no other exception, no crash, no hang, no memory growth.

    python -m benchmarks.fuzz [--seconds N | --inputs N] [--model DIR|NAME ...] [--seed S] [--json]

The target is the decode path up to the symbols: header, CRC, range decoder and entropy model
(runtime.bitstream + runtime.entropy), and the WebP payload (Pillow). Without ``--model`` it
fuzzes against two synthetic EntropyModels (a 128-symbol latent, 8 levels; and a 4×4×32 latent
with 8 contexts, entropy.bin version 2, like a real bundle); with
``--model`` against the ``entropy.bin`` of real v2 bundles. ``--full`` also runs the generator
(runtime.codec.decode_file_bytes) on every input: far slower, the whole decoder.

Mutations: bit flips, byte edits, truncation, extension, header edits, random bytes, payload
edits and splices with the CRC recomputed (so the entropy decoder itself sees hostile data, not
just the integrity check), hostile size fields. Prints inputs tried, decoded, rejected and
failures; exits 1 when there is any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime import bitstream
from runtime.entropy import EntropyModel, FrequencyTable
from runtime.errors import CodecError

SLOW_INPUT_SECONDS = 2.0
# WebP payloads are capped at MAX_IMAGE_SIDE² pixels and everything else is tiny: any growth
# beyond a few hundred MB means an uncapped allocation.
MEMORY_GROWTH_LIMIT_MB = 256
KINDS = ("bitflip", "byte", "truncate", "extend", "header", "random", "payload+crc", "splice+crc", "size+crc")


@dataclass
class Target:
    """One model to fuzz against: its name, full 32-byte id, entropy model and (for --full) dir."""

    name: str
    model_id: bytes
    model: EntropyModel
    directory: Path | None = None


def synthetic_target(levels: int = 8, channels: int = 128, seed: int = 0, contexts: int = 1,
                     grid: tuple[int, int] = (1, 1)) -> Target:
    """A bundle-like entropy model: ``channels`` on a ``grid``, 8 levels of finer steps, and
    ``contexts`` tables per (level, channel) (entropy.bin version 2 when > 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for level in range(levels):
        row = []
        for c in range(channels):
            half = 1 + level * 2 + int(rng.integers(0, 3))
            if c % 31 == 30:
                row.append([FrequencyTable(0, [1 << 16])] * contexts)  # a dead channel: degenerate
                continue
            x = np.arange(-half, half + 1)
            row.append([FrequencyTable.from_counts(-half, np.round(
                1e5 * np.exp(-0.5 * (x / ((0.3 + 0.2 * k) * half + 0.2)) ** 2)).astype(int)) for k in range(contexts)])
        rows.append(row)
    gains = np.full((levels, channels), 0.5, np.float32) / (1 + np.arange(levels, dtype=np.float32))[:, None]
    name = "synthetic" if contexts == 1 else f"synthetic-{contexts}ctx"
    return Target(name, hashlib.sha256(f"gancodec fuzz {name} model".encode()).digest(),
                  EntropyModel(gains, rows, grid))


def bundle_target(spec: str) -> Target:
    """A real v2 bundle: a directory (or name/id resolved by runtime.bundle) with entropy.bin."""
    directory = Path(spec)
    if not directory.is_dir():
        from runtime.bundle import find_bundle

        directory = Path(find_bundle(spec).directory)
    path = directory / "entropy.bin"
    if not path.is_file():
        raise CodecError(f"{directory} has no entropy.bin (not a format-2 bundle)")
    model_id = hashlib.sha256((directory / "generator.onnx").read_bytes()).digest()
    return Target(directory.name, model_id, EntropyModel.from_bytes(path.read_bytes()), directory)


def _webp_seeds(rng: np.random.Generator) -> list[bytes]:
    from PIL import Image

    out = []
    for lossless in (False, True):
        for w, h in ((32, 32), (5, 3)):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                buf, "WEBP", lossless=lossless, quality=30)
            out.append(buf.getvalue())
    return out


def seed_files(target: Target, rng: np.random.Generator, count: int = 48) -> list[bytes]:
    """Valid files for ``target``: latents at every level (some with a size field) and a few WebPs."""
    m = target.model
    files = []
    for i in range(count):
        level = i % m.levels
        raw = np.rint(rng.standard_normal(m.shape) * rng.uniform(0.3, 4)).astype(np.int32)
        size = tuple(int(v) for v in rng.integers(1, 400, 2)) if i % 5 == 0 else None
        files.append(bitstream.pack_latent(m.clip(level, raw)[0], level, m, target.model_id, size=size))
    for webp in _webp_seeds(rng):
        files.append(bitstream.pack_webp(webp, target.model_id))
    return files


def _recrc(d: bytearray, model_id: bytes) -> bytearray:
    if len(d) >= 2:
        kind_webp = d[0] >> 6 == bitstream.VERSION_BITS and d[0] & 0x20
        d[-1] = bitstream.crc8(bytes(d[:-1]), 0 if kind_webp else bitstream.crc8(model_id))
    return d


def mutate(data: bytes, model_id: bytes, rng, other: bytes | None = None) -> tuple[str, bytes]:
    """One random mutation of a valid file; returns (kind, bytes). ``rng``: random.Random or a
    numpy Generator; ``other``: a second valid file for splices."""
    if isinstance(rng, np.random.Generator):
        rng = random.Random(int(rng.integers(0, 2**63)))
    d = bytearray(data)
    kind = KINDS[rng.randrange(len(KINDS))]
    if kind == "bitflip":
        for _ in range(rng.randint(1, 3)):
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        d[rng.randrange(len(d))] = rng.randrange(256)
    elif kind == "truncate":
        d = d[: rng.randrange(len(d))]
        if rng.random() < 0.5:
            d = _recrc(d, model_id)
    elif kind == "extend":
        d[-1:-1] = rng.randbytes(rng.randint(1, 64))
        if rng.random() < 0.8:
            d = _recrc(d, model_id)
    elif kind == "header":
        d[rng.randrange(min(6, len(d)))] = rng.randrange(256)
        if rng.random() < 0.7:
            d = _recrc(d, model_id)
    elif kind == "random":
        d = bytearray(rng.randbytes(rng.randrange(300)))
        if rng.random() < 0.7 and len(d) > 3:
            d[0:2] = data[0:2]  # a plausible header: version, kind, this model's id
            d = _recrc(d, model_id)
    elif kind == "payload+crc":
        for _ in range(rng.randint(1, 5)):
            if len(d) > 3:
                d[rng.randrange(2, len(d) - 1)] = rng.randrange(256)
        d = _recrc(d, model_id)
    elif kind == "splice+crc":
        other = other or data
        cut = rng.randrange(len(d))
        d = d[:cut] + bytearray(other[rng.randrange(len(other)):])
        d = _recrc(d, model_id)
    else:  # size+crc: set the size flag and write hostile width/height
        if len(d) > 6:
            d[0] |= 0x10
            d[2:6] = rng.randbytes(4)
            d = _recrc(d, model_id)
    return kind, bytes(d)


def decode_symbols(data: bytes, targets: dict[int, list[Target]], forced: Target | None = None):
    """The decode path up to symbols/pixels, as runtime.codec walks it: header, bundle by id, CRC."""
    header = bitstream.read_header(data)
    if header.kind == "image":
        return bitstream.unpack_image(data)[1]
    candidates = [forced] if forced else targets.get(header.model_id_prefix, [])
    if not candidates:
        raise CodecError(f"no installed model has id {header.model_id_hex}…")
    error = None
    for t in candidates:
        try:
            _, level, symbols = bitstream.unpack_latent(data, t.model_id, t.model)
            return t.model.dequantize(level, symbols)
        except CodecError as exc:
            error = exc
    raise error


def fuzz(targets: list[Target], seconds: float = 60, seed: int = 0, max_inputs: int | None = None,
         full: bool = False, progress: bool = True) -> dict:
    """Run the mutation loop until ``seconds`` or ``max_inputs``; returns counts and failures."""
    nprng = np.random.default_rng(seed)
    rng = random.Random(seed)
    seeds = [(t, seed_files(t, nprng)) for t in targets]
    by_prefix: dict[int, list[Target]] = {}
    for t in targets:
        by_prefix.setdefault(bitstream.model_id_prefix(t.model_id), []).append(t)
    decode = decode_symbols
    if full:
        from runtime.codec import decode_file_bytes

        def decode(data, _targets, forced):  # noqa: F811 — the whole decoder, generator included
            return decode_file_bytes(data, str(forced.directory) if forced else None)[0]

    stats = {"tried": 0, "decoded": 0, "rejected": 0, "failures": 0, "slowest_ms": 0.0,
             "by_kind": {k: {"tried": 0, "decoded": 0, "rejected": 0, "failures": 0} for k in KINDS}}
    failures = []
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    deadline = start + seconds
    last_print = start
    clock = time.perf_counter
    while True:
        if max_inputs is not None and stats["tried"] >= max_inputs:
            break
        if stats["tried"] % 256 == 0 and clock() > deadline:
            break
        target, files = seeds[rng.randrange(len(seeds))]
        kind, data = mutate(files[rng.randrange(len(files))], target.model_id, rng,
                            files[rng.randrange(len(files))])
        forced = target if rng.random() < 0.3 else None
        t0 = clock()
        try:
            out = decode(data, by_prefix, forced)
            if not isinstance(out, np.ndarray) or out.dtype not in (np.uint8, np.float32):
                raise AssertionError(f"bad output {type(out)}")
            outcome = "decoded"
        except CodecError:
            outcome = "rejected"
        except BaseException as exc:  # noqa: BLE001 — anything else is a finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            outcome = "failures"
            failures.append({"kind": kind, "input_hex": data.hex(), "error": f"{type(exc).__name__}: {exc}"})
        elapsed = clock() - t0
        if elapsed > stats["slowest_ms"] / 1000:
            stats["slowest_ms"] = elapsed * 1000
        if elapsed > SLOW_INPUT_SECONDS:
            stats["failures"] += 1
            failures.append({"kind": kind, "input_hex": data.hex(), "error": f"slow: {elapsed:.1f}s"})
        stats["tried"] += 1
        stats[outcome] += 1
        k = stats["by_kind"][kind]
        k["tried"] += 1
        k[outcome] += 1
        if progress and stats["tried"] % 4096 == 0 and clock() - last_print > 10:
            last_print = clock()
            print(f"  {stats['tried']} inputs, {stats['decoded']} decoded, {stats['rejected']} rejected, "
                  f"{stats['failures']} failures", file=sys.stderr)
    elapsed = time.perf_counter() - start
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    stats["peak_rss_growth_mb"] = round(growth, 1)
    if growth > MEMORY_GROWTH_LIMIT_MB:
        stats["failures"] += 1
        failures.append({"kind": "memory", "error": f"peak RSS grew by {growth:.0f} MB (limit {MEMORY_GROWTH_LIMIT_MB} MB)"})
    stats["seconds"] = round(elapsed, 1)
    stats["inputs_per_second"] = round(stats["tried"] / max(elapsed, 1e-9))
    stats["slowest_ms"] = round(stats["slowest_ms"], 2)
    stats["failure_examples"] = failures[:10]
    return stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description="Fuzz the latent.bin decoder.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seconds", type=float, default=60, help="stop after this long")
    p.add_argument("--inputs", type=int, default=None, help="stop after this many inputs (e.g. 1000000)")
    p.add_argument("--model", action="append",
                   help="v2 bundle(s) whose entropy.bin to fuzz against (default: a synthetic model)")
    p.add_argument("--full", action="store_true", help="decode through runtime.codec, generator included (slow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        targets = ([bundle_target(m) for m in a.model] if a.model
                   else [synthetic_target(), synthetic_target(channels=32, contexts=8, grid=(4, 4))])
    except CodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.full and not a.model:
        print("error: --full needs --model (the generator of a real bundle)", file=sys.stderr)
        return 2
    seconds = a.seconds if a.inputs is None else float("inf") if a.seconds == p.get_default("seconds") else a.seconds
    stats = fuzz(targets, seconds, a.seed, max_inputs=a.inputs, full=a.full)
    if a.json:
        print(json.dumps(stats, indent=2))
    else:
        print(f"fuzz: {stats['tried']} inputs tried in {stats['seconds']} s ({stats['inputs_per_second']}/s) against "
              f"{', '.join(t.name for t in targets)}: {stats['decoded']} decoded, {stats['rejected']} rejected, "
              f"{stats['failures']} failures; slowest input {stats['slowest_ms']} ms; "
              f"peak RSS growth {stats['peak_rss_growth_mb']} MB")
        for kind, k in stats["by_kind"].items():
            print(f"  {kind:12s} {k['tried']:8d} tried {k['decoded']:8d} decoded {k['rejected']:8d} rejected "
                  f"{k['failures']} failures")
        for f in stats["failure_examples"]:
            print(f"  FAILURE {f}")
    return 1 if stats["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
