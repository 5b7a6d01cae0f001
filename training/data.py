"""Training data: an .npz of uint8 RGB (keys as in ../shared/data) or a folder of images.

Returns uint8 arrays at model size; :func:`to_unit_range` (runtime.images) scales them to the
generator's output range [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runtime.errors import CodecError
from runtime.images import load_image, to_model_size

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


def load_npz(path: str | os.PathLike, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
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
    return _resize_all(train, size), _resize_all(val, size)


def load_folder(path: str | os.PathLike, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load every image in a folder (recursively), crop/resize to ``size``, split 80/20."""
    files = sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{path}: no image files found")
    images = [load_image(f, size)[0] for f in files]  # raises CodecError naming the bad file
    return split_train_val(np.stack(images), seed)


def load_dataset(path: str | os.PathLike, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load a data set from an .npz file or an image folder as uint8 (train, val)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file or directory")
    if p.is_dir():
        return load_folder(p, size, seed)
    if p.suffix.lower() != ".npz":
        raise DataError(f"{path}: expected an .npz file or a folder of images")
    return load_npz(p, size, seed)
