"""The run machinery shared by every training mode: a run directory (config, checkpoints, CSV
logs, the best checkpoint's record), the tf.data batches, the step loop with its progress bar,
evaluation and checkpoint cadence, sample grids and curves (gan/recon modes: TensorFlow), and the
backend-neutral checkpoint of rd runs (:func:`save_state`). training.train and training.rd use
it; it imports only training.config and training.data.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from runtime.errors import CodecError
from training.config import CONFIG_NAME, TrainConfig, load_config, save_config


def _tf():
    import tensorflow as tf

    return tf


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _truncate_csv(path: Path, last_step: int) -> None:
    """On resume, drop log rows written after the checkpoint we resume from."""
    rows = _read_csv(path)
    if not rows:
        return
    keep = [r for r in rows if r["step"] <= last_step]
    path.unlink()
    for r in keep:
        _append_csv(path, {k: (int(v) if k == "step" else v) for k, v in r.items()})


def open_run(cfg: TrainConfig, resume: bool):
    """Check the run directory (new, or one to resume whose saved config then wins, with the new
    step count), load the data and save the config: (cfg, run dir, train uint8, val uint8)."""
    from training.data import load_dataset

    run = Path(cfg.out)
    if (run / CONFIG_NAME).exists() and not resume:
        raise CodecError(f"{run} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not (run / CONFIG_NAME).exists():
        raise CodecError(f"{run}: nothing to resume (no {CONFIG_NAME})")
    if resume:
        saved = load_config(run).resolved()
        saved.steps = cfg.steps  # a resumed run may be extended
        cfg = saved
    train_u8, val_u8 = load_dataset(cfg.data, cfg.image_size, cfg.seed, crop=cfg.crop)
    if len(train_u8) < cfg.batch:
        raise CodecError(f"batch {cfg.batch} is larger than the training set ({len(train_u8)} images)")
    save_config(cfg, run)
    return cfg, run, train_u8, val_u8


def restore(run: Path, ckpt, resume: bool):
    """Checkpoint manager of ``run``; on resume, restore the latest checkpoint and drop the log rows
    written after it. Returns (manager, first step, whether a checkpoint was restored)."""
    tf = _tf()
    manager = tf.train.CheckpointManager(ckpt, str(run / "ckpt"), max_to_keep=2)
    restored = bool(resume and manager.latest_checkpoint)
    if restored:
        ckpt.restore(manager.latest_checkpoint).expect_partial()
    start = int(ckpt.step.numpy())
    for name in ("log.csv", "val.csv"):
        _truncate_csv(run / name, start)
    return manager, start, restored


def batches(train_u8: np.ndarray, cfg: TrainConfig, start: int):
    """The training images in [-1, 1], shuffled (reseeded per resume), flipped, batched, endless;
    with ``cfg.crop``, a random image_size×image_size crop of each image each time it is drawn."""
    tf = _tf()
    ds = tf.data.Dataset.from_tensor_slices(train_u8)
    ds = ds.shuffle(len(train_u8), seed=cfg.seed + start, reshuffle_each_iteration=True).repeat()
    if cfg.crop:
        s = cfg.image_size
        ds = ds.map(lambda im: tf.image.random_crop(im, (s, s, 3), seed=cfg.seed + start), num_parallel_calls=1)
    ds = ds.map(lambda im: tf.cast(im, tf.float32) / 127.5 - 1.0, num_parallel_calls=1)
    if cfg.flip:
        ds = ds.map(tf.image.random_flip_left_right, num_parallel_calls=1)
    return ds.batch(cfg.batch, drop_remainder=True).prefetch(2)


def save_best(run: Path, row: dict, write) -> None:
    """Replace ``<run>/best`` atomically: ``write(tmp_dir)`` saves the weights, then best.json."""
    best_path, tmp = run / "best", run / "best.tmp"
    tmp.mkdir(exist_ok=True)
    write(tmp)
    (tmp / "best.json").write_text(json.dumps(row, indent=2))
    if best_path.exists():
        for f in best_path.iterdir():
            f.unlink()
        best_path.rmdir()
    tmp.rename(best_path)


def load_best(run: Path) -> dict | None:
    path = run / "best" / "best.json"
    return json.loads(path.read_text()) if path.exists() else None


def loop(cfg: TrainConfig, run: Path, start: int, train_step, data_iter, manager, evaluate,
         quiet: bool = False) -> dict:
    """The training loop both modes share: steps with a progress bar, divergence check, the loss
    log every 50 steps, ``evaluate(step)`` every ``eval_every``, checkpoints every ``ckpt_every``.
    Returns the summary fields (last losses, seconds per step after tracing)."""
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=start, desc=f"train {run.name}", disable=quiet,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    t_steps, n_timed, losses = 0.0, 0, None
    step_var = manager.checkpoint.step
    for step in range(start + 1, cfg.steps + 1):
        t0 = time.perf_counter()
        losses = {k: float(v) for k, v in train_step(next(data_iter)).items()}
        if step > start + 2:  # skip tracing steps
            t_steps += time.perf_counter() - t0
            n_timed += 1
        if not all(np.isfinite(v) for v in losses.values()):
            raise CodecError(f"training diverged at step {step}: {losses}")
        step_var.assign(step)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()}, refresh=False)
        if step % 50 == 0 or step == cfg.steps:
            _append_csv(run / "log.csv", {"step": step, **losses, "s_per_step": t_steps / max(n_timed, 1)})
        if step % cfg.eval_every == 0 or step == cfg.steps:
            evaluate(step, bar)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            manager.save(checkpoint_number=step)
    bar.close()
    return {"last_losses": losses, "seconds_per_step": (t_steps / n_timed) if n_timed else None}


def write_summary(run: Path, cfg: TrainConfig, best, timing: dict) -> dict:
    summary = {"run": str(run), "steps": cfg.steps, "best": best, **timing}
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def save_grid(images_u8: np.ndarray, path: Path, cols: int = 8, scale: int = 2) -> None:
    """Save (N, H, W, 3) uint8 as a grid PNG, enlarged with nearest neighbour."""
    from PIL import Image

    n, h, w, _ = images_u8.shape
    rows = (n + cols - 1) // cols
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(images_u8):
        r, c = divmod(i, cols)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = im
    img = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def plot_curves(run: Path) -> None:
    """Loss curves and validation PSNR as ``<run>/curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = _read_csv(run / "log.csv")
    val = _read_csv(run / "val.csv")
    if not log:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in log]
    axes[0].plot(steps, [r["d_loss"] for r in log], label="discriminator")
    axes[0].plot(steps, [r["adv"] for r in log], label="generator (adversarial)")
    axes[0].set_title("GAN losses")
    axes[0].set_xlabel("step")
    axes[0].legend()
    if any(r["mse"] > 0 for r in log):
        axes[1].semilogy(steps, [r["mse"] for r in log], label="reconstruction MSE ([-1,1] scale)")
        axes[1].legend()
    axes[1].set_title("reconstruction loss")
    axes[1].set_xlabel("step")
    if val:
        vs = [r["step"] for r in val]
        axes[2].plot(vs, [r["val_psnr"] for r in val], "o-", label="after inversion")
        if "encoder_psnr" in val[0]:
            axes[2].plot(vs, [r["encoder_psnr"] for r in val], "s--", label="encoder alone")
        axes[2].legend()
    axes[2].set_title("validation PSNR (dB)")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(run / "curves.png", dpi=90)
    plt.close(fig)


