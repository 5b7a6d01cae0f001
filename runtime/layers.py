"""Keras layers of the codec's networks that Keras does not ship: GDN / inverse GDN (Ballé et al.
2016). They live in the runtime because the TF mirror (``*.keras``) must load on the encode path;
importing this module registers them with Keras. The decode path never imports it (ONNX only).

GDN:   y_i = x_i / sqrt(β_i + Σ_j γ_ij x_j²)      inverse GDN: y_i = x_i · sqrt(β_i + Σ_j γ_ij x_j²)

β and γ are kept positive through softplus of free parameters, so gradients never vanish at 0.
In ONNX this is MatMul, Add, Sqrt and Div/Mul on the activations (the softplus folds into
constants), which onnxruntime on every platform and onnxruntime-web run.
"""

from __future__ import annotations

import math

import keras
from keras import ops


def _inv_softplus(v: float) -> float:
    return math.log(math.expm1(v))


@keras.saving.register_keras_serializable(package="gancodec")
class GDN(keras.layers.Layer):
    """Generalized divisive normalization over the channel axis (last), or its inverse."""

    def __init__(self, inverse: bool = False, gamma_init: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.inverse = bool(inverse)
        self.gamma_init = float(gamma_init)

    def build(self, input_shape):
        c = int(input_shape[-1])
        off = _inv_softplus(1e-4)
        diag = _inv_softplus(self.gamma_init)

        def gamma_init(shape, dtype=None):
            eye = ops.eye(c, dtype=dtype or "float32")
            return eye * diag + (1.0 - eye) * off

        self.beta_raw = self.add_weight(name="beta_raw", shape=(c,),
                                        initializer=keras.initializers.Constant(_inv_softplus(1.0)))
        self.gamma_raw = self.add_weight(name="gamma_raw", shape=(c, c), initializer=gamma_init)

    def call(self, x):
        beta = ops.softplus(self.beta_raw) + 1e-6
        gamma = ops.softplus(self.gamma_raw)
        norm = ops.sqrt(ops.matmul(ops.square(x), gamma) + beta)
        return x * norm if self.inverse else x / norm

    def get_config(self):
        return {**super().get_config(), "inverse": self.inverse, "gamma_init": self.gamma_init}
