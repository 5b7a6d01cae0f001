"""python -m benchmarks.rd --model models/NAME --data PATH.npz [--split val] [--limit N] [--out DIR]
[--steps N] [--bits 2,3,...] [--codecs JPEG,WebP,AVIF] [--batch 64]

Rate-distortion benchmark of one model bundle against JPEG, WebP and AVIF on the same images.

Every image of the split (brought to the model's size by the project's one resize,
``runtime.images.to_model_size``) is encoded

- by this codec at every bit depth of ``--bits`` (default 2..9, the whole supported range), in
  batches of ``--batch`` through :meth:`runtime.codec.Codec.encode_detailed`; the rate is the
  length of the real ``latent.bin`` (header and CRC included) and the distortion is measured on
  exactly what the decoder returns;
- by each classic codec at every quality of its range (``benchmarks.codecs``), as whole files.

A *point* is one codec at one setting: mean bytes per image, mean bpp, and the mean over images of
each per-image metric of :mod:`runtime.metrics` (PSNR, SSIM, MS-SSIM, L1, MSE). Mean PSNR is the
mean of per-image PSNRs (as in the reference report); an image decoded without any error would
have an infinite PSNR and counts as :data:`PSNR_CAP` dB.

Comparisons (written to ``rd_<model>.json``/``.md``, plotted in ``rd_<model>.png``):

- BD-rate / BD-PSNR (Bjøntegaard) of this codec against each classic codec, see :func:`bd_rate`;
- where the curves do not overlap, the classic codec's PSNR at our byte counts (interpolated in
  log-rate on its curve) or, below its range, its smallest file;
- the winner at 64, 96 and 128 bytes per image: per codec the best mean PSNR among its points whose
  mean bytes fit the budget ("cannot reach" when none does).

This module also holds the pieces the other benchmarks share: loading a split at model size
(:func:`load_split`), running the codec over a set (:func:`run_codec`), summarising a point
(:func:`summarise`), Markdown/JSON helpers and the CLI error convention (:func:`cli`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from runtime import bitstream, metrics
from runtime.codec import DEFAULT_STEPS
from runtime.errors import CodecError, run_cli

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_BITS = tuple(range(bitstream.MIN_BITS, bitstream.MAX_BITS + 1))
BUDGETS = (64, 96, 128)
METRICS = ("psnr", "ssim", "ms_ssim", "l1", "mse")
PSNR_CAP = 100.0
PLOT_PSNR_TOP = 50.0
PER_IMAGE_LIMIT = 512  # this codec's per-image values go into the JSON for at most this many images
OURS = "gancodec"


# --- shared helpers ----------------------------------------------------------------------------

def cli(run, argv=None) -> int:
    """Run ``run(argv)``; a CodecError becomes ``error: ...`` on stderr and exit status 2."""
    return run_cli(run, argv)


def parse_int_list(text: str, what: str) -> list[int]:
    """'2,3,4' or '2-5' (or a mix) -> sorted unique ints; CodecError for anything else."""
    out = set()
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.update(range(int(lo), int(hi) + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise CodecError(f"{what}: expected integers like 2,3,4 or 2-7, got {text!r}") from None
    if not out:
        raise CodecError(f"{what}: empty list")
    return sorted(out)


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "img"):
    """A tqdm bar on stderr (a do-nothing one when disabled or tqdm is missing)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the bench extras
        enabled = False
    if not enabled:
        class _Null:
            def update(self, n=1):
                pass

            def set_postfix_str(self, s):
                pass

            def close(self):
                pass

        return _Null()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


def _clean(value):
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _dumps(obj, level: int = 0) -> str:
    """JSON with one key per line but lists of numbers/strings on one line (small, diffable)."""
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, separators=(", ", ": "))


def write_json(path: Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dumps(_clean(obj)) + "\n")
    return path


