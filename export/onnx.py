"""Turn a training run into a model bundle.

    python -m export.onnx runs/NAME --out models/NAME [--name NAME]

Steps: rebuild the run's selected (best) encoder and generator (``--mode rd`` runs); expand the
trained rate levels to ``SUBLEVELS``× finer ones (gains interpolated log-linearly); build the
integer frequency tables of every (level, channel) from the training set's quantized latents and
write them with the inverse gains as ``entropy.bin`` (runtime.entropy; the decoder's only source
of probabilities); save ``generator.keras`` (the TF mirror, loadable with Keras alone) and export
it with tf2onnx to ``generator.onnx`` (input ``latent`` [N, H, W, C] = symbols × inverse gains,
output ``image`` [N, S, S, 3], dynamic batch); the same for the encoder (``image`` -> unscaled
``latent``); ``rate.npz`` holds the float gains, λ and the training density (encoder side only:
refinement's rate term). The networks' kernels are rounded to float16 values and stored as
float16 in the ONNX files (half their size; the TF mirrors hold the same rounded values). Check
parity (onnxruntime CPU vs TensorFlow, max abs difference ≤ 1e-4), measure bytes and PSNR per
level on the validation split, and write ``manifest.json``. Everything
is written into a temporary directory that is renamed into place only when all checks pass, so a
failure leaves no partial bundle.

The ONNX files carry the essentials in their metadata (latent size, image size, output range, data
set, role). The model id is the SHA-256 of ``generator.onnx`` itself and so cannot be stored inside
it; a lone ONNX file's id is its hash. ``generator.onnx`` stores the SHA-256 of ``entropy.bin``
(metadata ``entropy_sha256``), so the id names the tables too: re-exporting the same network with
other tables gives another id, and files of one never verify under the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from runtime.bundle import (  # noqa: E402
    BUNDLE_FORMAT,
    ENCODER_KERAS,
    ENCODER_ONNX,
    ENTROPY_SHA256_KEY,
    EXTRA_LEVELS,
    GENERATOR_KERAS,
    GENERATOR_ONNX,
    HALF_MIN_SIZE,
    MANIFEST,
    SUBLEVELS,
    load_bundle,
    sha256_file,
)
from runtime.errors import CodecError, run_cli  # noqa: E402
from runtime.output import atomic_directory  # noqa: E402

PARITY_TOLERANCE = 1e-4
# the manifest's record of how generator.onnx stores its convolution kernels (store_int8, store_half)
GENERATOR_KERNELS = "int8 per kernel with a float16 scale; the output layer float16"
OPSET = 17


class ExportError(CodecError):
    """Export failed; nothing was written."""


def to_onnx(model, input_name: str, output_name: str, path: Path, metadata: dict) -> None:
    """Export a Keras model with tf2onnx (dynamic batch) and write metadata into the file."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name=input_name),)

    @tf.function(input_signature=spec)
    def forward(x):
        return {output_name: model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    # name the graph input/output plainly
    for inp in proto.graph.input:
        if inp.name.split(":")[0] == input_name:
            old = inp.name
            inp.name = input_name
            for node in proto.graph.node:
                node.input[:] = [input_name if i == old else i for i in node.input]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    proto.producer_name = "gancodec"
    store_int8(proto)
    store_half(proto)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def save_keras(model, path: Path) -> None:
    """Save a Keras model (a TF mirror), its zip deflated: Keras stores it uncompressed, and the
    float16-rounded float32 weights compress by ~43 % (airplane generator.keras 3.85 -> 2.20 MB).
    Keras loads either."""
    import zipfile

    model.save(path)
    with zipfile.ZipFile(path) as z:
        entries = [(info, z.read(info.filename)) for info in z.infolist()]
    tmp = path.with_name(path.name + ".deflate")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info, data in entries:
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, data)
    tmp.replace(path)


