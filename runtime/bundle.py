"""Model bundles: find them, verify them against their manifest, open onnxruntime sessions.

A bundle (format 2) is a directory with ``manifest.json``, ``generator.onnx`` (the decoder:
dequantized spatial latent (N, H, W, C) -> image), ``entropy.bin`` (the integer frequency tables and
inverse gains of every rate level: the decoder's only source of probabilities, see
docs/bitstream.md), and for encoding ``encoder.onnx`` (image -> unscaled latent), ``rate.npz``
(float gains, λ and training density per level) and the TF mirrors ``generator.keras`` /
``encoder.keras``. The model id is the SHA-256 of ``generator.onnx``; every file is hashed in the
manifest and verified on load.

Bundles are found by directory, by name (``models/NAME``) or by model id (full hex or a prefix)
among ``models/*/`` of this project and the directories listed in ``$GANCODEC_MODELS``
(separated by ``os.pathsep``).

Imports numpy and onnxruntime only (decode path).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from runtime.errors import CodecError

MANIFEST = "manifest.json"
GENERATOR_ONNX = "generator.onnx"
GENERATOR_KERAS = "generator.keras"
ENCODER_ONNX = "encoder.onnx"
ENCODER_KERAS = "encoder.keras"
ENTROPY_BIN = "entropy.bin"
RATE_NPZ = "rate.npz"
ENTROPY_SHA256_KEY = "entropy_sha256"  # generator.onnx metadata: the SHA-256 of the entropy.bin it was exported with
BUNDLE_FORMAT = 2
# The level layout of an exported bundle (written by export.onnx, read by training's selection):
SUBLEVELS = 8  # exported rate levels between two trained ones (log-linear interpolation of gains)
EXTRA_LEVELS = 8  # exported levels finer than the finest trained one: one more trained interval
HALF_MIN_SIZE = 1024  # weight tensors at least this large are stored as float16 in the ONNX files
ENV_MODELS = "GANCODEC_MODELS"
PROJECT_MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = "airplane"
MAX_ONNX_BYTES = 200 * 1024 * 1024


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_search_dirs() -> list[Path]:
    """Directories whose sub-directories are bundles: $GANCODEC_MODELS first, then models/."""
    dirs = [Path(p) for p in os.environ.get(ENV_MODELS, "").split(os.pathsep) if p]
    dirs.append(PROJECT_MODELS)
    return dirs


def _read_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise CodecError(f"{directory}: not a model bundle (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise CodecError(f"{directory}: unreadable {MANIFEST} ({exc})") from None
    if not isinstance(manifest, dict):
        raise CodecError(f"{directory}: {MANIFEST} is not an object")
    if manifest.get("format") == 1:
        raise CodecError(f"{directory}: bundle format 1 (global latent, gancodec 0.1) is not supported by "
                         "this version; re-train with --mode rd and re-export")
    for key in ("format", "model_id", "image_size", "latent_grid", "channels", "levels", "files"):
        if key not in manifest:
            raise CodecError(f"{directory}: {MANIFEST} lacks '{key}'")
    if manifest["format"] != BUNDLE_FORMAT:
        raise CodecError(f"{directory}: bundle format {manifest['format']} is not supported")
    return manifest


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise CodecError(f"{path}: onnxruntime cannot load it ({exc})") from None


@dataclass
class Bundle:
    """A verified model bundle. Sessions are created on first use."""

    directory: Path
    manifest: dict
    threads: int = 1
    _sessions: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.directory.name)

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    @cached_property
    def model_id_bytes(self) -> bytes:
        return bytes.fromhex(self.model_id)

    @property
    def model_id_prefix(self) -> int:
        """The 12-bit id a latent.bin header carries (first 12 bits of the model id)."""
        return int(self.model_id[:3], 16)

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    @property
    def any_size(self) -> bool:
        """Whether the bundle codes images at their own size (networks exported with dynamic
        spatial dimensions, trained on crops: ``training.train --crop``). A fixed-size bundle codes
        every image at ``image_size``² (a stored size is only restored by resizing)."""
        return bool(self.manifest.get("any_size", False))

    @property
    def stride(self) -> int:
        """Image pixels per latent position along each side (8 for the GDN bundles)."""
        return self.image_size // int(self.manifest["latent_grid"][0])

    def coded_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the image the networks see for an image of this size: padded up to
        a multiple of :attr:`stride` (the codec pads by repeating the edge and crops it off after
        decoding)."""
        f = self.stride
        return -(-int(width) // f) * f, -(-int(height) // f) * f

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """The latent grid (H, W) of an image of this size (an any-size bundle)."""
        w, h = self.coded_size(width, height)
        return h // self.stride, w // self.stride

    def file_grid(self, header) -> tuple[int, int] | None:
        """The latent grid of a latent file with this header: an any-size bundle's follows the
        stored (coded) size; None = the bundle's own grid."""
        return self.grid(*header.size) if self.any_size and header.size else None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image's latent."""
        h, w = self.manifest["latent_grid"]
        return int(h), int(w), int(self.manifest["channels"])

    @property
    def levels(self) -> int:
        return int(self.manifest["levels"])

    @property
    def dataset(self) -> str:
        return str(self.manifest.get("dataset", ""))

    @property
    def has_encoder(self) -> bool:
        return ENCODER_ONNX in self.manifest["files"]

    def path(self, name: str) -> Path:
        return self.directory / name

    @cached_property
    def entropy(self):
        """The bundle's :class:`runtime.entropy.EntropyModel` (verified against the manifest)."""
        from runtime.entropy import EntropyModel

        model = EntropyModel.from_bytes(self.path(ENTROPY_BIN).read_bytes())
        meta = self.session(GENERATOR_ONNX).get_modelmeta().custom_metadata_map
        if ENTROPY_SHA256_KEY in meta and meta[ENTROPY_SHA256_KEY] != self.manifest["files"].get(ENTROPY_BIN):
            raise CodecError(f"{self.directory}: {ENTROPY_BIN} is not the one {GENERATOR_ONNX} was exported with")
        if model.shape != self.latent_shape or model.levels != self.levels:
            raise CodecError(f"{self.directory}: {ENTROPY_BIN} does not match the manifest "
                             f"({model.shape}, {model.levels} levels)")
        return model

    @cached_property
    def rate(self) -> dict:
        """Encoder-side float parameters per level: gains (L, C), lambdas (L,), training density."""
        path = self.path(RATE_NPZ)
        if not path.exists():
            raise CodecError(f"{self.directory}: no {RATE_NPZ}; this bundle can decode but not encode")
        with np.load(path, allow_pickle=False) as f:
            rate = {k: f[k] for k in f.files}
        if rate["gains"].shape != (self.levels, self.latent_shape[2]):
            raise CodecError(f"{self.directory}: {RATE_NPZ} does not match the manifest")
        return rate

    def validation_psnr(self, level: int) -> float | None:
        """Mean PSNR of the validation split at ``level`` (encoder only), from the manifest."""
        figures = self.manifest.get("validation", {}).get("psnr")
        return float(figures[level]) if figures and 0 <= level < len(figures) else None

    def session(self, name: str = GENERATOR_ONNX, threads: int | None = None):
        """The onnxruntime session of ``name`` with ``threads`` intra-op threads (default: the
        bundle's). onnxruntime's CPU kernels split work by output, so the thread count does not
        change a single output bit (tests/test_codec.py checks it)."""
        key = (name, self.threads if threads is None else int(threads))
        if key not in self._sessions:
            self._sessions[key] = _session(self.path(name), key[1])
        return self._sessions[key]

    def generate(self, latents: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Run generator.onnx: dequantized latents (N, H, W, C) float32 -> (N, f·H, f·W, 3) in [-1, 1]."""
        y = np.ascontiguousarray(latents, dtype=np.float32)
        if y.ndim != 4 or y.shape[3] != self.latent_shape[2]:
            raise CodecError(f"latents must be (N, H, W, {self.latent_shape[2]}), got {y.shape}")
        sess = self.session(GENERATOR_ONNX, threads)
        return sess.run(None, {sess.get_inputs()[0].name: y})[0]

    def encode_latents(self, images: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Run encoder.onnx: (N, S, S, 3) float32 in [-1, 1] -> unscaled latents (N, H, W, C)."""
        if not self.has_encoder:
            raise CodecError(f"{self.directory}: no {ENCODER_ONNX}; this bundle can decode but not encode")
        sess = self.session(ENCODER_ONNX, threads)
        x = np.ascontiguousarray(images, dtype=np.float32)
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def verify_files(directory: Path, manifest: dict) -> None:
    """Refuse a bundle whose files do not hash to what its manifest says."""
    files = manifest["files"]
    if not isinstance(files, dict) or GENERATOR_ONNX not in files:
        raise CodecError(f"{directory}: manifest lists no {GENERATOR_ONNX}")
    for name, digest in files.items():
        if "/" in name or "\\" in name or name.startswith("."):
            raise CodecError(f"{directory}: manifest names an odd file {name!r}")
        path = directory / name
        if not path.is_file():
            raise CodecError(f"{directory}: {name} is missing")
        if path.stat().st_size > MAX_ONNX_BYTES:
            raise CodecError(f"{directory}: {name} is implausibly large")
        if sha256_file(path) != digest:
            raise CodecError(f"{directory}: {name} does not match its manifest (modified or corrupted bundle)")
    if files[GENERATOR_ONNX] != manifest["model_id"]:
        raise CodecError(f"{directory}: model id is not the hash of {GENERATOR_ONNX}")


_LOADED: dict = {}


def _signature(d: Path) -> tuple:
    """Names, sizes and modification times of a bundle's files: a change forces re-verification."""
    return tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in d.iterdir()
                        if p.is_file() for st in [p.stat()]))


