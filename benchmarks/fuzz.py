"""Fuzz the decoder: mutate valid latent.bin files and check that every input either decodes or
raises the codec's own error — no other exception, no crash, no hang, no memory blow-up.

    python -m benchmarks.fuzz --seconds 120 [--model DIR|NAME ...] [--seed S]

Mutations: bit flips, byte edits, truncation, extension, header field edits (flags, model id,
size field), random bytes, and payload edits with the CRC recomputed (so the entropy decoder
itself sees hostile data, not just the integrity check). Prints inputs tried, decoded, rejected
and failures; exits 1 when there is any failure.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from runtime import bitstream
from runtime.bundle import Bundle, find_bundle, list_bundles, load_bundle
from runtime.codec import decode_file_bytes
from runtime.errors import CodecError

SLOW_INPUT_SECONDS = 2.0
# A file may legitimately ask for the largest restore the header caps allow (24 MP of RGB, 72 MB);
# resizing holds a few copies of it. Growth beyond four such images means an uncapped allocation.
MEMORY_GROWTH_LIMIT_MB = 4 * bitstream.MAX_RESTORE_PIXELS * 3 / 2**20


def seed_file(bundle: Bundle, rng: np.random.Generator) -> bytes:
    """A valid latent.bin for ``bundle``: a quantized N(0, 1) latent, random bits/mode/size."""
    bits = int(rng.integers(bitstream.MIN_BITS, bitstream.MAX_BITS + 1))
    mode = ["range", "range", "bzip2", "raw"][int(rng.integers(0, 4))]
    symbols, _ = bitstream.quantize(rng.standard_normal(bundle.latent_dim), bits)
    size = tuple(int(v) for v in rng.integers(1, 400, 2)) if rng.random() < 0.2 else None
    return bitstream.pack(symbols, bits, bundle.model_id_bytes, mode, size=size)


def _recrc(data: bytearray, model_id: bytes) -> bytearray:
    if len(data) >= 2:
        data[-1] = bitstream.crc8(bytes(data[:-1]), bitstream.crc8(model_id))
    return data


def mutate(data: bytes, model_id: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random mutation of a valid file; returns (kind, bytes)."""
    d = bytearray(data)
    kind = ["bitflip", "byte", "truncate", "extend", "header", "random", "payload+crc", "size+crc"][int(rng.integers(0, 8))]
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, len(d)))
            d[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == "byte":
        d[int(rng.integers(0, len(d)))] = int(rng.integers(0, 256))
    elif kind == "truncate":
        d = d[: int(rng.integers(0, len(d)))]
    elif kind == "extend":
        d += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        if rng.random() < 0.5:
            d = _recrc(d, model_id)
    elif kind == "header":
        d[int(rng.integers(1, 4))] = int(rng.integers(0, 256))
        if rng.random() < 0.7:
            d = _recrc(d, model_id)
    elif kind == "random":
        d = bytearray(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
        if rng.random() < 0.5 and len(d) > 4:
            d[0] = bitstream.MAGIC
            d[2:4] = model_id[:2]
            d = _recrc(d, model_id)
    elif kind == "payload+crc":
        for _ in range(int(rng.integers(1, 6))):
            if len(d) > 5:
                d[int(rng.integers(4, len(d) - 1))] = int(rng.integers(0, 256))
        d = _recrc(d, model_id)
    else:  # size+crc: set the size flag and hostile width/height
        if len(d) > 8:
            d[1] |= 1
            d[4:8] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
            d = _recrc(d, model_id)
    return kind, bytes(d)


def fuzz(bundles: list[Bundle], seconds: float, seed: int = 0, max_inputs: int | None = None, progress=True) -> dict:
    """Run the mutation loop for ``seconds``; returns counts and the failures found."""
    rng = np.random.default_rng(seed)
    stats = {"tried": 0, "decoded": 0, "rejected": 0, "failures": 0, "slowest_ms": 0.0, "by_kind": {}}
    failures = []
    for bundle in bundles:  # warm up: onnxruntime sessions are not what this measures
        decode_file_bytes(seed_file(bundle, np.random.default_rng(0)), str(bundle.directory))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    last_print = start
    while time.perf_counter() - start < seconds and (max_inputs is None or stats["tried"] < max_inputs):
        bundle = bundles[int(rng.integers(0, len(bundles)))]
        kind, data = mutate(seed_file(bundle, rng), bundle.model_id_bytes, rng)
        force = bundle.directory if rng.random() < 0.3 else None
        t0 = time.perf_counter()
        try:
            image, _ = decode_file_bytes(data, str(force) if force else None)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise AssertionError(f"bad output {image.dtype} {image.shape}")
            outcome = "decoded"
        except CodecError:
            outcome = "rejected"
        except BaseException as exc:  # noqa: BLE001 — anything else is a finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            outcome = "failures"
            failures.append({"kind": kind, "input_hex": data.hex(), "error": f"{type(exc).__name__}: {exc}"})
        elapsed = time.perf_counter() - t0
        stats["slowest_ms"] = max(stats["slowest_ms"], elapsed * 1000)
        if elapsed > SLOW_INPUT_SECONDS:
            stats["failures"] += 1
            failures.append({"kind": kind, "input_hex": data.hex(), "error": f"slow: {elapsed:.1f}s"})
        stats["tried"] += 1
        stats[outcome] += 1
        k = stats["by_kind"].setdefault(kind, {"tried": 0, "decoded": 0, "rejected": 0, "failures": 0})
        k["tried"] += 1
        k[outcome] += 1
        if progress and time.perf_counter() - last_print > 10:
            last_print = time.perf_counter()
            print(f"  {stats['tried']} inputs, {stats['decoded']} decoded, {stats['rejected']} rejected, "
                  f"{stats['failures']} failures", file=sys.stderr)
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    stats["peak_rss_growth_mb"] = round(growth, 1)
    if growth > MEMORY_GROWTH_LIMIT_MB:
        stats["failures"] += 1
        failures.append({"kind": "memory", "error": f"peak RSS grew by {growth:.0f} MB (limit {MEMORY_GROWTH_LIMIT_MB:.0f} MB)"})
    stats["seconds"] = round(time.perf_counter() - start, 1)
    stats["slowest_ms"] = round(stats["slowest_ms"], 2)
    stats["failure_examples"] = failures[:10]
    return stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description="Fuzz the latent.bin decoder.")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--model", action="append", help="bundle(s) to fuzz against (default: all installed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        bundles = [find_bundle(m) for m in a.model] if a.model else [load_bundle(d) for d in list_bundles()]
    except CodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not bundles:
        print("error: no model bundles installed", file=sys.stderr)
        return 2
    stats = fuzz(bundles, a.seconds, a.seed)
    if a.json:
        print(json.dumps(stats, indent=2))
    else:
        print(f"fuzz: {stats['tried']} inputs tried in {stats['seconds']} s against "
              f"{', '.join(b.name for b in bundles)}: {stats['decoded']} decoded, {stats['rejected']} rejected, "
              f"{stats['failures']} failures; slowest input {stats['slowest_ms']} ms; "
              f"peak RSS growth {stats['peak_rss_growth_mb']} MB")
        for kind, k in sorted(stats["by_kind"].items()):
            print(f"  {kind:12s} {k['tried']:6d} tried {k['decoded']:6d} decoded {k['rejected']:6d} rejected {k['failures']} failures")
        for f in stats["failure_examples"]:
            print(f"  FAILURE {f}")
    return 1 if stats["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
