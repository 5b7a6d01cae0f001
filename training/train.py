"""Train a GAN generator for one data set.

Two modes share the architecture and the loop:

- ``gan`` (the reference design): generator and discriminator, non-saturating GAN loss,
  z ~ N(0, I). The codec later finds latents by inversion.
- ``recon`` (reconstruction-aware, after Agustsson et al. 2018): an encoder E, the generator G and
  the discriminator D train jointly; G(E(x) + quantization noise) must match x (MSE + SSIM) and
  fool D (a small adversarial weight trades realism against fidelity). E's latent is standardised
  to N(0, 1) per dimension, so the codec's prior fits what the encoder produces, and the uniform
  noise of random width (the quantization steps of several bit depths) makes G robust to the
  quantization the codec applies.

Model selection for compression: every ``eval_every`` steps a fixed batch of validation images is
inverted (batched gradient descent on z, MSE) and the mean PSNR is logged; the checkpoint with the
best value is kept in ``<run>/best``. That, not the GAN loss, tells a good generator for
compression.

CLI::

    python -m training.train --data PATH.npz|DIR --out runs/NAME [--image-size 32]
        [--mode rd|gan|recon] [--steps N] [--batch N] [--resume] ... (every TrainConfig field is an
        option: training.config.add_config_arguments; ``--help`` lists them with their defaults)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from runtime.errors import CodecError, run_cli  # noqa: E402
from runtime.images import from_unit_range, to_unit_range  # noqa: E402
from training.config import (  # noqa: E402, F401
    RD_WIDTHS,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    load_config,
    save_config,
)
from training.run import (  # noqa: E402
    _append_csv,
    _tf,
    batches,
    load_best,
    loop,
    open_run,
    plot_curves,
    restore,
    save_best,
    save_grid,
    write_summary,
)


def build_models(cfg: TrainConfig):
    """(generator, discriminator, encoder or None) for a resolved config."""
    from training.models import build_discriminator, build_encoder, build_generator

    g = build_generator(cfg.latent_dim, cfg.image_size, cfg.g_widths, norm=cfg.norm)
    d = build_discriminator(cfg.image_size, cfg.d_widths)
    e = build_encoder(cfg.latent_dim, cfg.image_size, cfg.e_widths) if cfg.mode == "recon" else None
    return g, d, e


def choose_strategy():
    """MirroredStrategy across several GPUs, the default strategy otherwise."""
    tf = _tf()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _invert_mse(generator, target: np.ndarray, z0: np.ndarray, steps: int, lr: float = 0.05) -> np.ndarray:
    """Batched Adam on the global latent z (gan/recon modes' model selection): minimise the MSE of
    G(z) against ``target``; returns the final z (float32)."""
    tf = _tf()
    b1, b2, eps = 0.9, 0.999, 1e-8
    x = tf.constant(np.asarray(target, np.float32))

    @tf.function
    def run(z):
        m, v = tf.zeros_like(z), tf.zeros_like(z)
        for i in tf.range(steps):
            t = tf.cast(i + 1, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(z)
                loss = tf.reduce_sum(tf.reduce_mean(tf.square(generator(z, training=False) - x), axis=[1, 2, 3]))
            g = tape.gradient(loss, z)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            z = z - lr * tf.sqrt(1 - b2**t) / (1 - b1**t) * m / (tf.sqrt(v) + eps)
        return z

    return run(tf.constant(np.asarray(z0, np.float32))).numpy()


def validation_psnr(generator, encoder, val_u8: np.ndarray, steps: int, seed: int = 0) -> dict:
    """Invert ``val_u8`` through the generator (batched Adam on z, MSE) and measure mean PSNR."""
    from runtime.inversion import predict
    from runtime.metrics import psnr

    target = to_unit_range(val_u8)
    latent_dim = generator.input_shape[-1]
    result = {}
    if encoder is not None:
        z0 = predict(encoder, target)
        result["encoder_psnr"] = float(np.mean(psnr(from_unit_range(predict(generator, z0)), val_u8)))
    else:
        z0 = np.zeros((len(val_u8), latent_dim), np.float32)
    z = _invert_mse(generator, target, z0, steps=steps, lr=0.05)
    result["val_psnr"] = float(np.mean(psnr(from_unit_range(predict(generator, z)), val_u8)))
    return result


def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False, schedule=None,
          snapshot_every: float = 0.0) -> dict:
    """Run (or resume) training; returns a summary dict (steps, best PSNR, step time). rd mode takes a
    ``schedule`` (training.recipe: a recipe's stages, a wall-clock budget)."""
    cfg = cfg.resolved()
    if cfg.mode == "rd":
        from training.rd import train_rd

        return train_rd(cfg, resume=resume, quiet=quiet, schedule=schedule, snapshot_every=snapshot_every)
    if schedule is not None and (schedule.seconds is not None or len(schedule.stages) > 1):
        raise CodecError(f"--recipe and --seconds train rd runs; --mode {cfg.mode} runs --steps")
    cfg, run, train_u8, val_u8 = open_run(cfg, resume)

    tf = _tf()
    import keras

    keras.utils.set_random_seed(cfg.seed)
    strategy = choose_strategy()
    with strategy.scope():
        generator, discriminator, encoder = build_models(cfg)
        if cfg.mode == "recon":
            lr_g = keras.optimizers.schedules.CosineDecay(cfg.lr, cfg.steps, alpha=0.05)
            g_opt = keras.optimizers.Adam(lr_g, beta_1=0.9)
            d_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
        else:
            g_opt = keras.optimizers.Adam(cfg.lr, beta_1=0.5)
            d_opt = keras.optimizers.Adam(cfg.lr, beta_1=0.5)
        g_opt.build(generator.trainable_variables + (encoder.trainable_variables if encoder else []))
        d_opt.build(discriminator.trainable_variables)
        rng = tf.random.Generator.from_seed(cfg.seed)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    tracked = dict(generator=generator, discriminator=discriminator, g_opt=g_opt, d_opt=d_opt,
                   rng=rng, step=step_var)
    if encoder is not None:
        tracked["encoder"] = encoder
    ckpt = tf.train.Checkpoint(**tracked)
    manager, start, _ = restore(run, ckpt, resume)
    ds = batches(train_u8, cfg, start)
    it = iter(strategy.experimental_distribute_dataset(ds))
    global_batch = cfg.batch
    noise_steps = tf.constant([2.0 ** (3 - b) for b in cfg.noise_bits], tf.float32)

    def bce_real(logits):  # -log sigmoid(l)
        return tf.nn.softplus(-logits)[:, 0]

    def bce_fake(logits):  # -log (1 - sigmoid(l))
        return tf.nn.softplus(logits)[:, 0]

    def replica_step(x):
        n = tf.shape(x)[0]
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            if encoder is not None:
                z = encoder(x, training=True)
                pick = rng.uniform([n], 0, len(cfg.noise_bits), dtype=tf.int32)
                width = tf.gather(noise_steps, pick)[:, None]
                z = z + rng.uniform(tf.shape(z), -0.5, 0.5) * width
            else:
                z = rng.normal([n, cfg.latent_dim])
            fake = generator(z, training=True)
            d_real = discriminator(x, training=True)
            d_fake = discriminator(fake, training=True)
            adv = bce_real(d_fake)
            d_loss = tf.nn.compute_average_loss(bce_real(d_real) + bce_fake(d_fake), global_batch_size=global_batch)
            if encoder is not None:
                mse = tf.reduce_mean(tf.square(fake - x), axis=[1, 2, 3])
                ssim = tf.image.ssim(fake, x, max_val=2.0, filter_size=11)
                per = cfg.w_mse * mse + cfg.w_ssim * (1.0 - ssim) + cfg.w_adv * adv
            else:
                mse = tf.zeros_like(adv)
                per = adv
            g_loss = tf.nn.compute_average_loss(per, global_batch_size=global_batch)
        g_vars = generator.trainable_variables + (encoder.trainable_variables if encoder is not None else [])
        g_opt.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
        d_vars = discriminator.trainable_variables
        d_opt.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
        avg = lambda t: tf.nn.compute_average_loss(t, global_batch_size=global_batch)  # noqa: E731
        return {"d_loss": d_loss, "g_loss": g_loss, "adv": avg(adv), "mse": avg(mse)}

    @tf.function
    def train_step(dist_x):
        out = strategy.run(replica_step, args=(dist_x,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in out.items()}

    eval_u8 = val_u8[: cfg.eval_images]
    best = load_best(run)
    sample_z = np.random.default_rng(cfg.seed).standard_normal((32, cfg.latent_dim)).astype(np.float32)

    def evaluate(step: int, bar) -> None:
        nonlocal best
        res = validation_psnr(generator, encoder, eval_u8, cfg.eval_steps)
        _append_csv(run / "val.csv", {"step": step, **res})
        from runtime.inversion import predict

        grid = [from_unit_range(predict(generator, sample_z[:16]))]
        if encoder is not None:
            recon = from_unit_range(predict(generator, predict(encoder, to_unit_range(eval_u8[:8]))))
            grid = [eval_u8[:8], recon] + grid
        save_grid(np.concatenate(grid), run / "samples" / f"step_{step:06d}.png")
        if best is None or res["val_psnr"] > best["val_psnr"]:
            best = {"step": step, **res}

            def write(tmp):
                generator.save_weights(tmp / "generator.weights.h5")
                if encoder is not None:
                    encoder.save_weights(tmp / "encoder.weights.h5")

            save_best(run, best, write)
        plot_curves(run)
        if not quiet:
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in res.items())
                       + f" (best {best['val_psnr']:.2f} dB at {best['step']})")

    timing = loop(cfg, run, start, train_step, it, manager, evaluate, quiet)
    return write_summary(run, cfg, best, timing)


def parser() -> argparse.ArgumentParser:
    """The CLI: an option per TrainConfig field (training.config.add_config_arguments: its default
    and help text), and those of the invocation (--recipe, --seconds, --export, --resume, --backend,
    --threads, --verbose)."""
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    add_config_arguments(p, defaults={"data": None})
    p.add_argument("--recipe", metavar="NAME", help="replay a recipe (training/recipes/NAME.toml, or a .toml "
                   "path): its settings and stages; flags given here override them (--lr, --w-adv-rd, --batch, "
                   "--warmup in every stage)")
    p.add_argument("--seconds", type=float, metavar="S", help="rd: a wall-clock training budget; the schedule "
                   "(a recipe's stages, or the one cosine cycle) is scaled to it instead of --steps")
    p.add_argument("--export", metavar="DIR", help="rd: export the selected weights as a bundle in DIR at the end "
                   "(python -m export.onnx; needs TensorFlow)")
    p.add_argument("--overwrite", action="store_true", help="with --export: replace an existing bundle")
    p.add_argument("--snapshot-every", type=float, default=0.0, metavar="S", help="rd: copy the selected "
                   "weights to <run>/snapshots/tSECONDS every S seconds of training (a time-to-quality curve)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                   "(the stage and step it reached; a recipe run keeps its recipe)")
    p.add_argument("--backend", choices=["tensorflow", "torch"], help="Keras backend (default: $KERAS_BACKEND, "
                   "else tensorflow when installed, else torch); gan/recon modes need tensorflow")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    return p


def choose_backend(name: str | None) -> str:
    """Set KERAS_BACKEND (before Keras is imported): ``name``, else the environment's, else
    tensorflow when it is installed, else torch."""
    import importlib.util

    if name is None:
        name = os.environ.get("KERAS_BACKEND") or (
            "tensorflow" if importlib.util.find_spec("tensorflow") else "torch")
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", "tensorflow") != name:
        import keras

        if keras.backend.backend() != name:
            raise CodecError(f"Keras is already loaded with the {keras.backend.backend()} backend")
    os.environ["KERAS_BACKEND"] = name
    return name


def config_and_schedule(a):
    """(TrainConfig, Schedule or None) of parsed options: a recipe's [config] under the flags given
    (those that differ from their defaults), its stages scaled to --seconds."""
    from training.config import default
    from training.recipe import load_recipe, recipe_schedule, single

    if a.recipe is None:
        if a.data is None:
            raise CodecError("--data is required (or --recipe NAME)")
        cfg = config_from_args(a)
        return cfg, (single(cfg.resolved(), a.seconds) if a.seconds is not None else None)
    fields, stages, name, sha = load_recipe(a.recipe)
    given = {k: v for k, v in vars(a).items() if k in TrainConfig.__dataclass_fields__ and k not in ("data", "out")
             and v != default(k)}
    data = a.data or fields.get("data")
    if data is None:
        raise CodecError(f"recipe {name} names no data set: pass --data")
    if a.data is None and not os.path.isabs(data):
        from training.recipe import RECIPES_DIR

        data = str((RECIPES_DIR.parent.parent / data).resolve())  # relative to the project root
    from training.recipe import RECIPES_DIR

    root = RECIPES_DIR.parent.parent
    if fields.get("init_from") and "init_from" not in given and not os.path.isabs(fields["init_from"]):
        fields = {**fields, "init_from": str(root / fields["init_from"])}  # a shipped bundle, as data is
    cfg = TrainConfig(**{**fields, **given, "data": data, "out": a.out})
    # a stage setting given as a flag (--batch 16 to fit memory, --lr) holds in every stage
    stages = [{**st, **{k: given[k] for k in ("lr", "w_adv_rd", "batch", "warmup") if k in given}} for st in stages]
    return cfg, recipe_schedule(cfg.resolved(), stages, name, sha, a.seconds)


def export_bundle(run: str, out: str, overwrite: bool) -> None:
    """``python -m export.onnx RUN --out OUT``, as a separate process (export imports training)."""
    import subprocess

    cmd = [sys.executable, "-m", "export.onnx", run, "--out", out] + (["--overwrite"] if overwrite else [])
    if subprocess.run(cmd).returncode:
        raise CodecError(f"export of {run} to {out} failed (the run is kept: `{' '.join(cmd[1:])}` retries it)")


def main(argv=None) -> int:
    a = parser().parse_args(argv)

    def go():
        backend = choose_backend(a.backend)
        if a.seconds is not None and a.seconds <= 0:
            raise CodecError("--seconds must be positive")
        if a.export and os.path.exists(a.export) and not a.overwrite:
            raise CodecError(f"--export {a.export} already exists; pass --overwrite to replace it")
        if backend == "tensorflow":
            from runtime.quiet import quiet_tensorflow

            quiet_tensorflow(a.verbose)
        cfg, schedule = config_and_schedule(a)
        if backend == "tensorflow":
            if a.threads:
                tf = _tf()
                tf.config.threading.set_intra_op_parallelism_threads(a.threads)
                tf.config.threading.set_inter_op_parallelism_threads(a.threads)
        elif a.threads:
            import torch

            torch.set_num_threads(a.threads)
        summary = train(cfg, resume=a.resume, schedule=schedule, snapshot_every=a.snapshot_every)
        print(json.dumps(summary, indent=2))
        if a.export:
            export_bundle(cfg.out, a.export, a.overwrite)

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
