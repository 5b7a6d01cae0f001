"""Training data: an .npz of uint8 RGB (keys as in ../shared/data) or a folder of images.

Returns uint8 arrays at model size; :func:`to_unit_range` (runtime.images) scales them to the
generator's output range [-1, 1]. With ``crop`` (``training.train --crop``) the images keep their
stored size (a model of any size trains on random crops of them), centre-cropped to the set's
smallest height and width if they differ. A folder with ``train/`` and ``val/`` subfolders keeps
that split; any other folder is split 80/20.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runtime.errors import CodecError
from runtime.images import load_image, open_image, to_model_size, to_rgb

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm"}
VAL_FRACTION = 0.2


class DataError(CodecError):
    """Raised for a data set that cannot be used for training."""


def split_train_val(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle with ``seed`` and split 80/20 into (train, val); val keeps at least one image."""
    if len(images) < 2:
        raise DataError(f"need at least 2 images to split into train/val, got {len(images)}")
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = max(1, int(round(len(images) * VAL_FRACTION)))
    return images[order[n_val:]], images[order[:n_val]]


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size and images.shape[2] == size:
        return images
    return np.stack([to_model_size(im, size) for im in images])


def _check_array(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"array '{name}' must be (N, H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise DataError(f"array '{name}' must be uint8, got {arr.dtype}")
    if len(arr) == 0:
        raise DataError(f"array '{name}' is empty")
    return arr


def _at_size(images, size: int, crop: bool) -> np.ndarray:
    """Model-size array of a list/array of images; with ``crop``, their stored size (centre-cropped
    to the common smallest height and width), which must be at least ``size`` a side."""
    if not crop:
        return _resize_all(np.asarray(images), size) if isinstance(images, np.ndarray) else np.stack(
            [to_model_size(im, size) for im in images])
    h = min(im.shape[0] for im in images)
    w = min(im.shape[1] for im in images)
    if min(h, w) < size:
        raise DataError(f"--crop {size} needs images at least {size}×{size}; the smallest is {w}×{h}")
    return np.stack([im[(im.shape[0] - h) // 2:][:h, (im.shape[1] - w) // 2:][:, :w] for im in images])


def load_npz(path: str | os.PathLike, size: int, seed: int = 0, crop: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load (train, val) uint8 arrays from an .npz; a set without 'val' is split 80/20."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            if "train" in keys:
                train = _check_array("train", npz["train"])
                val = _check_array("val", npz["val"]) if "val" in keys else None
            else:
                image_keys = [k for k in ("images", "x", "data") if k in keys]
                if not image_keys:
                    raise DataError(f"{path}: no 'train' (or 'images') array; keys are {keys}")
                train, val = _check_array(image_keys[0], npz[image_keys[0]]), None
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    if val is None:
        train, val = split_train_val(train, seed)
    return _at_size(train, size, crop), _at_size(val, size, crop)


def _image_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_all(files: list[Path], size: int, crop: bool) -> np.ndarray:
    if not crop:
        return np.stack([load_image(f, size)[0] for f in files])  # raises CodecError naming the bad file
    return _at_size([np.asarray(to_rgb(open_image(f))) for f in files], size, crop)


def load_folder(path: str | os.PathLike, size: int, seed: int = 0, crop: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load every image in a folder (recursively) at ``size`` (or, with ``crop``, their stored
    size); ``train/`` and ``val/`` subfolders give the split, else it is 80/20."""
    path = Path(path)
    if (path / "train").is_dir() and (path / "val").is_dir():
        parts = [_image_files(path / "train"), _image_files(path / "val")]
        for part, name in zip(parts, ("train", "val")):
            if not part:
                raise DataError(f"{path / name}: no image files found")
        return _read_all(parts[0], size, crop), _read_all(parts[1], size, crop)
    files = _image_files(path)
    if not files:
        raise DataError(f"{path}: no image files found")
    return split_train_val(_read_all(files, size, crop), seed)


def load_dataset(path: str | os.PathLike, size: int, seed: int = 0, crop: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load a data set from an .npz file or an image folder as uint8 (train, val)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file or directory")
    if p.is_dir():
        return load_folder(p, size, seed, crop)
    if p.suffix.lower() != ".npz":
        raise DataError(f"{path}: expected an .npz file or a folder of images")
    return load_npz(p, size, seed, crop)
