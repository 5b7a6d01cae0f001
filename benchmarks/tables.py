"""The entropy tables of a bundle against another entropy.bin for the same networks (e.g. the
frequency lists it had before version 3): file size, gzip size, parse and first-level times, and
what the same latents cost on the validation split at every level (ideal bits, and the bytes of
actually coded payloads on a sample).

    python -m benchmarks.tables --model models/NAME --data PATH --against OLD_ENTROPY_BIN
        [--limit N] [--sample 50] [--out DIR] [--stem NAME]

The same latents: the bundle's encoder on the validation images, y · gain rounded, clipped into
each model's support. ``make bench-tables`` compares every shipped bundle with its entropy.bin at
git revision 8fc7ef2 (version 2: 16 stored frequency lists per level and channel).
Writes benchmarks/results/tables_<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np

from benchmarks.rd import RESULTS_DIR, cli, load_split, md_table, now, save_results
from runtime.codec import Codec
from runtime.entropy import EntropyModel
from runtime.errors import CodecError


def load_timed(data: bytes) -> tuple[EntropyModel, float, float]:
    """Parse entropy.bin and build its middle level's tables: (model, parse ms, level ms)."""
    t0 = time.perf_counter()
    model = EntropyModel.from_bytes(data)
    t1 = time.perf_counter()
    model.decoding_rows(model.levels // 2)
    return model, (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3


def compare(model_dir, data, against, limit: int | None = None, sample: int = 50) -> dict:
    codec = Codec(model_dir)
    new_bytes = codec.bundle.path("entropy.bin").read_bytes()
    old_bytes = Path(against).read_bytes()
    new, new_parse, new_level = load_timed(new_bytes)
    old, old_parse, old_level = load_timed(old_bytes)
    if (old.levels, old.channels) != (new.levels, new.channels):
        raise CodecError(f"{against}: {old.levels} levels x {old.channels} channels, the bundle has "
                         f"{new.levels} x {new.channels}")
    images = load_split(data, codec.bundle.image_size, "val", limit)
    y = codec.analyze(images)
    rows, totals = [], {"old_bits": 0.0, "new_bits": 0.0, "old_coded": 0, "new_coded": 0}
    picks = np.linspace(0, len(y) - 1, min(sample, len(y))).astype(int)
    for level in range(new.levels):
        u = np.rint(codec.scale(y, np.full(len(y), level)))
        q_old, _ = old.clip(level, u)
        q_new, _ = new.clip(level, u)
        bits_old, bits_new = float(old.bits(level, q_old).sum()), float(new.bits(level, q_new).sum())
        coded_old = sum(len(old.encode(level, q_old[i])) for i in picks)
        coded_new = sum(len(new.encode(level, q_new[i])) for i in picks)
        totals["old_bits"] += bits_old
        totals["new_bits"] += bits_new
        totals["old_coded"] += coded_old
        totals["new_coded"] += coded_new
        rows.append({"level": level, "old_bytes": bits_old / 8 / len(y), "new_bytes": bits_new / 8 / len(y),
                     "ideal_change_pct": 100 * (bits_new / bits_old - 1),
                     "coded_old": coded_old / len(picks), "coded_new": coded_new / len(picks),
                     "coded_change_pct": 100 * (coded_new / coded_old - 1)})
    return {
        "model": str(model_dir), "against": str(against), "date": now(), "images": len(y), "sample": len(picks),
        "size": {"new": len(new_bytes), "old": len(old_bytes), "new_gzip": len(gzip.compress(new_bytes, 9)),
                 "old_gzip": len(gzip.compress(old_bytes, 9))},
        "versions": {"new": new_bytes[4], "old": old_bytes[4]},
        "ms": {"new_parse": new_parse, "new_level": new_level, "old_parse": old_parse, "old_level": old_level},
        "ideal_change_pct": 100 * (totals["new_bits"] / totals["old_bits"] - 1),
        "coded_change_pct": 100 * (totals["new_coded"] / totals["old_coded"] - 1),
        "levels": rows,
    }


def render(r: dict) -> str:
    s, ms = r["size"], r["ms"]
    shown = [row for row in r["levels"] if row["level"] % 8 == 0 or row["level"] == len(r["levels"]) - 1]
    return "\n".join([
        f"# Entropy tables: `{r['model']}` (version {r['versions']['new']}) against `{r['against']}` "
        f"(version {r['versions']['old']})", "",
        f"{r['images']} validation images, the same latents for both; coded bytes on {r['sample']} of them per level. {r['date']}.", "",
        md_table(["", "new", "old"], [
            ["entropy.bin bytes", f"{s['new']:,}", f"{s['old']:,}"],
            ["gzip -9", f"{s['new_gzip']:,}", f"{s['old_gzip']:,}"],
            ["parse ms", f"{ms['new_parse']:.1f}", f"{ms['old_parse']:.1f}"],
            ["first level's tables ms", f"{ms['new_level']:.1f}", f"{ms['old_level']:.1f}"]]), "",
        f"All levels: ideal bits **{r['ideal_change_pct']:+.2f} %**, coded payload bytes {r['coded_change_pct']:+.2f} %.", "",
        md_table(["level", "old B (ideal)", "new B (ideal)", "Δ ideal", "Δ coded"],
                 [[row["level"], f"{row['old_bytes']:.2f}", f"{row['new_bytes']:.2f}",
                   f"{row['ideal_change_pct']:+.2f} %", f"{row['coded_change_pct']:+.2f} %"] for row in shown]), ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tables", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="bundle directory")
    p.add_argument("--data", required=True, help="the bundle's data set (.npz or image folder)")
    p.add_argument("--against", required=True, help="another entropy.bin for the same networks")
    p.add_argument("--limit", type=int, help="validation images (default: all)")
    p.add_argument("--sample", type=int, default=50, help="images whose payloads are coded per level")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--stem", help="results file name (default tables_<bundle name>)")
    a = p.parse_args(argv)

    def run(_):
        r = compare(a.model, a.data, a.against, a.limit, a.sample)
        text = render(r)
        save_results(a.out, a.stem or f"tables_{Path(a.model).name}", r, text)

    return cli(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
