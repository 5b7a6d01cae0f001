"""The browser decoder (demo/web/) against the Python decoder: decode time per image in Chromium,
what the page downloads, and how far its pixels are from runtime.codec's.

    python -m benchmarks.web --model models/NAME [--data PATH.npz --split val] [--limit 32] [--out DIR]

Builds the page for one bundle in a temporary directory (export.web.build_site; needs
``make web-runtime``), encodes ``--limit`` images at the bundle's default level (no refinement:
the decoder's work does not depend on it), serves the page on localhost and decodes every file in
Debian's headless Chromium through the page's file input. Writes ``web_<name>.json`` / ``.md``.

The helpers (:func:`serve`, :func:`launch`, :class:`DecoderPage`) are shared with tests/test_web.py.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RESULTS = Path(__file__).resolve().parent / "results"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory):
    """Serve ``directory`` on a free localhost port (a thread); yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def launch(playwright):
    """Debian's Chromium, headless, with no background network traffic."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class DecoderPage:
    """The decoder page in a browser tab; records every request that leaves the page's server."""

    def __init__(self, browser, url: str, query: str = ""):
        self.page = browser.new_page()
        self.page.set_default_timeout(60_000)
        self.external = []
        self.page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("data:")
                     else self.external.append(r.url))
        self.page.goto(url + query)
        self.page.wait_for_function("document.getElementById('models').textContent.startsWith('Models')")

    def decode(self, path: Path) -> tuple[str, np.ndarray | str]:
        """Choose the file, wait for data-status: ("done", RGB uint8 pixels) or ("error", the message line)."""
        self.page.set_input_files("#latent", str(path))
        self.page.wait_for_function(
            "([name]) => { const c = document.getElementById('decoded');"
            " return c.dataset.file === name && ['done', 'error'].includes(c.dataset.status); }", arg=[path.name])
        status = self.page.get_attribute("#decoded", "data-status")
        if status == "error":
            return status, self.page.inner_text("#message")
        width, height, rgba = self.page.evaluate(
            "() => { const c = document.getElementById('decoded');"
            " return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }")
        return status, np.array(rgba, np.uint8).reshape(height, width, 4)[..., :3]

    def timings(self) -> dict:
        """The last decode's milliseconds as the page measured them (performance.now())."""
        data = self.page.evaluate("() => ({...document.getElementById('decoded').dataset})")
        return {key[:-2]: float(value) for key, value in data.items() if key.endswith("Ms")}


def download_sizes(site: Path, model: str) -> dict:
    """Bytes the page downloads for one model, raw and gzip -9 (what a static host may serve)."""
    from export.web import (
        ENTROPY_BIN,
        GENERATOR_ONNX,
        INDEX,
        MANIFEST,
        ORT_DIR,
        ORT_FILES,
        PAGE_FILES,
    )

    files = [*PAGE_FILES, *(f"{ORT_DIR}/{f}" for f in ORT_FILES), f"models/{INDEX}",
             *(f"models/{model}/{f}" for f in (GENERATOR_ONNX, ENTROPY_BIN, MANIFEST))]
    out = {}
    for name in files:
        data = (site / name).read_bytes()
        out[name] = {"bytes": len(data), "gzip": len(gzip.compress(data, 9))}
    out["total"] = {k: sum(v[k] for v in out.values()) for k in ("bytes", "gzip")}
    return out