STATE_NAME = "state.npz"


def save_state(run: Path, groups: dict, state: dict) -> None:
    """``<run>/ckpt/state.npz``, atomically: every variable of ``groups`` ({name: [Keras variable]}:
    the networks, rate model, optimizers and the random seed's state) as numpy, and the loop's
    ``state`` (step, stage, elapsed seconds) as JSON. Backend-neutral: a run checkpointed by one
    Keras backend or machine resumes on another."""
    from keras import ops

    d = Path(run) / "ckpt"
    d.mkdir(parents=True, exist_ok=True)
    arrays = {f"{name}/{i}": np.asarray(ops.convert_to_numpy(v)) for name, vs in groups.items()
              for i, v in enumerate(vs)}
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), np.uint8)
    tmp = d / (STATE_NAME + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(d / STATE_NAME)


def load_state(run: Path, groups: dict) -> dict | None:
    """Assign a checkpoint (:func:`save_state`) to ``groups``' variables; its loop state, or None
    when the run has none yet."""
    path = Path(run) / "ckpt" / STATE_NAME
    if not path.exists():
        if (path.parent / "checkpoint").exists():
            raise CodecError(f"{run} holds a TensorFlow checkpoint of the earlier trainer, which this one does not "
                             f"read: export its best/ (python -m export.onnx {run} --out DIR) and start a new run "
                             "with --init-from DIR")
        return None
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for name, vs in groups.items():
        count = sum(1 for k in arrays if k.startswith(f"{name}/"))
        if count != len(vs):
            raise CodecError(f"{path}: its {name} holds {count} variables, this run's {len(vs)} "
                             "(another design or version)")
        for i, v in enumerate(vs):
            a = arrays[f"{name}/{i}"]
            if tuple(a.shape) != tuple(v.shape):
                raise CodecError(f"{path}: {name} variable {i} has shape {a.shape}, this run's {tuple(v.shape)}")
            v.assign(a.astype(v.dtype) if hasattr(a, "astype") else a)
    return json.loads(arrays["state"].tobytes())