def save_results(out_dir, stem: str, result: dict, text: str) -> None:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` and print the Markdown."""
    out = Path(out_dir)
    write_json(out / f"{stem}.json", result)
    (out / f"{stem}.md").write_text(text)
    print(text)
    print(f"wrote {out / (stem + '.json')}, {out / (stem + '.md')}")


def md_table(headers, rows) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- data --------------------------------------------------------------------------------------

def load_split(data, size: int, split: str = "val", limit: int | None = None, seed: int = 0) -> np.ndarray:
    """The ``split`` ('train' or 'val') of a data set as uint8 (N, size, size, 3), first ``limit`` images.

    Uses training.data.load_dataset, so images are resized exactly as in training and encoding.
    """
    from training.data import load_dataset

    if split not in ("train", "val"):
        raise CodecError(f"--split must be 'train' or 'val', got {split!r}")
    if limit is not None and limit < 1:
        raise CodecError("--limit must be at least 1")
    train, val = load_dataset(data, size, seed)
    images = val if split == "val" else train
    return images[:limit] if limit is not None else images


# --- measuring ---------------------------------------------------------------------------------

def measure(originals: np.ndarray, reconstructions: np.ndarray, sizes) -> dict:
    """Per-image arrays: bytes, bpp and every metric of runtime.metrics (batched)."""
    originals = np.asarray(originals)
    reconstructions = np.asarray(reconstructions)
    h, w = originals.shape[1:3]
    sizes = np.asarray(sizes, dtype=np.int64)
    out = {"bytes": sizes, "bpp": np.array([metrics.bits_per_pixel(int(s), w, h) for s in sizes])}
    out.update({k: np.atleast_1d(np.asarray(v, dtype=np.float64))
                for k, v in metrics.quality(reconstructions, originals).items()})
    return out


def summarise(codec: str, setting: str, param, per_image: dict, keep_per_image: bool = True) -> dict:
    """One RD point: means over images (PSNR capped at PSNR_CAP), byte range, optionally per image."""
    psnr = np.minimum(per_image["psnr"], PSNR_CAP)
    point = {
        "codec": codec,
        "setting": setting,
        "param": param,
        "n": int(len(per_image["bytes"])),
        "bytes": float(np.mean(per_image["bytes"])),
        "bytes_min": int(np.min(per_image["bytes"])),
        "bytes_max": int(np.max(per_image["bytes"])),
        "bpp": float(np.mean(per_image["bpp"])),
        "psnr": float(np.mean(psnr)),
        "psnr_of_mean_mse": float(10.0 * np.log10(255.0**2 / max(float(np.mean(per_image["mse"])), 1e-12))),
        "lossless": int(np.count_nonzero(~np.isfinite(per_image["psnr"]))),
    }
    for key in METRICS:
        if key != "psnr":
            point[key] = float(np.mean(per_image[key]))
    if keep_per_image:
        point["per_image"] = {
            "bytes": [int(b) for b in per_image["bytes"]],
            **{k: [round(float(v), 5) for v in (psnr if k == "psnr" else per_image[k])]
               for k in ("psnr", "ssim", "ms_ssim")},
        }
    return point


def run_codec(codec, images: np.ndarray, bits_list, steps: int = DEFAULT_STEPS, batch: int = 64,
              progress: bool = True, keep_per_image: bool = True, **encode_options) -> list[dict]:
    """Encode ``images`` (uint8 at model size) at each bit depth; one summarised point per depth.

    Each batch goes through Codec.encode_detailed; bytes are the real files' lengths and the
    metrics are measured on the decoder-exact reconstructions.
    """
    if batch < 1:
        raise CodecError("--batch must be at least 1")
    for b in bits_list:
        bitstream.quant_step(int(b))  # validates before any work
    images = np.asarray(images)
    bar = progress_bar(len(images) * len(bits_list), f"{OURS} ({codec.bundle.name})", progress)
    points = []
    try:
        for b in bits_list:
            data_sizes, recons, clipped = [], [], 0
            for start in range(0, len(images), batch):
                chunk = images[start:start + batch]
                bar.set_postfix_str(f"bits={b}")
                results = codec.encode_detailed(list(chunk), bits=int(b), steps=steps, **encode_options)
                data_sizes += [r.num_bytes for r in results]
                recons += [r.reconstruction for r in results]
                clipped += sum(r.clipped for r in results)
                bar.update(len(chunk))
            point = summarise(OURS, f"bits={b}", int(b), measure(images, np.stack(recons), data_sizes),
                              keep_per_image)
            point["clipped_values"] = int(clipped)
            points.append(point)
    finally:
        bar.close()
    return points


def run_classic(classic, images: np.ndarray, progress: bool = True, keep_per_image: bool = True,
                qualities=None) -> list[dict]:
    """Encode every image with a classic codec at each quality (whole files); one point per quality."""
    qualities = list(classic.qualities if qualities is None else qualities)
    sizes = {q: [] for q in qualities}
    recons = {q: [] for q in qualities}
    bar = progress_bar(len(images), classic.name, progress)
    try:
        for img in images:
            for q in qualities:
                data = classic.encode(img, q)
                sizes[q].append(len(data))
                recons[q].append(classic.decode(data))
            bar.update(1)
    finally:
        bar.close()
    return [summarise(classic.name, f"q={q}", int(q), measure(images, np.stack(recons[q]), sizes[q]),
                      keep_per_image) for q in qualities]


# --- Bjøntegaard and other comparisons ---------------------------------------------------------

def rd_front(rates, qualities) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats (fewer or equal bytes and higher quality), by rising rate."""
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(qualities, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.lexsort((-q, r))  # by rate, best quality first among equal rates
    keep_r, keep_q = [], []
    for i in order:
        if not keep_q or q[i] > keep_q[-1]:
            if keep_r and r[i] == keep_r[-1]:
                continue
            keep_r.append(r[i])
            keep_q.append(q[i])
    return np.array(keep_r), np.array(keep_q)


def _local(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Indices of the sorted ``x`` inside [lo, hi] plus one neighbour on each side."""
    inside = np.flatnonzero((x >= lo) & (x <= hi))
    first = max(0, (inside[0] if len(inside) else np.searchsorted(x, lo)) - 1)
    last = min(len(x) - 1, (inside[-1] if len(inside) else np.searchsorted(x, hi)) + 1)
    return np.arange(first, last + 1)


def _fit_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Integral over [lo, hi] of the least-squares polynomial (cubic, or lower for few points) y(x)."""
    idx = _local(x, lo, hi)
    degree = min(3, len(idx) - 1)
    poly = np.polyint(np.polyfit(x[idx], y[idx], degree))
    return float(np.polyval(poly, hi) - np.polyval(poly, lo))


def bd_rate(anchor_rates, anchor_quality, test_rates, test_quality) -> float | None:
    """Bjøntegaard delta rate in percent: the test codec's average rate change for equal quality.

    Negative = the test codec needs fewer bytes. Each curve is reduced to its RD front; log-rate
    is fitted as a cubic polynomial of quality (over the points inside the overlapping quality
    interval plus one neighbour each side; lower degree if fewer than 4 points) and the difference
    of the integrals over the overlap is averaged. None when the quality ranges do not overlap.
    """
    ra, qa = rd_front(anchor_rates, anchor_quality)
    rt, qt = rd_front(test_rates, test_quality)
    if len(ra) < 2 or len(rt) < 2:
        return None
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    if not lo < hi:
        return None
    ia = _fit_integral(qa, np.log(ra), lo, hi)
    it = _fit_integral(qt, np.log(rt), lo, hi)
    return float((math.exp((it - ia) / (hi - lo)) - 1.0) * 100.0)


def bd_quality(anchor_rates, anchor_quality, test_rates, test_quality) -> float | None:
    """Bjøntegaard delta quality (BD-PSNR for PSNR): the test codec's average quality change at
    equal rate, from cubic fits of quality against log-rate over the overlapping rate interval.
    Positive = the test codec is better. None when the rate ranges do not overlap."""
    ra, qa = rd_front(anchor_rates, anchor_quality)
    rt, qt = rd_front(test_rates, test_quality)
    if len(ra) < 2 or len(rt) < 2:
        return None
    la, lt = np.log(ra), np.log(rt)
    lo, hi = max(la.min(), lt.min()), min(la.max(), lt.max())
    if not lo < hi:
        return None
    return float((_fit_integral(lt, qt, lo, hi) - _fit_integral(la, qa, lo, hi)) / (hi - lo))


def quality_at_bytes(points: list[dict], num_bytes: float, key: str = "psnr") -> dict:
    """A codec's ``key`` at ``num_bytes`` per image, linear in log-rate on its RD front.

    Returns {"value", "status"}: status 'interpolated', 'below' (the codec's smallest files are
    larger: value None, with its smallest point) or 'above' (beyond its largest point).
    """
    r, q = rd_front([p["bytes"] for p in points], [p[key] for p in points])
    if len(r) == 0:
        return {"value": None, "status": "none"}
    if num_bytes < r[0]:
        return {"value": None, "status": "below", "smallest_bytes": float(r[0]), "smallest_value": float(q[0])}
    if num_bytes > r[-1]:
        return {"value": float(q[-1]), "status": "above", "largest_bytes": float(r[-1])}
    return {"value": float(np.interp(np.log(num_bytes), np.log(r), q)), "status": "interpolated"}


def best_within(points: list[dict], budget: float, key: str = "psnr") -> dict | None:
    """The point with the best mean ``key`` among those whose mean bytes fit ``budget``."""
    fitting = [p for p in points if p["bytes"] <= budget]
    return max(fitting, key=lambda p: p[key]) if fitting else None


def winners(curves: dict[str, list[dict]], budgets=BUDGETS) -> dict:
    """Per budget: each codec's best point within it (by mean PSNR) and the winner."""
    out = {}
    for budget in budgets:
        by_codec = {}
        for name, points in curves.items():
            p = best_within(points, budget)
            by_codec[name] = None if p is None else {k: p[k] for k in ("setting", "bytes", "psnr", "ms_ssim", "ssim")}
        reached = {k: v for k, v in by_codec.items() if v is not None}
        win = max(reached, key=lambda k: reached[k]["psnr"]) if reached else None
        out[str(budget)] = {"winner": win, "by_codec": by_codec}
    return out


def compare(ours: list[dict], classic: dict[str, list[dict]]) -> tuple[dict, dict]:
    """BD figures and equal-bytes comparisons of our curve against each classic curve."""
    bd, equal = {}, {}
    r_o = [p["bytes"] for p in ours]
    for name, pts in classic.items():
        r_c = [p["bytes"] for p in pts]
        entry = {}
        for key, label in (("psnr", "psnr"), ("ms_ssim", "ms_ssim")):
            q_o, q_c = [p[key] for p in ours], [p[key] for p in pts]
            entry[f"bd_rate_{label}_percent"] = bd_rate(r_c, q_c, r_o, q_o)
            entry[f"bd_{label}"] = bd_quality(r_c, q_c, r_o, q_o)
        entry["overlap_bytes"] = bool(entry["bd_psnr"] is not None)
        entry["classic_bytes_range"] = [min(r_c), max(r_c)]
        entry["ours_bytes_range"] = [min(r_o), max(r_o)]
        bd[name] = entry
        rows = []
        for p in ours:
            at = quality_at_bytes(pts, p["bytes"], "psnr")
            ms = quality_at_bytes(pts, p["bytes"], "ms_ssim")
            rows.append({"setting": p["setting"], "bytes": p["bytes"], "psnr": p["psnr"], "ms_ssim": p["ms_ssim"],
                         "classic_psnr": at["value"], "classic_ms_ssim": ms["value"], "status": at["status"],
                         **({"classic_smallest_bytes": at["smallest_bytes"], "classic_smallest_psnr": at["smallest_value"],
                             "classic_smallest_ms_ssim": ms.get("smallest_value")} if at["status"] == "below" else {})})
        equal[name] = rows
    return bd, equal


# --- the benchmark -----------------------------------------------------------------------------

def benchmark(model, data, split: str = "val", limit: int | None = None, steps: int = DEFAULT_STEPS,
              bits=DEFAULT_BITS, batch: int = 64, codecs=None, progress: bool = True,
              per_image_limit: int = PER_IMAGE_LIMIT) -> dict:
    """Run the whole RD benchmark; returns the JSON-ready result (see the module docstring)."""
    from benchmarks.codecs import available_codecs
    from runtime.codec import Codec

    if steps < 0:
        raise CodecError("--steps must be >= 0")
    bits = [int(b) for b in bits]
    for b in bits:
        bitstream.quant_step(b)
    available = available_codecs()
    if codecs is None:
        chosen = list(available.values())
    else:
        unknown = [c for c in codecs if c not in available]
        if unknown:
            raise CodecError(f"unknown or unavailable classic codec(s) {', '.join(unknown)}; "
                             f"available: {', '.join(available) or 'none'}")
        chosen = [available[c] for c in codecs]
    codec = Codec(model)
    bundle = codec.bundle
    images = load_split(data, bundle.image_size, split, limit)
    keep = len(images) <= per_image_limit
    timing = {}
    t0 = time.perf_counter()
    ours = run_codec(codec, images, bits, steps=steps, batch=batch, progress=progress, keep_per_image=keep)
    timing[OURS] = time.perf_counter() - t0
    classic = {}
    for c in chosen:
        t0 = time.perf_counter()
        classic[c.name] = run_classic(c, images, progress=progress, keep_per_image=False)
        timing[c.name] = time.perf_counter() - t0
    bd, equal = compare(ours, classic)
    curves = {OURS: ours, **classic}
    return {
        "kind": "rd",
        "created": now(),
        "model": {"name": bundle.name, "directory": str(bundle.directory), "model_id": bundle.model_id,
                  "latent_dim": bundle.latent_dim, "image_size": bundle.image_size,
                  "default_bits": bundle.default_bits, "dataset": bundle.manifest.get("dataset")},
        "data": {"path": str(data), "split": split, "limit": limit, "n_images": int(len(images))},
        "settings": {"steps": steps, "bits": bits, "batch": batch, "psnr_cap": PSNR_CAP,
                     "per_image": keep, "classic": {c.name: {"qualities": list(c.qualities),
                                                             "options": dict(c.options)} for c in chosen}},
        "timing_s": timing,
        "curves": curves,
        "bd": bd,
        "equal_bytes": equal,
        "budgets": winners(curves),
    }


# --- reports -----------------------------------------------------------------------------------

def winner_text(entry: dict) -> str:
    if entry["winner"] is None:
        return "nobody can reach it"
    w = entry["by_codec"][entry["winner"]]
    return f"{entry['winner']} ({w['setting']}, {w['bytes']:.1f} B, {w['psnr']:.2f} dB)"


def winners_markdown(result: dict) -> str:
    """Table: per budget the winner and each codec's best point within it."""
    names = list(result["curves"])
    rows = []
    for budget, entry in result["budgets"].items():
        cells = []
        for n in names:
            p = entry["by_codec"][n]
            cells.append("cannot reach" if p is None else f"{p['psnr']:.2f} dB ({p['setting']}, {p['bytes']:.0f} B)")
        rows.append([f"{budget} B", winner_text(entry)] + cells)
    return md_table(["budget", "winner"] + names, rows)


def bd_markdown(result: dict) -> str:
    """Table: BD-rate and BD-quality of this codec against each classic codec."""
    rows = []
    for name, e in result["bd"].items():
        rows.append([name, fmt(e["bd_rate_psnr_percent"], 1), fmt(e["bd_psnr"], 2),
                     fmt(e["bd_rate_ms_ssim_percent"], 1), fmt(e["bd_ms_ssim"], 4),
                     f"{e['ours_bytes_range'][0]:.0f}–{e['ours_bytes_range'][1]:.0f}",
                     f"{e['classic_bytes_range'][0]:.0f}–{e['classic_bytes_range'][1]:.0f}"])
    return md_table(["vs", "BD-rate (PSNR) %", "BD-PSNR dB", "BD-rate (MS-SSIM) %", "BD-MS-SSIM",
                     "our bytes", "their bytes"], rows)


def markdown(result: dict) -> str:
    m, d, s = result["model"], result["data"], result["settings"]
    lines = [f"# Rate–distortion: {OURS} `{m['name']}` vs classic codecs", "",
             f"Model `{m['name']}` (id {m['model_id'][:12]}…, latent {m['latent_dim']}, "
             f"{m['image_size']}×{m['image_size']}), data `{d['path']}` split `{d['split']}`, "
             f"{d['n_images']} images, {s['steps']} inversion steps, bits {', '.join(map(str, s['bits']))}. "
             f"Bytes are whole files per image; metrics are means of per-image values "
             f"(PSNR capped at {s['psnr_cap']:.0f} dB). Created {result['created']}.", ""]
    lossless = {n: max(p["lossless"] for p in pts) for n, pts in result["curves"].items()}
    lossless = {n: v for n, v in lossless.items() if v}
    if lossless:
        lines += ["Note: some settings reproduce images exactly (PSNR = inf, counted as "
                  f"{s['psnr_cap']:.0f} dB), which lifts their mean PSNR: "
                  + ", ".join(f"{n} up to {v} of {d['n_images']} images" for n, v in lossless.items())
                  + ". The column 'PSNR(MSE)' (PSNR of the mean MSE) is not affected.", ""]
    lines += ["## Winner at a byte budget", "",
              "Per codec the best mean-PSNR setting whose mean file size fits the budget.", "",
              winners_markdown(result), "",
              "## Bjøntegaard deltas (this codec vs each classic codec)", "",
              "BD-rate: average change in bytes for equal quality (negative = we need fewer bytes); "
              "BD-PSNR / BD-MS-SSIM: average quality change at equal bytes. "
              "Cubic fits in log-rate over the overlapping interval; — where the curves do not overlap.", "",
              bd_markdown(result), ""]
    lines += ["## Quality at equal bytes", "",
              "The classic codec's PSNR at our mean file size (linear in log-rate on its curve); "
              "where its smallest file is larger than ours, its smallest file instead.", ""]
    rows = []
    for name, entries in result["equal_bytes"].items():
        for e in entries:
            if e["status"] == "below":
                theirs = (f"cannot go this small; smallest {e['classic_smallest_bytes']:.0f} B at "
                          f"{e['classic_smallest_psnr']:.2f} dB")
            elif e["status"] == "above":
                theirs = f"≥ {fmt(e['classic_psnr'])} dB (beyond its largest file)"
            else:
                theirs = f"{fmt(e['classic_psnr'])} dB / MS-SSIM {fmt(e['classic_ms_ssim'], 4)}"
            rows.append([name, e["setting"], f"{e['bytes']:.1f}", f"{e['psnr']:.2f}", f"{e['ms_ssim']:.4f}", theirs])
    lines += [md_table(["vs", "our setting", "bytes", "our PSNR", "our MS-SSIM", "theirs at these bytes"], rows), ""]
    lines += ["## All points", ""]
    for name, points in result["curves"].items():
        rows = [[p["setting"], f"{p['bytes']:.1f}", f"{p['bytes_min']}–{p['bytes_max']}", f"{p['bpp']:.3f}",
                 f"{p['psnr']:.2f}", f"{p['psnr_of_mean_mse']:.2f}", f"{p['ssim']:.4f}", f"{p['ms_ssim']:.4f}",
                 f"{p['l1']:.0f}", f"{p['mse']:.1f}"] for p in points]
        lines += [f"### {name}", "", md_table(["setting", "bytes", "range", "bpp", "PSNR", "PSNR(MSE)", "SSIM",
                                               "MS-SSIM", "L1", "MSE"], rows), ""]
    t = result["timing_s"]
    lines += ["Wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()) + ".", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """Two panels: mean bytes per image vs mean PSNR and vs mean MS-SSIM (log bytes axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"JPEG": ("tab:blue", "s"), "WebP": ("tab:green", "^"), "AVIF": ("tab:purple", "D")}
    for ax, key, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ms_ssim", "MS-SSIM")):
        for name, points in result["curves"].items():
            r = [p["bytes"] for p in points]
            q = [p[key] for p in points]
            if name == OURS:
                ax.plot(r, q, "o-", color="tab:red", lw=2.2, ms=5, label=f"{OURS} ({result['model']['name']})", zorder=5)
                for p in points:
                    ax.annotate(str(p["param"]), (p["bytes"], p[key]), textcoords="offset points", xytext=(4, -10),
                                fontsize=7, color="tab:red")
            else:
                color, marker = styles.get(name, ("gray", "."))
                ax.plot(r, q, marker + "-", color=color, lw=1.2, ms=3, label=name, alpha=0.85)
        for b in BUDGETS:
            ax.axvline(b, color="gray", ls=":", lw=0.8)
        top = max(p[key] for pts in result["curves"].values() for p in pts)
        if key == "psnr" and top > PLOT_PSNR_TOP:  # e.g. JPEG re-encoding JPEG-born images exactly
            ax.set_ylim(top=PLOT_PSNR_TOP)
            ax.text(0.01, 0.99, f"axis cut at {PLOT_PSNR_TOP:.0f} dB (max {top:.0f})", transform=ax.transAxes,
                    fontsize=7, va="top", color="gray")
        ax.set_xscale("log")
        ax.set_xlabel("bytes per image (whole file)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    d = result["data"]
    fig.suptitle(f"{result['model']['name']}: {d['n_images']} {d['split']} images, "
                 f"{result['settings']['steps']} steps (labels: bits)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_reports(result: dict, out_dir: Path, stem: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(out_dir / f"{stem}.json", result)}
    md = out_dir / f"{stem}.md"
    md.write_text(markdown(result))
    paths["md"] = md
    paths["png"] = plot(result, out_dir / f"{stem}.png")
    return paths


# --- CLI ---------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.rd", description=__doc__.split("\n\n")[1])
    p.add_argument("--model", required=True, help="bundle directory, name or model id")
    p.add_argument("--data", required=True, help=".npz (train/val keys) or image folder")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--limit", type=int, help="only the first N images of the split")
    p.add_argument("--out", default=str(RESULTS_DIR), help="output directory (default benchmarks/results)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"inversion steps per image (default {DEFAULT_STEPS})")
    p.add_argument("--bits", default=f"{DEFAULT_BITS[0]}-{DEFAULT_BITS[-1]}",
                   help="bit depths, e.g. 2,3,4 or 2-7 (default 2-9)")
    p.add_argument("--batch", type=int, default=64, help="images encoded together (default 64)")
    p.add_argument("--codecs", help="classic codecs to compare, e.g. JPEG,WebP (default all available)")
    p.add_argument("--per-image-limit", type=int, default=PER_IMAGE_LIMIT,
                   help=f"store this codec's per-image values when there are at most this many images "
                        f"(default {PER_IMAGE_LIMIT}; classic codecs: means only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's Python warnings (e.g. tf.function retracing) off the console."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def run(argv=None) -> int:
    args = parse_args(argv)
    quiet_tensorflow()
    bits = parse_int_list(args.bits, "--bits")
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()] if args.codecs else None
    result = benchmark(args.model, args.data, args.split, args.limit, args.steps, bits, args.batch,
                       codecs, progress=not args.no_progress, per_image_limit=args.per_image_limit)
    paths = write_reports(result, Path(args.out), f"rd_{result['model']['name']}")
    for budget, entry in result["budgets"].items():
        print(f"{budget:>4} B: {winner_text(entry)}")
    for name, e in result["bd"].items():
        if e["bd_psnr"] is None:
            print(f"vs {name}: no overlap (our bytes {e['ours_bytes_range'][0]:.0f}–{e['ours_bytes_range'][1]:.0f}, "
                  f"theirs {e['classic_bytes_range'][0]:.0f}–{e['classic_bytes_range'][1]:.0f})")
        else:
            print(f"vs {name}: BD-rate {fmt(e['bd_rate_psnr_percent'], 1)} %, BD-PSNR {fmt(e['bd_psnr'])} dB")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv=None) -> int:
    return cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
