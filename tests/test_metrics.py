import numpy as np
import pytest
from skimage.metrics import structural_similarity

from runtime import metrics


def _img(seed, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_identical_images():
    a = _img(0)
    assert metrics.l1(a, a) == 0
    assert metrics.mse(a, a) == 0
    assert metrics.psnr(a, a) == np.inf
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0)


def test_constant_shift():
    a = np.full((32, 32, 3), 100, np.uint8)
    b = a + np.uint8(10)
    assert metrics.l1(a, b) == 10 * 32 * 32 * 3
    assert metrics.mse(a, b) == 100
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 100))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ssim_matches_scikit_image(seed):
    rng = np.random.default_rng(seed)
    a = _img(seed)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255, channel_axis=-1)
    assert metrics.ssim(a, b) == pytest.approx(ref, abs=1e-6)


def test_batch_matches_single():
    a = np.stack([_img(i) for i in range(3)])
    b = np.stack([_img(10 + i) for i in range(3)])
    for fn in (metrics.l1, metrics.mse, metrics.psnr, metrics.ssim, metrics.ms_ssim):
        batch = fn(a, b)
        assert batch.shape == (3,)
        np.testing.assert_allclose(batch, [fn(a[i], b[i]) for i in range(3)])


def test_ms_ssim_scales_and_ordering():
    assert metrics.ms_ssim_scales(32) == 3
    assert metrics.ms_ssim_scales(64) == 4
    a = _img(5)
    rng = np.random.default_rng(0)
    small = np.clip(a + rng.normal(0, 5, a.shape), 0, 255).astype(np.uint8)
    large = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert 1.0 > metrics.ms_ssim(a, small) > metrics.ms_ssim(a, large) > 0


def test_bits_per_pixel():
    assert metrics.bits_per_pixel(128, 32, 32) == 1.0


@pytest.mark.parametrize("noise", [4.0, 12.0, 30.0])
def test_ms_ssim_matches_tensorflow_at_full_scale(noise):
    """At a size where the standard 5 scales and 11x11 window fit (>= 161 px), ours is Wang et al.
    2003 exactly: it must agree with TensorFlow's independent tf.image.ssim_multiscale to 1e-4
    (and SSIM with tf.image.ssim), on smooth images with noise and on an odd width."""
    tf = pytest.importorskip("tensorflow", reason="TensorFlow (train extra) is the MS-SSIM oracle")
    rng = np.random.default_rng(int(noise))
    for h, w in ((176, 192), (168, 170)):
        raw = rng.uniform(0, 255, (2, h // 8 + 1, w // 8 + 1, 3))
        x = np.stack([np.kron(r, np.ones((8, 8, 1)))[:h, :w] for r in raw])  # blocky, then smoothed
        x = (x + np.roll(x, 3, axis=1) + np.roll(x, 5, axis=2)) / 3.0
        y = np.clip(x + rng.normal(0, noise, x.shape), 0, 255)
        x, y = np.round(x), np.round(y)
        expected = tf.image.ssim_multiscale(tf.constant(x), tf.constant(y), 255.0, filter_size=11,
                                            filter_sigma=1.5).numpy()
        np.testing.assert_allclose(metrics.ms_ssim(x, y), expected, atol=1e-4)
        np.testing.assert_allclose(metrics.ssim(x, y), tf.image.ssim(tf.constant(x), tf.constant(y), 255.0).numpy(),
                                   atol=1e-4)
        assert metrics.ms_ssim_scales(min(h, w)) == 5
