"""Quality against training time of one run (``training.train --snapshot-every S``), against a
reference bundle: how long a recipe takes on this machine to get within reach of the shipped one.

    python -m benchmarks.time_to_quality --run runs/NAME --reference models/NAME --data PATH
        [--budgets 100,200,300] [--limit 200] [--snapshots all|t001800,...] [--steps 10]
        [--stem time_to_quality_NAME]

Two curves:

- **Model estimate**, every validation of the run (``<run>/val.csv``: per trained level the rate
  model's bytes and the PSNR of the rounded latent on the run's validation images), interpolated
  at each budget: dense and free, but the rate model's bytes, not files.
- **Files**, for each snapshot the run kept (``<run>/snapshots/tSECONDS``: the selected weights at
  that training time) and the run's final selection: exported as a bundle (``export.onnx``, in a
  temporary directory) and measured as ``benchmarks.rd`` measures ours (``compress(target_bytes=B,
  fallback=False)`` per image, ``--steps`` refinement steps, the first ``--limit`` validation
  images), beside the reference bundle measured the same way in the same run. A snapshot's
  figures are kept in it (``time_to_quality.json``) and reused by a later call with the same
  settings, so the curve can be measured while the run goes on.

Writes benchmarks/results/STEM.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.rd import (
    RESULTS_DIR,
    cli,
    fmt,
    load_split,
    md_table,
    now,
    parse_int_list,
    save_results,
)
from runtime.errors import CodecError

BUDGETS = (100, 200, 300)
CACHE_NAME = "time_to_quality.json"  # a snapshot's measured files, kept in the snapshot directory


def estimate_curve(run: Path, budgets) -> list[dict]:
    """Per validation row of the run: training seconds, step, and the model's PSNR at each budget
    (linear between the trained levels' (bytes, PSNR); None outside them)."""
    from training.run import _read_csv

    rows = []
    for r in _read_csv(run / "val.csv"):
        levels = sorted(int(k[5:]) for k in r if k.startswith("bytes"))
        b = np.array([r[f"bytes{lv}"] for lv in levels])
        p = np.array([r[f"psnr{lv}"] for lv in levels])
        order = np.argsort(b)
        at = {str(B): (float(np.interp(B, b[order], p[order])) if b.min() <= B <= b.max() else None) for B in budgets}
        rows.append({"elapsed": r.get("elapsed"), "step": int(r["step"]), "psnr": at})
    return rows


def export_snapshot(run: Path, best: Path, out: Path) -> None:
    """Export ``best`` (a snapshot of ``run``'s selection) as a bundle in ``out``."""
    from export.onnx import export_run

    with tempfile.TemporaryDirectory(prefix="snapshot_run_") as tmp:
        t = Path(tmp)
        for name in ("config.json", "recipe.json", "summary.json"):
            if (run / name).exists():
                shutil.copy(run / name, t / name)
        shutil.copytree(best, t / "best")
        export_run(t, out, name=run.name)


def measure_bundle(bundle, images: np.ndarray, budgets, steps: int) -> dict:
    """{budget: mean bytes, PSNR, files over} of ``bundle``'s files (benchmarks.compare.measure)."""
    from benchmarks.compare import measure

    return {str(p["budget"]): {k: p[k] for k in ("psnr", "bytes", "over")}
            for p in measure(str(bundle), images, budgets, steps)}


def time_to_quality(run, reference, data, budgets=BUDGETS, limit: int = 200, snapshots="all",
                    steps: int | None = None) -> dict:
    from runtime.bundle import load_bundle
    from runtime.codec import DEFAULT_STEPS

    run = Path(run)
    if not (run / "val.csv").exists():
        raise CodecError(f"{run}: not a training run (no val.csv)")
    steps = DEFAULT_STEPS if steps is None else steps
    ref = load_bundle(Path(reference))
    images = load_split(data, ref.image_size, "val", limit)
    snaps = sorted((run / "snapshots").glob("t*")) if (run / "snapshots").exists() else []
    if snapshots != "all":
        wanted = set(snapshots.split(","))
        snaps = [s for s in snaps if s.name in wanted]
    points = []
    with tempfile.TemporaryDirectory(prefix="ttq_") as tmp:
        key = json.dumps({"data": str(data), "limit": limit, "budgets": [int(b) for b in budgets], "steps": steps})
        for snap in [*snaps, run / "best"]:
            best = json.loads((snap / "best.json").read_text())
            label = snap.name if snap.name != "best" else "final"
            seconds = int(snap.name[1:]) if snap.name.startswith("t") else None
            cache = snap / CACHE_NAME  # a snapshot never changes: its files are measured once per setting
            cached = json.loads(cache.read_text()) if seconds is not None and cache.exists() else {}
            if cached.get("key") == key:
                files = cached["files"]
            else:
                bundle = Path(tmp) / snap.name
                export_snapshot(run, snap, bundle)
                files = measure_bundle(bundle, images, budgets, steps)
                if seconds is not None:
                    cache.write_text(json.dumps({"key": key, "files": files}))
            points.append({"snapshot": label, "seconds": seconds, "selected_step": best.get("step"),
                           "selected_at_seconds": best.get("elapsed"), "files": files})
            print(json.dumps({"snapshot": label, **{B: v["psnr"] for B, v in points[-1]["files"].items()}}), flush=True)
    reference_files = measure_bundle(reference, images, budgets, steps)
    for p in points:
        p["delta"] = {B: p["files"][B]["psnr"] - reference_files[B]["psnr"] for B in p["files"]}
    summary = {}
    srun = run / "summary.json"
    if srun.exists():
        s = json.loads(srun.read_text())
        summary = {"steps": s.get("steps"), "elapsed": s.get("elapsed"), "backend": s.get("backend"),
                   "schedule": s.get("schedule")}
    return {"date": now(), "run": str(run), "reference": str(reference), "reference_model_id": ref.model_id,
            "data": str(data), "images": int(len(images)), "budgets": [int(b) for b in budgets], "steps": steps,
            "run_summary": summary, "estimate": estimate_curve(run, budgets), "points": points,
            "reference_files": reference_files}


def markdown(r: dict) -> str:
    budgets = [str(b) for b in r["budgets"]]
    rows = [[p["snapshot"], fmt(p["seconds"], 0) if p["seconds"] else fmt(r["run_summary"].get("elapsed"), 0),
             p["selected_step"]] + [f"{p['files'][B]['psnr']:.2f} ({p['delta'][B]:+.2f})" for B in budgets]
            for p in r["points"]]
    rows.append(["reference", "—", "—"] + [f"{r['reference_files'][B]['psnr']:.2f}" for B in budgets])
    s = r["run_summary"]
    return "\n".join([
        f"### Quality against training time: `{r['run']}` against `{r['reference']}`", "",
        f"{r['images']} validation images of `{r['data']}`; files at per-image budgets "
        f"(`compress(target_bytes=B, fallback=False)`, {r['steps']} refinement steps); PSNR in dB (Δ against the "
        f"reference). Run: {s.get('steps')} steps in {fmt(s.get('elapsed'), 0)} s of training "
        f"({s.get('backend')} backend). {r['date']}.", "",
        md_table(["snapshot", "training s", "selected step"] + [f"≤ {B} B" for B in budgets], rows), ""])


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, B in enumerate(str(b) for b in r["budgets"]):
        color = f"C{i}"
        est = [(e["elapsed"], e["psnr"][B]) for e in r["estimate"] if e["psnr"][B] is not None and e["elapsed"]]
        if est:
            ax.plot([t / 60 for t, _ in est], [p for _, p in est], "-", color=color, alpha=0.4,
                    label=f"{B} B, model estimate")
        pts = [((p["seconds"] or r["run_summary"].get("elapsed") or 0) / 60, p["files"][B]["psnr"]) for p in r["points"]]
        ax.plot([t for t, _ in pts], [q for _, q in pts], "o", color=color, label=f"≤ {B} B, files")
        ref = r["reference_files"][B]["psnr"]
        ax.axhline(ref, color=color, ls="--", lw=1)
        ax.axhline(ref - 1.0, color=color, ls=":", lw=1)
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("quality against training time (dashed: reference bundle; dotted: 1 dB below)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.time_to_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="training run directory (runs/NAME)")
    p.add_argument("--reference", required=True, help="bundle to compare with (models/NAME)")
    p.add_argument("--data", required=True, help="the data set (.npz or image folder)")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--steps", type=int, help="refinement steps (default: the encoder's)")
    p.add_argument("--snapshots", default="all", help="all, or snapshot names (t001800,...)")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--stem", default="time_to_quality")
    a = p.parse_args(argv)
    from runtime.quiet import quiet_tensorflow

    quiet_tensorflow()
    result = time_to_quality(a.run, a.reference, a.data, parse_int_list(a.budgets, "--budgets"), a.limit,
                             a.snapshots, a.steps)
    save_results(a.out, a.stem, result, markdown(result))
    plot(result, Path(a.out) / f"{a.stem}.png")
    print(markdown(result))
    return 0


def main(argv=None) -> int:
    return cli(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
