"""Bundles against each other on the same images: PSNR at per-image byte budgets and the
Bjøntegaard rate difference (bytes at the same PSNR) of each against the first.

    python -m benchmarks.compare --models models/NAME,build/OTHER,... --data PATH [--split val]
        [--limit 200] [--budgets 51,100,150,200,300] [--steps 10] [--stem compare_NAME]

Each bundle's files are made as ``benchmarks.rd`` makes ours (``compress(target_bytes=B,
fallback=False)`` per image, the finest level that fits, ``--steps`` refinement steps). Writes
benchmarks/results/STEM.{json,md}.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.rd import (
    RESULTS_DIR,
    bd_rate,
    cli,
    encode_set,
    fmt,
    load_split,
    md_table,
    now,
    parse_int_list,
    save_results,
)

BUDGETS = (51, 100, 150, 200, 300)


def measure(model: str, images: np.ndarray, budgets, steps: int) -> list[dict]:
    from runtime.codec import Codec

    codec = Codec(model)
    out = []
    for b in budgets:
        r = encode_set(codec, images, steps, 64, None, target_bytes=int(b), fallback=False)
        out.append({"budget": int(b), "bytes": float(np.mean(r["bytes"])),
                    "psnr": float(np.mean(np.minimum(r["psnr"], 100.0))), "over": int(np.count_nonzero(r["bytes"] > b))})
    return out


def compare(models: list[str], data, split: str = "val", limit: int = 200, budgets=BUDGETS,
            steps: int | None = None) -> dict:
    from runtime.bundle import load_bundle
    from runtime.codec import DEFAULT_STEPS

    steps = DEFAULT_STEPS if steps is None else steps
    bundles = [load_bundle(m) for m in models]
    images = load_split(data, bundles[0].image_size, split, limit)
    rows = {}
    for m, b in zip(models, bundles):
        rows[m] = {"model_id": b.model_id, "points": measure(m, images, budgets, steps)}
        print(json.dumps({m: [round(p["psnr"], 3) for p in rows[m]["points"]]}), flush=True)
    first = rows[models[0]]["points"]
    for m in models[1:]:
        pts = rows[m]["points"]
        rows[m]["delta_psnr"] = [p["psnr"] - q["psnr"] for p, q in zip(pts, first)]
        rows[m]["bd_rate_percent"] = bd_rate([q["bytes"] for q in first], [q["psnr"] for q in first],
                                             [p["bytes"] for p in pts], [p["psnr"] for p in pts])
    return {"date": now(), "data": str(data), "split": split, "images": int(len(images)), "steps": steps,
            "budgets": [int(b) for b in budgets], "models": models, "rows": rows}


def markdown(r: dict) -> str:
    first = r["models"][0]
    head = ["bundle"] + [f"≤ {b} B" for b in r["budgets"]] + [f"BD-rate vs {first}"]
    table = []
    for m in r["models"]:
        row = r["rows"][m]
        cells = [f"{p['psnr']:.3f}" + (f" ({d:+.3f})" if "delta_psnr" in row else "")
                 for p, d in zip(row["points"], row.get("delta_psnr", [0] * len(row["points"])))]
        bd = row.get("bd_rate_percent")
        table.append([f"`{m}` ({row['model_id'][:12]})"] + cells + [fmt(bd, 2) + " %" if bd is not None else "—"])
    return "\n".join([
        f"### Bundles compared: PSNR (dB) at per-image byte budgets, {r['images']} {r['split']} images of `{r['data']}`", "",
        f"Files as benchmarks.rd makes ours ({r['steps']} refinement steps); Δ against `{first}`; BD-rate: bytes at "
        f"the same PSNR (negative: fewer). {r['date']}.", "", md_table(head, table), ""])


def run(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, help="comma-separated bundles; the first is the reference")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--steps", type=int)
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--stem", default="compare")
    a = p.parse_args(argv)
    from runtime.quiet import quiet_tensorflow

    quiet_tensorflow()
    result = compare(a.models.split(","), a.data, a.split, a.limit, parse_int_list(a.budgets, "--budgets"), a.steps)
    save_results(a.out, a.stem, result, markdown(result))
    print(markdown(result))
    return 0


def main(argv=None) -> int:
    return cli(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
