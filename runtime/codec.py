"""The codec API: ``Codec(model).encode(images) -> list[bytes]``, ``.decode(data) -> ndarray``.

Encoding (TensorFlow is imported only when encoding starts, in runtime.inversion):

1. Candidates, evaluated with onnxruntime: the amortized encoder's latent E(x) when the bundle has
   one, the prior's mode (0) and ``candidates`` random N(0, 1) latents; the best by MSE starts.
2. Batched gradient descent on the latents with the TF mirror (``generator.keras``), loss
   MSE + ``ssim_weight``·(1 − SSIM) + ``prior_weight``·½·mean(z²) (a rate term: latents far from
   the N(0, 1) prior cost more bytes); the last part of the steps is quantization-aware (the
   generator sees the quantized latent, straight-through gradient).
3. Quantize; evaluate with onnxruntime exactly as the decoder will (one image per run, same
   session settings); keep per image whichever of the refined or starting latent decodes better.
4. Entropy-code into the latent.bin bitstream (runtime.bitstream).

Decoding reads the header, finds the bundle by model id, checks integrity, runs generator.onnx on
CPU. It imports numpy, onnxruntime, Pillow and constriction only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from runtime import bitstream, metrics
from runtime.bundle import Bundle, bundles_for_prefix, find_bundle
from runtime.errors import CodecError
from runtime.images import from_unit_range, restore_size, to_model_size, to_unit_range

MIRROR_TOLERANCE = 1e-4
DEFAULT_PRIOR_WEIGHT = 0.01
DEFAULT_STEPS = 50  # measured: within 0.2 dB of a 1,000-step inversion at ~1/20 of the time


@dataclass
class EncodeResult:
    """One encoded image: the file bytes and what the decoder will show."""

    data: bytes
    reconstruction: np.ndarray  # uint8 (S, S, 3), exactly what decode() returns (before --keep-size)
    bits: int
    clipped: int
    quality: dict = field(default_factory=dict)

    @property
    def num_bytes(self) -> int:
        return len(self.data)


class Codec:
    """Encode images to latent.bin bytes and decode them back with one model bundle."""

    def __init__(self, model=None, threads: int = 1):
        self.bundle = model if isinstance(model, Bundle) else find_bundle(model, threads=threads)
        self._mirror = None

    # -- decoding (onnxruntime only) ------------------------------------------------------------

    def decode_symbols(self, symbols: np.ndarray, bits: int) -> np.ndarray:
        """Quantized symbols (latent_dim,) -> uint8 image (S, S, 3): the decoder's output."""
        z = bitstream.dequantize(symbols, bits)[None]
        return from_unit_range(self.bundle.generate(z))[0]

    def decode(self, data: bytes, keep_size: bool = True) -> np.ndarray:
        """latent.bin bytes -> uint8 RGB image (original size when the file stores it)."""
        header, symbols = bitstream.unpack(data, self.bundle.model_id_bytes, self.bundle.latent_dim)
        image = self.decode_symbols(symbols, header.bits)
        if keep_size and header.size:
            image = restore_size(image, *header.size)
        return image

    # -- encoding (TF mirror for gradients) -----------------------------------------------------

    @property
    def mirror(self):
        """The TF mirror, verified to compute the same function as generator.onnx."""
        if self._mirror is None:
            from runtime.bundle import GENERATOR_KERAS
            from runtime.inversion import load_mirror, predict

            path = self.bundle.path(GENERATOR_KERAS)
            if not path.exists():
                raise CodecError(f"{self.bundle.directory}: no {GENERATOR_KERAS}; this bundle can decode but not encode")
            try:
                mirror = load_mirror(path)
            except Exception as exc:  # keras raises many types for a bad file
                raise CodecError(f"{path}: cannot load the TF mirror ({exc})") from None
            z = np.random.default_rng(1234).standard_normal((8, self.bundle.latent_dim)).astype(np.float32)
            diff = float(np.max(np.abs(predict(mirror, z) - self.bundle.generate(z))))
            if not diff <= MIRROR_TOLERANCE:
                raise CodecError(f"TF mirror and generator.onnx disagree (max abs diff {diff:.2e}); refusing to encode")
            self._mirror = mirror
        return self._mirror

    def prepare(self, images) -> tuple[np.ndarray, list]:
        """Bring images (paths, arrays, PIL images) to model size: (uint8 (N,S,S,3), original sizes)."""
        from runtime.images import load_image

        size = self.bundle.image_size
        out, sizes = [], []
        for im in images:
            if isinstance(im, np.ndarray):
                arr = im
                if arr.ndim == 2:
                    arr = np.repeat(arr[..., None], 3, axis=2)
                sizes.append((arr.shape[1], arr.shape[0]))
                out.append(to_model_size(arr.astype(np.uint8) if arr.dtype != np.uint8 else arr, size))
            elif hasattr(im, "size") and hasattr(im, "mode"):
                sizes.append(im.size)
                out.append(to_model_size(im, size))
            else:
                arr, original = load_image(im, size)
                sizes.append(original)
                out.append(arr)
        if not out:
            raise CodecError("no images to encode")
        return np.stack(out), sizes

    def initial_latents(self, targets: np.ndarray, candidates: int = 8, seed: int = 0) -> np.ndarray:
        """Best of E(x), 0 and ``candidates`` random latents per image, judged by onnxruntime."""
        n, dim = len(targets), self.bundle.latent_dim
        rng = np.random.default_rng(seed)
        pool = [np.zeros((n, dim), np.float32)]
        if self.bundle.has_encoder:
            pool.append(self.bundle.encode_latents(targets))
        pool += [rng.standard_normal((n, dim)).astype(np.float32) for _ in range(candidates)]
        best = pool[0]
        best_err = np.full(n, np.inf)
        for z in pool:
            err = ((self.bundle.generate(z) - targets) ** 2).mean(axis=(1, 2, 3))
            better = err < best_err
            best = np.where(better[:, None], z, best)
            best_err = np.minimum(err, best_err)
        return best

    def encode_detailed(self, images, bits: int | None = None, steps: int = DEFAULT_STEPS, lr: float = 0.05,
                        ssim_weight: float = 0.05, prior_weight: float = DEFAULT_PRIOR_WEIGHT,
                        candidates: int = 8, mode: str = "range",
                        keep_size: bool = False, original_sizes: list | None = None,
                        target_bytes: int | None = None,
                        target_psnr: float | None = None, ste_fraction: float = 0.3,
                        progress=None, seed: int = 0) -> list[EncodeResult]:
        """Encode a batch; every image gets its own latent. Returns bytes and decoder-exact quality.

        Rate: ``bits`` fixes the quantization; ``target_bytes`` picks per image the finest bit
        depth whose file fits; ``target_psnr`` the coarsest that reaches the PSNR.
        ``keep_size`` stores each original (width, height) in the file — taken from the inputs, or
        from ``original_sizes`` when the inputs were already brought to model size.
        """
        if target_bytes is not None and target_psnr is not None:
            raise CodecError("give --target-bytes or --target-psnr, not both")
        if target_bytes is None and target_psnr is None:
            bits = self.bundle.default_bits if bits is None else bits
            bitstream.quant_step(bits)  # validates
        if mode not in bitstream.MODES:
            raise CodecError(f"unknown coding mode {mode!r}")
        if steps < 0:
            raise CodecError("steps must be >= 0")
        pixels, sizes = self.prepare(images)
        if original_sizes is not None:
            if len(original_sizes) != len(pixels):
                raise CodecError("original_sizes must give one size per image")
            sizes = [tuple(s) for s in original_sizes]
        n = len(pixels)
        targets = to_unit_range(pixels)
        z0 = self.initial_latents(targets, candidates, seed)
        ste_steps = int(round(steps * ste_fraction))
        plain_steps = steps - ste_steps

        def tick(offset):
            def report(done):
                if progress is not None:
                    progress(offset + done)
            return report

        z = z0
        if plain_steps > 0:
            from runtime.inversion import descend

            z = descend(self.mirror, targets, z0, steps=plain_steps, lr=lr, ssim_weight=ssim_weight,
                        prior_weight=prior_weight,
                        progress=tick(0))
        keep = [sizes[i] if keep_size else None for i in range(n)]

        def pack(i, symbols, b):
            return bitstream.pack(symbols, b, self.bundle.model_id_bytes, mode, size=keep[i])

        if target_bytes is None and target_psnr is None:
            chosen = np.full(n, bits)
        else:
            chosen = np.array([self._choose_bits(z[i], pixels[i], target_bytes, target_psnr,
                                                 lambda s, b, i=i: pack(i, s, b)) for i in range(n)])
        zq = z.copy()
        if ste_steps > 0:
            from runtime.inversion import descend

            for b in np.unique(chosen):
                idx = np.flatnonzero(chosen == b)
                zq[idx] = descend(self.mirror, targets[idx], z[idx], steps=ste_steps, lr=lr * 0.5,
                                  ssim_weight=ssim_weight, prior_weight=prior_weight,
                                  bits=int(b), ste_fraction=1.0,
                                  progress=tick(plain_steps))
        results = []
        for i in range(n):
            b = int(chosen[i])
            options = []
            for cand in (zq[i], z[i], z0[i]):
                symbols, clipped = bitstream.quantize(cand, b)
                options.append((pack(i, symbols, b), symbols, clipped))
            if target_bytes is not None and any(len(o[0]) <= target_bytes for o in options):
                options = [o for o in options if len(o[0]) <= target_bytes]
            best = None
            for data, symbols, clipped in options:
                recon = self.decode_symbols(symbols, b)
                err = metrics.mse(recon, pixels[i])
                if best is None or err < best[0]:
                    best = (err, data, clipped, recon)
            _, data, clipped, recon = best
            quality = {k: float(v) for k, v in metrics.quality(recon, pixels[i]).items()}
            results.append(EncodeResult(data, recon, b, clipped, quality))
        return results

    def _choose_bits(self, z: np.ndarray, pixels: np.ndarray, target_bytes, target_psnr, pack) -> int:
        """Pick the bit depth for one latent: finest that fits target_bytes, or coarsest reaching target_psnr."""
        depths = range(bitstream.MIN_BITS, bitstream.MAX_BITS + 1)
        if target_bytes is not None:
            fitting = [b for b in depths if len(pack(bitstream.quantize(z, b)[0], b)) <= target_bytes]
            return max(fitting) if fitting else bitstream.MIN_BITS
        for b in depths:
            symbols, _ = bitstream.quantize(z, b)
            if metrics.psnr(self.decode_symbols(symbols, b), pixels) >= target_psnr:
                return b
        return bitstream.MAX_BITS

    def encode(self, images, **kwargs) -> list[bytes]:
        """Encode images (paths, uint8 arrays or PIL images) -> list of latent.bin bytes."""
        return [r.data for r in self.encode_detailed(images, **kwargs)]


