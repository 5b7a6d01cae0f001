"""Rate–distortion training of a variable-rate GAN codec (``--mode rd``, the default).

The design (Ballé et al. 2017's factorized-prior codec, in its GAN form after HiFiC, Mentzer et
al. 2020, made variable-rate with gain vectors after Cui et al. 2021):

- The **encoder** E maps a 32×32 image to a spatial latent y of shape (S/8, S/8, C) — 4×4×C at
  32×32 — so the number of coded values, and hence the quality that more bytes can buy, grows with
  the image instead of being one fixed global vector.
- **Rate levels**: L learned gain vectors g_l (C,) and inverse gains h_l (C,). Level l codes
  q = round(y · g_l) and the decoder sees ŷ = q · h_l. One model covers the whole rate range;
  levels in between are interpolated log-linearly at export (``export.onnx``), which gives the
  fine rate steps that rate control needs.
- **Entropy model** for training: per channel, a mixture of logistics in y-space; the probability
  of symbol k at level l is the mass of [(k − ½)/g, (k + ½)/g]. The rate is −log2 of that under
  additive uniform noise (the standard training proxy for quantization). With
  ``--rate-contexts K`` each channel has K such densities, one per entropy context of the file's
  coder (:func:`runtime.entropy.contexts`: how many earlier channels are nonzero at the position,
  read from the rounded latent), so training prices the bits the coder will really spend. The file's coder does not
  use these floats: at export, integer frequency tables are built from the training set's symbols
  (``runtime.entropy``), so every machine decodes the same symbols.
- **Generator** G (the decoder): ŷ → image, upsample + conv stages, trained with
  distortion + λ_l · rate trade-off and a small adversarial term from a discriminator D; the
  decoder sees the rounded latent through a straight-through estimator.

Loss per image, level l drawn at random:  bits/pixel + λ_l · (MSE₂₅₅ + w_adv · adv).
"""

from __future__ import annotations

import math
import sys

import keras
import numpy as np
from keras import layers

from training.models import downsampling
from training.rate import RateModel  # noqa: F401  (the rate model's home is training.rate)

ARCHS = ("conv", "gdn")


def residual_block(x, name: str):
    """x + conv3×3(LeakyReLU(conv3×3(x))), the second convolution zero-initialised: a block added to
    a trained network (``--rd-g-blocks`` / ``--rd-e-blocks`` with ``--init-from``) starts as the
    identity, so the run starts as the bundle's codec."""
    w = x.shape[-1]
    h = layers.Conv2D(w, 3, padding="same", name=f"{name}a")(x)
    h = layers.LeakyReLU(0.2, name=f"{name}act")(h)
    h = layers.Conv2D(w, 3, padding="same", kernel_initializer="zeros", name=f"{name}b")(h)
    return layers.Add(name=f"{name}add")([x, h])


def build_rd_encoder(channels: int, image_size: int | None = None, widths=(48, 96), name: str = "encoder",
                     arch: str = "conv", blocks: int = 0) -> keras.Model:
    """image (N, H, W, 3) in [-1, 1] -> y (N, H/f, W/f, channels), unscaled (f: :func:`downsampling`).
    Fully convolutional: ``image_size`` None (the codec's networks) takes any H, W divisible by f;
    a number fixes the input to S×S.

    ``conv``: stride-2 and 3×3 convolutions with LeakyReLU. ``gdn``: Ballé et al.'s analysis
    transform, 5×5 stride-2 convolutions (one per width, then the latent's) with GDN between them:
    widths of 2 give S/8, of 3 give S/16; ``blocks`` residual blocks (:func:`residual_block`) before
    the latent's convolution."""
    x_in = keras.Input((image_size, image_size, 3), name="image")
    if arch == "gdn":
        from runtime.layers import GDN

        x = x_in
        for i, w in enumerate(widths, start=1):
            x = layers.Conv2D(w, 5, strides=2, padding="same", name=f"conv{i}")(x)
            x = GDN(name=f"gdn{i}")(x)
        for b in range(1, blocks + 1):
            x = residual_block(x, f"eres{b}")
        y = layers.Conv2D(channels, 5, strides=2, padding="same", name="latent")(x)
        return keras.Model(x_in, y, name=name)
    w1, w2 = widths
    x = layers.Conv2D(w1, 5, strides=2, padding="same", name="conv1")(x_in)
    x = layers.LeakyReLU(0.2, name="act1")(x)
    x = layers.Conv2D(w1, 3, padding="same", name="conv1b")(x)
    x = layers.LeakyReLU(0.2, name="act1b")(x)
    x = layers.Conv2D(w2, 5, strides=2, padding="same", name="conv2")(x)
    x = layers.LeakyReLU(0.2, name="act2")(x)
    x = layers.Conv2D(w2, 3, padding="same", name="conv2b")(x)
    x = layers.LeakyReLU(0.2, name="act2b")(x)
    y = layers.Conv2D(channels, 5, strides=2, padding="same", name="latent")(x)
    return keras.Model(x_in, y, name=name)


