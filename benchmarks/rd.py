"""python -m benchmarks.rd --model models/NAME --data PATH.npz [--split val] [--limit N] [--out DIR]
[--steps N] [--budgets 40,51,...] [--levels 0,4,8,...] [--codecs JPEG,WebP,AVIF] [--batch 64]

Rate-distortion benchmark of one variable-rate model bundle against JPEG, WebP and AVIF.

Every image of the split (brought to the model's size by the project's one resize,
``runtime.images.to_model_size``) is encoded

- by this codec at every per-image byte budget of ``--budgets`` (default 40, 51, 64, 100, 150,
  200, 300, 400): :meth:`runtime.codec.Codec.compress` with ``target_bytes=B`` and
  ``fallback=False`` — **the model alone**, never a WebP payload. How many images the encoder's
  WebP fallback *would* have switched to WebP is counted too (:func:`runtime.codec.webp_fallback`
  judged as the encoder judges it: the best PSNR among the files that fit);
- by WebP per image at its highest quality whose whole file fits the same budget
  (``runtime.classic`` ``WEBP.best_fitting``; a binary search over qualities 0..100 through a
  per-image cache of encodings). Images whose smallest WebP file is larger than the budget are
  counted ("WebP fits k of n") and left out of WebP's means; ours are given both on all images and
  on the same subset as WebP;
- by this codec at fixed rate levels (``--levels``, default 8 levels evenly spaced from the coarsest
  to the finest): the
  per-level curve;
- by each classic codec at every quality of its sweep (``benchmarks.codecs``), as whole files.

The rate is always the length of the whole file (our latent.bin with header and CRC, the classic
codec's complete file) and the distortion is measured on exactly what the decoder returns. A
*point* is mean bytes per image, mean bpp and the mean over images of each per-image metric of
:mod:`runtime.metrics` (PSNR, SSIM, MS-SSIM, L1, MSE); an image reproduced exactly counts as
:data:`PSNR_CAP` dB.

Comparisons (written to ``rd_<model>.json``/``.md``, plotted in ``rd_<model>.png``):

- per budget: ours vs WebP (bytes, PSNR, MS-SSIM, WebP's fit count, the PSNR and MS-SSIM
  differences on the images where WebP fits);
- BD-rate (PSNR and MS-SSIM, :func:`bd_rate`) of our budget curve against WebP's budget curve,
  over their overlap; WebP's curve uses only the budgets at which WebP fits every image (a mean
  over a subset that drops the hardest images would flatter it), and the budgets used are listed;
- BD-rate / BD-quality of our budget curve against each classic codec's quality sweep.

This module also holds the pieces the other benchmarks share: loading a split at model size
(:func:`load_split`), encoding a set (:func:`encode_set`), summarising a point
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
BUDGETS = (40, 51, 64, 100, 150, 200, 300, 400)
LEVEL_POINTS = 8  # the per-level curve: this many levels, evenly spaced from the coarsest to the finest
METRICS = ("psnr", "ssim", "ms_ssim", "l1", "mse")
PSNR_CAP = 100.0
PLOT_PSNR_TOP = 50.0
PER_IMAGE_LIMIT = 512  # per-image values go into the JSON for at most this many images
SWEEP_STRIDE = {"AVIF": 3, "JPEG XL": 2}  # the slow encoders (AVIF speed 0: ~0.3 s per 128x128 image): a sparser sweep
OURS = "gancodec"
WEBP_NAME = "WebP"


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


def subset(per_image: dict, mask) -> dict:
    """The per-image arrays of the images where ``mask`` is true."""
    mask = np.asarray(mask, bool)
    return {k: np.asarray(v)[mask] for k, v in per_image.items()}


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
        if "level" in per_image:
            point["per_image"]["level"] = [int(v) for v in per_image["level"]]
    return point


def encode_set(codec, images: np.ndarray, steps: int = DEFAULT_STEPS, batch: int = 64, bar=None,
               **rate) -> dict:
    """Encode ``images`` (uint8 at model size) in batches with ``Codec.compress(steps=steps, **rate)``.

    Returns the per-image arrays of :func:`measure` (bytes of the real files, metrics of the
    decoder-exact reconstructions) plus ``level``, ``latent`` (False for a WebP payload),
    ``clipped`` and the results themselves (``results``).
    """
    if batch < 1:
        raise CodecError("--batch must be at least 1")
    images = np.asarray(images)
    results = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        results += codec.compress(list(chunk), steps=steps, **rate)
        if bar is not None:
            bar.update(len(chunk))
    out = measure(images, np.stack([r.reconstruction for r in results]), [r.num_bytes for r in results])
    out["level"] = np.array([-1 if r.level is None else r.level for r in results])
    out["latent"] = np.array([r.kind == "latent" for r in results])
    out["clipped"] = np.array([r.clipped for r in results])
    out["results"] = results
    return out


def _point(per_image: dict, setting: str, param, keep: bool) -> dict:
    point = summarise(OURS, setting, param, per_image, keep)
    point["clipped_values"] = int(np.sum(per_image["clipped"]))
    point["levels_used"] = sorted({int(v) for v in per_image["level"]})
    return point


def run_levels(codec, images: np.ndarray, levels, steps: int = DEFAULT_STEPS, batch: int = 64,
               progress: bool = True, keep_per_image: bool = True) -> list[dict]:
    """Our per-level curve: every image at each fixed rate ``level``; one point per level."""
    bar = progress_bar(len(images) * len(levels), f"{OURS} levels", progress)
    try:
        return [_point(encode_set(codec, images, steps, batch, bar, level=int(lv)), f"level={lv}", int(lv),
                       keep_per_image) for lv in levels]
    finally:
        bar.close()


class CachedEncodings:
    """One image's classic encodings by quality, computed once (the budget searches and the sweep
    share them). Duck-types the ``qualities``/``encode`` of a :class:`runtime.classic.ClassicCodec`,
    so its own searches (``best_fitting``) run over the cache."""

    def __init__(self, classic, pixels: np.ndarray):
        self.classic, self.pixels, self.files = classic, pixels, {}

    @property
    def qualities(self):
        return self.classic.qualities

    def encode(self, pixels, quality: int) -> bytes:
        if quality not in self.files:
            self.files[quality] = self.classic.encode(self.pixels, quality)
        return self.files[quality]

    def best_fitting(self, fits):
        return type(self.classic)._boundary(self, self.pixels, fits, highest=True)


def classic_at_budget(caches: list, images: np.ndarray, budget: int, ours: dict) -> dict:
    """One classic codec at one per-image budget: per image its highest quality whose whole file
    fits ``budget`` (through the per-image :class:`CachedEncodings`); the point over the images it
    fits, ours on the same images and the differences. ``per_image``: full-length arrays (NaN where
    it does not fit) of bytes, PSNR and MS-SSIM, for the best-of comparisons; ``found``: (quality,
    file) or None per image."""
    found = [c.best_fitting(lambda d, b=budget: len(d) <= b) for c in caches]
    fit = np.array([f is not None for f in found])
    n = len(images)
    entry = {"fits": int(np.count_nonzero(fit)), "point": None, "ours_on_subset": None,
             "delta_psnr": None, "delta_ms_ssim": None}
    full = {k: np.full(n, np.nan) for k in ("bytes", "psnr", "ms_ssim")}
    if fit.any():
        idx = np.flatnonzero(fit)
        name = caches[0].classic.name
        theirs = measure(images[idx], np.stack([caches[i].classic.decode(found[i][1]) for i in idx]),
                         [len(found[i][1]) for i in idx])
        entry["point"] = summarise(name, f"≤{budget} B", int(budget), theirs, False)
        same = _point(subset({k: v for k, v in ours.items() if k != "results"}, fit), f"≤{budget} B",
                      int(budget), False)
        entry["ours_on_subset"] = same
        entry["delta_psnr"] = same["psnr"] - entry["point"]["psnr"]
        entry["delta_ms_ssim"] = same["ms_ssim"] - entry["point"]["ms_ssim"]
        full["bytes"][idx] = theirs["bytes"]
        full["psnr"][idx] = np.minimum(theirs["psnr"], PSNR_CAP)
        full["ms_ssim"][idx] = theirs["ms_ssim"]
    entry["per_image"], entry["found"] = full, found
    return entry


BEST_OF = ("AVIF", "JPEG XL")  # the strongest classic codecs at 128x128: compared as one "best of"


def best_of_at_budget(entries: dict, ours: dict, budget: int) -> dict | None:
    """Per image, the best of the :data:`BEST_OF` codecs present in ``entries`` at this budget:
    the highest PSNR among their files that fit (and, separately, the highest MS-SSIM), over the
    images where at least one fits; ours on the same images and the differences."""
    names = [n for n in BEST_OF if n in entries]
    if not names:
        return None
    psnr = np.stack([entries[n]["per_image"]["psnr"] for n in names])
    ms = np.stack([entries[n]["per_image"]["ms_ssim"] for n in names])
    size = np.stack([entries[n]["per_image"]["bytes"] for n in names])
    fit = np.isfinite(psnr).any(axis=0)
    out = {"codecs": names, "fits": int(np.count_nonzero(fit)), "psnr": None, "ms_ssim": None, "bytes": None,
           "wins": None, "ours_psnr": None, "ours_ms_ssim": None, "delta_psnr": None, "delta_ms_ssim": None}
    if fit.any():
        p, m, b = psnr[:, fit], ms[:, fit], size[:, fit]
        pick = np.nanargmax(p, axis=0)
        cols = np.arange(p.shape[1])
        out["psnr"] = float(np.mean(p[pick, cols]))
        out["ms_ssim"] = float(np.mean(np.nanmax(m, axis=0)))
        out["bytes"] = float(np.mean(b[pick, cols]))
        out["wins"] = {n: int(np.count_nonzero(pick == i)) for i, n in enumerate(names)}
        out["ours_psnr"] = float(np.mean(np.minimum(ours["psnr"][fit], PSNR_CAP)))
        out["ours_ms_ssim"] = float(np.mean(ours["ms_ssim"][fit]))
        out["delta_psnr"] = out["ours_psnr"] - out["psnr"]
        out["delta_ms_ssim"] = out["ours_ms_ssim"] - out["ms_ssim"]
    return out


def run_budgets(codec, images: np.ndarray, budgets, webp_cache: list, steps: int = DEFAULT_STEPS,
                batch: int = 64, progress: bool = True, keep_per_image: bool = True,
                caches: dict | None = None) -> list[dict]:
    """The per-image budget comparison: per budget B, our ``target_bytes=B`` files (model alone),
    WebP per image at its highest quality whose whole file fits B, how many images the encoder's
    fallback would have switched to WebP, and (``caches``: codec name -> one :class:`CachedEncodings`
    per image) every other classic codec the same way plus the best of AVIF and JPEG XL per image.
    ``webp_cache``: one :class:`CachedEncodings` of WebP per image."""
    from runtime.classic import WEBP

    caches = {WEBP_NAME: webp_cache, **{k: v for k, v in (caches or {}).items() if k != WEBP_NAME}}
    model_id = codec.bundle.model_id_bytes
    bar = progress_bar(len(images) * len(budgets), f"{OURS} budgets", progress)
    rows = []
    try:
        for budget in budgets:
            ours = encode_set(codec, images, steps, batch, bar, target_bytes=int(budget), fallback=False)
            entries = {name: classic_at_budget(c, images, int(budget), ours) for name, c in caches.items()}
            web = entries[WEBP_NAME]
            found = web["found"]
            # what the encoder's fallback would do: WebP wrapped in a latent.bin (RIFF header implied)
            # under the same budget, taken when its PSNR beats ours (runtime.codec's rule)
            switch = 0
            for i, c in enumerate(webp_cache):
                wrapped = c.best_fitting(lambda d, b=budget: len(bitstream.pack_webp(d, model_id)) <= b)
                if wrapped is not None and (ours["bytes"][i] > budget
                                            or metrics.psnr(WEBP.decode(wrapped[1]), images[i]) > ours["psnr"][i]):
                    switch += 1
            row = {"budget": int(budget), "n": int(len(images)),
                   "ours": _point(ours, f"≤{budget} B", int(budget), keep_per_image),
                   "ours_over_budget": int(np.count_nonzero(ours["bytes"] > budget)),
                   "fallback_would_switch": switch, "webp_fits": web["fits"],
                   "webp": web["point"], "ours_on_webp_subset": web["ours_on_subset"],
                   "delta_psnr": web["delta_psnr"], "delta_ms_ssim": web["delta_ms_ssim"],
                   "classic": {name: {k: v for k, v in e.items() if k not in ("per_image", "found")}
                               for name, e in entries.items()},
                   "best_avif_jxl": best_of_at_budget(entries, ours, int(budget))}
            if row["webp"] is not None and keep_per_image:
                idx = [i for i, f in enumerate(found) if f is not None]
                row["webp"]["qualities"] = [int(found[i][0]) for i in idx]
                row["webp"]["images"] = idx
                row["webp"]["per_image"] = {"bytes": [len(found[i][1]) for i in idx],
                                            "psnr": [round(float(web["per_image"]["psnr"][i]), 5) for i in idx]}
            elif row["webp"] is not None:
                row["webp"]["qualities"] = None
            rows.append(row)
    finally:
        bar.close()
    return rows


def run_classic(classic, images: np.ndarray, progress: bool = True, keep_per_image: bool = True,
                qualities=None, cache: list | None = None) -> list[dict]:
    """Encode every image with a classic codec at each quality (whole files); one point per quality.
    ``cache``: one :class:`CachedEncodings` per image to reuse (and fill)."""
    if qualities is None:
        qualities = classic.qualities[::SWEEP_STRIDE.get(classic.name, 1)]
    qualities = list(qualities)
    sizes = {q: [] for q in qualities}
    recons = {q: [] for q in qualities}
    bar = progress_bar(len(images), classic.name, progress)
    try:
        for i, img in enumerate(images):
            source = cache[i] if cache is not None else CachedEncodings(classic, img)
            for q in qualities:
                data = source.encode(img, q)
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


def budget_curve(rows: list[dict], who: str, complete_only: bool = False) -> list[dict]:
    """The per-budget points of ``who`` ('ours' or 'webp'); with ``complete_only`` only the budgets
    where WebP fits every image."""
    return [r[who] for r in rows if r[who] is not None and (not complete_only or r["webp_fits"] == r["n"])]


def bd_entry(anchor: list[dict], test: list[dict]) -> dict:
    """BD-rate (PSNR, MS-SSIM) and BD-quality of ``test`` against ``anchor`` (lists of points)."""
    entry = {}
    r_a, r_t = [p["bytes"] for p in anchor], [p["bytes"] for p in test]
    for key in ("psnr", "ms_ssim"):
        q_a, q_t = [p[key] for p in anchor], [p[key] for p in test]
        entry[f"bd_rate_{key}_percent"] = bd_rate(r_a, q_a, r_t, q_t) if anchor and test else None
        entry[f"bd_{key}"] = bd_quality(r_a, q_a, r_t, q_t) if anchor and test else None
    entry["anchor_bytes_range"] = [min(r_a), max(r_a)] if r_a else None
    entry["ours_bytes_range"] = [min(r_t), max(r_t)] if r_t else None
    return entry


def classic_budget_curve(rows: list[dict], name: str) -> list[dict]:
    """A classic codec's per-budget points at the budgets where it fits every image."""
    return [r["classic"][name]["point"] for r in rows
            if name in r.get("classic", {}) and r["classic"][name]["fits"] == r["n"]]