def decode_file_bytes(data: bytes, model=None, threads: int = 1) -> tuple[np.ndarray, Bundle]:
    """Decode latent.bin bytes, finding the bundle by the id in the header unless ``model`` is given.

    A forced ``model`` must still match the file's id: a file from model A is never decoded by B.
    """
    header = bitstream.read_header(data)
    if model is not None:
        bundle = model if isinstance(model, Bundle) else find_bundle(model, threads)
        return Codec(bundle).decode(data), bundle
    candidates = bundles_for_prefix(header.model_id_prefix, threads)
    if not candidates:
        raise CodecError(f"no model with id {header.model_id_prefix.hex()}… is installed "
                         f"(looked in models/ and $GANCODEC_MODELS); pass --model DIR")
    errors = []
    for bundle in candidates:  # 16-bit prefixes may collide; the CRC (seeded by the full id) decides
        try:
            return Codec(bundle).decode(data), bundle
        except CodecError as exc:
            errors.append(str(exc))
    raise CodecError(errors[0])


def ladder(bundle: Bundle) -> list[Bundle]:
    """The bundles trained on the same data set at the same image size (a ladder of latent sizes),
    found on the model search path, smallest latent first; always includes ``bundle`` itself."""
    from runtime.bundle import load_bundle, manifests

    rungs = {bundle.model_id: bundle}
    for directory, manifest in manifests():
        if (manifest.get("dataset") == bundle.manifest.get("dataset")
                and manifest.get("image_size") == bundle.image_size and manifest["model_id"] not in rungs):
            try:
                rungs[manifest["model_id"]] = load_bundle(directory, bundle.threads)
            except CodecError:
                continue  # a broken sibling is skipped; the requested bundle was verified already
    return sorted(rungs.values(), key=lambda b: (b.latent_dim, b.name))


