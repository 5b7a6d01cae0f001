"""Training step time on this machine: the Keras/TensorFlow trainer (``training.rd``) against the
hand-written PyTorch copy (``training.gpu``), side by side in one run, at the same batch, threads
and starting weights (a shipped bundle's, as its fine-tuning cycles start), and, with ``--xla``,
the Keras step compiled by XLA (``jit_compile``).

    python -m benchmarks.train_speed --init-from models/NAME --data PATH.npz [--batch 32]
        [--steps 300] [--threads 2] [--xla] [--out DIR] [--stem NAME]

Each trainer runs ``--steps`` steps (the PyTorch copy: a wall-clock budget sized from the Keras
time, its step time read off its last 200 steps); the first steps (tracing, warm-up) are not
timed. Both include their data pipeline (batch draw, flip) and the discriminator's step. PyTorch
comes with the ``gpu`` extra (``make install`` installs it); without it the copy's row says so.
Writes benchmarks/results/train_speed.{json,md}.
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
TORCH_LOG_EVERY = 200  # training.gpu logs its step time every 200 steps


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


def torch_step(cfg, work: Path, seconds: float) -> dict:
    """Seconds per step of ``training.gpu.train`` (PyTorch, CPU) over a ``seconds`` budget."""
    try:
        import torch
    except ImportError:
        return {"error": "PyTorch is not installed (pip install '.[gpu]')"}
    from training import gpu

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()))
    pack = work / "pack.npz"
    gpu.pack(cfg, pack)
    t0 = time.perf_counter()
    summary = gpu.train(pack, seconds, work / "result.npz", eval_seconds=1e9, batch=cfg.batch, device="cpu",
                        reserve=0.0, warmup=1)
    return {"seconds_per_step": summary["seconds_per_step"], "steps": summary["steps"],
            "wall_s": time.perf_counter() - t0, "torch": torch.__version__, "threads": torch.get_num_threads()}


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
        # enough wall-clock time for the copy's step log (every 200 steps) to cover ~steps steps
        per = rows["keras_tf"]["seconds_per_step"] or 0.2
        rows["pytorch_copy"] = torch_step(cfg, work, 30.0 + max(steps, 2 * TORCH_LOG_EVERY) * per * 1.5)
    torch_s = rows["pytorch_copy"].get("seconds_per_step")
    for row in rows.values():
        s = row.get("seconds_per_step")
        row["ratio_to_copy"] = round(s / torch_s, 3) if s and torch_s else None
    import keras

    return {"date": now(), "init_from": init_from, "data": str(data), "batch": batch, "threads": threads,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "tensorflow": tf.__version__,
            "keras": keras.__version__, "rows": rows}


LABELS = {"keras_tf": "Keras / TensorFlow (training.rd, tf.function)",
          "keras_tf_xla": "Keras / TensorFlow, XLA (jit_compile)",
          "pytorch_copy": "PyTorch copy (training.gpu)"}


def markdown(r: dict) -> str:
    rows = [[LABELS[k], fmt(v.get("seconds_per_step"), 3), v.get("steps", "—"),
             fmt(v.get("ratio_to_copy"), 2) if v.get("ratio_to_copy") else "—", v.get("error", "")]
            for k, v in r["rows"].items()]
    return "\n".join([
        f"### Training step time — from `{r['init_from']}` (batch {r['batch']}, {r['threads']} threads)", "",
        f"{r['machine']}; TensorFlow {r['tensorflow']}, Keras {r['keras']}"
        + (f", PyTorch {r['rows']['pytorch_copy']['torch']}" if "torch" in r["rows"]["pytorch_copy"] else "")
        + f". {r['date']}. Each includes its data pipeline and the discriminator's step; tracing and "
        "warm-up steps are not timed.", "",
        md_table(["trainer", "s / step", "steps", "× the copy", "note"], rows), ""])


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