def compare(budget_rows: list[dict], classic: dict[str, list[dict]]) -> dict:
    """BD figures of our budget curve: vs WebP's budget curve (budgets where it fits every image),
    every other classic codec's budget curve (the same way), and each codec's quality sweep."""
    ours = budget_curve(budget_rows, "ours")
    webp = budget_curve(budget_rows, "webp", complete_only=True)
    bd = {"WebP budgets": {**bd_entry(webp, ours), "budgets": [p["param"] for p in webp]}}
    names = [n for n in (budget_rows[0].get("classic", {}) if budget_rows else {}) if n != WEBP_NAME]
    for name in names:
        pts = classic_budget_curve(budget_rows, name)
        bd[f"{name} budgets"] = {**bd_entry(pts, ours), "budgets": [p["param"] for p in pts]}
    for name, pts in classic.items():
        bd[f"{name} sweep"] = bd_entry(pts, ours)
    return bd


# --- the benchmark -----------------------------------------------------------------------------

def default_levels(levels: int, points: int = LEVEL_POINTS) -> list[int]:
    """``points`` levels evenly spaced from the coarsest to the finest (all of them if fewer)."""
    return sorted({int(round(v)) for v in np.linspace(0, levels - 1, min(points, levels))})


def choose_classic(codecs) -> list:
    from benchmarks.codecs import available_codecs

    available = available_codecs()
    if codecs is None:
        return list(available.values())
    unknown = [c for c in codecs if c not in available]
    if unknown:
        raise CodecError(f"unknown or unavailable classic codec(s) {', '.join(unknown)}; "
                         f"available: {', '.join(available) or 'none'}")
    return [available[c] for c in codecs]


