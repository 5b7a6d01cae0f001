"""Training step time on this machine: the one trainer (``training.rd.Trainer``) on Keras's
TensorFlow backend (``tf.function``), on its PyTorch backend (in a process without TensorFlow, as
on a GPU machine that has none), and, with ``--xla``, the TensorFlow step compiled by XLA
(``jit_compile``); side by side in one run, at the same batch, threads and starting weights (a
shipped bundle's, as its fine-tuning cycles start).

    python -m benchmarks.train_speed --init-from models/NAME --data PATH.npz [--batch 32]
        [--steps 300] [--threads 2] [--xla] [--out DIR] [--stem NAME]

Each runs ``--steps`` steps of ``training.rd.train_rd``; the first steps (tracing, warm-up) are
not timed. All include their data pipeline (batch draw, crop, flip, level and noise) and the
discriminator's step. The hand-written PyTorch copy this trainer replaced measured 0.248 s/step
at batch 32, 2 threads, from models/airplane, against 0.233 for the Keras/TF step of then
(benchmarks/results/train_speed_copy.md). PyTorch comes with the ``gpu`` extra (``make install``
installs it); without it its row says so. Writes benchmarks/results/train_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from benchmarks.rd import RESULTS_DIR, cli, fmt, md_table, now, quiet_tensorflow, save_results
from runtime.errors import CodecError

STEPS = 300
COPY_SECONDS_PER_STEP = 0.248  # the PyTorch copy (training/gpu.py, removed): train_speed_copy.md
# one train_rd run on Keras's torch backend, TensorFlow blocked; prints its summary as JSON
TORCH_SCRIPT = """
import dataclasses, json, sys
sys.modules["tensorflow"] = None
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from training.config import TrainConfig
from training.rd import train_rd
s = train_rd(TrainConfig(**args["cfg"]), quiet=True)
print(json.dumps({"seconds_per_step": s["seconds_per_step"], "torch": torch.__version__,
                  "threads": torch.get_num_threads(), "backend": s["backend"]}))
"""


def bundle_config(init_from: str, data: str, out: str, batch: int, steps: int):
    """The TrainConfig a fine-tuning cycle of ``init_from`` runs: its manifest's training facts."""
    from runtime.bundle import load_bundle
    from training.config import TrainConfig

    t = load_bundle(init_from).manifest.get("training", {})
    try:
        cfg = TrainConfig(data=data, out=out, mode="rd", batch=batch, steps=steps, eval_every=10**9,
                          ckpt_every=10**9, eval_images=16, init_from=init_from, rd_arch=t["arch"],
                          rd_g_widths=list(t["g_widths"]), rd_e_widths=list(t["e_widths"]),
                          rd_d_widths=list(t["d_widths"]), rd_g_blocks=int(t.get("g_blocks", 0)),
                          rd_e_blocks=int(t.get("e_blocks", 0)), rate_contexts=int(t.get("rate_contexts", 1)),
                          w_adv_rd=float(t["w_adv"]), lam_min=float(t["lambda_range"][0]),
                          lam_max=float(t["lambda_range"][1]), levels=int(t["trained_levels"]),
                          lr=float(t["lr"]))
    except KeyError as exc:
        raise CodecError(f"{init_from}: its manifest lacks the training fact {exc}") from None
    return cfg.resolved()


def keras_step(cfg, xla: bool = False) -> dict:
    """Seconds per step of ``training.rd.train_rd`` (its loop's own timing, tracing steps excluded)."""
    import tensorflow as tf

    from training.rd import train_rd

    original = tf.function
    if xla:  # compile train_rd's step (and only it) with XLA
        def function(f=None, **kw):
            if f is None:
                return lambda g: function(g, **kw)
            return original(f, **({**kw, "jit_compile": True} if f.__name__ == "train_step" else kw))

        tf.function = function
    try:
        t0 = time.perf_counter()
        summary = train_rd(cfg, quiet=True)
    finally:
        tf.function = original
    return {"seconds_per_step": summary["seconds_per_step"], "steps": cfg.steps, "wall_s": time.perf_counter() - t0}


