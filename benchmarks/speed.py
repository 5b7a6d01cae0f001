"""python -m benchmarks.speed [--model NAME|DIR] [--threads N] [--quick] [--out DIR]

Speed of one model bundle on this machine's CPU (onnxruntime, CPU provider):

- decode latency at batch 1 (p50/p95) of a real file at the default level: the generator alone
  (``bundle.generate`` on one dequantized latent), the entropy decode alone (header, CRC, range
  decoding of the symbols: ``bitstream.unpack_latent``, also in µs per file) and the whole
  ``Codec.decompress(bytes)``;
- decode throughput at batch 256 (images/s);
- encode milliseconds per image by batch size (1, 16, 64) and refinement steps (0 and the default
  ``DEFAULT_STEPS``), at the default level, after one warm-up encode (whose time, mostly loading
  TensorFlow and the mirror, is reported apart);
- peak memory (``resource.getrusage`` maxrss): after batch-1 decoding (numpy, onnxruntime, Pillow,
  constriction: what a decoder needs), after the batch-256 throughput run, and at the end
  (TensorFlow and the encoding batches included);
- JPEG, WebP and AVIF (where Pillow has it) encode/decode times of the same images in the same run;
- the generator's FLOPs per image (2 × the multiply-accumulates of its Conv/ConvTranspose/MatMul/
  Gemm nodes, from the ONNX graph with shape inference at batch 1), against the machine's
  arithmetic limit measured as numpy float32 matmul GFLOP/s (1 thread and all threads).

Targets for encoding are images decoded from random latents (timing does not depend on content:
the number of steps is fixed). Writes ``speed.json`` and ``speed.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

from benchmarks.rd import RESULTS_DIR, cli, fmt, md_table, now, quiet_tensorflow, save_results
from runtime import bitstream
from runtime.codec import DEFAULT_STEPS
from runtime.errors import CodecError

FULL = {"repeats": 200, "throughput_batch": 256, "throughput_repeats": 5, "batch_sizes": (1, 16, 64),
        "steps": (0, DEFAULT_STEPS), "classic_repeats": 50, "matmul_n": 2048}
QUICK = {"repeats": 10, "throughput_batch": 16, "throughput_repeats": 2, "batch_sizes": (1, 4),
         "steps": (0, 2), "classic_repeats": 3, "matmul_n": 256}
CLASSIC_QUALITY = 75


def timings(fn, repeats: int, warmup: int = 3) -> np.ndarray:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def latency(seconds: np.ndarray) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "n": int(len(ms))}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


# --- FLOPs and the machine's limit -------------------------------------------------------------

def onnx_macs(path, input_shape=None) -> dict:
    """Multiply-accumulates per image of the Conv, ConvTranspose, MatMul and Gemm nodes of an ONNX
    model, with shapes from ONNX shape inference at batch 1 (``input_shape``: the whole input
    shape, for a model with dynamic spatial dimensions). Other ops (activations, reshapes,
    upsampling by Tile, bias adds) are not counted."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    model = onnx.load(str(path))
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        wanted = list(input_shape) if input_shape is not None else [1] + [None] * (len(dims) - 1)
        for d, value in zip(dims, wanted):
            if value is not None and not d.HasField("dim_value"):
                d.ClearField("dim_param")
                d.dim_value = int(value)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    if input_shape is not None and any(None in v for v in shapes.values()):
        shapes.update(_runtime_shapes(model, input_shape))  # dynamic spatial dims: ask onnxruntime

    def shape(name):
        s = shapes.get(name)
        if s is None or any(d is None for d in s):
            raise CodecError(f"{path}: cannot infer the shape of {name!r} to count FLOPs")
        return s

    layers, by_op, uncounted = [], {}, []
    for node in inferred.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            out, w = shape(node.output[0]), shape(node.input[1])
            macs = int(np.prod(out)) * int(np.prod(w[1:]))  # w: (Cout, Cin/groups, kh, kw)
        elif node.op_type == "ConvTranspose":
            x, w = shape(node.input[0]), shape(node.input[1])
            macs = int(np.prod(x)) * int(np.prod(w[1:]))  # w: (Cin, Cout/groups, kh, kw)
        elif node.op_type == "MatMul":
            try:
                a, out = shape(node.input[0]), shape(node.output[0])
            except CodecError:  # GDN's channel mix behind a dynamic reshape: small, listed
                uncounted.append(node.name)
                continue
            macs = int(np.prod(out)) * int(a[-1])
        elif node.op_type == "Gemm":
            a, out = shape(node.input[0]), shape(node.output[0])
            macs = int(np.prod(out)) * int(a[0] if attrs.get("transA", 0) else a[-1])
        else:
            continue
        layers.append({"name": node.name, "op": node.op_type, "output": shape(node.output[0]), "macs": macs})
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    total = sum(layer["macs"] for layer in layers)
    return {"macs": total, "flops": 2 * total, "by_op": by_op, "layers": layers, "uncounted": uncounted}