def benchmark(model, data, split: str = "val", limit: int | None = None, steps: int = DEFAULT_STEPS,
              budgets=BUDGETS, levels=None, batch: int = 64, codecs=None, progress: bool = True,
              per_image_limit: int = PER_IMAGE_LIMIT) -> dict:
    """Run the whole RD benchmark; returns the JSON-ready result (see the module docstring).
    ``levels``: the fixed levels of our per-level curve (None: :func:`default_levels`; [] for none)."""
    from runtime.classic import WEBP
    from runtime.codec import Codec

    if steps < 0:
        raise CodecError("--steps must be >= 0")
    budgets = sorted({int(b) for b in budgets})
    if not budgets or budgets[0] < 1:
        raise CodecError("--budgets must be positive byte counts")
    chosen = choose_classic(codecs)
    codec = Codec(model)
    bundle = codec.bundle
    levels = default_levels(bundle.levels) if levels is None else sorted({int(v) for v in levels})
    bad = [v for v in levels if not 0 <= v < bundle.levels]
    if bad:
        raise CodecError(f"--levels must be 0..{bundle.levels - 1} for this model, got {bad}")
    images = load_split(data, bundle.image_size, split, limit)
    keep = len(images) <= per_image_limit
    timing = {}
    caches = {c.name: [CachedEncodings(c, im) for im in images] for c in chosen}
    webp_cache = caches.get(WEBP_NAME) or [CachedEncodings(WEBP, im) for im in images]
    classic = {}
    for c in chosen:
        t0 = time.perf_counter()
        classic[c.name] = run_classic(c, images, progress, False, cache=caches[c.name])
        timing[f"{c.name} sweep"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = run_budgets(codec, images, budgets, webp_cache, steps, batch, progress, keep, caches)
    timing[f"{OURS} budgets + classic fits"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    per_level = run_levels(codec, images, levels, steps, batch, progress, keep) if levels else []
    timing[f"{OURS} levels"] = time.perf_counter() - t0
    return {
        "kind": "rd",
        "version": 2,  # 2 with "classic"/"best_avif_jxl" per budget row since format 3
        "created": now(),
        "model": {"name": bundle.name, "directory": str(bundle.directory), "model_id": bundle.model_id,
                  "latent_shape": list(bundle.latent_shape), "levels": bundle.levels,
                  "default_level": codec.default_level, "image_size": bundle.image_size,
                  "dataset": bundle.manifest.get("dataset"), "validation": bundle.manifest.get("validation")},
        "data": {"path": str(data), "split": split, "limit": limit, "n_images": int(len(images))},
        "settings": {"steps": steps, "budgets": budgets, "levels": levels, "batch": batch, "fallback": False,
                     "psnr_cap": PSNR_CAP, "per_image": keep,
                     "classic": {c.name: {"qualities": list(c.qualities[::SWEEP_STRIDE.get(c.name, 1)]),
                                          "options": dict(c.options)} for c in chosen}},
        "timing_s": timing,
        "budgets": rows,
        "curves": {OURS: budget_curve(rows, "ours"), f"{WEBP_NAME} budgets": budget_curve(rows, "webp"),
                   f"{OURS} levels": per_level, **classic},
        "bd": compare(rows, classic),
    }


# --- reports -----------------------------------------------------------------------------------

def budget_rows_markdown(result: dict) -> str:
    """Table: per budget, ours (all images) vs WebP (on the images it fits) and ours on those."""
    rows = []
    for r in result["budgets"]:
        o, w, s = r["ours"], r["webp"], r["ours_on_webp_subset"]
        rows.append([f"{r['budget']} B", f"{o['bytes']:.1f}", f"{o['psnr']:.2f}", f"{o['ms_ssim']:.4f}",
                     f"{r['webp_fits']}/{r['n']}",
                     "—" if w is None else f"{w['bytes']:.1f}", "—" if w is None else f"{w['psnr']:.2f}",
                     "—" if w is None else f"{w['ms_ssim']:.4f}",
                     "—" if s is None else f"{s['psnr']:.2f}", "—" if s is None else f"{s['ms_ssim']:.4f}",
                     "—" if r["delta_psnr"] is None else f"{r['delta_psnr']:+.2f}",
                     "—" if r["delta_ms_ssim"] is None else f"{r['delta_ms_ssim']:+.4f}",
                     r["fallback_would_switch"]])
    return md_table(["budget", "our bytes", "our PSNR", "our MS-SSIM", "WebP fits", "WebP bytes", "WebP PSNR",
                     "WebP MS-SSIM", "ours, same images: PSNR", "MS-SSIM", "Δ PSNR dB", "Δ MS-SSIM",
                     "fallback would switch"], rows)


def classic_budget_markdown(result: dict) -> str:
    """Table: per budget and classic codec, how many images it fits, its means on those, ours on the
    same images and the differences; then the per-image best of AVIF and JPEG XL. Empty string
    for results without these rows."""
    rows = []
    for r in result["budgets"]:
        for name, e in r.get("classic", {}).items():
            p, s = e["point"], e["ours_on_subset"]
            rows.append([f"{r['budget']} B", name, f"{e['fits']}/{r['n']}",
                         "—" if p is None else f"{p['bytes']:.1f}", "—" if p is None else f"{p['psnr']:.2f}",
                         "—" if p is None else f"{p['ms_ssim']:.4f}", "—" if s is None else f"{s['psnr']:.2f}",
                         "—" if s is None else f"{s['ms_ssim']:.4f}",
                         "—" if e["delta_psnr"] is None else f"{e['delta_psnr']:+.2f}",
                         "—" if e["delta_ms_ssim"] is None else f"{e['delta_ms_ssim']:+.4f}"])
        b = r.get("best_avif_jxl")
        if b:
            wins = ", ".join(f"{k} {v}" for k, v in (b["wins"] or {}).items())
            rows.append([f"{r['budget']} B", f"**best of {' / '.join(b['codecs'])}**" + (f" ({wins})" if wins else ""),
                         f"{b['fits']}/{r['n']}", fmt(b["bytes"], 1), fmt(b["psnr"]), fmt(b["ms_ssim"], 4),
                         fmt(b["ours_psnr"]), fmt(b["ours_ms_ssim"], 4),
                         "—" if b["delta_psnr"] is None else f"**{b['delta_psnr']:+.2f}**",
                         "—" if b["delta_ms_ssim"] is None else f"{b['delta_ms_ssim']:+.4f}"])
    if not rows:
        return ""
    return md_table(["budget", "codec", "fits", "its bytes", "its PSNR", "its MS-SSIM", "ours, same images: PSNR",
                     "MS-SSIM", "Δ PSNR dB", "Δ MS-SSIM"], rows)


def bd_markdown(result: dict) -> str:
    """Table: BD-rate and BD-quality of our budget curve against WebP's budget curve and each sweep."""
    rows = []
    for name, e in result["bd"].items():
        anchor = e["anchor_bytes_range"]
        label = name + (f" ({', '.join(map(str, e['budgets']))} B)" if e.get("budgets") else "")
        rows.append([label, fmt(e["bd_rate_psnr_percent"], 1), fmt(e["bd_psnr"], 2),
                     fmt(e["bd_rate_ms_ssim_percent"], 1), fmt(e["bd_ms_ssim"], 4),
                     "—" if not e["ours_bytes_range"] else
                     f"{e['ours_bytes_range'][0]:.0f}–{e['ours_bytes_range'][1]:.0f}",
                     "—" if not anchor else f"{anchor[0]:.0f}–{anchor[1]:.0f}"])
    return md_table(["vs", "BD-rate (PSNR) %", "BD-PSNR dB", "BD-rate (MS-SSIM) %", "BD-MS-SSIM",
                     "our bytes", "their bytes"], rows)


def markdown(result: dict) -> str:
    m, d, s = result["model"], result["data"], result["settings"]
    lines = [f"# Rate–distortion: {OURS} `{m['name']}` vs {', '.join(s['classic']) or 'WebP'}", "",
             f"Model `{m['name']}` (id {m['model_id'][:12]}…, latent {'×'.join(map(str, m['latent_shape']))}, "
             f"{m['levels']} rate levels, {m['image_size']}×{m['image_size']}), data `{d['path']}` split "
             f"`{d['split']}`, {d['n_images']} images, {s['steps']} refinement steps. Ours is the model alone "
             f"(`compress(target_bytes=B, fallback=False)`: never a WebP payload). Bytes are whole files per "
             f"image; metrics are means of per-image values (PSNR capped at {s['psnr_cap']:.0f} dB). "
             f"Created {result['created']}.", "",
             "## Per-image byte budgets", "",
             "Ours: every image's file ≤ B (the finest level that fits). WebP: per image the highest quality "
             "whose whole file fits B; images where even quality 0 does not fit are left out of WebP's means "
             "(\"WebP fits\"), and ours on the same images is given next to it. Δ = ours − WebP on those images. "
             "\"Fallback would switch\": images for which the encoder's default WebP fallback would have written "
             "a WebP payload instead (a better PSNR in the budget).", "",
             budget_rows_markdown(result), ""]
    per_codec = classic_budget_markdown(result)
    if per_codec:
        lines += ["### Every classic codec at the same budgets", "",
                  "Each codec per image at its highest quality whose whole file fits B, means over the images it "
                  "fits. \"Best of\": per image the better of AVIF and JPEG XL (highest PSNR of the files that fit; "
                  "the MS-SSIM column takes the highest MS-SSIM), with how often each was the better one.", "",
                  per_codec, ""]
    over = [f"{r['budget']} B: {r['ours_over_budget']}" for r in result["budgets"] if r["ours_over_budget"]]
    if over:
        lines += ["Budgets our coarsest level cannot meet for some images (files over the budget): "
                  + ", ".join(over) + ".", ""]
    lines += ["## Bjøntegaard deltas (our budget curve vs WebP's budget curve and each quality sweep)", "",
              "BD-rate: average change in bytes for equal quality (negative = we need fewer bytes); "
              "BD-PSNR / BD-MS-SSIM: average quality change at equal bytes. Cubic fits in log-rate over the "
              "overlap; — where the curves do not overlap. WebP's budget curve uses only the budgets (listed) "
              "at which WebP fits every image.", "",
              bd_markdown(result), "", "## All points", ""]
    for name, points in result["curves"].items():
        if not points:
            continue
        rows = [[p["setting"], p["n"], f"{p['bytes']:.1f}", f"{p['bytes_min']}–{p['bytes_max']}", f"{p['bpp']:.3f}",
                 f"{p['psnr']:.2f}", f"{p['psnr_of_mean_mse']:.2f}", f"{p['ssim']:.4f}", f"{p['ms_ssim']:.4f}",
                 f"{p['l1']:.0f}", f"{p['mse']:.1f}"] for p in points]
        lines += [f"### {name}", "", md_table(["setting", "images", "bytes", "range", "bpp", "PSNR", "PSNR(MSE)",
                                               "SSIM", "MS-SSIM", "L1", "MSE"], rows), ""]
    t = result["timing_s"]
    lines += ["Wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()) + ".", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """Two panels, PSNR and MS-SSIM against mean bytes per image (log axis): our budget curve, WebP's
    budget curve (hollow markers where it fits only some images), our per-level curve, the sweeps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"JPEG": ("tab:blue", "s"), "WebP": ("tab:green", "^"), "AVIF": ("tab:purple", "D"),
              "JPEG XL": ("tab:brown", "v")}
    curves = result["curves"]
    rows = result["budgets"]
    for ax, key, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ms_ssim", "MS-SSIM")):
        for name, points in curves.items():
            if not points or name in (OURS, f"{WEBP_NAME} budgets", f"{OURS} levels"):
                continue
            color, marker = styles.get(name, ("gray", "."))
            ax.plot([p["bytes"] for p in points], [p[key] for p in points], marker + "-", color=color, lw=0.9,
                    ms=2.5, alpha=0.6, label=f"{name} (quality sweep)")
        if curves.get(f"{OURS} levels"):
            pts = curves[f"{OURS} levels"]
            ax.plot([p["bytes"] for p in pts], [p[key] for p in pts], "o:", color="tab:orange", lw=1.2, ms=3,
                    label=f"{OURS}, fixed levels")
        ours = curves[OURS]
        ax.plot([p["bytes"] for p in ours], [p[key] for p in ours], "o-", color="tab:red", lw=2.2, ms=5,
                label=f"{OURS} ({result['model']['name']}), ≤ B per image", zorder=5)
        for p in ours:
            ax.annotate(f"{p['param']}", (p["bytes"], p[key]), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color="tab:red")
        full = [r["webp"] for r in rows if r["webp"] is not None and r["webp_fits"] == r["n"]]
        part = [r for r in rows if r["webp"] is not None and r["webp_fits"] < r["n"]]
        web = [r["webp"] for r in rows if r["webp"] is not None]
        if web:
            ax.plot([p["bytes"] for p in web], [p[key] for p in web], "--", color="darkgreen", lw=1.8, zorder=4,
                    label="WebP, ≤ B per image (hollow: fits some images)")
            ax.plot([p["bytes"] for p in full], [p[key] for p in full], "^", color="darkgreen", ms=6, zorder=4)
            ax.plot([r["webp"]["bytes"] for r in part], [r["webp"][key] for r in part], "^", mfc="none",
                    color="darkgreen", ms=6, zorder=4)
            for r in part:
                ax.annotate(f"{r['webp_fits']}/{r['n']}", (r["webp"]["bytes"], r["webp"][key]),
                            textcoords="offset points", xytext=(4, 4), fontsize=6, color="darkgreen")
        for name in (rows[0].get("classic", {}) if rows else {}):
            if name == WEBP_NAME:
                continue
            pts = [r["classic"][name]["point"] for r in rows if r["classic"][name]["point"] is not None]
            color, marker = styles.get(name, ("gray", "."))
            ax.plot([p["bytes"] for p in pts], [p[key] for p in pts], marker + "--", color=color, lw=1.8, ms=6,
                    zorder=4, label=f"{name}, ≤ B per image")
        for b in result["settings"]["budgets"]:
            ax.axvline(b, color="gray", ls=":", lw=0.6)
        top = max((p[key] for pts in curves.values() for p in pts), default=0)
        if key == "psnr" and top > PLOT_PSNR_TOP:
            ax.set_ylim(top=PLOT_PSNR_TOP)
        ax.set_xscale("log")
        budgets = result["settings"]["budgets"]
        ax.set_xlim(min(20, min(budgets) * 0.5), max(600, max(budgets) * 1.5))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(result["settings"]["budgets"], [str(b) for b in result["settings"]["budgets"]], fontsize=7)
        ax.set_xlabel("bytes per image (whole file)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    d = result["data"]
    fig.suptitle(f"{result['model']['name']}: {d['n_images']} {d['split']} images, "
                 f"{result['settings']['steps']} steps (labels: budget B)", fontsize=10)
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
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"refinement steps (default {DEFAULT_STEPS})")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)),
                   help="per-image byte budgets (default " + ",".join(map(str, BUDGETS)) + ")")
    p.add_argument("--levels", help=f"fixed levels of the per-level curve, e.g. 0,8,16 (default {LEVEL_POINTS} "
                                    "evenly spaced from the coarsest to the finest; 'none' to skip)")
    p.add_argument("--batch", type=int, default=64, help="images encoded together (default 64)")
    p.add_argument("--codecs", help="classic codecs to sweep, e.g. JPEG,WebP (default all available; the "
                                    "WebP budget comparison always runs)")
    p.add_argument("--per-image-limit", type=int, default=PER_IMAGE_LIMIT,
                   help=f"store per-image values when there are at most this many images (default {PER_IMAGE_LIMIT})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's log lines and Python warnings off the console (``runtime.quiet``)."""
    from runtime.quiet import quiet_tensorflow as quiet

    quiet()


def run(argv=None) -> int:
    args = parse_args(argv)
    quiet_tensorflow()
    budgets = parse_int_list(args.budgets, "--budgets")
    levels = None
    if args.levels is not None:
        levels = [] if args.levels.strip().lower() == "none" else parse_int_list(args.levels, "--levels")
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()] if args.codecs else None
    result = benchmark(args.model, args.data, args.split, args.limit, args.steps, budgets, levels, args.batch,
                       codecs, progress=not args.no_progress, per_image_limit=args.per_image_limit)
    paths = write_reports(result, Path(args.out), f"rd_{result['model']['name']}")
    for r in result["budgets"]:
        o, w = r["ours"], r["webp"]
        theirs = (f"WebP fits {r['webp_fits']}/{r['n']}: {w['bytes']:.1f} B {w['psnr']:.2f} dB, "
                  f"Δ {r['delta_psnr']:+.2f} dB on those" if w else f"WebP fits 0/{r['n']}")
        b = r.get("best_avif_jxl")
        if b and b["psnr"] is not None:
            theirs += (f"; best of {'/'.join(b['codecs'])} fits {b['fits']}/{r['n']}: {b['psnr']:.2f} dB, "
                       f"Δ {b['delta_psnr']:+.2f} dB, Δ MS-SSIM {b['delta_ms_ssim']:+.4f}")
        print(f"{r['budget']:>4} B: ours {o['bytes']:.1f} B {o['psnr']:.2f} dB MS-SSIM {o['ms_ssim']:.4f}; {theirs}")
    for name, e in result["bd"].items():
        print(f"vs {name}: BD-rate (PSNR) {fmt(e['bd_rate_psnr_percent'], 1)} %, "
              f"(MS-SSIM) {fmt(e['bd_rate_ms_ssim_percent'], 1)} %, BD-PSNR {fmt(e['bd_psnr'])} dB")
    print("wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["timing_s"].items()))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv=None) -> int:
    return cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
