"""The training-time rate model, in ``keras.ops`` (any Keras backend: TensorFlow here, PyTorch or
JAX on a machine without TensorFlow): the learned gain vectors of the rate levels and the
per-channel (per-context) logistic-mixture density of the latent, the bits it prices, and the
straight-through round. The one definition; the file's coder does not use these floats (export
builds its integer tables from the training set's symbols, ``runtime.entropy``).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

MIX = 3  # logistic components per channel
STATE_KEYS = ("log_gain", "log_inv_gain", "mix_logits", "means", "log_scales")


def mixture_likelihood(q, gain, mix_logits, means, log_scales):
    """P(the symbol interval around q) under a per-channel mixture of logistics in y-space.

    q: scaled latents (N, H, W, C); gain: broadcastable to q. The interval [q − ½, q + ½] in scaled
    units is [(q − ½)/g, (q + ½)/g] in y-space. Evaluated on the unsaturated side of the sigmoid
    (Ballé's trick) and floored at 1e-9.
    """
    upper = ops.expand_dims((q + 0.5) / gain, -1)
    lower = ops.expand_dims((q - 0.5) / gain, -1)
    s = ops.exp(log_scales)
    a, b = (upper - means) / s, (lower - means) / s
    sign = -ops.sign(a + b)
    sign = ops.where(sign == 0, ops.ones_like(sign), sign)
    mass = ops.abs(ops.sigmoid(sign * a) - ops.sigmoid(sign * b))
    w = ops.softmax(mix_logits, axis=-1)
    return ops.maximum(ops.sum(w * mass, axis=-1), 1e-9)


def mixture_bits(q, gain, mix_logits, means, log_scales, coded=None):
    """Bits per image (N,) of scaled latents q under :func:`mixture_likelihood`; with ``coded`` (a 0/1
    mask broadcastable to q, channels last), only the coded channels' (the others cost nothing in
    the file)."""
    nll = -ops.log(mixture_likelihood(q, gain, mix_logits, means, log_scales))
    if coded is not None:
        nll = nll * coded
    return ops.sum(nll, axis=[1, 2, 3]) / math.log(2.0)


def ste_round(v):
    """round(v) forward, identity backward (straight-through estimator)."""
    return v + ops.stop_gradient(ops.round(v) - v)


def context_of(symbols, k: int, coded=None):
    """:func:`runtime.entropy.contexts` (the one definition) on (N, H, W, C) integer-valued tensors.
    ``coded``: the channels the file codes at each image's level ((C,) bool, or a 0/1 tensor
    broadcastable to the symbols; every channel when None)."""
    from runtime.entropy import contexts

    mask = np.ones(int(symbols.shape[-1]), bool) if coded is None else coded
    return contexts(symbols, mask, k, xp=ops)


class RateModel:
    """Gain vectors of the rate levels and the per-channel logistic-mixture density of y, as Keras
    variables (``variables``: the trainable ones, in :data:`STATE_KEYS` order)."""

    def __init__(self, channels: int, levels: int, gain_range=(0.15, 6.0), contexts: int = 1):
        self.contexts = contexts
        shape = (channels, MIX) if contexts == 1 else (channels, contexts, MIX)
        lo, hi = math.log(gain_range[0]), math.log(gain_range[1])
        log_g = np.linspace(lo, hi, levels, dtype=np.float32)[:, None] * np.ones((1, channels), np.float32)
        means = np.random.default_rng(0).normal(0, 0.3, (channels, MIX)).astype(np.float32)
        if contexts > 1:
            means = np.repeat(means[:, None], contexts, axis=1)
        init = {"log_gain": log_g, "log_inv_gain": -log_g, "mix_logits": np.zeros(shape, np.float32),
                "means": means, "log_scales": np.zeros(shape, np.float32)}
        for key in STATE_KEYS:
            setattr(self, key, keras.Variable(init[key], name=key, dtype="float32"))
        self.variables = [getattr(self, key) for key in STATE_KEYS]

    @property
    def trainable_variables(self) -> list:
        return self.variables

    def gains(self, level):
        return ops.exp(ops.take(self.log_gain, level, axis=0)), ops.exp(ops.take(self.log_inv_gain, level, axis=0))

    def bits(self, q, gain, symbols=None, coded=None):
        """Per-image bits of scaled latents q (N, H, W, C) at gain (broadcastable); with contexts,
        each position's density is its context's, read from the integer ``symbols`` (round(q)).
        ``coded`` (0/1, broadcastable to q): the channels the file codes at each image's level, as
        the coder counts them: the others cost nothing and do not count in the contexts (None: all)."""
        if self.contexts == 1:
            return mixture_bits(q, gain, self.mix_logits, self.means, self.log_scales, coded)
        pick = ops.one_hot(context_of(symbols, self.contexts, coded), self.contexts)  # (N, H, W, C, K)
        params = [ops.einsum("nhwck,ckm->nhwcm", pick, v) for v in (self.mix_logits, self.means, self.log_scales)]
        return mixture_bits(q, gain, *params, coded)

    def numpy_state(self) -> dict:
        return {key: np.array(ops.convert_to_numpy(getattr(self, key))) for key in STATE_KEYS}