def load_bundle(directory: str | os.PathLike, threads: int = 1) -> Bundle:
    """Load and verify the bundle in ``directory``.

    Verified bundles (and their onnxruntime sessions) are kept per process and reused while their
    files are unchanged; any change to a file is re-verified against the manifest.
    """
    d = Path(directory)
    if not d.is_dir():
        raise CodecError(f"{directory}: no such model directory")
    key = (str(d.resolve()), threads)
    sig = _signature(d)
    cached = _LOADED.get(key)
    if cached is not None and cached[0] == sig:
        return cached[1]
    manifest = _read_manifest(d)
    verify_files(d, manifest)
    bundle = Bundle(d, manifest, threads)
    _LOADED[key] = (sig, bundle)
    return bundle


def list_bundles() -> list[Path]:
    """Every bundle directory on the search path (unverified), in search order, deduplicated."""
    seen, out = set(), []
    for base in model_search_dirs():
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if (d / MANIFEST).is_file() and d.resolve() not in seen:
                seen.add(d.resolve())
                out.append(d)
    return out


def manifests() -> list[tuple[Path, dict]]:
    """(directory, manifest) of each readable bundle on the search path."""
    out = []
    for d in list_bundles():
        try:
            out.append((d, _read_manifest(d)))
        except CodecError:
            continue
    return out


