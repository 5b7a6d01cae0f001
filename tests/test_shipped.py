"""Every shipped bundle encodes: a few images through the public API at a byte budget, with the
default refinement, give files within the budget that decode (by the CLI's path) to what the
encoder reported, at a PSNR well above the flat-colour baseline. No ../shared: the images are
made here (smooth blobs with texture, the kind of content every model has seen)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import metrics
from runtime.bundle import PROJECT_MODELS
from tests.conftest import synthetic_images

SHIPPED = sorted(d.name for d in PROJECT_MODELS.iterdir() if (d / "manifest.json").is_file())
#: bytes per image by model size (32x32 bundles: the README's 200 B; flowers128: 1200 B at 128x128)
BUDGET = {32: 200, 128: 1200}
#: the PSNR a model must beat the flat-colour image by (a broken model decodes to noise or mush),
#: and an absolute floor (measured: 36.8-48.1 dB on these images, 20.8-29.1 dB flat)
MARGIN_DB = 6.0
FLOOR_DB = 34.0


def _images(size: int, n: int = 3) -> np.ndarray:
    blobs = synthetic_images(n, size, 11).astype(np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / size
    texture = 18.0 * np.sin(2 * np.pi * 3 * xx + 1.3) * np.cos(2 * np.pi * 2 * yy)
    return np.clip(blobs + texture[None, ..., None], 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundle_encodes_within_budget_above_a_psnr_floor(name):
    from runtime import Codec
    from runtime.codec import decode_file_bytes

    codec = Codec(str(PROJECT_MODELS / name))
    size = codec.bundle.image_size
    budget = BUDGET[128 if size >= 128 else 32]
    images = _images(size)
    results = codec.compress(list(images), target_bytes=budget, fallback=False)
    for image, res in zip(images, results):
        assert res.kind == "latent" and res.num_bytes <= budget, (name, res.num_bytes)
        decoded, found = decode_file_bytes(res.data)
        assert found.model_id == codec.bundle.model_id
        np.testing.assert_array_equal(decoded, res.reconstruction)  # what the encoder reports is decoded
        flat = np.broadcast_to(image.reshape(-1, 3).mean(axis=0).round(), image.shape)
        floor = max(metrics.psnr(flat, image) + MARGIN_DB, FLOOR_DB)
        assert metrics.psnr(decoded, image) > floor, (name, metrics.psnr(decoded, image), floor)
