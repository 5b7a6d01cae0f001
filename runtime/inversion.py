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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from runtime.bitstream import quant_limit, quant_step  # noqa: E402


def _ste_quantize(z, step: float, limit: int):
    q = tf.clip_by_value(tf.round(z / step), -limit, limit) * step
    return z + tf.stop_gradient(q - z)


def _make_loss(generator, ssim_weight: float):
    def per_image(z, target):
        out = generator(z, training=False)
        loss = tf.reduce_mean(tf.square(out - target), axis=[1, 2, 3])
        if ssim_weight > 0:
            ssim = tf.image.ssim(out, target, max_val=2.0, filter_size=11)
            loss = loss + ssim_weight * (1.0 - ssim)
        return loss

    return per_image


def descend(generator, targets: np.ndarray, z0: np.ndarray, steps: int = 150, lr: float = 0.05,
            ssim_weight: float = 0.0, bits: int | None = None, ste_fraction: float = 0.3,
            progress=None) -> np.ndarray:
    """Batched gradient descent on latents.

    generator: a Keras model z -> image in [-1, 1]. targets: float32 (N, H, W, 3) in [-1, 1].
    z0: (N, latent) start. With ``bits``, the last ``ste_fraction`` of the steps optimise the
    quantized latent through a straight-through estimator. Returns float32 (N, latent).
    ``progress``: optional callable(done_steps) for a progress bar.
    """
    if steps <= 0:
        return np.asarray(z0, dtype=np.float32)
    per_image = _make_loss(generator, ssim_weight)
    target = tf.constant(targets, dtype=tf.float32)
    z = tf.Variable(np.asarray(z0, dtype=np.float32))
    m = tf.Variable(tf.zeros_like(z))
    v = tf.Variable(tf.zeros_like(z))
    b1, b2, eps = 0.9, 0.999, 1e-8
    step_size = quant_step(bits) if bits else 1.0
    limit = quant_limit(bits) if bits else 0
    ste_from = steps - int(round(steps * ste_fraction)) if bits else steps

    @tf.function(reduce_retracing=True)
    def run(first, count, quantized):
        for i in tf.range(count):
            t = tf.cast(first + i + 1, tf.float32)
            with tf.GradientTape() as tape:
                zz = _ste_quantize(z, step_size, limit) if quantized else z
                loss = tf.reduce_sum(per_image(zz, target))  # sum: each image its own scale
            g = tape.gradient(loss, z)
            m.assign(b1 * m + (1 - b1) * g)
            v.assign(b2 * v + (1 - b2) * g * g)
            lr_t = lr * tf.sqrt(1 - b2**t) / (1 - b1**t)
            z.assign_sub(lr_t * m / (tf.sqrt(v) + eps))
        return z

    chunk = 25
    done = 0
    while done < steps:
        quantized = done >= ste_from
        end = min(steps, ste_from if not quantized and ste_from > done else steps, done + chunk)
        run(tf.constant(done), tf.constant(end - done), quantized)
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