def encode_to_target(images, model=None, target_bytes: int | None = None, target_psnr: float | None = None,
                     use_ladder: bool = True, **options) -> list[tuple[EncodeResult, Bundle]]:
    """Rate control across a ladder of models: per image, the best file under ``target_bytes``
    (highest PSNR) or the smallest file reaching ``target_psnr``; each model picks its bit depth."""
    if (target_bytes is None) == (target_psnr is None):
        raise CodecError("give exactly one of target_bytes and target_psnr")
    first = Codec(model)
    rungs = ladder(first.bundle) if use_ladder else [first.bundle]
    pixels = None
    per_rung = []
    for b in rungs:
        codec = first if b is first.bundle else Codec(b)
        if pixels is None:
            pixels, sizes = codec.prepare(images)
            options.setdefault("original_sizes", sizes)
        per_rung.append([(r, b) for r in codec.encode_detailed(
            list(pixels), target_bytes=target_bytes, target_psnr=target_psnr, **options)])
    chosen = []
    for options_i in zip(*per_rung):
        if target_bytes is not None:
            fits = [o for o in options_i if o[0].num_bytes <= target_bytes]
            pick = (max(fits, key=lambda o: o[0].quality["psnr"]) if fits
                    else min(options_i, key=lambda o: o[0].num_bytes))
        else:
            reach = [o for o in options_i if o[0].quality["psnr"] >= target_psnr]
            pick = (min(reach, key=lambda o: o[0].num_bytes) if reach
                    else max(options_i, key=lambda o: o[0].quality["psnr"]))
        chosen.append(pick)
    return chosen
