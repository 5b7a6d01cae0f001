"""runtime.codec and the encode/decode CLIs on the tiny rd bundle: round trips, every rate level,
rate control, refinement, the WebP fallback and the warnings."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from runtime import bitstream, metrics
from runtime.errors import CodecError
from tests.conftest import run_module, synthetic_images, tiny_config


@pytest.fixture(scope="module")
def codec(tiny_bundle):
    from runtime.codec import Codec

    return Codec(str(tiny_bundle))


@pytest.fixture(scope="module")
def rd_codec(tiny_npz, tmp_path_factory):
    """A tiny rd model trained longer than the session's (300 steps, ~30 s): rates and qualities
    that differ between levels, and an encoder that refinement can reliably improve on."""
    from export.onnx import export_run
    from runtime.codec import Codec
    from training.train import train

    run = tmp_path_factory.mktemp("runs") / "rd300"
    train(tiny_config(tiny_npz, run, steps=300, eval_every=300, ckpt_every=300), quiet=True)
    out = tmp_path_factory.mktemp("models") / "rd300"
    export_run(run, out)
    return Codec(str(out))


@pytest.fixture(scope="module")
def images():
    return list(synthetic_images(8, 16, seed=7))


@pytest.fixture(scope="module")
def analysed(rd_codec, images):
    """(pixels, the rd model's encoder latents y) of the test images."""
    pixels, _ = rd_codec.prepare(images)
    return pixels, rd_codec.analyze(pixels)


def symbols_at(codec, y, level):
    """The unrefined symbols of every image at one level (what choose_levels judges)."""
    levels = np.full(len(y), level)
    return codec.quantize(codec.scale(y, levels), levels)[0]


def file_sizes(codec, y):
    """(N, levels) whole-file bytes of the unrefined symbols at every level."""
    return np.array([[len(codec.pack(s, lv)) for s in symbols_at(codec, y, lv)] for lv in range(codec.levels)]).T


def psnrs(codec, pixels, y):
    """(N, levels) decoded PSNR of the unrefined symbols at every level."""
    return np.stack([metrics.psnr(codec.synthesize(symbols_at(codec, y, lv), lv), pixels)
                     for lv in range(codec.levels)], axis=1)


def rd_loss(codec, pixels, symbols, levels):
    """Per image, the loss the model is trained and refined for: file bits/pixel + λ·MSE (0..255)."""
    recon = codec.synthesize(symbols, levels)
    mse = np.mean((recon.astype(np.float64) - pixels) ** 2, axis=(1, 2, 3))
    bits = np.array([8 * len(codec.pack(s, lv)) for s, lv in zip(symbols, levels)])
    lam = codec.bundle.rate["lambdas"][np.asarray(levels)]
    return bits / (pixels.shape[1] * pixels.shape[2]) + lam * mse


# -- round trips and rate levels ----------------------------------------------------------------

def test_bundle_is_variable_rate(codec):
    from export.onnx import EXTRA_LEVELS

    assert codec.levels == 17 + EXTRA_LEVELS  # 3 trained levels, 8 sublevels between each, and the extrapolated ones
    assert codec.bundle.latent_shape == (2, 2, 8)
    assert 0 <= codec.default_level < codec.levels


def test_round_trip_psnr_equals_reported(codec, images):
    results = codec.compress(images, level=12, steps=10)
    assert len(results) == len(images)
    for img, res in zip(images, results):
        assert res.kind == "latent" and res.level == 12
        decoded = codec.decompress(res.data)
        np.testing.assert_array_equal(decoded, res.reconstruction)
        assert metrics.psnr(decoded, img) == pytest.approx(res.quality["psnr"])
        assert res.num_bytes == len(res.data)
        assert {"psnr", "ssim", "ms_ssim", "mse"} <= set(res.quality)


def test_every_rate_level_decodes(rd_codec, analysed):
    """The variable-rate model: symbols packed at each level decode to the decoder's output at
    that level, and the files grow with the level overall."""
    pixels, y = analysed
    totals = []
    for lv in range(rd_codec.levels):
        symbols = symbols_at(rd_codec, y, lv)
        expected = rd_codec.synthesize(symbols, lv)
        files = [rd_codec.pack(s, lv) for s in symbols]
        for data, want in zip(files, expected):
            np.testing.assert_array_equal(rd_codec.decompress(data), want)
        totals.append(sum(map(len, files)))
    totals = np.array(totals)
    assert totals[-1] == totals.max() > totals[0], totals
    assert np.all(np.maximum.accumulate(totals) - totals <= len(y)), totals  # never a byte per file less
    # the decoder really uses the level: the same symbols at two levels decode differently
    s = symbols_at(rd_codec, y, rd_codec.levels - 1)
    assert not np.array_equal(rd_codec.synthesize(s, 0), rd_codec.synthesize(s, rd_codec.levels - 1))


def test_level_argument_checks(codec, images):
    with pytest.raises(CodecError, match="--level"):
        codec.compress(images[:1], level=codec.levels, steps=0)
    with pytest.raises(CodecError, match="not both"):
        codec.compress(images[:1], target_bytes=10, target_psnr=20.0, steps=0)
    with pytest.raises(CodecError, match="not both"):
        codec.compress(images[:1], level=2, target_bytes=10, steps=0)


# -- rate control -------------------------------------------------------------------------------

def test_target_bytes_picks_the_finest_level_that_fits(rd_codec, analysed):
    pixels, y = analysed
    sizes = file_sizes(rd_codec, y)
    assert sizes[:, -1].min() > sizes[:, 0].max()  # the tiny model has distinct rates
    interior = 0
    for budget in range(int(sizes.min()), int(sizes.max()) + 1):
        chosen = rd_codec.choose_levels(y, pixels, target_bytes=budget)
        for i, lv in enumerate(chosen):
            assert sizes[i, lv] <= budget or lv == 0, (budget, i, lv, sizes[i])
            assert lv == rd_codec.levels - 1 or sizes[i, lv + 1] > budget, (budget, i, lv, sizes[i])  # one finer does not fit
            interior += 0 < lv < rd_codec.levels - 1
    assert interior > 0


def test_target_psnr_picks_the_coarsest_level_that_reaches(rd_codec, analysed):
    pixels, y = analysed
    table = psnrs(rd_codec, pixels, y)
    interior = 0
    for i in range(len(pixels)):
        lo, hi = table[i, 0], table[i].max()
        for target in (table[i].min() - 1.0, (lo + hi) / 2, hi + 1.0):
            (lv,) = rd_codec.choose_levels(y[i : i + 1], pixels[i : i + 1], target_psnr=target)
            if table[i, lv] >= target:
                assert lv == 0 or table[i, lv - 1] < target, (i, target, lv, table[i])  # one coarser does not reach
            else:
                assert lv == rd_codec.levels - 1, (i, target, lv, table[i])  # none reached: the finest
            if target < table[i].min():
                assert lv == 0  # every level reaches it
            interior += 0 < lv < rd_codec.levels - 1 and table[i, lv] >= target
    assert interior > 0, table


def test_compress_to_target_bytes(rd_codec, images, analysed):
    pixels, y = analysed
    sizes = file_sizes(rd_codec, y)
    budget = int(np.median(sizes))
    chosen = rd_codec.choose_levels(y, pixels, target_bytes=budget)
    plain = rd_codec.compress(images, target_bytes=budget, steps=0, fallback=False)
    from runtime.codec import BASE_STARTS, BUDGET_STARTS, REQUANTIZE

    for r, lv in zip(plain, chosen):  # no refinement: the encoder's latent, fitted at the chosen level or finer
        assert r.level in {int(np.clip(lv + k, 0, rd_codec.levels - 1)) for k in (0, *BASE_STARTS)} and r.num_bytes <= budget
    refined = rd_codec.compress(images, target_bytes=budget, steps=5, fallback=False)

    for r, lv, row in zip(refined, chosen, sizes):
        # the encoder's own at the chosen level, or a refined one started there or finer, fitted at
        # its level or a neighbour
        allowed = {lv} | {int(np.clip(lv + k + s, 0, rd_codec.levels - 1)) for k, _ in BUDGET_STARTS for s in (0, *REQUANTIZE)}
        assert r.kind == "latent" and r.level in allowed
        assert r.num_bytes <= budget or row[0] > budget
        np.testing.assert_array_equal(rd_codec.decompress(r.data), r.reconstruction)


def test_rescale_moves_a_latent_between_levels(rd_codec, analysed):
    """A refined latent is re-quantized at a neighbouring level as the same y: u / gain_a · gain_b."""
    _, y = analysed
    a, b = np.full(len(y), 3), np.arange(len(y)) % rd_codec.levels
    np.testing.assert_allclose(rd_codec.rescale(rd_codec.scale(y, a), a, b), rd_codec.scale(y, b), rtol=1e-5, atol=1e-5)


def test_quantize_to_fit_is_the_smallest_dead_zone_that_fits(rd_codec, analysed):
    """The fit skips dead zones by their ideal code length; it must still choose what coding every
    dead zone in turn would: the first whose file fits, else the last."""
    from runtime.codec import DEADZONES

    _, y = analysed
    model = rd_codec.bundle.entropy
    for level in (4, rd_codec.levels - 1):
        scaled = rd_codec.scale(y, np.full(len(y), level)) * 1.3  # past the level's own rate
        sizes = np.array([len(rd_codec.pack(q, level)) for q in rd_codec.quantize(scaled, level)[0]])
        for budget in (int(sizes.min()) - 3, int(np.median(sizes)), int(sizes.max())):
            symbols, _, files = rd_codec.quantize_to_fit(scaled, level, budget)
            for u, q, data in zip(scaled, symbols, files):
                coded = [model.clip(level, np.sign(u) * np.floor(np.abs(u) + 0.5 - d))[0] for d in DEADZONES]
                lengths = [len(rd_codec.pack(c, level)) for c in coded]
                k = next((i for i, n in enumerate(lengths) if n <= budget), len(coded) - 1)
                np.testing.assert_array_equal(q, coded[k])
                assert data == rd_codec.pack(coded[k], level)


# -- refinement ---------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [4, 12, 16])
def test_refinement_beats_its_own_start(rd_codec, analysed, level):
    """Refined symbols have a lower rate–distortion loss than the encoder's own symbols they
    start from, at the same level (not "the best of both", which a no-op would pass)."""
    pixels, y = analysed
    levels = np.full(len(pixels), level)
    start, _ = rd_codec.quantize(rd_codec.scale(y, levels), levels)
    # the tiny model's latents need larger moves than the shipped models' default step size
    refined, _ = rd_codec.quantize(rd_codec.refine(pixels, y, levels, steps=20, lr=0.1), levels)
    assert not np.array_equal(start, refined)
    before, after = rd_loss(rd_codec, pixels, start, levels), rd_loss(rd_codec, pixels, refined, levels)
    assert after.mean() < 0.95 * before.mean(), (before, after)
    assert np.sum(after < before) > len(pixels) // 2, (before, after)


def test_flips_move_k_symbols_by_one_and_lower_the_loss(rd_codec, analysed):
    """Each polishing candidate moves at most k symbols of the chosen latent, each by ±1, and the
    best of them has a lower rate–distortion loss than the chosen latent for most images."""
    from runtime.codec import POLISH_FLIPS

    pixels, y = analysed
    levels = np.full(len(pixels), 12)
    sets = rd_codec.candidates(pixels, y, levels, 10)
    chosen, _ = rd_codec.best_of(sets, pixels, None, None, rd_codec.bundle.rate["lambdas"][levels])
    flips = rd_codec.flips(pixels, chosen)
    assert len(flips) == len(POLISH_FLIPS)
    base = rd_loss(rd_codec, pixels, chosen[1], levels)
    losses = []
    for k, (lv, q, files, _, decoded) in zip(POLISH_FLIPS, flips):
        moved = np.abs(q.astype(int) - chosen[1]).reshape(len(q), -1)
        assert moved.max() <= 1 and (moved.sum(1) <= k).all() and moved.sum() > 0
        assert [rd_codec.pack(s, 12) for s in q] == files
        np.testing.assert_array_equal(decoded, rd_codec.synthesize(q, lv))
        losses.append(rd_loss(rd_codec, pixels, q, levels))
    assert np.sum(np.min(losses, axis=0) < base) > len(pixels) // 2, (base, losses)


@pytest.mark.parametrize("budget", [30, 60])
def test_polishing_never_loses_under_a_budget(rd_codec, images, monkeypatch, budget):
    import runtime.codec as codec_module

    polished = rd_codec.compress(images, target_bytes=budget, fallback=False)
    monkeypatch.setattr(codec_module, "POLISH_ROUNDS", 0)
    plain = rd_codec.compress(images, target_bytes=budget, fallback=False)
    assert all(r.num_bytes <= budget for r in polished)
    a, b = np.array([r.quality["psnr"] for r in polished]), np.array([r.quality["psnr"] for r in plain])
    assert (a >= b).all() and (a > b).any(), (a, b)


# -- decoding -----------------------------------------------------------------------------------

def test_decode_is_deterministic(codec, images):
    from runtime.output import png_bytes

    data = codec.compress(images[:1], steps=0)[0].data
    assert png_bytes(codec.decompress(data)) == png_bytes(codec.decompress(data))


def test_encoder_threads_change_no_bit(rd_codec, images):
    """The encoder runs onnxruntime on every core; its files and reported decodes must be those of
    one thread, and equal to what the single-threaded decoder produces from each file alone."""
    from runtime.codec import Codec

    rng = np.random.default_rng(3)
    y = rng.standard_normal((64, *rd_codec.bundle.latent_shape)).astype(np.float32) * 2
    outs = [rd_codec.bundle.generate(y, threads) for threads in (1, 2, 3)]
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    one, many = Codec(rd_codec.bundle, encode_threads=1), Codec(rd_codec.bundle, encode_threads=2)
    a = one.compress(images, target_bytes=40, steps=2, fallback=False)
    b = many.compress(images, target_bytes=40, steps=2, fallback=False)
    assert [r.data for r in a] == [r.data for r in b]
    for r in b:
        assert np.array_equal(r.reconstruction, Codec(rd_codec.bundle, threads=1).decompress(r.data, keep_size=False))


def test_keep_size(codec):
    img = Image.fromarray(synthetic_images(1, 16)[0]).resize((40, 24))
    data = codec.compress([np.asarray(img)], steps=0, keep_size=True)[0].data
    assert codec.decompress(data).shape == (24, 40, 3)
    assert codec.decompress(data, keep_size=False).shape == (16, 16, 3)


def test_file_from_model_a_is_never_decoded_by_model_b(codec, images, tiny_run, tmp_path):
    from export.onnx import export_run
    from runtime.codec import Codec, decode_file_bytes

    other = tmp_path / "other"
    export_run(tiny_run, other)
    other_codec = Codec(str(other))
    assert other_codec.bundle.model_id != codec.bundle.model_id
    data = codec.compress(images[:1], steps=0)[0].data
    with pytest.raises(CodecError, match="written by model|another model"):
        other_codec.decompress(data)
    with pytest.raises(CodecError, match="written by model|another model"):
        decode_file_bytes(data, str(other))  # forcing --model does not bypass the id check


def test_webp_fallback_payload(codec):
    """image_fallback: the highest WebP quality whose whole file fits; it decodes without a bundle."""
    from runtime.codec import decode_file_bytes
    from runtime.codec import image_fallback as webp_fallback

    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    res = webp_fallback(noise, codec.bundle.model_id_bytes, None, target_bytes=300)
    assert res is not None and res.kind == "webp" and res.level is None and res.num_bytes <= 300
    image, bundle = decode_file_bytes(res.data)
    assert bundle is None
    np.testing.assert_array_equal(image, res.reconstruction)
    np.testing.assert_array_equal(codec.decompress(res.data), res.reconstruction)
    assert webp_fallback(noise, codec.bundle.model_id_bytes, None, target_bytes=10) is None
    reach = webp_fallback(noise, codec.bundle.model_id_bytes, None, target_psnr=11.0)
    assert reach is not None and reach.quality["psnr"] >= 11.0 and reach.num_bytes < res.num_bytes
    assert webp_fallback(noise, codec.bundle.model_id_bytes, None, target_psnr=40.0) is None  # lossy WebP cannot


def test_fallback_picks_the_best_of_webp_and_avif(codec):
    """Per target, the fallback is whichever of WebP and AVIF meets it best: on a smooth 64x64
    gradient WebP wins at 150 B (AVIF cannot fit) and AVIF at 600 B (measured: 36.1 dB WebP; 47.8 dB AVIF)."""
    from runtime.classic import AVIF, WEBP
    from runtime.codec import decode_file_bytes, image_fallback

    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    mid = codec.bundle.model_id_bytes
    for budget in (150, 600):
        res = image_fallback(img, mid, None, target_bytes=budget)
        best = {}
        for name, c, pack in (("webp", WEBP, bitstream.pack_webp), ("avif", AVIF, bitstream.pack_avif)):
            hit = c.best_fitting(img, lambda d, pack=pack: len(pack(d, mid)) <= budget)
            if hit is not None:  # AVIF's smallest file is above 150 B here
                best[name] = metrics.psnr(c.decode(hit[1]), img)
        assert res.kind == max(best, key=best.get) and res.num_bytes <= budget, (budget, best, res.kind)
        assert res.quality["psnr"] == pytest.approx(max(best.values()))
        image, bundle = decode_file_bytes(res.data)
        assert bundle is None
        np.testing.assert_array_equal(image, res.reconstruction)
    assert {image_fallback(img, mid, None, target_bytes=b).kind for b in (150, 600)} == {"webp", "avif"}


def test_noise_image_falls_back_to_webp(codec):
    noise = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    (latent,) = codec.compress([noise], target_bytes=300, steps=0, fallback=False)
    (best,) = codec.compress([noise], target_bytes=300, steps=0)
    assert latent.kind == "latent"
    assert best.kind == "webp" and best.num_bytes <= 300
    assert best.quality["psnr"] > latent.quality["psnr"]
    assert any("WebP" in w for w in best.warnings)
    (no_target,) = codec.compress([noise], steps=0)  # the fallback needs a target
    assert no_target.kind == "latent"


def test_image_unlike_the_training_set_is_reported(rd_codec):
    noise = (np.random.default_rng(1).integers(0, 2, (16, 16, 3)) * 255).astype(np.uint8)  # salt and pepper
    level = rd_codec.levels - 1
    (res,) = rd_codec.compress([noise], level=level, steps=0)
    assert res.quality["psnr"] < rd_codec.bundle.validation_psnr(level) - 6
    assert any("unlike its training set" in w for w in res.warnings), res.warnings
    (blob,) = rd_codec.compress([synthetic_images(1, 16, seed=1)[0]], level=level, steps=0)  # like its training set
    assert not blob.warnings


# -- CLIs ---------------------------------------------------------------------------------------

def test_encode_and_decode_cli(models_env, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(synthetic_images(2, 20, seed=3)):
        Image.fromarray(img).save(src / f"pic{i}.png")
    out = tmp_path / "bins"
    env = {"GANCODEC_MODELS": str(models_env.parent)}
    r = run_module("runtime.encode", src / "pic0.png", src / "pic1.png", "--model", models_env,
                   "--out-dir", out, "--steps", "5", "--level", "10", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["bytes"] for row in rows] == [(out / f"pic{i}.bin").stat().st_size for i in range(2)]
    for key in ("bpp", "psnr", "ssim", "ms_ssim", "warnings", "clipped"):
        assert key in rows[0]
    assert all(row["payload"] == "latent" and row["level"] == 10 for row in rows)
    # decode finds the model by id through $GANCODEC_MODELS, in a process where TensorFlow cannot load
    dec = run_module("tests.no_tf_decode", out / "pic0.bin", out / "pic1.bin", "--out-dir", tmp_path / "png", env=env)
    assert dec.returncode == 0, dec.stderr
    for i in range(2):
        png = np.asarray(Image.open(tmp_path / "png" / f"pic{i}.png"))
        src_img = np.asarray(Image.open(src / f"pic{i}.png").resize((16, 16), Image.Resampling.BOX))
        assert metrics.psnr(png, src_img) == pytest.approx(rows[i]["psnr"], abs=1e-3)
    # default output: next to the input
    dec2 = run_module("runtime.decode", out / "pic0.bin", env=env)
    assert dec2.returncode == 0 and (out / "pic0.png").exists()
    # plain text output names the level
    r = run_module("runtime.encode", src / "pic0.png", "--model", models_env, "-o", tmp_path / "p.bin",
                   "--steps", "0", env=env)
    assert r.returncode == 0 and "level " in r.stdout and "bytes" in r.stdout, r.stdout + r.stderr


def test_cli_unreachable_target_psnr_warns_with_best_psnr(models_env, tmp_path):
    img = tmp_path / "blob.png"
    Image.fromarray(synthetic_images(1, 16, seed=5)[0]).save(img)
    r = run_module("runtime.encode", img, "--model", models_env, "-o", tmp_path / "b.bin", "--steps", "0",
                   "--target-psnr", "80", "--json", env={"GANCODEC_MODELS": str(models_env.parent)})
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warnings and "target PSNR 80 dB not reached" in warnings[0], r.stderr
    best = float(re.search(r"best ([0-9.]+) dB", warnings[0]).group(1))
    assert best == pytest.approx(row["psnr"], abs=0.006)  # the best PSNR, as in the JSON
    assert row["warnings"] and (tmp_path / "b.bin").stat().st_size == row["bytes"]
    from export.onnx import EXTRA_LEVELS

    assert row["payload"] == "latent" and row["level"] == 16 + EXTRA_LEVELS  # the finest level: nothing reaches 80 dB


def test_cli_noise_image_falls_back_to_webp_and_decodes_without_tensorflow(models_env, tmp_path):
    noise = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    img = tmp_path / "noise.png"
    Image.fromarray(noise).save(img)
    env = {"GANCODEC_MODELS": str(models_env.parent)}
    out = tmp_path / "noise.bin"
    r = run_module("runtime.encode", img, "--model", models_env, "-o", out, "--steps", "0",
                   "--target-bytes", "300", "--json", env=env)
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["payload"] == "webp" and row["level"] is None and row["bytes"] <= 300
    assert any("WebP" in line for line in r.stderr.splitlines() if line.startswith("warning:")), r.stderr
    forced = run_module("runtime.encode", img, "--model", models_env, "-o", tmp_path / "latent.bin", "--steps", "0",
                        "--target-bytes", "300", "--no-fallback", "--json", env=env)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["payload"] == "latent"
    assert json.loads(forced.stdout)["psnr"] < row["psnr"]
    text = run_module("runtime.encode", img, "--model", models_env, "-o", tmp_path / "t.bin", "--steps", "0",
                      "--target-bytes", "300", env=env)
    assert text.returncode == 0 and "WebP payload" in text.stdout, text.stdout + text.stderr
    # a WebP payload decodes without TensorFlow and without any bundle installed
    dec = run_module("tests.no_tf_decode", out, "-o", tmp_path / "noise_dec.png", env={"GANCODEC_MODELS": str(tmp_path)})
    assert dec.returncode == 0, dec.stderr
    assert "WebP payload" in dec.stdout
    decoded = np.asarray(Image.open(tmp_path / "noise_dec.png"))
    assert metrics.psnr(decoded, noise) == pytest.approx(row["psnr"], abs=1e-3)


@pytest.mark.parametrize("content", [b"", b"\x8a", b"garbage that is not a latent", bytes(300), b"\xc7\x47\x00\x00junk"])
def test_decode_cli_bad_files(models_env, tmp_path, content):
    f = tmp_path / "bad.bin"
    f.write_bytes(content)
    target = tmp_path / "bad.png"
    r = run_module("runtime.decode", f, "-o", target, env={"GANCODEC_MODELS": str(models_env.parent)})
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not target.exists()


def test_unknown_model_id(codec, models_env, tmp_path):
    from runtime import bitstream

    other_id = bytes(b ^ 0xFF for b in codec.bundle.model_id_bytes)
    data = bitstream.pack_latent(np.zeros(codec.bundle.latent_shape, np.int32), 0, codec.bundle.entropy, other_id)
    f = tmp_path / "x.bin"
    f.write_bytes(data)
    r = run_module("runtime.decode", f, env={"GANCODEC_MODELS": str(models_env.parent)})
    assert r.returncode == 2 and "no model with id" in r.stderr


def test_encode_cli_bad_image_and_arguments(models_env, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = run_module("runtime.encode", bad, "--model", models_env, "-o", tmp_path / "o.bin")
    assert r.returncode == 2 and r.stderr.startswith("error: ")
    assert not (tmp_path / "o.bin").exists()
    good = tmp_path / "good.png"
    Image.fromarray(synthetic_images(1, 16)[0]).save(good)
    r = run_module("runtime.encode", good, "--model", models_env, "-o", tmp_path / "o.bin", "--level", "99")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "--level" in r.stderr
    assert not (tmp_path / "o.bin").exists()


def test_decode_imports_no_tensorflow(models_env):
    code = ("import sys, runtime.decode, runtime.codec, runtime.bitstream, runtime.bundle, runtime.entropy\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]\n"
            "print(heavy)\n")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.parametrize("fmt, name", [("PNG", "a PNG image"), ("JPEG", "a JPEG image"), ("WEBP", "a WebP image")])
def test_an_image_passed_to_the_decoder_is_named(fmt, name, tiny_bundle):
    """A PNG's first byte passes the version check (0x89 = 0b10…): the error must still say what
    the file is, not blame a missing model; a real file decodes as before."""
    import io

    from runtime.codec import Codec, decode_file_bytes

    buf = io.BytesIO()
    Image.fromarray(synthetic_images(1, 16)[0]).save(buf, format=fmt)
    with pytest.raises(CodecError, match=f"this is {name}, not a latent.bin"):
        decode_file_bytes(buf.getvalue())
    codec = Codec(tiny_bundle)
    data = codec.compress([synthetic_images(1, 16)[0]], level=1, steps=0)[0].data
    image, _ = decode_file_bytes(data, tiny_bundle)
    assert image.shape == (16, 16, 3)
