"""Keras builders for the generator, the discriminator and the amortized encoder.

Reference design: generator = Dense + LeakyReLU, then upsample + conv (+ LeakyReLU) stages up to
the image size, a last conv to 3 channels with tanh; discriminator = conv, max-pool, conv,
max-pool, dense, output. Only standard Keras layers are used so a saved ``.keras`` file loads with
Keras alone (no project code), which is what the runtime's TF mirror needs.

Choices (recorded as asked):
- Optional BatchNorm in the generator (``norm="batch"``) stabilises plain GAN training; at export
  it runs in inference mode and folds into the ONNX graph.
- Nearest-neighbour upsampling followed by a 3×3 conv avoids the checkerboard artefacts of
  transposed convolutions and keeps the decoder a plain stack of ops onnxruntime runs fast.
- The encoder (image → latent) mirrors the generator with stride-2 convs; it gives the latent
  inversion a starting point close to the answer (issue 8's amortized encoder).
"""

from __future__ import annotations

import math

import keras
from keras import layers


def _stages(image_size: int) -> int:
    n = int(round(math.log2(image_size / 4)))
    if image_size < 8 or 4 * 2**n != image_size:
        raise ValueError(f"image size must be 4·2^k (8, 16, 32, 64, ...), got {image_size}")
    return n


def _widths(widths, count: int) -> list[int]:
    widths = list(widths)
    if len(widths) < count:
        widths += [max(8, widths[-1] // 2)] * (count - len(widths))
    return widths[:count]


def build_generator(latent_dim: int, image_size: int = 32, widths=(256, 128, 64, 32),
                    norm: str = "batch", name: str = "generator") -> keras.Model:
    """z (N, latent_dim) -> image (N, size, size, 3) in [-1, 1]."""
    n = _stages(image_size)
    w = _widths(widths, n + 1)
    z = keras.Input((latent_dim,), name="z")
    x = layers.Dense(4 * 4 * w[0], name="project")(z)
    if norm == "batch":
        x = layers.BatchNormalization(name="project_bn")(x)
    x = layers.LeakyReLU(0.2, name="project_act")(x)
    x = layers.Reshape((4, 4, w[0]), name="to_4x4")(x)
    for i in range(1, n + 1):
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"up{i}")(x)
        x = layers.Conv2D(w[i], 3, padding="same", name=f"conv{i}")(x)
        if norm == "batch":
            x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"act{i}")(x)
    image = layers.Conv2D(3, 3, padding="same", activation="tanh", name="image")(x)
    return keras.Model(z, image, name=name)


def build_discriminator(image_size: int = 32, widths=(64, 128, 256), name: str = "discriminator") -> keras.Model:
    """image (N, size, size, 3) -> logit (N, 1): conv/max-pool stages, then dense, then output."""
    w = list(widths)
    x_in = keras.Input((image_size, image_size, 3), name="image")
    x = x_in
    for i, width in enumerate(w):
        x = layers.Conv2D(width, 3, padding="same", name=f"conv{i + 1}")(x)
        x = layers.LeakyReLU(0.2, name=f"act{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(w[-1], name="dense")(x)
    x = layers.LeakyReLU(0.2, name="dense_act")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(x_in, logit, name=name)


def build_encoder(latent_dim: int, image_size: int = 32, widths=(32, 64, 128, 256),
                  standardize: bool = True, name: str = "encoder") -> keras.Model:
    """image (N, size, size, 3) in [-1, 1] -> latent (N, latent_dim).

    With ``standardize`` the latent passes a BatchNormalization without scale or offset, so each
    dimension has zero mean and unit variance: the codec's N(0, 1) prior and the training-time
    quantization noise then have a fixed meaning.
    """
    n = _stages(image_size)
    w = _widths(widths, n + 1)
    x_in = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Conv2D(w[0], 3, padding="same", name="conv0")(x_in)
    x = layers.LeakyReLU(0.2, name="act0")(x)
    for i in range(1, n + 1):
        x = layers.Conv2D(w[i], 3, strides=2, padding="same", name=f"conv{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"act{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    z = layers.Dense(latent_dim, name="latent")(x)
    if standardize:
        z = layers.BatchNormalization(center=False, scale=False, name="latent_std")(z)
    return keras.Model(x_in, z, name=name)


def round_weights_to_half(model) -> None:
    """Round every weight tensor of ``model`` with at least ``runtime.bundle.HALF_MIN_SIZE`` values
    to the nearest float16 (kept as float32): the exported ONNX files then store them as float16
    (``export.onnx.store_half``, half the bytes) and the TF mirror computes exactly the same
    function. Measured on the airplane bundle: no change in validation PSNR at any level at 0.01 dB
    resolution."""
    import numpy as np

    from runtime.bundle import HALF_MIN_SIZE

    model.set_weights([w.astype(np.float16).astype(w.dtype) if w.size >= HALF_MIN_SIZE and w.dtype == np.float32
                       else w for w in model.get_weights()])


INT8_MAX = 127  # int8 kernels: q in [-127, 127], symmetric


def int8_kernels(w, axes=(0, 1)):
    """``w`` ≈ ``q · s``: ``q`` int8 in [-INT8_MAX, INT8_MAX] and ``s`` a float16-exact float32 scale
    per kernel (the max |w| over ``axes``, the kernel's spatial axes: (0, 1) in Keras's layout,
    (2, 3) in ONNX's, the same groups), kept as a broadcastable array. ``q · s`` is exact in float32
    (7 + 11 significant bits), so a graph that casts ``q`` and multiplies by ``s`` computes exactly
    the float32 weights :func:`round_kernels_to_int8` leaves in the Keras mirror."""
    import numpy as np

    s = (np.abs(w).max(axis=axes, keepdims=True) / INT8_MAX).astype(np.float16).astype(np.float32)
    s = np.maximum(s, np.float32(2.0**-24))  # the smallest float16: an all-zero kernel stays zero
    q = np.clip(np.rint(w / s), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, s


def round_kernels_to_int8(model) -> None:
    """Round every 4-D convolution kernel of ``model`` with at least ``runtime.bundle.HALF_MIN_SIZE``
    values, except the model's last one, to :func:`int8_kernels` (kept as float32): the exported ONNX
    file then stores them as int8 and a float16 scale per kernel (``export.onnx.store_int8``, ~half
    of float16's bytes) and the TF mirror computes exactly the same function. The last kernel (the
    generator's output layer, 2 % of its weights) stays float16: int8 there alone cost 1.1 dB at the
    finest level. Measured on the airplane generator, 200 val images, the encoder's latents: −0.001
    dB at the default level, −0.003 at level 32, −0.018 at 48, −0.039 at 64; per output channel
    instead of per kernel lost 0.03/0.12/0.25 dB at levels 32/48/64."""
    import numpy as np

    from runtime.bundle import HALF_MIN_SIZE

    weights = model.get_weights()
    kernels = [i for i, w in enumerate(weights) if w.ndim == 4 and w.dtype == np.float32]
    for i in kernels[:-1]:
        if weights[i].size >= HALF_MIN_SIZE:
            q, s = int8_kernels(weights[i])
            weights[i] = q.astype(np.float32) * s
    model.set_weights(weights)


def downsampling(arch: str, widths) -> int:
    """Image side / latent side of an rd design: 8 for conv; 2^(len(widths) + 1) for gdn (one
    stride-2 stage per width, and the latent's own)."""
    return 2 ** (len(widths) + 1) if arch == "gdn" else 8