def _runtime_shapes(model, input_shape) -> dict:
    """The shape of every node output, from one onnxruntime run on zeros of ``input_shape``
    (shape inference cannot follow the Shape/Reshape chains of a graph with dynamic dimensions)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    names = [o for node in probe.graph.node for o in node.output if o and o not in known]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros(input_shape, np.float32)}
    outputs = session.run(None, feed)
    return {o.name: list(np.shape(v)) for o, v in zip(session.get_outputs(), outputs)}


_MATMUL_CODE = """
import sys, time, numpy as np
n, reps = int(sys.argv[1]), int(sys.argv[2])
a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
a @ b
best = 1e9
for _ in range(reps):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(2.0 * n ** 3 / best / 1e9)
"""


def matmul_gflops(n: int = 1024, threads: int | None = None, repeats: int = 10) -> float | None:
    """Best-of-``repeats`` numpy float32 (n×n)@(n×n) GFLOP/s in a fresh process (BLAS threads
    limited to ``threads`` when given). None if it cannot be measured."""
    env = dict(os.environ)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[var] = str(threads)
    try:
        out = subprocess.run([sys.executable, "-c", _MATMUL_CODE, str(n), str(repeats)], capture_output=True,
                             text=True, env=env, timeout=300, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


# --- the benchmark -----------------------------------------------------------------------------

def sample_images(codec, n: int, seed: int = 0) -> np.ndarray:
    """Images decoded from random symbols at the default level (timing does not depend on content)."""
    bundle = codec.bundle
    model = bundle.entropy
    level = codec.default_level
    scaled = np.random.default_rng(seed).standard_normal((n, *bundle.latent_shape)).astype(np.float32) * 2
    symbols = np.stack([model.clip(level, np.rint(s))[0] for s in scaled])
    return codec.synthesize(symbols, level)


def classic_speed(images: np.ndarray, repeats: int, quality: int = CLASSIC_QUALITY) -> dict:
    """Per classic codec: median encode and decode ms per image and mean bytes, at ``quality``."""
    from benchmarks.codecs import available_codecs

    out = {}
    for name, c in available_codecs().items():
        files = [c.encode(im, quality) for im in images]
        enc = np.concatenate([timings(lambda im=im: c.encode(im, quality), repeats, warmup=1) for im in images])
        dec = np.concatenate([timings(lambda d=d: c.decode(d), repeats, warmup=1) for d in files])
        out[name] = {"quality": quality, "bytes": float(np.mean([len(f) for f in files])),
                     "encode": latency(enc), "decode": latency(dec)}
    return out


def measure_speed(model=None, threads: int = 1, quick: bool = False, progress: bool = True, data=None) -> dict:
    """Decode and encode timings of one bundle. ``data``: an .npz or image folder whose validation
    images are timed (the entropy decoder's time grows with the file, so real images give real
    file sizes); without it, images decoded from random latents."""
    from runtime.codec import Codec

    cfg = QUICK if quick else FULL
    if threads < 1:
        raise CodecError("--threads must be at least 1")
    codec = Codec(model, threads=threads)
    bundle = codec.bundle
    level = codec.default_level
    note = lambda msg: print(msg, file=sys.stderr, flush=True) if progress else None  # noqa: E731
    count = max(max(cfg["batch_sizes"]), cfg["throughput_batch"])
    if data:
        from benchmarks.rd import load_split

        targets = load_split(data, bundle.image_size, "val", count)
    else:
        targets = sample_images(codec, count)

    # decode: a real file at the default level (its symbols from the encoder, no refinement)
    note("decode latency ...")
    data = codec.compress(list(targets[:1]), level=level, steps=0)[0].data
    _, _, symbols = bitstream.unpack_latent(data, bundle.model_id_bytes, bundle.entropy)
    y1 = bundle.entropy.dequantize(level, symbols)[None].astype(np.float32)
    gen = latency(timings(lambda: bundle.generate(y1), cfg["repeats"]))
    entropy = latency(timings(lambda: bitstream.unpack_latent(data, bundle.model_id_bytes, bundle.entropy),
                              cfg["repeats"]))
    dec = latency(timings(lambda: codec.decompress(data), cfg["repeats"]))
    decode1_peak = peak_rss_mb()
    yb = np.repeat(y1, cfg["throughput_batch"], axis=0)
    tb = timings(lambda: bundle.generate(yb), cfg["throughput_repeats"], warmup=1)
    throughput = {"batch": cfg["throughput_batch"], "images_per_s": float(cfg["throughput_batch"] / np.median(tb)),
                  "ms_per_image": float(np.median(tb) * 1000 / cfg["throughput_batch"])}
    decode_peak = peak_rss_mb()

    # classic codecs on the same images
    note("classic codecs ...")
    classic = classic_speed(targets[:8], cfg["classic_repeats"])

    # encode
    note("encode (first call loads TensorFlow and the mirror) ...")
    t0 = time.perf_counter()
    codec.compress(list(targets[:1]), level=level, steps=DEFAULT_STEPS)  # the timed runs below reuse its trace
    first_call = time.perf_counter() - t0
    encode = []
    for bs in cfg["batch_sizes"]:
        for steps in cfg["steps"]:
            t0 = time.perf_counter()
            codec.compress(list(targets[:bs]), level=level, steps=steps)
            dt = time.perf_counter() - t0
            encode.append({"batch": bs, "steps": steps, "seconds": dt, "ms_per_image": dt * 1000 / bs})
            note(f"  batch {bs:3d}, {steps:3d} steps: {dt * 1000 / bs:8.1f} ms/image")
    total_peak = peak_rss_mb()

    # FLOPs vs the machine's limit
    note("FLOPs and matmul GFLOP/s ...")
    try:
        flops = onnx_macs(bundle.path("generator.onnx"), (1, *bundle.latent_shape))
        flops["per_pixel"] = flops["flops"] / bundle.image_size ** 2
    except ImportError:
        flops = None
    gf1 = matmul_gflops(cfg["matmul_n"], threads=1)
    gfall = matmul_gflops(cfg["matmul_n"], threads=None)
    arithmetic = {"matmul_n": cfg["matmul_n"], "gflops_1_thread": gf1, "gflops_all_threads": gfall}
    if flops is not None:
        achieved = flops["flops"] * throughput["images_per_s"] / 1e9
        limit = gf1 if threads == 1 else gfall
        arithmetic.update({
            "generator_gflops_per_image": flops["flops"] / 1e9,
            "achieved_gflops_batch": achieved,
            "ideal_ms_per_image": None if not limit else flops["flops"] / (limit * 1e9) * 1000,
            "fraction_of_limit": None if not limit else achieved / limit,
        })

    jpeg = classic.get("JPEG")
    enc100 = [e for e in encode if e["steps"] == max(cfg["steps"]) and e["batch"] == max(cfg["batch_sizes"])]
    ratios = {}
    if jpeg:
        ratios["decode_vs_jpeg"] = dec["p50_ms"] / jpeg["decode"]["p50_ms"]
        if enc100:
            ratios["encode_vs_jpeg"] = enc100[0]["ms_per_image"] / jpeg["encode"]["p50_ms"]
    import onnxruntime

    return {
        "kind": "speed", "created": now(), "quick": quick,
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "model": {"name": bundle.name, "model_id": bundle.model_id, "latent_shape": list(bundle.latent_shape),
                  "image_size": bundle.image_size, "level": level, "levels": bundle.levels,
                  "file_bytes": len(data)},
        "default_steps": DEFAULT_STEPS,
        "threads": threads,
        "encode_threads": codec.encode_threads,
        "decode": {"generate_batch1": gen, "entropy_decode_batch1": entropy, "codec_decode_batch1": dec,
                   "throughput": throughput, "entropy_decode_us_per_file": entropy["p50_ms"] * 1000},
        "encode": encode, "encode_first_call_s": first_call,
        "memory": {"decode_batch1_peak_rss_mb": decode1_peak, "decode_peak_rss_mb": decode_peak,
                   "total_peak_rss_mb": total_peak},
        "classic": classic, "ratios": ratios, "flops": flops, "arithmetic": arithmetic,
    }


def markdown(r: dict) -> str:
    m, d, a = r["model"], r["decode"], r["arithmetic"]
    lines = [f"# Speed: `{m['name']}` on CPU ({r['threads']} onnxruntime thread(s))", "",
             f"{r['machine']['processor']}, {r['machine']['cpu_count']} cores, onnxruntime {r['machine']['onnxruntime']}; "
             f"load average at the end {', '.join(f'{x:.1f}' for x in r['machine']['load_average'] or [])}"
             f"{' (quick mode)' if r['quick'] else ''}. Created {r['created']}.", "",
             "## Decoding", "",
             md_table(["what", "p50 ms", "p95 ms"], [
                 ["generator, 1 latent", fmt(d["generate_batch1"]["p50_ms"], 3), fmt(d["generate_batch1"]["p95_ms"], 3)],
                 [f"entropy decode ({m['file_bytes']} B file: header, CRC, range decoder)",
                  fmt(d["entropy_decode_batch1"]["p50_ms"], 3), fmt(d["entropy_decode_batch1"]["p95_ms"], 3)],
                 [f"Codec.decompress({m['file_bytes']} B file, level {m['level']})",
                  fmt(d["codec_decode_batch1"]["p50_ms"], 3), fmt(d["codec_decode_batch1"]["p95_ms"], 3)]]), "",
             f"Throughput at batch {d['throughput']['batch']}: {d['throughput']['images_per_s']:.0f} images/s "
             f"({d['throughput']['ms_per_image']:.3f} ms/image).", "",
             "## Encoding (ms per image)", "",
             f"First call (imports TensorFlow, loads and verifies the mirror, 1 image, {DEFAULT_STEPS} steps): "
             f"{r['encode_first_call_s']:.1f} s. The encoder runs onnxruntime on "
             f"{r.get('encode_threads', r['threads'])} thread(s) and TensorFlow on its default threads; a "
             f"{DEFAULT_STEPS}-step encode refines, then polishes the rounding (runtime.codec.POLISH_ROUNDS).", ""]
    batches = sorted({e["batch"] for e in r["encode"]})
    steps = sorted({e["steps"] for e in r["encode"]})
    cell = {(e["batch"], e["steps"]): e["ms_per_image"] for e in r["encode"]}
    lines += [md_table(["batch"] + [f"{s} steps" for s in steps],
                       [[b] + [fmt(cell.get((b, s)), 1) for s in steps] for b in batches]), ""]
    lines += ["## Classic codecs (same images, same run)", "",
              md_table(["codec", "quality", "bytes", "encode p50 ms", "decode p50 ms"],
                       [[n, c["quality"], f"{c['bytes']:.0f}", fmt(c["encode"]["p50_ms"], 3), fmt(c["decode"]["p50_ms"], 3)]
                        for n, c in r["classic"].items()]), ""]
    if r["ratios"]:
        lines += ["Ratios: " + ", ".join(f"{k.replace('_', ' ')} ×{v:.0f}" for k, v in r["ratios"].items()), ""]
    lines += ["## Memory", "",
              f"Peak RSS after decoding at batch 1: {r['memory']['decode_batch1_peak_rss_mb']:.0f} MiB; "
              f"after the batch-{d['throughput']['batch']} throughput run: {r['memory']['decode_peak_rss_mb']:.0f} MiB; "
              f"after encoding (TensorFlow loaded): {r['memory']['total_peak_rss_mb']:.0f} MiB.", "",
              "## Arithmetic", ""]
    if r["flops"]:
        lines += [f"Generator: {r['flops']['flops'] / 1e6:.1f} MFLOP per image, "
                  f"{r['flops']['flops'] / r['model']['image_size'] ** 2 / 1e3:.1f} kFLOP per pixel "
                  f"({', '.join(f'{k} {v / 1e6:.1f} M MACs' for k, v in r['flops']['by_op'].items())})."]
    lines += [f"numpy float32 matmul ({a['matmul_n']}²): {fmt(a['gflops_1_thread'], 1)} GFLOP/s on 1 thread, "
              f"{fmt(a['gflops_all_threads'], 1)} GFLOP/s on all threads."]
    if "achieved_gflops_batch" in a:
        frac = a["fraction_of_limit"]
        lines += [f"The generator at batch {d['throughput']['batch']} runs at {a['achieved_gflops_batch']:.1f} GFLOP/s"
                  + (f", {frac * 100:.0f} % of the {r['threads']}-thread numpy matmul rate (at that rate: "
                     f"{a['ideal_ms_per_image']:.3f} ms/image)." if frac else ".")]
    return "\n".join(lines) + "\n"


def summary_markdown(r: dict) -> str:
    """A few lines for the README: decode latency/throughput, encode cost, memory, FLOPs, classic."""
    d, a = r["decode"], r["arithmetic"]
    enc = {(e["batch"], e["steps"]): e["ms_per_image"] for e in r["encode"]}
    big = max(e["batch"] for e in r["encode"])
    rows = [["decode, generator only (batch 1, p50 / p95)",
             f"{fmt(d['generate_batch1']['p50_ms'], 2)} / {fmt(d['generate_batch1']['p95_ms'], 2)} ms"],
            ["entropy decode (batch 1, p50)", f"{d['entropy_decode_us_per_file']:.0f} µs per file"],
            ["decode, whole `Codec.decompress` (batch 1, p50 / p95)",
             f"{fmt(d['codec_decode_batch1']['p50_ms'], 2)} / {fmt(d['codec_decode_batch1']['p95_ms'], 2)} ms"],
            [f"decode throughput (batch {d['throughput']['batch']})", f"{d['throughput']['images_per_s']:.0f} images/s"]]
    for steps in sorted({e["steps"] for e in r["encode"]}):
        default = " (default)" if steps == r.get("default_steps") else ""
        rows.append([f"encode, {steps} steps{default} (batch 1 / batch {big})",
                     f"{fmt(enc.get((1, steps)), 0)} / {fmt(enc.get((big, steps)), 1)} ms per image"])
    rows.append([f"peak RSS: decode batch 1 / batch {d['throughput']['batch']} / with encoding",
                 f"{r['memory']['decode_batch1_peak_rss_mb']:.0f} / {r['memory']['decode_peak_rss_mb']:.0f} / "
                 f"{r['memory']['total_peak_rss_mb']:.0f} MiB"])
    if r["flops"]:
        side = r["model"]["image_size"]
        rows.append([f"decoder (generator) per {side}×{side} image", f"{r['flops']['flops'] / 1e6:.2f} MFLOP "
                     f"({r['flops']['macs'] / 1e6:.2f} M MACs; {r['flops']['flops'] / side ** 2 / 1e3:.1f} kFLOP per pixel)"])
    if a.get("fraction_of_limit"):
        rows.append(["generator at batch throughput vs numpy float32 matmul",
                     f"{a['achieved_gflops_batch']:.1f} of {fmt(a['gflops_1_thread'] if r['threads'] == 1 else a['gflops_all_threads'], 1)}"
                     f" GFLOP/s ({a['fraction_of_limit'] * 100:.0f} %)"])
    for name, c in r["classic"].items():
        rows.append([f"{name} q{c['quality']} encode / decode (p50)",
                     f"{fmt(c['encode']['p50_ms'], 3)} / {fmt(c['decode']['p50_ms'], 3)} ms"])
    return md_table(["measure", "value"], rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[1])
    p.add_argument("--model", help="bundle directory, name or model id (default: airplane)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1, as the CLIs)")
    p.add_argument("--quick", action="store_true", help="few repeats, small batches (for tests)")
    p.add_argument("--out", default=str(RESULTS_DIR), help="output directory (default benchmarks/results)")
    p.add_argument("--data", help=".npz or image folder: time its validation images (default: images "
                                  "decoded from random latents, whose files are larger than real ones)")
    p.add_argument("--stem", default="speed", help="output file names STEM.json/.md (default speed: the README's)")
    p.add_argument("--no-progress", action="store_true", help="no progress messages")
    return p.parse_args(argv)


def run(argv=None) -> int:
    args = parse_args(argv)
    quiet_tensorflow()
    result = measure_speed(args.model, args.threads, args.quick, not args.no_progress, args.data)
    save_results(args.out, args.stem, result, markdown(result))
    return 0


def main(argv=None) -> int:
    return cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
