"""Encode-time refinement with gradients from the TF mirror: the only module in runtime that
imports TensorFlow. Decoding never imports it.

The encoder's latent y is a good start, not the best file: :func:`refine` runs batched Adam on
the scaled latent u (one quantization step = 1; started at u = y·gain) to minimise the same
rate–distortion loss the model was trained with, per image at its own rate level:

    bits(u) / pixels + λ_level · MSE₂₅₅(G(u · inv_gain), x)

on the continuous relaxation: the generator sees u itself, not round(u). (Measured on the GDN
bundles: a straight-through round lets Adam flip the many zero symbols back and forth and makes
the file worse than its start, −0.5 to −2 dB at the same level; the relaxation lowers the RD cost
by ~6 %.) The rate is the entropy coder's own cost of each symbol under the bundle's integer
tables (``-log2(freq / 2^precision)``), interpolated linearly between integers
(:func:`table_bits`), so the refinement trades exactly the bits the file will hold. (The training
density, :func:`mixture_likelihood`, is only the training-time proxy.) The caller rounds the
result, fits it to a byte budget, and measures it with onnxruntime, as the decoder will.
"""

from __future__ import annotations

import math
import os
import weakref

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from runtime.metrics import MSE_SCALE  # noqa: E402


def mixture_likelihood(q, gain, mix_logits, means, log_scales):
    """P(the symbol interval around q) under a per-channel mixture of logistics in y-space.

    q: scaled latents (N, H, W, C); gain: broadcastable to q. The interval [q − ½, q + ½] in scaled
    units is [(q − ½)/g, (q + ½)/g] in y-space. Evaluated on the unsaturated side of the sigmoid
    (Ballé's trick) and floored at 1e-9.
    """
    upper = ((q + 0.5) / gain)[..., None]
    lower = ((q - 0.5) / gain)[..., None]
    s = tf.exp(log_scales)
    a, b = (upper - means) / s, (lower - means) / s
    sign = -tf.sign(a + b)
    sign = tf.where(sign == 0, tf.ones_like(sign), sign)
    mass = tf.abs(tf.sigmoid(sign * a) - tf.sigmoid(sign * b))
    w = tf.nn.softmax(mix_logits, axis=-1)
    return tf.maximum(tf.reduce_sum(w * mass, axis=-1), 1e-9)


def mixture_bits(q, gain, mix_logits, means, log_scales):
    """Bits per image (N,) of scaled latents q under :func:`mixture_likelihood`."""
    p = mixture_likelihood(q, gain, mix_logits, means, log_scales)
    return tf.reduce_sum(-tf.math.log(p), axis=[1, 2, 3]) / math.log(2.0)


def ste_round(v):
    """round(v) forward, identity backward (straight-through estimator)."""
    return v + tf.stop_gradient(tf.round(v) - v)


def table_bits(u, costs, lo):
    """Bits per image (N,) of scaled latents u (N, H, W, C) under per-image code-length tables.

    costs: (N, H, W, C, K) bits of symbol ``lo + k`` at each position (each position has its own
    context's table; large past a table's end); lo: (N, H, W, C), the symbol of costs[..., 0] at
    each position. Exact at integers, linear in between, clamped to the K symbols.
    """
    k = tf.shape(costs)[-1]
    idx = tf.clip_by_value(u - lo, 0.0, tf.cast(k - 1, tf.float32))
    i0 = tf.floor(idx)
    frac = idx - i0
    i0 = tf.cast(i0, tf.int32)
    i1 = tf.minimum(i0 + 1, k - 1)
    c0 = tf.gather(costs, i0[..., None], batch_dims=4)[..., 0]
    c1 = tf.gather(costs, i1[..., None], batch_dims=4)[..., 0]
    return tf.reduce_sum((1.0 - frac) * c0 + frac * c1, axis=[1, 2, 3])