def find_bundle(spec: str | os.PathLike | None = None, threads: int = 1) -> Bundle:
    """Resolve a model by directory, bundle name or model id (hex, prefix allowed)."""
    spec = DEFAULT_MODEL if spec is None else str(spec)
    if os.path.isdir(spec):
        return load_bundle(spec, threads)
    found = manifests()
    by_name = [d for d, m in found if d.name == spec]
    if by_name:
        return load_bundle(by_name[0], threads)
    s = spec.lower()
    if len(s) >= 4 and all(c in "0123456789abcdef" for c in s):
        matches = [d for d, m in found if m["model_id"].startswith(s)]
        if len(matches) == 1:
            return load_bundle(matches[0], threads)
        if len(matches) > 1:
            raise CodecError(f"model id prefix {spec} is ambiguous: {', '.join(str(m) for m in matches)}")
    names = ", ".join(d.name for d, _ in found) or "none"
    raise CodecError(f"unknown model {spec!r} (not a directory, name or model id; available: {names}; "
                     f"bundles are looked up in models/ and ${ENV_MODELS})")


def bundles_for_prefix(prefix: int, threads: int = 1) -> list[Bundle]:
    """Verified bundles whose 12-bit id prefix (a latent.bin header's) is ``prefix``."""
    out = []
    for d, m in manifests():
        try:
            if int(str(m["model_id"])[:3], 16) == int(prefix):
                out.append(load_bundle(d, threads))
        except ValueError:  # a manifest with an odd id names no file of ours
            continue
    return out