def store_int8(proto) -> None:
    """Store each float32 convolution kernel (a Conv's or ConvTranspose's weight initializer) of at
    least :data:`HALF_MIN_SIZE` values that is exactly ``q · s`` of ``training.models.int8_kernels``
    (what ``round_kernels_to_int8`` left) as int8 ``q`` and float32 ``s``, followed by a Cast and a
    Mul: the same float32 weights, rebuilt exactly on every runtime (onnxruntime folds them once at
    load). :func:`store_half` then stores the scales as float16."""
    from onnx import TensorProto, helper, numpy_helper

    from training.models import int8_kernels

    kernels = {n.input[1] for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1}
    nodes, scales = [], []
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT or init.name not in kernels:
            continue
        w = numpy_helper.to_array(init)
        if w.ndim != 4 or w.size < HALF_MIN_SIZE:
            continue
        q, s = int8_kernels(w, (2, 3))
        if not np.array_equal(q.astype(np.float32) * s, w):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(q, name + "_i8"))
        scales.append(numpy_helper.from_array(s, name + "_scale"))
        nodes += [helper.make_node("Cast", [name + "_i8"], [name + "_f32"], to=TensorProto.FLOAT, name=name + "_cast"),
                  helper.make_node("Mul", [name + "_f32", name + "_scale"], [name], name=name + "_dequant")]
    proto.graph.initializer.extend(scales)
    nodes += list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def store_half(proto) -> None:
    """Store each float32 initializer of at least :data:`HALF_MIN_SIZE` values whose values are all
    float16-exact (``training.models.round_weights_to_half``) as float16, followed by a Cast back to float32:
    the graph computes the same float32 function from half the bytes (a float16 → float32 cast is
    exact on every runtime, onnxruntime-web included)."""
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        if w.size < HALF_MIN_SIZE or not np.array_equal(w.astype(np.float16).astype(np.float32), w):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(w.astype(np.float16), name + "_f16"))
        casts.append(helper.make_node("Cast", [name + "_f16"], [name], to=TensorProto.FLOAT, name=name + "_cast"))
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def parity(keras_model, onnx_path: Path, inputs: np.ndarray) -> float:
    """Max abs difference between TensorFlow and onnxruntime (CPU) on ``inputs``."""
    import onnxruntime as ort

    tf_out = keras_model(inputs, training=False).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_out = sess.run(None, {sess.get_inputs()[0].name: inputs})[0]
    if ort_out.shape != tf_out.shape:
        raise ExportError(f"{onnx_path.name}: shape {ort_out.shape} != TensorFlow {tf_out.shape}")
    return float(np.max(np.abs(ort_out - tf_out)))


def _versions() -> dict:
    out = {}
    for pkg in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


DEFAULT_BYTES = 64  # the default rate level is the one whose validation files average nearest this


def expand_levels(rate: dict, sublevels: int = SUBLEVELS, extra: int = EXTRA_LEVELS) -> dict:
    """Trained levels -> exported levels: gains, inverse gains and λ interpolated log-linearly, then
    ``extra`` levels finer than the finest trained one (its last interval's log-slope continued for
    the gains and λ; the inverse gains keep the finest level's gain · inverse-gain product, i.e. a
    finer quantizer of the same latent the generator was trained on).

    Why the extension: the finest trained level caps quality. On the airplane bundle, at <= 400 B
    105 of 200 validation images stopped there (~370 B used); unrefined PSNR on 128 validation
    images rises from 39.95 dB (finest trained) to 40.83 / 41.25 dB with 8 / 16 levels beyond it
    (the continuous latent gives 41.6). Under a 400 B budget (128 images, refined): 40.53 dB in
    370 B without, 40.96 in 392 B with 8, 41.05 in 398 B with 16. 8, because the finest levels'
    tables are the widest: 16 made entropy.bin 7.2 MB (K = 16) and the bundle 15.7 MB."""
    log_g, log_h = rate["log_gain"].astype(np.float64), rate["log_inv_gain"].astype(np.float64)
    log_lam = np.log(rate["lambdas"].astype(np.float64))
    trained = len(log_g)
    t = np.linspace(0, trained - 1, (trained - 1) * sublevels + 1)

    def interp(a):
        if a.ndim == 1:
            return np.interp(t, np.arange(trained), a)
        return np.stack([np.interp(t, np.arange(trained), a[:, c]) for c in range(a.shape[1])], axis=1)

    g, h, lam = interp(log_g), interp(log_h), interp(log_lam)
    if extra > 0 and trained > 1:
        k = np.arange(1, extra + 1, dtype=np.float64)[:, None] / sublevels
        step_g = (log_g[-1] - log_g[-2])[None]
        g_more = log_g[-1][None] + k * step_g
        h_more = log_h[-1][None] - k * step_g
        lam_more = log_lam[-1] + k[:, 0] * (log_lam[-1] - log_lam[-2])
        g, h, lam = np.concatenate([g, g_more]), np.concatenate([h, h_more]), np.concatenate([lam, lam_more])
    return {"gains": np.exp(g).astype(np.float32), "inv_gains": np.exp(h).astype(np.float32),
            "lambdas": np.exp(lam).astype(np.float32)}