def weighted_mse(generator, u, target, inv_gain, lam):
    """Per image λ · MSE₂₅₅(G(u · inv_gain), x): the distortion term of the loss, for refinement and
    for the polishing gradient alike."""
    out = generator(u * inv_gain, training=False)
    return lam * (tf.reduce_mean(tf.square(out - target), axis=[1, 2, 3]) * MSE_SCALE)


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _adam_loop(generator):
    """A compiled Adam loop for one generator; traced once per input shape."""
    if generator in _COMPILED:
        return _COMPILED[generator]
    b1, b2, eps = 0.9, 0.999, 1e-8

    @tf.function(reduce_retracing=True)
    def run(u, m, v, target, inv_gain, lam, costs, lo, first, count, lr):
        pixels = tf.cast(tf.shape(target)[1] * tf.shape(target)[2], tf.float32)
        for i in tf.range(count):
            t = tf.cast(first + i + 1, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(u)
                loss = tf.reduce_sum(table_bits(u, costs, lo) / pixels + weighted_mse(generator, u, target, inv_gain, lam))
            g = tape.gradient(loss, u)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            u = u - lr * tf.sqrt(1 - b2**t) / (1 - b1**t) * m / (tf.sqrt(v) + eps)
        return u, m, v

    _COMPILED[generator] = run
    return run


def refine(generator, targets: np.ndarray, start: np.ndarray, inv_gains: np.ndarray, lambdas: np.ndarray,
           costs: np.ndarray, lo: np.ndarray, steps: int, lr: float = 0.03, progress=None) -> np.ndarray:
    """Batched Adam on scaled latents, each image at its own level.

    generator: Keras model (dequantized latent -> image in [-1, 1]). targets: float32 (N, S, S, 3)
    in [-1, 1]. start: (N, H, W, C) scaled latents (y·gain). inv_gains: (N, C) per image; lambdas:
    (N,); costs (N, H, W, C, K) and lo (N, H, W, C): each image's code lengths per position and symbol (see
    :func:`table_bits`). Returns float32 (N, H, W, C) scaled latents (round them for the symbols).
    ``progress``: callable(done_steps).
    """
    u = tf.constant(np.asarray(start, np.float32))
    if steps <= 0:
        return u.numpy()
    args = [tf.constant(np.asarray(a, np.float32)) for a in (targets, np.asarray(inv_gains)[:, None, None, :],
                                                               lambdas, costs, lo)]
    m, v = tf.zeros_like(u), tf.zeros_like(u)
    run = _adam_loop(generator)
    lr_t = tf.constant(lr, tf.float32)
    done, chunk = 0, 25
    while done < steps:
        end = min(steps, done + chunk)
        u, m, v = run(u, m, v, *args, tf.constant(done), tf.constant(end - done), lr_t)
        done = end
        if progress is not None:
            progress(done)
    return u.numpy()


_GRADIENTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def distortion_gradient(generator, targets: np.ndarray, u: np.ndarray, inv_gains: np.ndarray,
                        lambdas: np.ndarray) -> np.ndarray:
    """∂(λ · MSE₂₅₅(G(u · inv_gain), x)) / ∂u per image at scaled latents u (N, H, W, C): what a
    change of one symbol does to the distortion term of the loss, to first order. targets, inv_gains
    and lambdas as in :func:`refine`."""
    if generator not in _GRADIENTS:
        @tf.function(reduce_retracing=True)
        def grad(u, target, inv_gain, lam):
            with tf.GradientTape() as tape:
                tape.watch(u)
                loss = tf.reduce_sum(weighted_mse(generator, u, target, inv_gain, lam))
            return tape.gradient(loss, u)

        _GRADIENTS[generator] = grad
    args = [tf.constant(np.asarray(a, np.float32)) for a in (u, targets, np.asarray(inv_gains)[:, None, None, :],
                                                               lambdas)]
    return _GRADIENTS[generator](*args).numpy()


def load_mirror(path: str | os.PathLike):
    """Load a ``.keras`` model (the TF mirror) with Keras alone (and the codec's own layers)."""
    import keras

    import runtime.layers  # noqa: F401  (registers GDN with Keras)

    return keras.models.load_model(path, compile=False)


def predict(model, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run a Keras model in inference mode in batches; returns float32 numpy."""
    outs = [model(tf.constant(inputs[i : i + batch]), training=False).numpy()
            for i in range(0, len(inputs), batch)]
    return np.concatenate(outs, axis=0).astype(np.float32)