def measure(bundle_dir, images: np.ndarray) -> dict:
    """Encode ``images`` with the bundle, decode each in Chromium and with Python; the figures."""
    from playwright.sync_api import sync_playwright

    from export.web import build_site
    from runtime import metrics
    from runtime.codec import Codec

    codec = Codec(str(bundle_dir))
    name = Path(bundle_dir).name
    files = [r.data for r in codec.compress(list(images), steps=0)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        site = build_site(tmp / "site", [bundle_dir])
        paths = []
        for i, data in enumerate(files):
            paths.append(tmp / f"latent{i:04d}.bin")
            paths[-1].write_bytes(data)
        python_ms, expected = [], []
        for data in files:
            t0 = time.perf_counter()
            expected.append(codec.decompress(data))
            python_ms.append(1000 * (time.perf_counter() - t0))
        rows = []
        with serve(site) as url, sync_playwright() as p:
            browser = launch(p)
            try:
                page = DecoderPage(browser, url)
                for path, want in zip(paths, expected):
                    status, pixels = page.decode(path)
                    if status != "done":
                        raise RuntimeError(f"{path.name}: the page failed: {pixels}")
                    diff = np.abs(pixels.astype(int) - want.astype(int))
                    rows.append({**page.timings(), "max_abs_diff": int(diff.max()),
                                 "psnr": float(metrics.psnr(pixels, want))})
                external = page.external
            finally:
                browser.close()
        sizes = download_sizes(site, name)
    finite = [r["psnr"] for r in rows if np.isfinite(r["psnr"])]
    return {
        "model": name, "model_id": codec.bundle.model_id, "images": len(files),
        "image_size": codec.bundle.image_size, "latent": list(codec.bundle.latent_shape),
        "mean_file_bytes": float(np.mean([len(d) for d in files])),
        "first_load_ms": rows[0].get("load"),
        "decode_ms": {key: {"median": float(np.median([r[key] for r in rows])),
                            "mean": float(np.mean([r[key] for r in rows]))}
                      for key in ("total", "entropy", "generator")},
        "python_decode_ms": {"median": float(np.median(python_ms)), "mean": float(np.mean(python_ms))},
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
        "identical_images": sum(r["max_abs_diff"] == 0 for r in rows),
        "min_psnr": min(finite) if finite else float("inf"),
        "download": sizes, "external_requests": external,
    }


def report(result: dict) -> str:
    from benchmarks.rd import md_table, now

    d, size = result["decode_ms"], result["download"]
    lines = [f"# Browser decoder: `{result['model']}`", "",
             f"{result['images']} images ({result['image_size']}×{result['image_size']}, latent "
             f"{'×'.join(map(str, result['latent']))}, mean {result['mean_file_bytes']:.1f} B per file), "
             f"decoded in headless Chromium (onnxruntime-web WASM, 1 thread) and by runtime.codec "
             f"(onnxruntime, 1 thread). {now()}.", "",
             md_table(["", "median ms", "mean ms"], [
                 ["page: whole decode (file → canvas pixels)", f"{d['total']['median']:.2f}", f"{d['total']['mean']:.2f}"],
                 ["page: entropy decoding + CRC", f"{d['entropy']['median']:.3f}", f"{d['entropy']['mean']:.3f}"],
                 ["page: generator.onnx", f"{d['generator']['median']:.2f}", f"{d['generator']['mean']:.2f}"],
                 ["Python: Codec.decompress", f"{result['python_decode_ms']['median']:.2f}",
                  f"{result['python_decode_ms']['mean']:.2f}"],
             ]), "",
             f"First file: the model's download and load (+ one warm-up run) took {result['first_load_ms']:.0f} ms "
             "from localhost.", "",
             f"Pixels against Python: max abs difference {result['max_abs_diff']}, "
             f"{result['identical_images']}/{result['images']} images identical, lowest PSNR "
             f"{result['min_psnr']:.1f} dB. Requests outside localhost: {len(result['external_requests'])}.", "",
             md_table(["downloaded file", "bytes", "gzip -9"],
                      [[f"`{k}`", f"{v['bytes']:,}", f"{v['gzip']:,}"] for k, v in size.items()]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from runtime.errors import CodecError, run_cli

    parser = argparse.ArgumentParser(prog="python -m benchmarks.web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="bundle directory")
    parser.add_argument("--data", help="npz with images (default: synthetic images)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--out", default=str(RESULTS))
    a = parser.parse_args(argv)

    def run():
        from benchmarks.rd import save_results
        from runtime.bundle import load_bundle

        size = load_bundle(a.model).image_size
        if a.data:
            with np.load(a.data, allow_pickle=False) as f:
                if a.split not in f.files:
                    raise CodecError(f"{a.data}: no split {a.split!r} (has {', '.join(f.files)})")
                images = f[a.split][: a.limit]
        else:
            from tests.conftest import synthetic_images

            images = synthetic_images(a.limit, size, 0)
        result = measure(a.model, images)
        save_results(a.out, f"web_{result['model']}", result, report(result))

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
