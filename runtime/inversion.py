"""Latent inversion with gradients from the TF mirror: the only module in runtime that imports
TensorFlow. Decoding never imports it.

:func:`descend` runs batched Adam on z (each image its own latent) to minimise
``MSE + ssim_weight·(1 − SSIM)`` between G(z) and the target, with an optional final phase of
quantization-aware refinement: G is evaluated at the quantized latent and the gradient passes
straight through the rounding (straight-through estimator), so the latent that will be written to
the file is the one being optimised.
"""

from __future__ import annotations

import os
import weakref

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from runtime.bitstream import quant_limit, quant_step  # noqa: E402


def _ste_quantize(z, step: float, limit: int):
    q = tf.clip_by_value(tf.round(z / step), -limit, limit) * step
    return z + tf.stop_gradient(q - z)


def _per_image_loss(generator, z, target, ssim_weight: float, prior_weight: float):
    out = generator(z, training=False)
    loss = tf.reduce_mean(tf.square(out - target), axis=[1, 2, 3])
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1.0 - tf.image.ssim(out, target, max_val=2.0, filter_size=11))
    if prior_weight > 0:  # -log N(0, I) per dimension: the rate the entropy coder will pay
        loss = loss + prior_weight * 0.5 * tf.reduce_mean(tf.square(z), axis=1)
    return loss


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _adam_loop(generator, ssim_weight: float, prior_weight: float, step: float, limit: int, quantized: bool):
    """A compiled Adam loop on z for one generator and setting; traced once per input shape."""
    cache = _COMPILED.setdefault(generator, {})
    key = (float(ssim_weight), float(prior_weight), float(step), int(limit), bool(quantized))
    if key in cache:
        return cache[key]
    b1, b2, eps = 0.9, 0.999, 1e-8

    @tf.function(reduce_retracing=True)
    def run(z, m, v, target, first, count, lr):
        for i in tf.range(count):
            t = tf.cast(first + i + 1, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(z)
                zz = _ste_quantize(z, step, limit) if quantized else z
                loss = tf.reduce_sum(_per_image_loss(generator, zz, target, ssim_weight, prior_weight))
            g = tape.gradient(loss, z)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            z = z - lr * tf.sqrt(1 - b2**t) / (1 - b1**t) * m / (tf.sqrt(v) + eps)
        return z, m, v

    cache[key] = run
    return run


def descend(generator, targets: np.ndarray, z0: np.ndarray, steps: int = 150, lr: float = 0.05,
            ssim_weight: float = 0.0, bits: int | None = None, ste_fraction: float = 0.3,
            prior_weight: float = 0.0, progress=None) -> np.ndarray:
    """Batched gradient descent (Adam) on latents, each image its own.

    generator: a Keras model z -> image in [-1, 1]. targets: float32 (N, H, W, 3) in [-1, 1].
    z0: (N, latent) start. Loss per image: MSE + ssim_weight·(1 − SSIM) + prior_weight·½·mean(z²)
    (the last term keeps latents where the entropy coder's N(0, 1) prior makes them cheap).
    With ``bits``, the last ``ste_fraction`` of the steps optimise the quantized latent through a
    straight-through estimator. Returns float32 (N, latent). ``progress``: callable(done_steps).
    """
    z = tf.constant(np.asarray(z0, dtype=np.float32))
    if steps <= 0:
        return z.numpy()
    target = tf.constant(targets, dtype=tf.float32)
    m, v = tf.zeros_like(z), tf.zeros_like(z)
    step_size = quant_step(bits) if bits else 1.0
    limit = quant_limit(bits) if bits else 0
    ste_from = steps - int(round(steps * ste_fraction)) if bits else steps
    lr_t = tf.constant(lr, tf.float32)
    done, chunk = 0, 25
    while done < steps:
        quantized = done >= ste_from
        end = min(steps, done + chunk, steps if quantized else ste_from)
        run = _adam_loop(generator, ssim_weight, prior_weight, step_size, limit, quantized)
        z, m, v = run(z, m, v, target, tf.constant(done), tf.constant(end - done), lr_t)
        done = end
        if progress is not None:
            progress(done)
    return z.numpy()


def load_mirror(path: str | os.PathLike):
    """Load a ``.keras`` model (the TF mirror) with Keras alone."""
    import keras

    return keras.models.load_model(path, compile=False)


def predict(model, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run a Keras model in inference mode in batches; returns float32 numpy."""
    outs = [model(tf.constant(inputs[i : i + batch]), training=False).numpy()
            for i in range(0, len(inputs), batch)]
    return np.concatenate(outs, axis=0).astype(np.float32)
