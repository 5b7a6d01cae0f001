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

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from runtime.inversion import mixture_bits, ste_round
from runtime.metrics import MSE_SCALE
from training.models import downsampling

MIX = 3  # logistic components per channel


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


class RateModel(tf.Module):
    """Gain vectors of the rate levels and the per-channel logistic-mixture density of y."""

    def __init__(self, channels: int, levels: int, gain_range=(0.15, 6.0), contexts: int = 1, name="rate_model"):
        super().__init__(name=name)
        self.contexts = contexts
        shape = (channels, MIX) if contexts == 1 else (channels, contexts, MIX)
        lo, hi = math.log(gain_range[0]), math.log(gain_range[1])
        log_g = np.linspace(lo, hi, levels, dtype=np.float32)[:, None] * np.ones((1, channels), np.float32)
        self.log_gain = tf.Variable(log_g, name="log_gain")
        self.log_inv_gain = tf.Variable(-log_g, name="log_inv_gain")
        rng = np.random.default_rng(0)
        means = rng.normal(0, 0.3, (channels, MIX)).astype(np.float32)
        if contexts > 1:
            means = np.repeat(means[:, None], contexts, axis=1)
        self.mix_logits = tf.Variable(np.zeros(shape, np.float32), name="mix_logits")
        self.means = tf.Variable(means, name="means")
        self.log_scales = tf.Variable(np.zeros(shape, np.float32), name="log_scales")

    def gains(self, level):
        return tf.exp(tf.gather(self.log_gain, level)), tf.exp(tf.gather(self.log_inv_gain, level))

    def bits(self, q, gain, symbols=None):
        """Per-image bits of scaled latents q (N, H, W, C) at gain (broadcastable); with contexts,
        each position's density is its context's, read from the integer ``symbols`` (round(q))."""
        if self.contexts == 1:
            return mixture_bits(q, gain, self.mix_logits, self.means, self.log_scales)
        pick = tf.one_hot(context_of(symbols, self.contexts), self.contexts)  # (N, H, W, C, K)
        params = [tf.einsum("nhwck,ckm->nhwcm", pick, v) for v in (self.mix_logits, self.means, self.log_scales)]
        return mixture_bits(q, gain, *params)

    def numpy_state(self) -> dict:
        return {"log_gain": self.log_gain.numpy(), "log_inv_gain": self.log_inv_gain.numpy(),
                "mix_logits": self.mix_logits.numpy(), "means": self.means.numpy(),
                "log_scales": self.log_scales.numpy()}


def context_of(symbols, k: int):
    """:func:`runtime.entropy.contexts` (the one definition) on (N, H, W, C) integer-valued tensors,
    every channel counted as coded."""
    from keras import ops

    from runtime.entropy import contexts

    return contexts(symbols, np.ones(int(symbols.shape[-1]), bool), k, xp=ops)


def lambdas(levels: int, lam_range) -> np.ndarray:
    lo, hi = math.log(lam_range[0]), math.log(lam_range[1])
    return np.exp(np.linspace(lo, hi, levels)).astype(np.float32)


# --- training loop -------------------------------------------------------------------------------