def build_rd_generator(channels: int, image_size: int | None = None, widths=(96, 96, 48, 24),
                       name: str = "generator", arch: str = "conv", blocks: int = 0) -> keras.Model:
    """ŷ (N, H/f, W/f, channels) -> image (N, H, W, 3) in [-1, 1] (``image_size`` as for the encoder).

    ``conv``: nearest upsampling + 3×3 convolutions with LeakyReLU. ``gdn``: Ballé et al.'s
    synthesis transform, 5×5 stride-2 transposed convolutions with inverse GDN (one per width),
    then one to RGB with tanh; ``blocks`` residual blocks after the first stage (at S/4, where a
    3×3 convolution costs a quarter of what it would at the next stage)."""
    g = image_size // downsampling(arch, widths) if image_size else None
    y = keras.Input((g, g, channels), name="latent")
    if arch == "gdn":
        from runtime.layers import GDN

        x = y
        for i, w in enumerate(widths, start=1):
            x = layers.Conv2DTranspose(w, 5, strides=2, padding="same", name=f"deconv{i}")(x)
            x = GDN(inverse=True, name=f"igdn{i}")(x)
            if i == 1:
                for b in range(1, blocks + 1):
                    x = residual_block(x, f"gres{b}")
        image = layers.Conv2DTranspose(3, 5, strides=2, padding="same", activation="tanh", name="image")(x)
        return keras.Model(y, image, name=name)
    w0, w1, w2, w3 = widths
    x = layers.Conv2D(w0, 3, padding="same", name="conv0")(y)
    x = layers.LeakyReLU(0.2, name="act0")(x)
    for i, w in enumerate((w1, w2, w3), start=1):
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"up{i}")(x)
        x = layers.Conv2D(w, 3, padding="same", name=f"conv{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"act{i}")(x)
    image = layers.Conv2D(3, 3, padding="same", activation="tanh", name="image")(x)
    return keras.Model(y, image, name=name)


def build_rd_models(cfg) -> tuple[keras.Model, keras.Model]:
    """(encoder, generator) of a resolved ``TrainConfig`` (its ``rd_arch`` and widths). A ``--crop``
    run's take any image (latent) size: they train on crops and code whole images of any size
    (exported with dynamic spatial dimensions); any other run's are fixed at ``image_size``."""
    size = None if cfg.crop else cfg.image_size
    return (build_rd_encoder(cfg.channels, size, cfg.rd_e_widths, arch=cfg.rd_arch, blocks=cfg.rd_e_blocks),
            build_rd_generator(cfg.channels, size, cfg.rd_g_widths, arch=cfg.rd_arch, blocks=cfg.rd_g_blocks))


def build_rd_discriminator(image_size: int = 32, widths=(32, 64, 128), name: str = "discriminator") -> keras.Model:
    x_in = keras.Input((image_size, image_size, 3), name="image")
    x = x_in
    for i, w in enumerate(widths):
        x = layers.Conv2D(w, 4, strides=2, padding="same", name=f"conv{i + 1}")(x)
        x = layers.LeakyReLU(0.2, name=f"act{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(x_in, logit, name=name)


def lambdas(levels: int, lam_range) -> np.ndarray:
    lo, hi = math.log(lam_range[0]), math.log(lam_range[1])
    return np.exp(np.linspace(lo, hi, levels)).astype(np.float32)


# --- training ---------------------------------------------------------------------------------------

def rd_losses(encoder, generator, discriminator, rate, x, level, noise, coded, lams, w_adv, pixels: float) -> dict:
    """The loss of one batch, in ``keras.ops`` (every backend computes this one function): images x
    (N, S, S, 3) in [-1, 1], rate levels ``level`` (N,) int, ``noise`` uniform in [-½, ½] of the
    latent's shape (the quantization proxy), ``coded`` (N, 1, 1, C) 0/1: the channels the file
    codes at each image's level (the others are zero in the file: the generator sees zero there
    and the rate counts neither their bits nor them in the contexts), ``lams`` (L,) the levels' λ.
    Returns the codec's loss (bits/pixel + λ·(MSE₂₅₅ + w_adv·adv), mean), the discriminator's, and
    the mean terms."""
    from keras import ops

    from runtime.metrics import MSE_SCALE
    from training.rate import ste_round

    lam = ops.take(lams, level, axis=0)
    gain, inv_gain = rate.gains(level)
    gain, inv_gain = gain[:, None, None, :], inv_gain[:, None, None, :]
    ys = encoder(x, training=True) * gain
    bpp = rate.bits(ys + noise, gain, ops.round(ys) * coded, coded) / pixels
    fake = generator(ste_round(ys) * coded * inv_gain, training=True)
    d_real = discriminator(x, training=True)
    d_fake = discriminator(fake, training=True)
    mse = ops.mean(ops.square(fake - x), axis=[1, 2, 3]) * MSE_SCALE
    adv = ops.softplus(-d_fake)[:, 0]
    loss = ops.mean(bpp + lam * (mse + w_adv * adv))
    d_loss = ops.mean(ops.softplus(-d_real)[:, 0] + ops.softplus(d_fake)[:, 0])
    return {"loss": loss, "bpp": ops.mean(bpp), "mse": ops.mean(mse), "adv": ops.mean(adv), "d_loss": d_loss}


CODED_SAMPLE = 256  # training images whose symbols tell the coded channels of each level (Trainer.refresh_coded)


class Trainer:
    """The networks, rate model and optimizers of an rd run, and its training step in the current
    Keras backend: the step draws the levels and the noise (``keras.random``, seeded), evaluates
    :func:`rd_losses` and applies the codec's gradients (encoder, generator; the rate model at 10x
    the learning rate: each level's gain sees only its own images) and the discriminator's. The
    gradients come from the backend's own autodiff: ``tf.GradientTape`` in a ``tf.function``
    (TensorFlow) or ``torch.autograd`` (PyTorch); JAX is not supported (its stateless step would
    need the networks' variables threaded through it)."""

    def __init__(self, cfg):

        self.cfg = cfg
        self.backend = keras.backend.backend()
        if self.backend not in ("tensorflow", "torch"):
            from runtime.errors import CodecError

            raise CodecError(f"the trainer runs on Keras's tensorflow or torch backend, not {self.backend!r} "
                             "(set KERAS_BACKEND)")
        keras.utils.set_random_seed(cfg.seed)
        self.encoder, self.generator = build_rd_models(cfg)
        self.discriminator = build_rd_discriminator(cfg.image_size, cfg.rd_d_widths)
        self.rate = RateModel(cfg.channels, cfg.levels, contexts=cfg.rate_contexts)
        self.lams = lambdas(cfg.levels, (cfg.lam_min, cfg.lam_max))
        self.g_opt = keras.optimizers.Adam(cfg.lr)
        self.r_opt = keras.optimizers.Adam(10 * cfg.lr)
        self.d_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
        self.g_vars = self.encoder.trainable_variables + self.generator.trainable_variables
        self.r_vars = list(self.rate.trainable_variables)
        self.d_vars = self.discriminator.trainable_variables
        for opt, var in ((self.g_opt, self.g_vars), (self.r_opt, self.r_vars), (self.d_opt, self.d_vars)):
            opt.build(var)
        # the channels the file codes at each trained level (runtime.entropy.coded_channels of the
        # training images' symbols), refreshed at every validation (refresh_coded)
        self.coded = keras.Variable(np.ones((cfg.levels, cfg.channels), np.float32), trainable=False, name="coded")
        f = downsampling(cfg.rd_arch, cfg.rd_e_widths)
        self.latent = (cfg.image_size // f, cfg.image_size // f, cfg.channels)
        self.pixels = float(cfg.image_size**2)
        self._step = None

    def groups(self) -> dict:
        """The run's whole state, by group (what a checkpoint holds)."""
        return {"encoder": self.encoder.weights, "generator": self.generator.weights,
                "discriminator": self.discriminator.weights, "rate": self.r_vars,
                "g_opt": self.g_opt.variables, "r_opt": self.r_opt.variables, "d_opt": self.d_opt.variables,
                "coded": [self.coded]}

    def set_lr(self, factor: float, lr: float) -> None:
        self.g_opt.learning_rate = lr * factor
        self.r_opt.learning_rate = 10 * lr * factor

    def _losses(self, x, level, noise, coded, w_adv):
        from keras import ops

        return rd_losses(self.encoder, self.generator, self.discriminator, self.rate, x, level, noise, coded,
                         ops.convert_to_tensor(self.lams), w_adv, self.pixels)

    def refresh_coded(self, images_u8: np.ndarray) -> None:
        """Set :attr:`coded` from the symbols of ``images_u8`` (training images) at each level, by
        the rule export's tables use (:func:`runtime.entropy.coded_channels`)."""
        from keras import ops

        from runtime.entropy import coded_channels
        from runtime.images import to_unit_range

        y = ops.convert_to_numpy(self.encoder(ops.convert_to_tensor(to_unit_range(images_u8)), training=False))
        gains = np.exp(ops.convert_to_numpy(self.rate.log_gain))
        coded = np.stack([coded_channels(np.round(y * g)) for g in gains])
        self.coded.assign((coded | (not self.cfg.coded_only)).astype(np.float32))

    def masks(self, level) -> np.ndarray:
        """(N, 1, 1, C) float 0/1: the coded channels of each image's level."""
        return keras.ops.convert_to_numpy(self.coded).astype(bool).astype(np.float32)[np.asarray(level)][:, None, None, :]

    def losses(self, x, level, noise, w_adv):
        from keras import ops

        coded = ops.convert_to_tensor(self.masks(ops.convert_to_numpy(level)))
        return rd_losses(self.encoder, self.generator, self.discriminator, self.rate, x, level, noise, coded,
                         ops.convert_to_tensor(self.lams), w_adv, self.pixels)

    def step(self, x: np.ndarray, w_adv: float, level: np.ndarray, noise: np.ndarray) -> dict:
        """One training step on the batch x (N, S, S, 3) float32 in [-1, 1] at adversarial weight
        ``w_adv``, the images' rate levels ``level`` (N,) and quantization ``noise`` (the latent's
        shape; :func:`batch_at` draws both): the loss terms (floats, before the update)."""
        from keras import ops

        if self._step is None:
            self._step = self._tf_step() if self.backend == "tensorflow" else self._torch_step()
        out = self._step(ops.convert_to_tensor(x), ops.convert_to_tensor(np.float32(w_adv)),
                         ops.convert_to_tensor(np.asarray(level, np.int32)), ops.convert_to_tensor(noise, "float32"),
                         ops.convert_to_tensor(self.masks(level)))
        return {k: float(ops.convert_to_numpy(v)) for k, v in out.items()}

    def _tf_step(self):
        import tensorflow as tf

        n_g = len(self.g_vars)

        @tf.function
        def train_step(x, w_adv, level, noise, coded):
            with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
                out = self._losses(x, level, noise, coded, w_adv)
            grads = g_tape.gradient(out["loss"], self.g_vars + self.r_vars)
            self.g_opt.apply_gradients(zip(grads[:n_g], self.g_vars))
            self.r_opt.apply_gradients(zip(grads[n_g:], self.r_vars))
            self.d_opt.apply_gradients(zip(d_tape.gradient(out["d_loss"], self.d_vars), self.d_vars))
            return out

        return train_step

    def _torch_step(self):
        import torch

        n_g = len(self.g_vars)

        def train_step(x, w_adv, level, noise, coded):
            out = self._losses(x, level, noise, coded, w_adv)
            params = [v.value for v in self.g_vars + self.r_vars]
            grads = torch.autograd.grad(out["loss"], params, retain_graph=True)
            d_grads = torch.autograd.grad(out["d_loss"], [v.value for v in self.d_vars])
            with torch.no_grad():
                self.g_opt.apply(list(grads[:n_g]), self.g_vars)
                self.r_opt.apply(list(grads[n_g:]), self.r_vars)
                self.d_opt.apply(list(d_grads), self.d_vars)
            return {k: v.detach() for k, v in out.items()}

        return train_step

    def evaluate(self, val_u8: np.ndarray) -> dict:
        """Per level on whole validation images: the model's bytes and PSNR, and the selection score
        (mean over levels of bits/pixel + λ·MSE)."""
        from keras import ops

        from runtime.images import from_unit_range, to_unit_range
        from runtime.metrics import psnr

        y = self.encoder(ops.convert_to_tensor(to_unit_range(val_u8)), training=False)
        pixels = float(val_u8.shape[1] * val_u8.shape[2])  # whole images; a --crop run trains on S×S
        row, score, samples = {}, 0.0, []
        L = self.cfg.levels
        for lev in range(L):
            gain, inv_gain = (g[:, None, None, :] for g in self.rate.gains(ops.full((len(val_u8),), lev, "int32")))
            coded = ops.convert_to_tensor(self.masks(np.full(len(val_u8), lev)))
            q = ops.round(y * gain) * coded
            bits = ops.convert_to_numpy(self.rate.bits(q, gain, q, coded))
            out = from_unit_range(ops.convert_to_numpy(self.generator(q * inv_gain, training=False)))
            mse = float(np.mean((out.astype(np.float64) - val_u8) ** 2))
            row[f"bytes{lev}"] = float(np.mean(bits) / 8)
            row[f"psnr{lev}"] = float(np.mean(psnr(out, val_u8)))
            score += float(np.mean(bits) / pixels) + float(self.lams[lev]) * mse
            if lev in (0, L // 2, L - 1):
                samples.append(out[:8])
        row["score"] = score / L
        return row, samples

    def write_best(self, directory) -> None:
        """The selected weights, as export reads them (``best/``)."""
        self.generator.save_weights(directory / "generator.weights.h5")
        self.encoder.save_weights(directory / "encoder.weights.h5")
        np.savez(directory / "rate.npz", lambdas=self.lams, **self.rate.numpy_state())


def batch_at(train_u8: np.ndarray, step: int, batch: int, cfg, latent) -> tuple:
    """The training batch of global step ``step`` (1-based): images float32 in [-1, 1] drawn
    without replacement, a random crop (``cfg.crop``) and left-right flip each; each image's rate
    level; the quantization noise (uniform in [-½, ½], ``latent`` (h, w, C) per image). All from a
    generator seeded by (seed, step), so a resumed run draws exactly what an uninterrupted one
    does, on any backend."""
    rng = np.random.default_rng([cfg.seed, step])
    idx = rng.choice(len(train_u8), batch, replace=False)
    ims = train_u8[idx]
    if cfg.crop:
        s = cfg.image_size
        ys = rng.integers(0, ims.shape[1] - s + 1, batch)
        xs = rng.integers(0, ims.shape[2] - s + 1, batch)
        ims = np.stack([im[y:y + s, x:x + s] for im, y, x in zip(ims, ys, xs)])
    if cfg.flip:
        flip = rng.random(batch) < 0.5
        ims = np.where(flip[:, None, None, None], ims[:, :, ::-1], ims)
    level = rng.integers(0, cfg.levels, batch).astype(np.int32)
    noise = rng.uniform(-0.5, 0.5, (batch, *latent)).astype(np.float32)
    return ims.astype(np.float32) / 127.5 - 1.0, level, noise


def train_rd(cfg, resume: bool = False, quiet: bool = False, schedule=None, snapshot_every: float = 0.0,
             stop_after: int | None = None) -> dict:
    """Run (or resume) rate–distortion training for a resolved ``TrainConfig`` (mode ``rd``) under
    ``schedule`` (:mod:`training.recipe`; None: one stage of cfg.steps). Every ``eval_every`` steps
    and at each stage's end the validation images are scored (:meth:`Trainer.evaluate`) and the
    best score's weights kept in ``<run>/best``; a checkpoint of the whole state
    (:func:`training.run.save_state`) every ``ckpt_every`` steps and at the end. ``snapshot_every``
    seconds of training, ``best/`` is copied to ``<run>/snapshots/tSECONDS`` (a quality-against-time
    curve). ``stop_after``: stop after that many steps of this call (a test's interruption)."""
    import shutil
    import time
    from pathlib import Path

    from tqdm import tqdm

    from training.recipe import load_schedule, save_schedule, single
    from training.run import (
        _append_csv,
        load_best,
        load_state,
        open_run,
        save_best,
        save_grid,
        save_state,
        write_summary,
    )

    cfg, run, train_u8, val_u8 = open_run(cfg, resume)
    if resume and (run / "recipe.json").exists():
        saved = load_schedule(run)
        if schedule is not None and schedule.recipe and schedule.sha256 != saved.sha256:
            from runtime.errors import CodecError

            raise CodecError(f"{run} was started with another recipe ({saved.recipe or 'none'}, "
                             f"sha256 {saved.sha256[:12] or '-'}); resume it without --recipe")
        if schedule is None or not schedule.recipe:  # a plain resume may extend a plain run's steps
            if saved.recipe == "" and len(saved.stages) == 1 and saved.seconds is None:
                saved.stages[0].steps = cfg.steps
        schedule = saved
    schedule = schedule or single(cfg)
    for s in schedule.stages:
        if len(train_u8) < s.batch:
            from runtime.errors import CodecError

            raise CodecError(f"batch {s.batch} is larger than the training set ({len(train_u8)} images)")
    save_schedule(schedule, run)
    tr = Trainer(cfg)
    state = load_state(run, tr.groups()) if resume else None
    if state is None and cfg.init_from:
        warm_start(cfg.init_from, tr.encoder, tr.generator, tr.rate)
    state = state or {"step": 0, "stage": 0, "stage_step": 0, "stage_elapsed": 0.0, "elapsed": 0.0}
    if not schedule.recipe and len(schedule.stages) == 1 and schedule.seconds is None:
        state.update(stage=0, stage_step=state["step"])  # a plain run: --steps may have grown on resume
    for name in ("log.csv", "val.csv"):
        from training.run import _truncate_csv

        _truncate_csv(run / name, state["step"])
    eval_u8 = val_u8[: cfg.eval_images]
    code_u8 = train_u8[:CODED_SAMPLE]
    if state["step"] == 0:
        tr.refresh_coded(code_u8)
    best = load_best(run)
    seconds_mode = schedule.seconds is not None
    total = schedule.seconds if seconds_mode else schedule.total_steps
    done = state["elapsed"] if seconds_mode else state["step"]
    bar = tqdm(total=round(total), initial=round(done), desc=f"train {run.name}", disable=quiet,
               unit="s" if seconds_mode else "step", mininterval=1.0 if sys.stderr.isatty() else 30.0,
               dynamic_ncols=True)
    from training.run import _read_csv

    last_val, t_steps, n_timed, losses, calls = "", 0.0, 0, {}, 0
    last_log, last_eval = ((rows[-1]["step"] if rows else -1) for rows in map(_read_csv, (run / "log.csv", run / "val.csv")))
    next_snap = (math.floor(state["elapsed"] / snapshot_every) + 1) * snapshot_every if snapshot_every else None

    def on_eval() -> None:
        nonlocal best, last_val, last_eval
        last_eval = state["step"]
        tr.refresh_coded(code_u8)
        row, samples = tr.evaluate(eval_u8)
        row = {"step": state["step"], "elapsed": round(state["elapsed"], 1), "stage": state["stage"], **row}
        _append_csv(run / "val.csv", row)
        save_grid(np.concatenate([eval_u8[:8]] + samples), run / "samples" / f"step_{state['step']:06d}.png")
        if best is None or row["score"] < best["score"]:
            best = dict(row)
            save_best(run, best, tr.write_best)
        plot_rd_curves(run)
        mid = cfg.levels // 2
        last_val = f"{row[f'bytes{mid}']:.0f}B/{row[f'psnr{mid}']:.2f}dB"
        if not quiet:
            bar.write(f"step {state['step']} ({state['elapsed']:.0f} s): score {row['score']:.4f} | " + " ".join(
                f"{row[f'bytes{lev}']:.0f}B/{row[f'psnr{lev}']:.2f}dB" for lev in range(cfg.levels)))

    def checkpoint() -> None:
        save_state(run, tr.groups(), state)

    def log_row() -> None:
        nonlocal last_log
        _append_csv(run / "log.csv", {"step": state["step"], **losses, "s_per_step": t_steps / max(n_timed, 1)})
        last_log = state["step"]

    def stage_end() -> None:
        if losses and last_log != state["step"]:
            log_row()
        if last_eval != state["step"]:
            on_eval()  # each stage ends with a validation (model selection sees every stage's end)

    if state["step"] == 0 and cfg.init_from and last_eval != 0:
        on_eval()  # the bundle it starts from: a cycle that does not beat it selects it
    while state["stage"] < len(schedule.stages):
        stage = schedule.stages[state["stage"]]
        budget = schedule.stage_seconds(state["stage"])
        progress = (state["stage_elapsed"] / budget) if seconds_mode else state["stage_step"] / stage.steps
        if progress >= 1.0:
            stage_end()
            state.update(stage=state["stage"] + 1, stage_step=0, stage_elapsed=0.0)
            checkpoint()
            continue
        if stop_after is not None and calls >= stop_after:
            break
        t0 = time.perf_counter()
        tr.set_lr(stage.factor(progress, state["stage_step"]), stage.lr)
        step = state["step"] + 1
        x, level, noise = batch_at(train_u8, step, stage.batch, cfg, tr.latent)
        losses = tr.step(x, stage.w_adv_rd, level, noise)
        if not all(np.isfinite(v) for v in losses.values()):
            from runtime.errors import CodecError

            raise CodecError(f"training diverged at step {step}: {losses}")
        calls += 1
        state.update(step=step, stage_step=state["stage_step"] + 1)
        if step % 50 == 0:
            log_row()
        if step % cfg.eval_every == 0:
            on_eval()
        if step % cfg.ckpt_every == 0:
            checkpoint()
        dt = time.perf_counter() - t0
        if calls > 2:  # the first steps trace
            t_steps += dt
            n_timed += 1
        state["elapsed"] += dt
        state["stage_elapsed"] += dt
        bar.update((round(state["elapsed"]) - bar.n) if seconds_mode else 1)
        bar.set_postfix({"stage": f"{state['stage'] + 1}/{len(schedule.stages)}", "loss": f"{losses['loss']:.4f}",
                         "val": last_val}, refresh=False)
        if next_snap is not None and state["elapsed"] >= next_snap and (run / "best").exists():
            shutil.copytree(run / "best", run / "snapshots" / f"t{int(next_snap):06d}", dirs_exist_ok=True)
            next_snap += snapshot_every
    if calls and losses and last_log != state["step"]:
        log_row()
    if calls or stop_after is None:
        checkpoint()
    plot_rd_curves(run)
    bar.close()
    timing = {"last_losses": losses, "seconds_per_step": (t_steps / n_timed) if n_timed else None,
              "elapsed": state["elapsed"], "backend": tr.backend, "schedule": schedule.to_json()}
    cfg.steps = state["step"]
    return write_summary(Path(run), cfg, best, timing)

def warm_start(bundle_dir, encoder, generator, rate) -> None:
    """Start a new run from a shipped bundle (``--init-from models/NAME``): its encoder and generator
    weights (the Keras mirrors), and its trained levels' gains, inverse gains and density (every
    SUBLEVELS-th exported level is a trained one, up to the levels the export extrapolated). The
    discriminator and optimizers start fresh.

    The run may have more latent channels than the bundle (``--channels``, to raise the ceiling of
    the high rates): every weight the extra channels add keeps a fresh initialisation scaled by
    :data:`GROWN_INIT` around the bundle's weights (so the run starts as the bundle's codec), and
    the extra channels' gains and density start at the means of the bundle's. Anything else that
    differs (architecture, level count) is a clear error."""
    from pathlib import Path

    from runtime.bundle import ENCODER_KERAS, GENERATOR_KERAS, SUBLEVELS, load_bundle
    from runtime.errors import CodecError

    bundle = load_bundle(Path(bundle_dir))
    trained = rate.log_gain.shape[0]
    interpolated = (trained - 1) * SUBLEVELS + 1
    if bundle.levels != interpolated + int(bundle.manifest.get("training", {}).get("extra_levels", 0)):
        raise CodecError(f"--init-from {bundle_dir}: {bundle.levels} exported levels do not come from "
                         f"{trained} trained levels")
    for model, name in ((encoder, ENCODER_KERAS), (generator, GENERATOR_KERAS)):
        source = keras.models.load_model(bundle.path(name), compile=False)
        own = {layer.name: layer for layer in model.layers}
        for layer in source.layers:  # by name: layers this run adds (residual blocks) keep their init
            theirs = layer.get_weights()
            ours = own[layer.name].get_weights() if layer.name in own else None
            if not theirs:
                continue
            if ours is None or len(theirs) != len(ours) or any(
                    len(a.shape) != len(b.shape) or any(i > j for i, j in zip(a.shape, b.shape))
                    for a, b in zip(theirs, ours)):
                raise CodecError(f"--init-from {bundle_dir}: its {name} has another architecture than this run")
            own[layer.name].set_weights([_grow(a, b) for a, b in zip(theirs, ours)])
    pick = slice(0, interpolated, SUBLEVELS)
    rate.log_gain.assign(_grow_mean(np.log(bundle.rate["gains"][pick]), rate.log_gain.shape))
    rate.log_inv_gain.assign(_grow_mean(np.log(bundle.entropy.inv_gains[pick]), rate.log_inv_gain.shape))
    for key in ("mix_logits", "means", "log_scales"):
        var = getattr(rate, key)
        theirs = bundle.rate[key]
        if theirs.ndim == 2 and len(var.shape) == 3:  # a factorized bundle: every context starts as its channel
            theirs = np.repeat(theirs[:, None], var.shape[1], axis=1)
        if theirs.ndim != len(var.shape) or theirs.shape[1:] != tuple(var.shape[1:]):
            raise CodecError(f"--init-from {bundle_dir}: its density has shape {theirs.shape}, this run's "
                             f"{tuple(var.shape)} (another --rate-contexts)")
        flat = theirs.reshape(len(theirs), -1)
        var.assign(_grow_mean(flat.T, (flat.shape[1], var.shape[0])).T.reshape(var.shape))


GROWN_INIT = 0.1  # scale of the fresh weights of channels a widened run adds to a bundle's


def _grow(theirs: np.ndarray, ours: np.ndarray) -> np.ndarray:
    """ours (a fresh init, scaled by GROWN_INIT) with theirs in its leading slice."""
    if theirs.shape == ours.shape:
        return theirs
    out = (ours * GROWN_INIT).astype(ours.dtype)
    out[tuple(slice(0, n) for n in theirs.shape)] = theirs
    return out


def _grow_mean(theirs: np.ndarray, shape) -> np.ndarray:
    """(L, C) -> (L, C') with C' >= C: extra columns are the mean of theirs per row."""
    theirs = np.asarray(theirs, np.float32)
    extra = shape[1] - theirs.shape[1]
    return np.concatenate([theirs, np.repeat(theirs.mean(axis=1, keepdims=True), extra, axis=1)], axis=1)


def plot_rd_curves(run) -> None:
    """``<run>/curves.png``: training loss terms and the validation RD curve per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.run import _read_csv

    log, val = _read_csv(run / "log.csv"), _read_csv(run / "val.csv")
    if not log or not val:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in log]
    axes[0].plot(steps, [r["loss"] for r in log], label="loss")
    axes[0].plot(steps, [r["bpp"] for r in log], label="bits/pixel (noisy)")
    axes[0].set_xlabel("step")
    axes[0].legend()
    axes[0].set_title("training loss")
    axes[1].plot(steps, [r["d_loss"] for r in log], label="discriminator")
    axes[1].plot(steps, [r["adv"] for r in log], label="generator adversarial")
    axes[1].set_xlabel("step")
    axes[1].legend()
    axes[1].set_title("GAN terms")
    levels = sorted(int(k[5:]) for k in val[0] if k.startswith("bytes"))
    for r in val[-4:]:
        axes[2].plot([r[f"bytes{lev}"] for lev in levels], [r[f"psnr{lev}"] for lev in levels], "o-",
                     label=f"step {int(r['step'])}")
    axes[2].set_xlabel("bytes per image (model estimate)")
    axes[2].set_ylabel("PSNR (dB)")
    axes[2].set_title("validation rate–distortion")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(run / "curves.png", dpi=90)
    plt.close(fig)
