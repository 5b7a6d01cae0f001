"""Turn a training run into a model bundle.

    python -m export.onnx runs/NAME --out models/NAME [--name NAME]

Steps: rebuild the run's selected (best) generator and encoder; normalise the latent so it is
N(0, 1) per dimension on the training data (folded exactly into the first Dense of the generator
and the last BatchNorm of the encoder, so the bitstream's prior holds); save ``generator.keras``
(the TF mirror, loadable with Keras alone) and export it with tf2onnx to ``generator.onnx``
(input ``z`` [N, latent], output ``image`` [N, H, W, 3], dynamic batch); the same for the encoder
(``image`` -> ``z``). Check parity (onnxruntime CPU vs TensorFlow, max abs difference ≤ 1e-4) and
write ``manifest.json``. Everything is written into a temporary directory that is renamed into
place only when all checks pass, so a failure leaves no partial bundle.

The ONNX files carry the essentials in their metadata (latent size, image size, output range, data
set, role). The model id is the SHA-256 of ``generator.onnx`` itself and so cannot be stored inside
it; a lone ONNX file's id is its hash.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from runtime.bundle import (  # noqa: E402
    BUNDLE_FORMAT,
    ENCODER_KERAS,
    ENCODER_ONNX,
    GENERATOR_KERAS,
    GENERATOR_ONNX,
    MANIFEST,
    load_bundle,
    sha256_file,
)
from runtime.errors import CodecError, run_cli  # noqa: E402

PARITY_TOLERANCE = 1e-4
OPSET = 17
DEFAULT_BITS = 4


class ExportError(CodecError):
    """Export failed; nothing was written."""


def fold_latent_normalisation(generator, encoder, mean: np.ndarray, std: np.ndarray) -> None:
    """Make the latent u = (z - mean) / std the models' interface, exactly and in place.

    Generator: its first Dense sees z = mean + std·u, so W' = diag(std)·W and b' = b + mean·W.
    Encoder: its last layer is a BatchNormalization (no scale/offset) y = (x - μ)/sqrt(σ² + ε);
    u = (y - mean)/std is the same layer with μ' = μ + mean·sqrt(σ² + ε) and
    σ'² = std²·(σ² + ε) - ε.
    """
    dense = generator.get_layer("project")
    w, b = dense.get_weights()
    dense.set_weights([(std[:, None] * w).astype(np.float32), (b + mean @ w).astype(np.float32)])
    if encoder is not None:
        bn = encoder.get_layer("latent_std")
        mu, var = bn.get_weights()
        eps = bn.epsilon
        scale = np.sqrt(var + eps)
        bn.set_weights([(mu + mean * scale).astype(np.float32),
                        (std**2 * (var + eps) - eps).astype(np.float32)])


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
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


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
    for pkg in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "constriction"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def export_run(run: str | os.PathLike, out: str | os.PathLike, name: str | None = None,
               overwrite: bool = False, seed: int = 0) -> dict:
    """Export the best checkpoint of ``run`` as a bundle in ``out``; returns the manifest."""
    from training.data import load_dataset
    from training.train import build_models, load_config

    run, out = Path(run), Path(out)
    best_dir = run / "best"
    if not (best_dir / "generator.weights.h5").exists():
        raise ExportError(f"{run}: no selected checkpoint (expected {best_dir}/generator.weights.h5)")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pass --overwrite to replace it")
    cfg = load_config(run).resolved()
    best = json.loads((best_dir / "best.json").read_text())
    generator, _, encoder = build_models(cfg)
    generator.load_weights(best_dir / "generator.weights.h5")
    if encoder is not None:
        encoder.load_weights(best_dir / "encoder.weights.h5")
        from runtime.images import to_unit_range
        from runtime.inversion import predict

        train_u8, _ = load_dataset(cfg.data, cfg.image_size, cfg.seed)
        z = predict(encoder, to_unit_range(train_u8))
        mean, std = z.mean(axis=0).astype(np.float64), z.std(axis=0).astype(np.float64)
        std = np.maximum(std, 1e-3)
        fold_latent_normalisation(generator, encoder, mean, std)
    name = name or out.name
    dataset = Path(cfg.data).stem
    meta = {"gancodec_role": "generator", "latent_dim": cfg.latent_dim, "image_size": cfg.image_size,
            "output_range": "-1,1", "dataset": dataset, "bundle_name": name}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        generator.save(tmp / GENERATOR_KERAS)
        to_onnx(generator, "z", "image", tmp / GENERATOR_ONNX, meta)
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((64, cfg.latent_dim)).astype(np.float32)
        diffs = {"generator": parity(generator, tmp / GENERATOR_ONNX, z)}
        files = [GENERATOR_ONNX, GENERATOR_KERAS]
        if encoder is not None:
            encoder.save(tmp / ENCODER_KERAS)
            to_onnx(encoder, "image", "z", tmp / ENCODER_ONNX, {**meta, "gancodec_role": "encoder"})
            x = rng.uniform(-1, 1, (16, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
            diffs["encoder"] = parity(encoder, tmp / ENCODER_ONNX, x)
            files += [ENCODER_ONNX, ENCODER_KERAS]
        bad = {k: v for k, v in diffs.items() if not v <= PARITY_TOLERANCE}
        if bad:
            raise ExportError(f"parity check failed (max abs diff {bad} > {PARITY_TOLERANCE})")
        digests = {f: sha256_file(tmp / f) for f in files}
        manifest = {
            "format": BUNDLE_FORMAT,
            "name": name,
            "model_id": digests[GENERATOR_ONNX],
            "latent_dim": cfg.latent_dim,
            "image_size": cfg.image_size,
            "output_range": [-1.0, 1.0],
            "latent_prior": "N(0,1) per dimension",
            "dataset": dataset,
            "training": {"mode": cfg.mode, "steps": cfg.steps, "selected_step": best.get("step"),
                         "batch": cfg.batch, "seed": cfg.seed, "g_widths": cfg.g_widths,
                         "e_widths": cfg.e_widths if encoder is not None else None},
            "validation_inversion_psnr": best.get("val_psnr"),
            "validation_encoder_psnr": best.get("encoder_psnr"),
            "quantization": {"bits": DEFAULT_BITS, "mode": "range", "step": "2^(3-bits)", "clip_sigmas": 6.0},
            "parity_max_abs_diff": diffs,
            "files": digests,
            "versions": _versions(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        load_bundle(tmp)  # the runtime accepts it
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.onnx", description="Export a training run as a model bundle.")
    p.add_argument("run", help="training run directory (runs/NAME)")
    p.add_argument("--out", required=True, help="bundle directory to create (models/NAME)")
    p.add_argument("--name", help="bundle name (default: the --out directory's name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    a = p.parse_args(argv)

    def run():
        manifest = export_run(a.run, a.out, a.name, a.overwrite)
        size = sum((Path(a.out) / f).stat().st_size for f in manifest["files"])
        print(f"wrote {a.out}: model id {manifest['model_id'][:16]}…, latent {manifest['latent_dim']}, "
              f"{manifest['image_size']}x{manifest['image_size']}, {size / 1e6:.2f} MB, "
              f"parity {manifest['parity_max_abs_diff']}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
