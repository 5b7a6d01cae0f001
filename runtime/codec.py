"""The codec: one object per bundle, ``Codec(model).compress(images)`` / ``.decompress(data)``.

A bundle is a variable-rate model (``training.rd``): the encoder's spatial latent y is scaled by
the gain vector of a rate level and rounded to integer symbols, range-coded with the level's
integer tables (``runtime.entropy``) into a latent.bin (``runtime.bitstream``). The decoder
multiplies the symbols by the level's inverse gains and runs ``generator.onnx``.

Encoding, stage by stage (each a method below):

1. :meth:`Codec.prepare` — images to model size (uint8; an any-size bundle keeps each image's own
   size, and :meth:`Codec.compress` codes the images of one size together) and their original sizes;
2. :meth:`Codec.analyze` — the encoder's latent y (onnxruntime), of the image padded to the latent
   stride (edge repeated; :meth:`Codec.synthesize` crops the decoder's output back);
3. :meth:`Codec.choose_levels` — per image, the finest level whose file fits ``target_bytes``
   (one level finer does not), or the coarsest whose decoded PSNR reaches ``target_psnr``;
4. :meth:`Codec.refine` — rate–distortion refinement of the continuous latent with gradients
   from the TF mirror (``runtime.inversion``), started from the encoder's latent at the chosen
   level (under a byte budget from the :data:`BUDGET_STARTS`, then fitted: :meth:`Codec.quantize_to_fit`);
5. :meth:`Codec.synthesize` — the decoder's exact output (onnxruntime), for every candidate; per
   image the best candidate under the target is kept (:meth:`Codec.best_of`);
6. :meth:`Codec.flips` — polishing the rounding: :data:`POLISH_ROUNDS` rounds, each trying the
   :data:`POLISH_FLIPS` symbol moves that the TF mirror's gradient says lower the loss most, each
   measured as in 5; with a target the fallback (:func:`image_fallback`: WebP or AVIF) then
   replaces an image's file when a classic codec meets the target better;
7. :meth:`Codec.pack` — the latent.bin bytes (written while fitting, in 4 and 6).

Decoding (:meth:`Codec.decompress`, :func:`decode_file_bytes`) imports numpy, onnxruntime and
Pillow only — never TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from runtime import bitstream, metrics
from runtime.bundle import Bundle, bundles_for_prefix, find_bundle
from runtime.errors import CodecError
from runtime.images import from_unit_range, pad_to, restore_size, to_model_size, to_unit_range

MIRROR_TOLERANCE = 1e-4
DEFAULT_STEPS = 10  # refinement steps per candidate (benchmarks.effort measures the trade-off; 10 is as
# good as 15 at a fixed level and better under a byte budget: chosen on 128 training images each of
# airplane and automobile, see BUDGET_STARTS)
# Under a byte budget, refinement starts from several points, each as (levels finer than the chosen
# one, scale of that level's λ, the weight of distortion): a finer start ends near the budget after
# refinement spends fewer bits, a λ x1.4 start keeps detail that the dead zone then trims more evenly.
# Chosen on 128 *training* images each of airplane and automobile at <= 51 / 63 / 100 / 150 / 250 B,
# best of the 3-start subsets of 11 starts at 10 steps: over the former 4 starts (1, 2, 4 finer and
# (1, 1.4)) at 15 steps, +0.014 / +0.033 / +0.031 / +0.015 / +0.001 dB (airplane) and +0.016 / +0.005 /
# -0.013 / +0.012 / +0.052 dB (automobile), in half the refinement time (4 starts: +0.04 dB, 4/3 the time).
# With the polishing below, the third start (1, 1.4) is worth ~0.01 dB for a third of the refinement,
# and the time goes further in a third polishing round (see POLISH_ROUNDS).
BUDGET_STARTS = ((2, 1.0), (0, 1.4))
# ... and each refined latent is also quantized one level finer and one coarser (y = u / gain, no
# more refinement), then fitted: +0.045 / +0.044 / +0.065 / +0.053 dB at <= 51 / 63 / 89 / 150 B on
# 128 airplane training images, +0.043 / +0.047 / +0.067 / +0.035 dB on automobile (+1 alone: about
# two thirds of that), for 6 more fits and decodes and no more refinement.
REQUANTIZE = (1, -1)
# dead zones tried, smallest first, to fit a refined latent into a byte budget (steps of 0.02: each
# trims a byte or less, so the file fills the budget; steps of 0.1 left 1-3 bytes unused, -0.08 dB)
DEADZONES = tuple(round(0.02 * i, 2) for i in range(31))
# The base encoder (no TensorFlow, so no gradients): under a byte budget the encoder's latent at
# each of these levels finer than the chosen one, fitted by dead zone (quantize_to_fit) and scored
# by onnxruntime decodes and the tables' exact bits (see EFFORTS), beside the encoder's latent at
# the chosen level itself (which fits: starting there too never won, 192 airplane val images at
# <= 51 B: 25.038 dB either way, one decode of five saved)
BASE_STARTS = (1, 2, 3)
# rate control's first pass over the levels: every 4th, then the ones between (the same levels on
# 200 airplane val images at 51..300 B as trying all 65, in a third of the time)
COARSE_LEVELS = 4
#: encoder efforts: "full" refines with the TF mirror's gradients and polishes; "base" runs on the
#: base install (numpy + onnxruntime: the amortized encoder, rate control, BASE_STARTS); "auto" is
#: "full" where TensorFlow imports and "base" where it does not
EFFORTS = ("auto", "full", "base")
COARSER_BY = 7  # with a target, refinement also starts levels/COARSER_BY levels coarser
# Polishing the rounding (Codec.flips): rounds after refinement, each from the best file so far, each
# trying the k best first-order symbol moves for every k of POLISH_FLIPS. On 128 airplane training
# images, mean PSNR over <= 51 / 100 / 200 / 300 B (with 3 starts and REQUANTIZE (1, -1) before):
# no polishing 32.640 dB, 2 rounds 32.761, 3 rounds 32.777, 4 rounds (REQUANTIZE (1,)) 32.787; moves
# (4, 8, 16) 0.012 dB below (2, 4, 8, 16), (3, 6, 12, 24) the same. Kept: 2 starts and 3 rounds,
# +0.098 / +0.126 / +0.161 / +0.130 dB over no polishing with 3 starts (automobile +0.053 / +0.084 /
# +0.130 / +0.146) in about the same time.
POLISH_FLIPS = (2, 4, 8, 16)
POLISH_ROUNDS = 3
# how far refinement can move a latent, in quantization steps per unit of lr·steps: an Adam step is
# at most lr · sqrt(1 - b2^t) / (1 - b1^t) · |m| / sqrt(v) <= lr · (1 - b1) / sqrt(1 - b2) ·
# sqrt(1 / (1 - b1²/b2)) = 7.27 · lr (b1 0.9, b2 0.999; Cauchy–Schwarz on m's sum)
ADAM_REACH = 7.3
DEFAULT_LR = 0.05  # Adam step on the scaled latent (1 = one quantization step); measured on the GDN bundles: 0.05 for 15 steps ≈ 0.03 for 20
ENCODE_THREADS_MAX = 8  # onnxruntime threads for the encoder's batches (its decode of 64 images is ~1 ms each)
UNLIKE_TRAINING_DB = 6.0  # warn when an image decodes this far below the bundle's validation PSNR


@dataclass
class EncodeResult:
    """One encoded image: the file bytes and what the decoder will show."""

    data: bytes
    reconstruction: np.ndarray  # uint8 (H, W, 3), exactly what decompress() returns (before --keep-size)
    level: int | None  # rate level of a latent file; None for an image payload
    kind: str = "latent"  # "latent", or the fallback's format: "webp" or "avif"
    clipped: int = 0  # latent values clipped into the tables' support
    quality: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    encoder: str = "full"  # the effort that ran: "full" (TF refinement) or "base" (no TensorFlow)

    @property
    def num_bytes(self) -> int:
        return len(self.data)


class Candidates(NamedTuple):
    """One candidate file per image of a batch: what :meth:`Codec.best_of` chooses among."""

    levels: np.ndarray  # (N,) rate level of each file
    symbols: np.ndarray  # (N, H, W, C) int32
    files: list  # N latent.bin byte strings
    clipped: np.ndarray  # (N,) latent values clipped into the tables
    decoded: np.ndarray  # (N, H, W, 3) uint8: what the decoder shows (onnxruntime)


class Codec:
    """Compress images to latent.bin bytes and decompress them with one model bundle."""

    def __init__(self, model=None, threads: int = 1, encode_threads: int | None = None):
        """``threads``: onnxruntime threads for decoding (``decompress``); ``encode_threads``: for
        the encoder's batches (its latents and every candidate's decode; default: every core, at
        most :data:`ENCODE_THREADS_MAX`). Outputs do not depend on either."""
        self.bundle = model if isinstance(model, Bundle) else find_bundle(model, threads=threads)
        self.encode_threads = int(encode_threads or min(os.cpu_count() or 1, ENCODE_THREADS_MAX))
        self._mirror = None

    @property
    def levels(self) -> int:
        return self.bundle.levels

    @property
    def default_level(self) -> int:
        return int(self.bundle.manifest.get("default_level", self.levels // 2))

    # -- decoding (onnxruntime only) ------------------------------------------------------------

    def synthesize(self, symbols: np.ndarray, levels, threads: int | None = None, hw=None) -> np.ndarray:
        """Symbols (N, h, w, C) at per-image ``levels`` -> uint8 images (N, H, W, 3): the decoder's
        output, cropped to ``hw`` = (H, W) (default: the whole f·h × f·w; ``threads``:
        onnxruntime's, default the bundle's)."""
        symbols = np.asarray(symbols)
        levels = np.broadcast_to(np.asarray(levels), (len(symbols),))
        latents = np.empty(symbols.shape, np.float32)
        for lv in np.unique(levels):
            rows = levels == lv
            latents[rows] = self.bundle.entropy.dequantize(int(lv), symbols[rows])
        out = from_unit_range(self.bundle.generate(latents, threads))
        return out if hw is None else np.ascontiguousarray(out[:, : hw[0], : hw[1]])

    def _decode_batch(self, symbols: np.ndarray, levels, hw) -> np.ndarray:
        """:meth:`synthesize` for the encoder's batches, on its threads (the same bits)."""
        return self.synthesize(symbols, levels, self.encode_threads, hw)

    def decompress(self, data: bytes, keep_size: bool = True) -> np.ndarray:
        """latent.bin bytes -> uint8 RGB image: an any-size bundle's at its coded size; otherwise
        at model size, resized to the original size when the file stores it (and ``keep_size``)."""
        header = bitstream.read_header(data)
        if header.kind == "image":
            _, image = bitstream.unpack_image(data)
        elif self.bundle.any_size:
            w, h = header.size or (self.bundle.image_size,) * 2
            _, level, symbols = bitstream.unpack_latent(data, self.bundle.model_id_bytes, self.bundle.entropy,
                                                        self.bundle.file_grid)
            return self.synthesize(symbols[None], [level], hw=(h, w))[0]
        else:
            _, level, symbols = bitstream.unpack_latent(data, self.bundle.model_id_bytes, self.bundle.entropy)
            image = self.synthesize(symbols[None], [level])[0]
        if keep_size and header.size:
            image = restore_size(image, *header.size)
        return image

    # -- encoding stages --------------------------------------------------------------------------

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
            y = np.random.default_rng(1234).standard_normal((8, *self.bundle.latent_shape)).astype(np.float32)
            diff = float(np.max(np.abs(predict(mirror, y) - self.bundle.generate(y))))
            if not diff <= MIRROR_TOLERANCE:
                raise CodecError(f"TF mirror and generator.onnx disagree (max abs diff {diff:.2e}); refusing to encode")
            self._mirror = mirror
        return self._mirror

    def input_size(self, resize: int | None = None) -> int | None:
        """The side images are brought to before coding: a fixed-size bundle's ``image_size``; for
        an any-size bundle ``resize`` (None: each image keeps its own size)."""
        if resize is not None and not (isinstance(resize, (int, np.integer)) and 1 <= resize <= bitstream.MAX_SIDE):
            raise CodecError(f"--resize must be 1..{bitstream.MAX_SIDE}, got {resize}")
        if not self.bundle.any_size:
            if resize is not None and resize != self.bundle.image_size:
                raise CodecError(f"model {self.bundle.name} codes {self.bundle.image_size}x{self.bundle.image_size} "
                                 "images only; --resize needs a model trained on crops (any size)")
            return self.bundle.image_size
        return None if resize is None else int(resize)

    def prepare(self, images, resize: int | None = None) -> tuple[np.ndarray | list, list]:
        """Bring images (paths, arrays, PIL images) to model size (:meth:`input_size`): (uint8
        (N, H, W, 3) — a list of (H, W, 3) when an any-size bundle gets images of several sizes —,
        original sizes)."""
        from runtime.images import load_image

        size = self.input_size(resize)
        out, sizes = [], []
        for im in images:
            if isinstance(im, np.ndarray):
                arr = im
                if arr.ndim == 2:
                    arr = np.repeat(arr[..., None], 3, axis=2)
                if arr.ndim != 3 or arr.shape[2] != 3:
                    raise CodecError(f"an image array must be (H, W, 3) or (H, W), got {im.shape}")
                sizes.append((arr.shape[1], arr.shape[0]))
                arr = arr.astype(np.uint8) if arr.dtype != np.uint8 else arr
                out.append(np.ascontiguousarray(arr) if size is None else to_model_size(arr, size))
            elif hasattr(im, "size") and hasattr(im, "mode"):
                from runtime.images import to_rgb

                sizes.append(im.size)
                out.append(np.asarray(to_rgb(im), np.uint8).copy() if size is None else to_model_size(im, size))
            else:
                arr, original = load_image(im, size)
                sizes.append(original)
                out.append(arr)
        if not out:
            raise CodecError("no images to encode")
        for (w, h) in ((a.shape[1], a.shape[0]) for a in out):
            if max(w, h) > bitstream.MAX_SIDE:
                raise CodecError(f"image is {w}x{h}; this format codes at most {bitstream.MAX_SIDE} pixels a side "
                                 "(pass --resize S)")
        return (np.stack(out) if len({a.shape for a in out}) == 1 else out), sizes

    def padded(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, 3) -> the networks' input: edge-padded to the latent stride."""
        w, h = self.bundle.coded_size(pixels.shape[2], pixels.shape[1])
        return pad_to(pixels, w, h)

    def analyze(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, 3) -> the encoder's unscaled latents (N, H/f, W/f, C) (padded up)."""
        return self.bundle.encode_latents(to_unit_range(self.padded(pixels)), self.encode_threads)

    def quantize(self, scaled: np.ndarray, levels) -> tuple[np.ndarray, np.ndarray]:
        """Scaled latents (N, H, W, C) -> (int32 symbols clipped into each level's tables, clipped counts)."""
        model = self.bundle.entropy
        levels = np.broadcast_to(np.asarray(levels), (len(scaled),))
        out, clipped = [], []
        for u, lv in zip(scaled, levels):
            q, n = model.clip(int(lv), np.rint(u))
            out.append(q)
            clipped.append(n)
        return np.stack(out), np.array(clipped)

    def scale(self, y: np.ndarray, levels) -> np.ndarray:
        """Unscaled latents -> scaled ones (y · gain of each image's level), float32."""
        gains = self.bundle.rate["gains"][np.asarray(levels)]
        return (np.asarray(y, np.float32) * gains[:, None, None, :]).astype(np.float32)

    def rescale(self, scaled: np.ndarray, levels, to) -> np.ndarray:
        """Scaled latents at ``levels`` -> the same latents scaled for the levels ``to``."""
        gains = self.bundle.rate["gains"]
        ratio = gains[np.asarray(to)] / gains[np.asarray(levels)]
        return (scaled * ratio[:, None, None, :]).astype(np.float32)

    def quantize_to_fit(self, scaled: np.ndarray, levels, max_bytes: int, sizes=None,
                        deadzones=DEADZONES) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """Like :meth:`quantize`, but per image the smallest dead zone (rounding |u| − d instead of
        |u|, which sends borderline values to the cheaper symbol nearer 0) whose file fits
        ``max_bytes``: a refined latent that passes the budget by a few bytes is trimmed, not lost.
        Returns (symbols, clipped counts, the files). A dead zone is only coded when the ideal code
        length says its file might fit: no payload was shorter than ``bits / 8`` by more than
        0.96 byte in 3,264 files (airplane, every 4th level, three dead zones), and the bound keeps
        a margin of 2 bytes, so the choice is the one that coding every dead zone would make."""
        model = self.bundle.entropy
        n = len(scaled)
        levels = np.broadcast_to(np.asarray(levels), (n,))
        sizes = sizes or [None] * n
        overhead = self.header_bytes(sizes) - 1  # without the flush byte
        zones = np.asarray(deadzones, np.float32)[:, None, None, None]
        out, clipped, files = np.empty(np.shape(scaled), np.int32), np.zeros(n, int), [b""] * n
        for lv in np.unique(levels):  # every dead zone of every image at this level at once
            lv, rows = int(lv), np.flatnonzero(levels == lv)
            u = scaled[rows][:, None]
            raw = np.sign(u) * np.floor(np.abs(u) + 0.5 - zones)  # (images, zones, H, W, C)
            tries, _ = model.clip(lv, raw)
            counts = np.count_nonzero(tries != raw, axis=(2, 3, 4))
            low = model.bits(lv, tries.reshape(-1, *tries.shape[2:])).reshape(tries.shape[:2]) / 8 - 2
            for i, q, c, bound in zip(rows, tries, counts, low + overhead[rows, None]):
                data = None
                for k in np.flatnonzero(bound <= max_bytes):
                    data = self.pack(q[k], lv, sizes[i])
                    if len(data) <= max_bytes:
                        break
                if data is None or len(data) > max_bytes:  # nothing fits: the largest dead zone's file
                    k = len(q) - 1
                    data = self.pack(q[k], lv, sizes[i])
                out[i], clipped[i], files[i] = q[k], c[k], data
        return out, clipped, files

    def pack(self, symbols: np.ndarray, level: int, size=None) -> bytes:
        """One image's symbols (H, W, C) at ``level`` -> latent.bin bytes."""
        return bitstream.pack_latent(symbols, int(level), self.bundle.entropy, self.bundle.model_id_bytes, size)

    def pack_all(self, symbols: np.ndarray, levels, sizes=None) -> list[bytes]:
        """A batch of symbols (N, H, W, C), each at its level -> one latent.bin each."""
        sizes = sizes or [None] * len(symbols)
        return [self.pack(q, lv, size) for q, lv, size in zip(symbols, np.broadcast_to(levels, len(symbols)), sizes)]

    def _symbols_at(self, y: np.ndarray, level: int) -> np.ndarray:
        return self.quantize(self.scale(y, np.full(len(y), level)), level)[0]

    def choose_levels(self, y: np.ndarray, pixels: np.ndarray, target_bytes: int | None = None,
                      target_psnr: float | None = None, sizes=None) -> np.ndarray:
        """Per image, the rate level for a target, judged on the encoder's (unrefined) latent.

        ``target_bytes``: the finest level whose whole file fits (the next finer one does not);
        level 0 when none fits. ``target_psnr``: the coarsest level whose decoded PSNR reaches
        the target (the next coarser one does not); the finest level when none does.
        """
        n = len(y)
        sizes = sizes or [None] * n
        if target_bytes is not None:
            overhead = self.header_bytes(sizes)
            # a file of ideal b bits: ceil(b / 8) bytes of payload plus the header, less the flush byte
            guess = self._finest_fitting(y, 8 * (target_bytes + 1 - overhead))
            chosen = np.zeros(n, int)
            for i in range(n):
                lv = int(guess[i])

                def size_at(level, i=i):
                    return len(self.pack(self._symbols_at(y[i : i + 1], level)[0], level, sizes[i]))

                while lv > 0 and size_at(lv) > target_bytes:
                    lv -= 1
                while lv + 1 < self.levels and size_at(lv + 1) <= target_bytes:
                    lv += 1
                chosen[i] = lv
            return chosen
        if target_psnr is None:
            raise CodecError("choose_levels needs target_bytes or target_psnr")
        lo, hi = np.zeros(n, int), np.full(n, self.levels - 1)
        while np.any(lo < hi):
            mid = (lo + hi) // 2
            scaled = self.scale(y, mid)
            recon = self._decode_batch(self.quantize(scaled, mid)[0], mid, pixels.shape[1:3])
            ok = np.asarray(metrics.psnr(recon, pixels)) >= target_psnr
            active = lo < hi
            hi = np.where(active & ok, mid, hi)
            lo = np.where(active & ~ok, mid + 1, lo)
        return lo

    def _finest_fitting(self, y: np.ndarray, max_bits: np.ndarray) -> np.ndarray:
        """Per image the finest level whose encoder latent's ideal bits are at most ``max_bits``
        (per image; 0 when no level passes), bits taken to grow with the level (:meth:`choose_levels`
        then checks the real file sizes around it): every :data:`COARSE_LEVELS`-th level for every
        image, then only the levels between an image's last passing one and the next."""
        top = self.levels - 1
        grid = np.unique(np.r_[0:top + 1:COARSE_LEVELS, top])
        ok = np.stack([self.bundle.entropy.bits(lv, self._symbols_at(y, lv)) <= max_bits for lv in grid], 1)
        last = np.where(ok.any(1), len(grid) - 1 - np.argmax(ok[:, ::-1], 1), -1)  # index into grid
        chosen = np.where(last >= 0, grid[np.maximum(last, 0)], 0)
        upper = grid[np.minimum(last + 1, len(grid) - 1)]  # none passed: grid[0] = 0, nothing between
        for lv in range(1, top):
            rows = np.flatnonzero((chosen < lv) & (lv < upper))
            if len(rows):
                passed = self.bundle.entropy.bits(lv, self._symbols_at(y[rows], lv)) <= max_bits[rows]
                chosen[rows[passed]] = lv
        return chosen

    def refine(self, pixels: np.ndarray, y: np.ndarray, levels: np.ndarray, steps: int = DEFAULT_STEPS,
               lr: float = DEFAULT_LR, progress=None, lam_scale=1.0) -> np.ndarray:
        """Rate–distortion refinement (TF mirror gradients), each image at its level -> scaled latents.
        ``lam_scale`` (scalar or per image) multiplies each level's λ (the weight of distortion)."""
        scaled = self.scale(y, levels)
        if steps <= 0:
            return scaled
        from runtime.inversion import refine

        levels = np.asarray(levels)
        reach = int(np.ceil(ADAM_REACH * lr * steps))
        costs, lo = self.code_lengths(levels, self.quantize(scaled, levels)[0], reach)
        return refine(self.mirror, to_unit_range(self.padded(pixels)), scaled, self.bundle.entropy.inv_gains[levels],
                      self.bundle.rate["lambdas"][levels] * np.broadcast_to(lam_scale, levels.shape), costs, lo,
                      steps, lr, progress)

    def code_lengths(self, levels, symbols: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray]:
        """Refinement's rate term: per image at its level, the coder's bits of the symbol values
        within ``reach`` + 2 of each start symbol, under the contexts of ``symbols`` (N, H, W, C),
        the start. Returns (costs (N, H, W, C, 2·(reach + 2) + 1); below a table its first symbol's
        bits, past its end 32; lo (N, H, W, C), the symbol of costs[..., 0]). A latent that moves at
        most ``reach`` (see :data:`ADAM_REACH`) sees the same piecewise-linear rate as with whole
        tables, from arrays tens of times smaller."""
        model = self.bundle.entropy
        levels = np.asarray(levels, int)
        symbols = np.asarray(symbols, np.int64)
        half = int(reach) + 2
        lo = symbols - half
        costs = np.empty((*symbols.shape, 2 * half + 1), np.float32)
        for lv in np.unique(levels):  # all images at one level at once
            rows = np.flatnonzero(levels == lv)
            own = model.symbol_costs(int(lv), symbols[rows], lo[rows], 2 * half + 1)
            costs[rows] = np.where(np.isfinite(own), own, 32.0)
        return costs, lo.astype(np.float32)

    @staticmethod
    def header_bytes(sizes) -> np.ndarray:
        """Per image, the bytes a latent file spends besides its coded bits: header, CRC, the stored
        size when there is one, and the coder's flush (at most 1 byte; ``sizes``: sizes or None)."""
        fixed = bitstream.HEADER_BYTES + bitstream.CRC_BYTES + 1
        return np.array([fixed + (bitstream.SIZE_BYTES if s else 0) for s in sizes])

    # -- the whole encoder --------------------------------------------------------------------------

    def compress(self, images, level: int | None = None, target_bytes: int | None = None,
                 target_psnr: float | None = None, steps: int = DEFAULT_STEPS, keep_size: bool = False,
                 original_sizes: list | None = None, fallback: bool = True, progress=None,
                 resize: int | None = None, effort: str = "auto") -> list[EncodeResult]:
        """Encode a batch; every image gets its own latent. Returns bytes and decoder-exact quality.

        Rate: ``level`` fixes the rate level (default: the bundle's); ``target_bytes`` /
        ``target_psnr`` choose it per image (and, with ``fallback``, a WebP or AVIF payload where it
        meets the target better). Size: an any-size bundle codes each image at its own size (or
        at ``resize``²); a fixed-size bundle at its own, and ``keep_size`` stores each original
        (width, height) for the decoder to resize back to. Effort (:data:`EFFORTS`): ``base`` never
        imports TensorFlow (``steps`` is then unused); each result's ``encoder`` says which ran.
        """
        target = _check_rate_args(self, level, target_bytes, target_psnr, steps)
        effort = resolve_effort(effort)
        if effort == "base":
            steps = 0
        if self.bundle.any_size and keep_size and resize is not None:
            raise CodecError(f"model {self.bundle.name} codes images at their own size; --keep-size with "
                             "--resize cannot restore it (drop --resize)")
        pixels, sizes = self.prepare(images, resize)
        if original_sizes is not None:
            if len(original_sizes) != len(pixels):
                raise CodecError("original_sizes must give one size per image")
            sizes = [tuple(s) for s in original_sizes]
        results: list = [None] * len(pixels)
        by_shape: dict = {}
        for i, im in enumerate(pixels):
            by_shape.setdefault(im.shape, []).append(i)
        for rows in by_shape.values():  # the images of one size are coded together
            part = np.stack([pixels[i] for i in rows])
            hw = part.shape[1:3]
            if self.bundle.any_size:  # the header holds the coded size (absent: the bundle's)
                native = (self.bundle.image_size,) * 2
                latent_sizes = [None if hw == native else (hw[1], hw[0])] * len(rows)
                image_sizes = [None] * len(rows)
            else:  # the header holds the size to restore
                latent_sizes = image_sizes = [tuple(sizes[i]) if keep_size else None for i in rows]
            done = self._compress_batch(part, latent_sizes, image_sizes, level, target_bytes, target_psnr, steps,
                                        fallback and target is not None, progress)
            for i, r in zip(rows, done):
                r.encoder = effort
                results[i] = r
        return results

    def _compress_batch(self, pixels: np.ndarray, keep: list, image_keep: list, level, target_bytes,
                        target_psnr, steps: int, fallback: bool, progress) -> list[EncodeResult]:
        """:meth:`compress` for images of one size, (N, H, W, 3); ``keep`` / ``image_keep``: per
        image the size a latent / an image payload's header stores (or None)."""
        y = self.analyze(pixels)
        if target_bytes is None and target_psnr is None:
            levels = np.full(len(pixels), self.default_level if level is None else int(level))
        else:
            levels = self.choose_levels(y, pixels, target_bytes, target_psnr, keep)
        lams = self.bundle.rate["lambdas"][levels]
        sets = self.candidates(pixels, y, levels, steps, target_psnr, target_bytes, keep, progress)
        best, results = self.best_of(sets, pixels, target_bytes, target_psnr, lams)
        for _ in range(POLISH_ROUNDS if steps > 0 else 0):
            best, results = self.best_of([best, *self.flips(pixels, best, keep)], pixels, target_bytes,
                                         target_psnr, lams)
        if fallback:
            for i, r in enumerate(results):
                other = image_fallback(pixels[i], self.bundle.model_id_bytes, image_keep[i], target_bytes, target_psnr)
                if other is not None and _pick([r, other], target_bytes, target_psnr, None) is other:
                    results[i] = other
        quality = metrics.quality(np.stack([r.reconstruction for r in results]), pixels)
        for i, r in enumerate(results):
            r.quality = {k: float(v[i]) for k, v in quality.items()}
            r.warnings = self._warnings(r, target_bytes, target_psnr)
        return results

    def candidates(self, pixels: np.ndarray, y: np.ndarray, levels: np.ndarray, steps: int,
                   target_psnr: float | None = None, max_bytes: int | None = None, sizes=None,
                   progress=None) -> list[Candidates]:
        """The latents :meth:`compress` chooses from, as :class:`Candidates` sets:
        the encoder's own at ``levels`` and, with ``steps``, refined ones. Refinement lowers the
        rate–distortion cost, mostly by spending fewer bits, so under a byte budget it starts from
        each of :data:`BUDGET_STARTS` (finer levels; measured on airplane, 64 images: starting 1 and 3
        levels finer gained +0.2 / +0.4 / +0.7 / +1.3 dB over the encoder alone at 51 / 100 / 200 /
        300 B), and each result, at its level and at the :data:`REQUANTIZE` neighbours, is fitted
        to ``max_bytes`` (:meth:`quantize_to_fit`); for a PSNR
        target it also starts :data:`COARSER_BY` levels coarser, since a coarser start may reach
        the target."""
        levels = np.asarray(levels)
        starts = []  # (levels finer, λ scale) of each refined candidate
        if steps > 0:
            starts = list(BUDGET_STARTS) if max_bytes is not None else [(0, 1.0)]
            if target_psnr is not None:
                starts.append((-max(1, self.levels // COARSER_BY), 1.0))
        sets = [np.clip(levels + k, 0, self.levels - 1) for k, _ in starts]
        out = []
        if sets:
            n = len(pixels)
            scaled = self.refine(np.concatenate([pixels] * len(sets)), np.concatenate([y] * len(sets)),
                                 np.concatenate(sets), steps, progress=progress,
                                 lam_scale=np.repeat([s for _, s in starts], n))
            for k, lv in enumerate(sets):
                part = scaled[k * n : (k + 1) * n]
                if max_bytes is None:
                    symbols, clipped = self.quantize(part, lv)
                    out.append(Candidates(lv, symbols, self.pack_all(symbols, lv, sizes), clipped,
                                          self._decode_batch(symbols, lv, pixels.shape[1:3])))
                    continue
                for shift in (0, *REQUANTIZE):
                    to = np.clip(lv + shift, 0, self.levels - 1)
                    symbols, clipped, files = self.quantize_to_fit(self.rescale(part, lv, to), to, max_bytes, sizes)
                    out.append(Candidates(to, symbols, files, clipped, self._decode_batch(symbols, to, pixels.shape[1:3])))
        if steps <= 0 and max_bytes is not None:  # no refinement: finer starts, fitted by dead zone
            for k in BASE_STARTS:
                to = np.clip(levels + k, 0, self.levels - 1)
                symbols, clipped, files = self.quantize_to_fit(self.scale(y, to), to, max_bytes, sizes)
                out.append(Candidates(to, symbols, files, clipped, self._decode_batch(symbols, to, pixels.shape[1:3])))
        symbols, clipped = self.quantize(self.scale(y, levels), levels)
        out.append(Candidates(levels, symbols, self.pack_all(symbols, levels, sizes), clipped,
                              self._decode_batch(symbols, levels, pixels.shape[1:3])))
        return out

    def best_of(self, sets: list[Candidates], pixels: np.ndarray, target_bytes, target_psnr,
                lams) -> tuple[Candidates, list[EncodeResult]]:
        """Per image the best candidate of ``sets`` (each as :meth:`candidates` gives them) under the
        target (:func:`_pick`; ``lams``: per image the λ of a rate–distortion choice). Returns
        (the chosen ones as one set, their EncodeResults)."""
        scores = [(metrics.mse(decoded, pixels), metrics.psnr(decoded, pixels)) for *_, decoded in sets]
        picks, results = [], []
        for i in range(len(pixels)):
            options = [EncodeResult(files[i], decoded[i], int(lv[i]), "latent", int(clipped[i]),
                                    {"mse": float(mse[i]), "psnr": float(psnr[i])})
                       for (lv, _, files, clipped, decoded), (mse, psnr) in zip(sets, scores)]
            best = _pick(options, target_bytes, target_psnr, lams[i])
            picks.append(next(k for k, o in enumerate(options) if o is best))
            results.append(best)
        rows = [sets[k] for k in picks]
        levels, symbols, files, clipped, decoded = ([row[f][i] for i, row in enumerate(rows)] for f in range(5))
        return Candidates(np.array(levels), np.stack(symbols), files, np.array(clipped), np.stack(decoded)), results

    def flips(self, pixels: np.ndarray, chosen: Candidates, sizes=None) -> list[Candidates]:
        """Candidate sets one rounding search away from ``chosen`` (a set as :meth:`best_of` gives):
        for each k of :data:`POLISH_FLIPS`, per image the k symbols whose move by ±1 lowers the
        loss bits/pixel + λ·MSE the most, to first order: the distortion's gradient from the TF
        mirror at the symbols themselves, the bits exactly from the tables (in the symbols' own
        contexts). Rounding a refined latent to the nearest symbols is not the best rounding; this
        finds better ones that the relaxation cannot see."""
        from runtime.inversion import distortion_gradient

        levels, symbols, clipped = chosen.levels, chosen.symbols, chosen.clipped
        n = len(symbols)
        grad = distortion_gradient(self.mirror, to_unit_range(self.padded(pixels)), symbols.astype(np.float32),
                                   self.bundle.entropy.inv_gains[levels], self.bundle.rate["lambdas"][levels])
        costs, _ = self.code_lengths(levels, symbols, 1)  # symbols − 3 .. + 3; the symbol's own at 3
        area = pixels.shape[1] * pixels.shape[2]
        up = ((costs[..., 4] - costs[..., 3]) / area + grad).reshape(n, -1)
        down = ((costs[..., 2] - costs[..., 3]) / area - grad).reshape(n, -1)
        gain = np.minimum(up, down)
        step = np.where(up < down, 1, -1) * (gain < 0)
        rank = np.argsort(np.argsort(gain, axis=1, kind="stable"), axis=1, kind="stable")
        out = []
        for k in POLISH_FLIPS:
            moved = (symbols.reshape(n, -1) + step * (rank < k)).reshape(symbols.shape)
            q = self.quantize(moved, levels)[0]  # a move past a table's end is clipped back
            out.append(Candidates(levels, q, self.pack_all(q, levels, sizes), clipped,
                                  self._decode_batch(q, levels, pixels.shape[1:3])))
        return out

    def _warnings(self, r: EncodeResult, target_bytes, target_psnr) -> list[str]:
        out = []
        if target_bytes is not None and r.num_bytes > target_bytes:
            out.append(f"budget of {target_bytes} bytes cannot be met: the smallest file is {r.num_bytes} bytes")
        if target_psnr is not None and r.quality["psnr"] < target_psnr:
            out.append(f"target PSNR {target_psnr:g} dB not reached: best {r.quality['psnr']:.2f} dB "
                       f"({r.num_bytes} bytes)")
        if r.kind == "latent":
            ref = self.bundle.validation_psnr(r.level)
            if ref is not None and r.quality["psnr"] < ref - UNLIKE_TRAINING_DB:
                out.append(f"decodes at {r.quality['psnr']:.2f} dB, far below this model's {ref:.2f} dB on its "
                           f"validation images at this rate: probably unlike its training set ({self.bundle.dataset})")
        else:
            name = {"webp": "WebP", "avif": "AVIF"}.get(r.kind, r.kind)
            out.append(f"{name} met the target better than the model at this size, so the file holds a {name} "
                       "payload (decodes without the model)")
        return out


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported here: already imported, or found on ``sys.path`` (by the
    path finder itself, so neither imported nor met by runtime.quiet's one-shot import hook)."""
    import importlib.machinery
    import sys

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None
    try:
        return importlib.machinery.PathFinder.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def resolve_effort(effort: str) -> str:
    """``auto`` -> ``full`` where TensorFlow is installed, else ``base``; ``full`` without it is an error."""
    if effort not in EFFORTS:
        raise CodecError(f"effort must be one of {', '.join(EFFORTS)}, got {effort!r}")
    if effort == "auto":
        return "full" if tensorflow_available() else "base"
    if effort == "full" and not tensorflow_available():
        raise CodecError("effort 'full' refines with TensorFlow, which is not installed (pip install "
                         "'gancodec[train]'); effort 'base' encodes without it")
    return effort


def _check_rate_args(codec: Codec, level, target_bytes, target_psnr, steps):
    if target_bytes is not None and target_psnr is not None:
        raise CodecError("give --target-bytes or --target-psnr, not both")
    target = target_bytes if target_bytes is not None else target_psnr
    if target is not None and level is not None:
        raise CodecError("give --level or a target, not both")
    if level is not None and not (isinstance(level, (int, np.integer)) and 0 <= level < codec.levels):
        raise CodecError(f"--level must be 0..{codec.levels - 1} for this model, got {level}")
    if target_bytes is not None and target_bytes < 1:
        raise CodecError("--target-bytes must be positive")
    if steps < 0:
        raise CodecError("steps must be >= 0")
    return target


def _pick(options: list[EncodeResult], target_bytes, target_psnr, lam) -> EncodeResult:
    """The best candidate: under a byte budget the best PSNR among those that fit (else the
    smallest); for a PSNR target the smallest that reaches it (else the best PSNR); with neither,
    the lowest rate–distortion cost bits/pixel + λ·MSE (the loss the model was trained for)."""
    if target_bytes is not None:
        fits = [o for o in options if o.num_bytes <= target_bytes]
        return max(fits, key=lambda o: o.quality["psnr"]) if fits else min(options, key=lambda o: o.num_bytes)
    if target_psnr is not None:
        reach = [o for o in options if o.quality["psnr"] >= target_psnr]
        return (min(reach, key=lambda o: (o.num_bytes, -o.quality["psnr"])) if reach
                else max(options, key=lambda o: o.quality["psnr"]))
    pixels = options[0].reconstruction.shape[0] * options[0].reconstruction.shape[1]
    return min(options, key=lambda o: 8 * o.num_bytes / pixels + float(lam) * o.quality["mse"])


def image_fallback(pixels: np.ndarray, model_id: bytes, size, target_bytes=None, target_psnr=None):
    """The classic-codec candidate for one image under a target, as a latent.bin with an image
    payload: per codec of :data:`runtime.classic.FALLBACK_CODECS` that this Pillow writes, the
    highest quality whose whole file fits ``target_bytes`` (or the lowest whose PSNR reaches
    ``target_psnr``); of those, the one that meets the target best (:func:`_pick`). None when none meets the target at all."""
    from runtime.classic import FALLBACK_CODECS, available_codecs

    found = []
    for name, classic in available_codecs(FALLBACK_CODECS).items():
        pack = bitstream.pack_webp if name == "WebP" else bitstream.pack_avif

        def wrap(data, pack=pack):
            return pack(data, model_id, size)

        if target_bytes is not None:
            hit = classic.best_fitting(pixels, lambda d, wrap=wrap: len(wrap(d)) <= target_bytes)
        else:
            hit = classic.lowest_reaching(pixels, lambda d, c=classic: metrics.psnr(c.decode(d), pixels) >= target_psnr)
        if hit is not None:
            recon = classic.decode(hit[1])
            found.append(EncodeResult(wrap(hit[1]), recon, None, name.lower(), 0,
                                      {"mse": metrics.mse(recon, pixels), "psnr": metrics.psnr(recon, pixels)}))
    return _pick(found, target_bytes, target_psnr, None) if found else None


def decode_file_bytes(data: bytes, model=None, threads: int = 1) -> tuple[np.ndarray, Bundle | None]:
    """Decode latent.bin bytes, finding the bundle by the id in the header unless ``model`` is given.

    A forced ``model`` must still match the file's id: a file from model A is never decoded by B.
    An image payload needs no bundle (returned bundle None unless ``model`` is given). A file that
    fails to decode and starts like an image file (a PNG passed by mistake) is named as such.
    """
    try:
        return _decode_file_bytes(data, model, threads)
    except CodecError:
        foreign = bitstream.foreign_format(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
        if foreign:
            raise CodecError(f"this is {foreign}, not a latent.bin (decode reads the files that encode "
                             "writes)") from None
        raise


def _decode_file_bytes(data: bytes, model, threads: int) -> tuple[np.ndarray, Bundle | None]:
    header = bitstream.read_header(data)
    if model is not None:
        bundle = model if isinstance(model, Bundle) else find_bundle(model, threads)
        return Codec(bundle).decompress(data), bundle
    if header.kind == "image":
        _, image = bitstream.unpack_image(data)
        return (restore_size(image, *header.size) if header.size else image), None
    candidates = bundles_for_prefix(header.model_id_prefix, threads)
    if not candidates:
        raise CodecError(f"no model with id {header.model_id_hex}… is installed "
                         f"(looked in models/ and $GANCODEC_MODELS); pass --model DIR")
    errors = []
    for bundle in candidates:  # 12-bit ids may collide; the CRC (seeded by the full id) decides
        try:
            return Codec(bundle).decompress(data), bundle
        except CodecError as exc:
            errors.append(str(exc))
    raise CodecError(errors[0])