def train_rd(cfg, resume: bool = False, quiet: bool = False) -> dict:
    """Run (or resume) rate–distortion training for a resolved ``TrainConfig`` (mode ``rd``)."""
    from runtime.images import from_unit_range, to_unit_range
    from training.run import (
        _append_csv,
        batches,
        load_best,
        loop,
        open_run,
        restore,
        save_best,
        save_grid,
        write_summary,
    )

    cfg, run, train_u8, val_u8 = open_run(cfg, resume)
    keras.utils.set_random_seed(cfg.seed)
    C, L, S = cfg.channels, cfg.levels, cfg.image_size
    encoder, generator = build_rd_models(cfg)
    discriminator = build_rd_discriminator(S, cfg.rd_d_widths)
    rate = RateModel(C, L, contexts=cfg.rate_contexts)
    lams = tf.constant(lambdas(L, (cfg.lam_min, cfg.lam_max)))
    sched = keras.optimizers.schedules.CosineDecay(cfg.lr, cfg.steps, alpha=0.05)
    g_opt = keras.optimizers.Adam(sched)
    # the gains and the density get a 10x larger step: each level's gain sees only its own images,
    # and without it the low-rate levels move far too slowly in a short run
    r_opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(10 * cfg.lr, cfg.steps, alpha=0.05))
    d_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
    g_vars = encoder.trainable_variables + generator.trainable_variables
    r_vars = list(rate.trainable_variables)
    d_vars = discriminator.trainable_variables
    g_opt.build(g_vars)
    r_opt.build(r_vars)
    d_opt.build(d_vars)
    rng = tf.random.Generator.from_seed(cfg.seed)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    ckpt = tf.train.Checkpoint(encoder=encoder, generator=generator, discriminator=discriminator,
                               rate=rate, g_opt=g_opt, r_opt=r_opt, d_opt=d_opt, rng=rng, step=step_var)
    manager, start, restored = restore(run, ckpt, resume)
    if not restored and cfg.init_from:
        warm_start(cfg.init_from, encoder, generator, rate)
    it = iter(batches(train_u8, cfg, start))
    pixels = float(S * S)

    @tf.function
    def train_step(x):
        n = tf.shape(x)[0]
        level = rng.uniform([n], 0, L, dtype=tf.int32)
        lam = tf.gather(lams, level)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            gain, inv_gain = rate.gains(level)
            gain, inv_gain = gain[:, None, None, :], inv_gain[:, None, None, :]
            ys = encoder(x, training=True) * gain
            noisy = ys + rng.uniform(tf.shape(ys), -0.5, 0.5)
            bpp = rate.bits(noisy, gain, tf.round(ys)) / pixels
            fake = generator(ste_round(ys) * inv_gain, training=True)
            d_real = discriminator(x, training=True)
            d_fake = discriminator(fake, training=True)
            mse = tf.reduce_mean(tf.square(fake - x), axis=[1, 2, 3]) * MSE_SCALE
            adv = tf.nn.softplus(-d_fake)[:, 0]
            loss = tf.reduce_mean(bpp + lam * (mse + cfg.w_adv_rd * adv))
            d_loss = tf.reduce_mean(tf.nn.softplus(-d_real)[:, 0] + tf.nn.softplus(d_fake)[:, 0])
        grads = g_tape.gradient(loss, g_vars + r_vars)
        g_opt.apply_gradients(zip(grads[: len(g_vars)], g_vars))
        r_opt.apply_gradients(zip(grads[len(g_vars):], r_vars))
        d_opt.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
        return {"loss": loss, "bpp": tf.reduce_mean(bpp), "mse": tf.reduce_mean(mse),
                "adv": tf.reduce_mean(adv), "d_loss": d_loss}

    eval_x = tf.constant(to_unit_range(val_u8[: cfg.eval_images]))
    eval_u8 = val_u8[: cfg.eval_images]
    eval_pixels = float(eval_u8.shape[1] * eval_u8.shape[2])  # whole images; a --crop run trains on S×S

    def evaluate(step: int) -> dict:
        from runtime.metrics import psnr

        y = encoder(eval_x, training=False)
        row, score, recon_rows = {"step": step}, 0.0, []
        for lev in range(L):
            gain, inv_gain = rate.gains(tf.fill([len(eval_u8)], lev))
            q = tf.round(y * gain[:, None, None, :])
            bits = rate.bits(q, gain[:, None, None, :], q).numpy()
            out = from_unit_range(generator(q * inv_gain[:, None, None, :], training=False).numpy())
            p = float(np.mean(psnr(out, eval_u8)))
            mse = float(np.mean((out.astype(np.float64) - eval_u8) ** 2))
            row[f"bytes{lev}"] = float(np.mean(bits) / 8)
            row[f"psnr{lev}"] = p
            score += float(np.mean(bits) / eval_pixels) + float(lams[lev]) * mse
            if lev in (0, L // 2, L - 1):
                recon_rows.append(out[:8])
        row["score"] = score / L
        _append_csv(run / "val.csv", row)
        save_grid(np.concatenate([eval_u8[:8]] + recon_rows), run / "samples" / f"step_{step:06d}.png")
        return row

    best = load_best(run)

    def write_best(tmp) -> None:
        generator.save_weights(tmp / "generator.weights.h5")
        encoder.save_weights(tmp / "encoder.weights.h5")
        np.savez(tmp / "rate.npz", lambdas=lams.numpy(), **rate.numpy_state())

    def on_eval(step: int, bar) -> None:
        nonlocal best
        row = evaluate(step)
        if best is None or row["score"] < best["score"]:
            best = dict(row)
            save_best(run, best, write_best)
        plot_rd_curves(run)
        if not quiet:
            bar.write(f"step {step}: score {row['score']:.4f} | " + " ".join(
                f"{row[f'bytes{lev}']:.0f}B/{row[f'psnr{lev}']:.2f}dB" for lev in range(L)))

    timing = loop(cfg, run, start, train_step, it, manager, on_eval, quiet)
    return write_summary(run, cfg, best, timing)


def warm_start(bundle_dir, encoder, generator, rate: RateModel) -> None:
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