def quantize_latents(y: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """The codec's quantizer: q = round_half_even(y · gain) in float32 (runtime.codec uses this too)."""
    return np.rint(np.asarray(y, np.float32) * np.asarray(gains, np.float32)).astype(np.int64)


# entropy contexts per (level, channel) (runtime.entropy.contexts); 1 = none. Measured on the
# airplane bundle, validation bytes at levels ~40 / 60 / 90 / 175 B (tables fitted on the training
# set): K = 8 39.39 / 59.72 / 90.47 / 175.16, K = 16 39.06 / 59.42 / 89.80 / 174.59 (end to end at
# <= 63 / 130 B: +0.07 / +0.05 dB); K = 1 41.27 / 64.02 / 98.23 / 192.49. entropy.bin doubles (2.8 MB).
CONTEXTS = 16
CROP_TABLE_IMAGES = 600  # a --crop run's tables: training images sampled (600 × 16² = 154k positions per channel)
CROP_VAL_IMAGES = 24  # ... and validation images measured for the manifest (65 levels × 128² decodes each)
SEGMENTS = 256  # CDF segments per channel in a version-3 entropy.bin (256: +0.2 % bytes against 16 stored lists)


def channel_knots(y: np.ndarray, segments: int = SEGMENTS) -> np.ndarray:
    """(C, Q + 1) knots of each channel's piecewise-linear CDF: the latent's quantiles at i / Q in
    units of 2**-12, a step never beyond MAX_KNOT_STEP units (an outer knot is pulled in if it would be)."""
    from runtime.entropy import KNOT_BITS, MAX_KNOT, MAX_KNOT_STEP

    flat = np.asarray(y, np.float64).reshape(-1, y.shape[-1])
    knots = np.rint(np.quantile(flat, np.linspace(0, 1, segments + 1), axis=0).T * (1 << KNOT_BITS))
    knots = np.clip(knots, -MAX_KNOT, MAX_KNOT).astype(np.int64)
    mid = segments // 2
    for i in range(mid - 1, -1, -1):
        knots[:, i] = np.maximum(knots[:, i], knots[:, i + 1] - MAX_KNOT_STEP)
    for i in range(mid + 1, segments + 1):
        knots[:, i] = np.minimum(knots[:, i], knots[:, i - 1] + MAX_KNOT_STEP)
    return knots


def entropy_parameters(y: np.ndarray, gains: np.ndarray, inv_gains: np.ndarray, contexts: int = CONTEXTS,
                       segments: int = SEGMENTS):
    """The bundle's entropy model (entropy.bin version 3) from the training set's latents ``y``
    (N, H, W, C): each channel's quantile knots; per level the coded channels (nonzero in more than
    :data:`runtime.entropy.DEGENERATE_FRACTION` of the positions: :func:`runtime.entropy.coded_channels`); and per (level, coded channel, context) the
    parameter byte (temperature, zero weight) whose exact derived table codes that context's
    training symbols in the fewest bits (a context never seen keeps the marginal). The floats stay
    here: the decoder derives the tables from the stored integers."""
    from runtime import entropy as em

    channels = y.shape[-1]
    knots = channel_knots(y, segments)
    steps = np.floor((1 << em.EDGE_BITS) / np.asarray(gains, np.float64) + 0.5).astype(np.int64)
    lo, hi = em.parametric_support(knots, steps)
    every = np.arange(256)
    coded = np.zeros(np.shape(inv_gains), bool)
    params = np.full((*coded.shape, contexts), em.NEUTRAL_PARAM, np.int64)
    for level, g in enumerate(gains):
        q = quantize_latents(y, g)
        flat = q.reshape(-1, channels)
        coded[level] = em.coded_channels(flat) & (steps[level] <= em.MAX_STEP)
        q = np.clip(q, np.where(coded[level], lo[level], 0), np.where(coded[level], hi[level], 0))
        ctx = em.contexts(q, coded[level], contexts).reshape(-1, channels)
        flat = q.reshape(-1, channels)
        for c in np.flatnonzero(coded[level]):
            l_, h_ = int(lo[level, c]), int(hi[level, c])
            n = h_ - l_ + 1
            freqs = em.parametric_freqs(knots[c], int(steps[level, c]), l_, h_, every)
            cost = em.PRECISION - np.log2(freqs)  # (256, n) bits per symbol of each candidate
            hist = np.bincount(ctx[:, c] * n + (flat[:, c] - l_), minlength=contexts * n).reshape(contexts, n)
            best = np.argmin(hist @ cost.T, axis=1)
            params[level, c] = np.where(hist.sum(axis=1) > 0, best, em.NEUTRAL_PARAM)
    grid = tuple(int(v) for v in y.shape[1:3])
    return em.EntropyModel.from_parameters(inv_gains, steps, knots, coded, params, grid)


def validation_figures(y: np.ndarray, generator_onnx: Path, model, gains: np.ndarray, val_u8: np.ndarray) -> dict:
    """Per exported level, on the validation split's latents ``y`` (encoder only, no refinement):
    mean ideal bytes of the payload and mean PSNR of onnxruntime's output. The runtime warns when
    an image falls far below these (probably unlike the training set)."""
    import onnxruntime as ort

    from runtime.images import from_unit_range
    from runtime.metrics import psnr

    sess = ort.InferenceSession(str(generator_onnx), providers=["CPUExecutionProvider"])
    out = {"images": len(val_u8), "bytes": [], "psnr": []}
    for level, g in enumerate(gains):
        q, _ = model.clip(level, quantize_latents(y, g))
        latent = model.dequantize(level, q)
        img = from_unit_range(sess.run(None, {sess.get_inputs()[0].name: latent})[0])
        out["bytes"].append(round(float(np.mean(model.bits(level, q))) / 8, 2))
        out["psnr"].append(round(float(np.mean(psnr(img, val_u8))), 3))
    return out


def warm_start_facts(cfg, selected_step=None) -> dict:
    """For a run started from a bundle (``--init-from``): which bundle, and the steps behind it, so
    the manifest tells the whole training history (``total_steps``). When that bundle is an earlier
    export of this very run (a re-export in place: same steps and selected step), its own history
    is kept rather than counted twice."""
    if not cfg.init_from:
        return {}
    try:
        before = json.loads((Path(cfg.init_from) / MANIFEST).read_text())
        training = before["training"]
        if (training.get("steps") == cfg.steps and training.get("selected_step") == selected_step
                and "init_model_id" in training and "total_steps" in training):
            return {"init_from": str(cfg.init_from), "init_model_id": training["init_model_id"],
                    "total_steps": int(training["total_steps"])}
        prior = int(training.get("total_steps", training["steps"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {"init_from": str(cfg.init_from)}
    return {"init_from": str(cfg.init_from), "init_model_id": before.get("model_id"),
            "total_steps": prior + int(cfg.steps)}


def recorded_run(run: Path) -> dict:
    """What a run's own records add to the manifest: the steps it trained (summary.json), the
    Keras backend, its last stage's lr and adversarial weight, and its recipe (training.recipe:
    name, SHA-256 of the file, the wall-clock budget, the stages) when it replayed one."""
    from training.recipe import load_schedule

    facts = {}
    summary = run / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        facts["steps"] = int(data.get("steps", 0)) or None
        if data.get("backend"):
            facts["backend"] = data["backend"]
    schedule = load_schedule(run)
    if schedule is not None:
        last = schedule.stages[-1]
        facts.update(lr=last.lr, w_adv=last.w_adv_rd)
        if schedule.seconds is not None:
            facts["seconds"] = schedule.seconds
        if schedule.recipe:
            facts["recipe"] = {"name": schedule.recipe, "sha256": schedule.sha256, "seconds": schedule.seconds,
                               "stages": [dataclasses.asdict(st) for st in schedule.stages]}
    return {k: v for k, v in facts.items() if v is not None}


def export_run(run: str | os.PathLike, out: str | os.PathLike, name: str | None = None,
               overwrite: bool = False, seed: int = 0) -> dict:
    """Export the best checkpoint of an ``rd`` run as a bundle in ``out``; returns the manifest."""
    from runtime.bundle import ENTROPY_BIN, RATE_NPZ
    from runtime.images import to_unit_range
    from runtime.inversion import predict
    from training.config import load_config
    from training.data import load_dataset
    from training.rd import build_rd_models

    run, out = Path(run), Path(out)
    best_dir = run / "best"
    if not (best_dir / "generator.weights.h5").exists():
        raise ExportError(f"{run}: no selected checkpoint (expected {best_dir}/generator.weights.h5)")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pass --overwrite to replace it")
    cfg = load_config(run).resolved()
    if cfg.mode != "rd":
        raise ExportError(f"{run} was trained with --mode {cfg.mode}; only rd runs make a bundle "
                          "(format 2: spatial latent, rate levels, entropy tables)")
    best = json.loads((best_dir / "best.json").read_text())
    run_facts = recorded_run(run)
    encoder, generator = build_rd_models(cfg)
    generator.load_weights(best_dir / "generator.weights.h5")
    encoder.load_weights(best_dir / "encoder.weights.h5")
    from training.models import round_kernels_to_int8, round_weights_to_half

    round_weights_to_half(generator)
    round_kernels_to_int8(generator)  # the page's download: int8 kernels (the encoder stays float16)
    round_weights_to_half(encoder)
    with np.load(best_dir / "rate.npz", allow_pickle=False) as f:
        rate = {k: f[k] for k in f.files}
    levels = expand_levels(rate)
    # a --crop run's images keep their stored size: its bundle codes any size, its own being the
    # data set's (the size a file without a stored size decodes to)
    train_u8, val_u8 = load_dataset(cfg.data, cfg.image_size, cfg.seed, crop=cfg.crop)
    image_size = int(val_u8.shape[1]) if cfg.crop else cfg.image_size
    if cfg.crop and val_u8.shape[1] != val_u8.shape[2]:
        raise ExportError(f"{cfg.data}: a --crop run's validation images must be square to name the bundle's size")
    if cfg.crop:  # whole 128² images hold 16x a 32² image's latent positions: a sample fits the tables
        train_u8 = train_u8[np.random.default_rng(seed).permutation(len(train_u8))[:CROP_TABLE_IMAGES]]
        val_u8 = val_u8[:CROP_VAL_IMAGES]
    y_train = predict(encoder, to_unit_range(train_u8))
    grid = tuple(int(v) for v in y_train.shape[1:3])
    model = entropy_parameters(y_train, levels["gains"], levels["inv_gains"])
    name = name or out.name
    dataset = Path(cfg.data).stem
    entropy_bytes = model.to_bytes()
    meta = {"gancodec_role": "generator", "latent_grid": f"{grid[0]},{grid[1]},{cfg.channels}",
            "image_size": "any" if cfg.crop else image_size, "output_range": "-1,1", "dataset": dataset,
            "bundle_name": name}
    # the model id (the hash of generator.onnx) must name the tables too: a file written with other
    # tables and the same network must not verify (runtime.bundle checks this entry)
    gen_meta = {**meta, ENTROPY_SHA256_KEY: hashlib.sha256(entropy_bytes).hexdigest()}

    with atomic_directory(out) as tmp:
        save_keras(generator, tmp / GENERATOR_KERAS)
        to_onnx(generator, "latent", "image", tmp / GENERATOR_ONNX, gen_meta)
        save_keras(encoder, tmp / ENCODER_KERAS)
        to_onnx(encoder, "image", "latent", tmp / ENCODER_ONNX, {**meta, "gancodec_role": "encoder"})
        (tmp / ENTROPY_BIN).write_bytes(entropy_bytes)
        np.savez(tmp / RATE_NPZ, gains=levels["gains"], lambdas=levels["lambdas"],
                 mix_logits=rate["mix_logits"], means=rate["means"], log_scales=rate["log_scales"])
        rng = np.random.default_rng(seed)
        zq = model.dequantize(len(levels["gains"]) // 2,
                              np.rint(y_train[:64] * levels["gains"][len(levels["gains"]) // 2]))
        x = rng.uniform(-1, 1, (16, image_size, image_size, 3)).astype(np.float32)
        diffs = {"generator": parity(generator, tmp / GENERATOR_ONNX, zq),
                 "encoder": parity(encoder, tmp / ENCODER_ONNX, x)}
        if cfg.crop:  # dynamic spatial dimensions: a non-square size that is not the training crop's
            odd = rng.uniform(-1, 1, (2, 48, 80, 3)).astype(np.float32)
            diffs["encoder_48x80"] = parity(encoder, tmp / ENCODER_ONNX, odd)
            diffs["generator_48x80"] = parity(generator, tmp / GENERATOR_ONNX, zq[:2, :6, :10])
        bad = {k: v for k, v in diffs.items() if not v <= PARITY_TOLERANCE}
        if bad:
            raise ExportError(f"parity check failed (max abs diff {bad} > {PARITY_TOLERANCE})")
        files = [GENERATOR_ONNX, GENERATOR_KERAS, ENCODER_ONNX, ENCODER_KERAS, ENTROPY_BIN, RATE_NPZ]
        digests = {f: sha256_file(tmp / f) for f in files}
        manifest = {
            "format": BUNDLE_FORMAT,
            "name": name,
            "model_id": digests[GENERATOR_ONNX],
            "image_size": image_size,
            "any_size": bool(cfg.crop),
            "latent_grid": [grid[0], grid[1]],
            "channels": cfg.channels,
            "levels": len(levels["gains"]),
            "output_range": [-1.0, 1.0],
            "dataset": dataset,
            "training": {"mode": cfg.mode, "steps": run_facts.get("steps", cfg.steps), "selected_step": best.get("step"),
                         "batch": cfg.batch, "seed": cfg.seed, "trained_levels": cfg.levels,
                         **({"crop": cfg.image_size} if cfg.crop else {}),
                         "lambda_range": [cfg.lam_min, cfg.lam_max], "arch": cfg.rd_arch, "g_widths": cfg.rd_g_widths,
                         "e_widths": cfg.rd_e_widths, "d_widths": cfg.rd_d_widths,
                         "g_blocks": cfg.rd_g_blocks, "e_blocks": cfg.rd_e_blocks,
                         "w_adv": run_facts.get("w_adv", cfg.w_adv_rd), "lr": run_facts.get("lr", cfg.lr),
                         "rate_contexts": cfg.rate_contexts,
                         **{k: v for k, v in run_facts.items() if k in ("recipe", "backend", "seconds")},
                         "entropy_contexts": model.contexts, "entropy_segments": SEGMENTS,
                         "extra_levels": EXTRA_LEVELS, "generator_kernels": GENERATOR_KERNELS,
                         **warm_start_facts(dataclasses.replace(cfg, steps=run_facts.get("steps", cfg.steps)),
                                            best.get("step"))},
            "validation": (validation := validation_figures(predict(encoder, to_unit_range(val_u8)),
                                                            tmp / GENERATOR_ONNX, model, levels["gains"], val_u8)),
            # the level whose validation files are nearest DEFAULT_BYTES: what --level defaults to
            "default_level": int(np.argmin(np.abs(np.asarray(validation["bytes"]) - DEFAULT_BYTES))),
            "parity_max_abs_diff": diffs,
            "files": digests,
            "versions": _versions(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        load_bundle(tmp)  # the runtime accepts it
    return manifest


def rewrite_tables(bundle_dir: str | os.PathLike, data: str | os.PathLike, seed: int = 0,
                   int8_generator: bool = False) -> dict:
    """Refit a bundle's entropy model in place (what :func:`export_run` writes today: version-3
    parametric tables) from its own encoder (onnxruntime) on the training split of ``data``: new
    entropy.bin, generator.onnx's record of its hash (hence a new model id), the manifest's
    validation figures, default level and file hashes. The networks are unchanged; with
    ``int8_generator`` (needs TensorFlow) the generator's kernels are rounded to int8 as
    :func:`export_run` does (``training.models.round_kernels_to_int8``), its mirror and ONNX file
    rewritten and checked for parity. The whole bundle is rewritten in a temporary copy and swapped
    in; returns the new manifest."""
    import onnx
    import onnxruntime as ort

    from runtime.bundle import ENTROPY_BIN, RATE_NPZ
    from runtime.images import to_unit_range
    from training.data import load_dataset

    bundle = load_bundle(bundle_dir)
    manifest, directory = dict(bundle.manifest), Path(bundle.directory)
    training = manifest.get("training", {})
    crop = bool(manifest.get("any_size"))
    size = int(training.get("crop", manifest["image_size"])) if crop else int(manifest["image_size"])
    train_u8, val_u8 = load_dataset(data, size, int(training.get("seed", 0)), crop=crop)
    if crop:
        train_u8 = train_u8[np.random.default_rng(seed).permutation(len(train_u8))[:CROP_TABLE_IMAGES]]
        val_u8 = val_u8[:CROP_VAL_IMAGES]
    sess = ort.InferenceSession(str(directory / ENCODER_ONNX), providers=["CPUExecutionProvider"])

    def encode(x):
        name = sess.get_inputs()[0].name
        return np.concatenate([sess.run(None, {name: to_unit_range(x[i:i + 64])})[0] for i in range(0, len(x), 64)])

    rate = bundle.rate
    model = entropy_parameters(encode(train_u8), rate["gains"], bundle.entropy.inv_gains)
    entropy_bytes = model.to_bytes()
    with atomic_directory(directory) as tmp:
        for f in directory.iterdir():
            if f.is_file():
                (tmp / f.name).write_bytes(f.read_bytes())
        (tmp / ENTROPY_BIN).write_bytes(entropy_bytes)
        parity_now = _requantize_generator(tmp, model) if int8_generator else None
        proto = onnx.load(str(tmp / GENERATOR_ONNX))
        for entry in proto.metadata_props:
            if entry.key == ENTROPY_SHA256_KEY:
                entry.value = hashlib.sha256(entropy_bytes).hexdigest()
        onnx.save(proto, str(tmp / GENERATOR_ONNX))
        validation = validation_figures(encode(val_u8), tmp / GENERATOR_ONNX, model, rate["gains"], val_u8)
        digests = {**manifest["files"], GENERATOR_ONNX: sha256_file(tmp / GENERATOR_ONNX),
                   GENERATOR_KERAS: sha256_file(tmp / GENERATOR_KERAS),
                   ENTROPY_BIN: sha256_file(tmp / ENTROPY_BIN), RATE_NPZ: sha256_file(tmp / RATE_NPZ)}
        manifest.update(model_id=digests[GENERATOR_ONNX], validation=validation, files=digests,
                        default_level=int(np.argmin(np.abs(np.asarray(validation["bytes"]) - DEFAULT_BYTES))))
        manifest["training"] = {**training, "entropy_contexts": model.contexts, "entropy_segments": SEGMENTS,
                                **({"generator_kernels": GENERATOR_KERNELS} if int8_generator else {})}
        if int8_generator:
            manifest["parity_max_abs_diff"] = {**manifest.get("parity_max_abs_diff", {}), "generator": parity_now}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        load_bundle(tmp)  # the runtime accepts it
    return manifest


def _requantize_generator(directory: Path, model) -> float:
    """Round the generator of the bundle copy in ``directory`` to int8 kernels: its Keras mirror
    re-saved, generator.onnx re-exported with the same metadata; returns the parity (TF mirror
    against generator.onnx on 16 latents dequantized at the middle level from random symbols of
    ``model``), an ExportError above :data:`PARITY_TOLERANCE`."""
    import onnx

    from runtime.inversion import load_mirror
    from training.models import round_kernels_to_int8

    generator = load_mirror(directory / GENERATOR_KERAS)
    round_kernels_to_int8(generator)
    meta = {e.key: e.value for e in onnx.load(str(directory / GENERATOR_ONNX)).metadata_props}
    save_keras(generator, directory / GENERATOR_KERAS)
    to_onnx(generator, "latent", "image", directory / GENERATOR_ONNX, meta)
    level = model.levels // 2
    sym, _ = model.clip(level, np.random.default_rng(0).integers(-3, 4, (16, *model.grid, model.channels)))
    diff = parity(generator, directory / GENERATOR_ONNX, model.dequantize(level, sym).astype(np.float32))
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"parity check failed (max abs diff {diff} > {PARITY_TOLERANCE})")
    return diff


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.onnx", description="Export a training run as a model bundle.")
    p.add_argument("run", help="training run directory (runs/NAME)")
    p.add_argument("--out", required=True, help="bundle directory to create (models/NAME)")
    p.add_argument("--name", help="bundle name (default: the --out directory's name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    a = p.parse_args(argv)
    from runtime.quiet import quiet_tensorflow

    quiet_tensorflow(a.verbose)

    def run():
        manifest = export_run(a.run, a.out, a.name, a.overwrite)
        size = sum((Path(a.out) / f).stat().st_size for f in manifest["files"])
        grid = "x".join(map(str, manifest["latent_grid"] + [manifest["channels"]]))
        print(f"wrote {a.out}: model id {manifest['model_id'][:16]}…, latent {grid}, {manifest['levels']} levels, "
              f"{manifest['image_size']}x{manifest['image_size']}, {size / 1e6:.2f} MB, "
              f"parity {manifest['parity_max_abs_diff']}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