def torch_step(cfg, threads: int) -> dict:
    """Seconds per step of ``training.rd.train_rd`` on Keras's torch backend (a subprocess)."""
    import dataclasses
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("torch") is None:
        return {"error": "PyTorch is not installed (pip install '.[gpu]')"}
    env = {**os.environ, "KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", TORCH_SCRIPT, json.dumps({"cfg": dataclasses.asdict(cfg),
                                                                           "threads": threads})],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**row, "steps": cfg.steps, "wall_s": time.perf_counter() - t0}


def train_speed(init_from: str, data: str, batch: int = 32, steps: int = STEPS, threads: int = 2,
                xla: bool = False) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        work = Path(tmp)
        cfg = bundle_config(init_from, data, str(work / "keras"), batch, steps)
        rows["keras_tf"] = keras_step(cfg)
        if xla:
            rows["keras_tf_xla"] = keras_step(bundle_config(init_from, data, str(work / "xla"), batch, steps), xla=True)
        rows["keras_torch"] = torch_step(bundle_config(init_from, data, str(work / "torch"), batch, steps), threads)
    tf_s = rows["keras_tf"].get("seconds_per_step")
    for row in rows.values():
        s = row.get("seconds_per_step")
        row["ratio_to_tf"] = round(s / tf_s, 3) if s and tf_s else None
        row["ratio_to_copy"] = round(s / COPY_SECONDS_PER_STEP, 3) if s else None
    import keras

    return {"date": now(), "init_from": init_from, "data": str(data), "batch": batch, "threads": threads,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "tensorflow": tf.__version__,
            "keras": keras.__version__, "rows": rows}


LABELS = {"keras_tf": "Keras, TensorFlow backend (tf.function)",
          "keras_tf_xla": "Keras, TensorFlow backend, XLA (jit_compile)",
          "keras_torch": "Keras, PyTorch backend (no TensorFlow in the process)"}


def markdown(r: dict) -> str:
    rows = [[LABELS[k], fmt(v.get("seconds_per_step"), 3), v.get("steps", "—"),
             fmt(v.get("ratio_to_tf"), 2) if v.get("ratio_to_tf") else "—",
             fmt(v.get("ratio_to_copy"), 2) if v.get("ratio_to_copy") else "—", v.get("error", "")]
            for k, v in r["rows"].items()]
    torch_v = r["rows"].get("keras_torch", {}).get("torch")
    return "\n".join([
        f"### Training step time — the one trainer, from `{r['init_from']}` (batch {r['batch']}, "
        f"{r['threads']} threads)", "",
        f"{r['machine']}; TensorFlow {r['tensorflow']}, Keras {r['keras']}" + (f", PyTorch {torch_v}" if torch_v else "")
        + f". {r['date']}. Each includes its data pipeline and the discriminator's step; tracing and "
        f"warm-up steps are not timed. \"× the copy\": against the removed PyTorch copy's "
        f"{COPY_SECONDS_PER_STEP} s/step (train_speed_copy.md).", "",
        md_table(["trainer", "s / step", "steps", "× TF", "× the copy", "note"], rows), ""])


def run(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--init-from", required=True, help="bundle whose fine-tuning cycle is timed (models/NAME)")
    p.add_argument("--data", required=True, help="its data set (.npz or image folder)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--xla", action="store_true", help="also time the Keras step compiled by XLA")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--stem", default="train_speed")
    a = p.parse_args(argv)
    if a.steps < 10 or a.batch < 1 or a.threads < 1:
        raise CodecError("--steps must be >= 10, --batch and --threads >= 1")
    quiet_tensorflow()
    result = train_speed(a.init_from, a.data, a.batch, a.steps, a.threads, a.xla)
    save_results(a.out, a.stem, result, markdown(result))
    print(json.dumps({k: v.get("seconds_per_step") for k, v in result["rows"].items()}))
    return 0


def main(argv=None) -> int:
    return cli(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
