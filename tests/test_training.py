import json

import numpy as np
import pytest
from PIL import Image

from export.onnx import SUBLEVELS
from runtime.errors import CodecError
from tests.conftest import synthetic_images, tiny_config


def test_npz_with_split(tiny_npz):
    from training.data import load_dataset

    train, val = load_dataset(tiny_npz, 16)
    assert train.shape == (96, 16, 16, 3) and val.shape == (16, 16, 16, 3)
    assert train.dtype == np.uint8


def test_npz_without_split_is_split_80_20(tmp_path):
    from training.data import load_dataset

    path = tmp_path / "images.npz"
    np.savez(path, images=synthetic_images(50, 32))
    train, val = load_dataset(path, 16)
    assert (len(train), len(val)) == (40, 10)
    assert train.shape[1:] == (16, 16, 3)


def test_folder_any_size_is_cropped_and_resized(tmp_path):
    from training.data import load_dataset

    for i, (w, h) in enumerate([(40, 30), (64, 64), (17, 50), (33, 33), (20, 20)]):
        Image.new("RGB", (w, h), (i * 40, 0, 0)).save(tmp_path / f"im{i}.png")
    Image.new("L", (20, 20), 5).save(tmp_path / "gray.jpg")
    train, val = load_dataset(tmp_path, 16)
    assert len(train) + len(val) == 6 and len(val) == 1
    assert train.shape[1:] == (16, 16, 3)


def test_loader_errors(tmp_path):
    from training.data import load_dataset

    with pytest.raises(CodecError, match="no image files"):
        load_dataset(tmp_path, 16)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(CodecError, match="broken.png"):
        load_dataset(tmp_path, 16)
    bad = tmp_path / "bad.npz"
    np.savez(bad, train=np.zeros((4, 16, 16), np.uint8))
    with pytest.raises(CodecError, match="shape"):
        load_dataset(bad, 16)
    wrong_dtype = tmp_path / "float.npz"
    np.savez(wrong_dtype, train=np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(CodecError, match="uint8"):
        load_dataset(wrong_dtype, 16)
    with pytest.raises(CodecError, match="no such"):
        load_dataset(tmp_path / "missing.npz", 16)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CodecError, match="npz"):
        load_dataset(tmp_path / "notes.txt", 16)


@pytest.mark.parametrize("size", [32, 64])
def test_architectures_have_configured_shapes(size):
    from training.models import build_discriminator, build_encoder, build_generator

    g = build_generator(24, size, (32, 16, 8, 8, 8), norm="batch")
    assert g.input_shape == (None, 24) and g.output_shape == (None, size, size, 3)
    d = build_discriminator(size, (8, 16))
    assert d.output_shape == (None, 1)
    e = build_encoder(24, size, (8, 8, 16, 16, 16))
    assert e.output_shape == (None, 24)
    out = g(np.zeros((2, 24), np.float32)).numpy()
    assert out.min() >= -1 and out.max() <= 1


def test_bad_image_size():
    from training.models import build_generator

    with pytest.raises(ValueError):
        build_generator(8, 48)


@pytest.mark.parametrize("size,arch,g_widths", [(16, "gdn", (16, 8)), (32, "gdn", (16, 8)),
                                                (16, "conv", (16, 16, 8, 8)), (32, "conv", (16, 16, 8, 8)),
                                                (32, "gdn16", (16, 8, 8))])
def test_rd_architectures_have_configured_shapes(size, arch, g_widths):
    from training.rd import (
        RateModel,
        build_rd_discriminator,
        build_rd_encoder,
        build_rd_generator,
        lambdas,
    )

    grid = size // 8
    e_widths = (8, 16)
    if arch == "gdn16":  # three stride-2 stages before the latent: S/16
        arch, grid, e_widths = "gdn", size // 16, (8, 16, 16)
    e = build_rd_encoder(8, size, e_widths, arch=arch)
    assert e.input_shape == (None, size, size, 3) and e.output_shape == (None, grid, grid, 8)
    g = build_rd_generator(8, size, g_widths, arch=arch)
    assert g.input_shape == (None, grid, grid, 8) and g.output_shape == (None, size, size, 3)
    assert build_rd_discriminator(size, (8, 16)).output_shape == (None, 1)
    out = g(np.zeros((2, grid, grid, 8), np.float32)).numpy()
    assert out.min() >= -1 and out.max() <= 1
    lam = lambdas(3, (0.002, 0.05))
    assert lam[0] == pytest.approx(0.002) and lam[-1] == pytest.approx(0.05) and np.all(np.diff(lam) > 0)
    gains, inv = (t.numpy() for t in RateModel(8, 3).gains(np.arange(3)))
    assert gains.shape == (3, 8) and np.all(np.diff(gains[:, 0]) > 0)  # finer levels: larger gains
    np.testing.assert_allclose(gains * inv, 1, rtol=1e-5)


def test_rd_training_needs_a_size_divisible_by_8(tiny_npz, tmp_path):
    from training.train import train

    with pytest.raises(CodecError, match="divisible by 8"):
        train(tiny_config(tiny_npz, tmp_path / "r", image_size=12, steps=2), quiet=True)


def test_tiny_rd_training_has_finite_losses_and_artifacts(tiny_npz, tmp_path):
    from training.train import train

    out = tmp_path / "rd"
    summary = train(tiny_config(tiny_npz, out, steps=6), quiet=True)
    assert set(summary["last_losses"]) >= {"loss", "bpp", "mse", "adv", "d_loss"}
    assert all(np.isfinite(v) for v in summary["last_losses"].values())
    for name in ("config.json", "log.csv", "val.csv", "curves.png", "summary.json", "best/generator.weights.h5",
                 "best/encoder.weights.h5", "best/rate.npz", "best/best.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "config.json").read_text())["mode"] == "rd"  # the default mode
    assert list((out / "samples").glob("*.png"))
    best = json.loads((out / "best" / "best.json").read_text())
    assert np.isfinite(best["score"])
    assert all(np.isfinite(best[f"psnr{lv}"]) and best[f"bytes{lv}"] >= 0 for lv in range(3))
    assert best["bytes2"] > 0  # a level can code no channel at all (the lowest, untrained), not the top
    with np.load(out / "best" / "rate.npz", allow_pickle=False) as rate:
        assert rate["log_gain"].shape == (3, 8) and rate["lambdas"].shape == (3,)


@pytest.mark.parametrize("mode", ["gan", "recon"])
def test_gan_and_recon_modes_still_train(tiny_npz, tmp_path, mode):
    from training.train import train

    out = tmp_path / mode
    summary = train(tiny_config(tiny_npz, out, mode=mode, steps=6), quiet=True)
    assert all(np.isfinite(v) for v in summary["last_losses"].values())
    for name in ("config.json", "log.csv", "val.csv", "curves.png", "best/generator.weights.h5", "summary.json"):
        assert (out / name).exists(), name
    assert list((out / "samples").glob("*.png"))
    best = json.loads((out / "best" / "best.json").read_text())
    assert np.isfinite(best["val_psnr"]) and best["val_psnr"] > 0


def _restored_generator(cfg, run):
    """The generator of ``run``'s checkpoint (ckpt/state.npz) and the step it was saved at."""
    from training.rd import Trainer
    from training.run import load_state

    tr = Trainer(cfg)
    return tr.generator, load_state(run, tr.groups())["step"]


def test_checkpoint_then_resume_continues_with_same_weights(tiny_npz, tmp_path):
    from training.train import load_config, train

    out = tmp_path / "run"
    train(tiny_config(tiny_npz, out, steps=6, ckpt_every=3, eval_every=3), quiet=True)
    cfg = load_config(out).resolved()
    g, step = _restored_generator(cfg, out)
    assert step == 6
    saved = [w.copy() for w in g.get_weights()]

    # resuming with the same step count restores the weights and trains no further
    with pytest.raises(CodecError, match="--resume"):
        train(tiny_config(tiny_npz, out, steps=6), quiet=True)
    summary = train(tiny_config(tiny_npz, out, steps=6), resume=True, quiet=True)
    assert summary["steps"] == 6
    g2, step = _restored_generator(cfg, out)
    assert step == 6
    for a, b in zip(saved, g2.get_weights()):
        np.testing.assert_array_equal(a, b)
    # extending the run continues from step 6
    train(tiny_config(tiny_npz, out, steps=8), resume=True, quiet=True)
    assert _restored_generator(cfg, out)[1] == 8
    steps_logged = [int(line.split(",")[0]) for line in (out / "val.csv").read_text().splitlines()[1:]]
    assert steps_logged == sorted(set(steps_logged))  # no duplicated rows after resume


def test_cli_reports_user_errors(tmp_path):
    from tests.conftest import run_module

    r = run_module("training.train", "--data", tmp_path / "nothing.npz", "--out", tmp_path / "r", "--steps", "1")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    r = run_module("training.train", "--data", tmp_path / "nothing.npz", "--out", tmp_path / "r", "--mode", "vae")
    assert r.returncode == 2


def test_init_from_bundle_starts_from_its_weights(tiny_npz, tiny_bundle, tmp_path):
    """--init-from: a new run starts from the bundle's encoder/generator weights and gains."""
    import keras

    from training.rd import RateModel, build_rd_generator, build_rd_models, warm_start
    from training.train import TrainConfig

    cfg = tiny_config(tiny_npz, tmp_path / "warm").resolved()
    enc, gen = build_rd_models(cfg)
    rate = RateModel(cfg.channels, cfg.levels)
    warm_start(tiny_bundle, enc, gen, rate)
    shipped = keras.models.load_model(tiny_bundle / "generator.keras", compile=False)
    for a, b in zip(gen.get_weights(), shipped.get_weights()):
        np.testing.assert_array_equal(a, b)
    with np.load(tiny_bundle / "rate.npz", allow_pickle=False) as f:
        gains = f["gains"]
    trained = gains[: (cfg.levels - 1) * SUBLEVELS + 1 : SUBLEVELS]  # the extrapolated levels are not trained ones
    np.testing.assert_allclose(np.exp(rate.log_gain.numpy()), trained, rtol=1e-5)
    # another architecture is refused with a clear error
    other = build_rd_generator(cfg.channels, cfg.image_size, [8, 8], arch=cfg.rd_arch)
    with pytest.raises(CodecError, match="another architecture"):
        warm_start(tiny_bundle, enc, other, rate)
    assert TrainConfig(data="x", out="y").init_from == ""


def test_init_from_bundle_into_more_channels(tiny_npz, tiny_bundle, tmp_path):
    """--init-from with --channels above the bundle's: the bundle's weights fill the leading slice,
    so the widened codec starts out decoding the bundle's latents as the bundle does."""
    import dataclasses

    import keras

    from training.rd import RateModel, build_rd_models, warm_start

    cfg = tiny_config(tiny_npz, tmp_path / "warm").resolved()
    wide = dataclasses.replace(cfg, channels=cfg.channels + 4)
    enc, gen = build_rd_models(wide)
    rate = RateModel(wide.channels, wide.levels)
    warm_start(tiny_bundle, enc, gen, rate)
    shipped = keras.models.load_model(tiny_bundle / "generator.keras", compile=False)
    y = np.random.default_rng(0).normal(size=(2,) + tuple(shipped.input_shape[1:])).astype(np.float32)
    padded = np.concatenate([y, np.zeros(y.shape[:-1] + (4,), np.float32)], axis=-1)
    np.testing.assert_allclose(gen(padded).numpy(), shipped(y).numpy(), atol=1e-5)
    with np.load(tiny_bundle / "rate.npz", allow_pickle=False) as f:
        gains = f["gains"][: (cfg.levels - 1) * SUBLEVELS + 1 : SUBLEVELS]
    got = np.exp(rate.log_gain.numpy())
    np.testing.assert_allclose(got[:, : cfg.channels], gains, rtol=1e-5)
    np.testing.assert_allclose(np.log(got[:, cfg.channels :]), np.log(gains).mean(1, keepdims=True).repeat(4, 1),
                               rtol=1e-4)


def test_rd_designs_and_their_default_widths(tmp_path):
    """gdn is the default design; each design has its own widths; runs saved before the GDN design
    (no rd_arch in config.json) load as conv."""
    from training.train import RD_WIDTHS, TrainConfig, load_config, save_config

    cfg = TrainConfig(data="x", out="y").resolved()
    assert cfg.rd_arch == "gdn" and (cfg.rd_e_widths, cfg.rd_g_widths) == RD_WIDTHS["gdn"]
    conv = TrainConfig(data="x", out="y", rd_arch="conv").resolved()
    assert (conv.rd_e_widths, conv.rd_g_widths) == RD_WIDTHS["conv"]
    with pytest.raises(CodecError, match="generator widths"):
        TrainConfig(data="x", out="y", rd_g_widths=[8, 8, 8]).resolved()
    with pytest.raises(CodecError, match="divisible by 16"):
        TrainConfig(data="x", out="y", image_size=24, rd_e_widths=[8] * 3, rd_g_widths=[8] * 3).resolved()
    with pytest.raises(CodecError, match="rd-arch"):
        TrainConfig(data="x", out="y", rd_arch="vit").resolved()
    save_config(TrainConfig(data="x", out="y", rd_arch="conv", rd_g_widths=[16, 16, 8, 8]), tmp_path)
    legacy = json.loads((tmp_path / "config.json").read_text())
    del legacy["rd_arch"]
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    assert load_config(tmp_path).resolved().rd_arch == "conv"


def test_warm_start_facts_give_the_whole_history(tiny_bundle, tmp_path):
    """An exported warm-started run records the bundle it started from and the steps behind it."""
    import json

    from export.onnx import warm_start_facts
    from training.train import TrainConfig

    before = json.loads((tiny_bundle / "manifest.json").read_text())
    facts = warm_start_facts(TrainConfig(data="x", out="y", steps=7, init_from=str(tiny_bundle)))
    assert facts == {"init_from": str(tiny_bundle), "init_model_id": before["model_id"],
                     "total_steps": before["training"]["steps"] + 7}
    assert warm_start_facts(TrainConfig(data="x", out="y")) == {}
    assert warm_start_facts(TrainConfig(data="x", out="y", init_from=str(tmp_path))) == {"init_from": str(tmp_path)}
    # re-exporting a run in place (its bundle is the --init-from): the history is not counted twice
    again = tmp_path / "again"
    again.mkdir()
    training = {**before["training"], "steps": 7, "selected_step": 5, "init_model_id": "ab", "total_steps": 40}
    (again / "manifest.json").write_text(json.dumps({**before, "training": training}))
    cfg = TrainConfig(data="x", out="y", steps=7, init_from=str(again))
    assert warm_start_facts(cfg, 5) == {"init_from": str(again), "init_model_id": "ab", "total_steps": 40}
    assert warm_start_facts(cfg, 6)["total_steps"] == 47


def test_training_contexts_are_the_coders_contexts():
    """--rate-contexts prices each symbol under the context the file's coder will give it."""
    import tensorflow as tf

    from runtime.entropy import contexts
    from training.rate import context_of

    rng = np.random.default_rng(3)
    symbols = rng.integers(-2, 3, (4, 3, 2, 11)) * (rng.random((4, 3, 2, 11)) < 0.4)
    for k in (2, 8):
        want = contexts(symbols, np.ones(11, bool), k)
        got = context_of(tf.constant(symbols, tf.float32), k).numpy()
        np.testing.assert_array_equal(got, want)
    # the one definition runs on keras.ops too, with channels that are not coded
    from keras import ops

    coded = rng.random(11) < 0.6
    for k in (1, 3, 16):
        got = ops.convert_to_numpy(contexts(tf.constant(symbols, tf.float32), coded, k, xp=ops))
        np.testing.assert_array_equal(got, contexts(symbols, coded, k))
    # training's per-image masks (each image at its own level): each image's contexts are the coder's
    masks = rng.random((4, 11)) < 0.6
    for k in (3, 8):
        got = ops.convert_to_numpy(context_of(tf.constant(symbols, tf.float32), k,
                                              tf.constant(masks[:, None, None, :].astype(np.float32))))
        for i in range(4):
            np.testing.assert_array_equal(got[i], contexts(symbols[i], masks[i], k))


def test_rate_contexts_price_contexts_apart_and_warm_start_from_a_factorized_bundle(tiny_npz, tiny_bundle, tmp_path):
    """A context density starts as the bundle's factorized one (the same bits), and each context
    then has its own parameters: moving one context's density changes only its symbols' bits."""
    import dataclasses

    import tensorflow as tf

    from training.rate import RateModel, context_of
    from training.rd import build_rd_models, warm_start

    cfg = dataclasses.replace(tiny_config(tiny_npz, tmp_path / "ctx").resolved(), rate_contexts=4)
    enc, gen = build_rd_models(cfg)
    flat, ctx = RateModel(cfg.channels, cfg.levels), RateModel(cfg.channels, cfg.levels, contexts=4)
    warm_start(tiny_bundle, enc, gen, flat)
    warm_start(tiny_bundle, enc, gen, ctx)
    assert ctx.means.shape == (cfg.channels, 4, 3)
    rng = np.random.default_rng(0)
    q = tf.constant(np.rint(rng.normal(0, 1.5, (3, 2, 2, cfg.channels))), tf.float32)
    gain = tf.ones((1, 1, 1, cfg.channels))
    np.testing.assert_allclose(ctx.bits(q, gain, q).numpy(), flat.bits(q, gain).numpy(), rtol=1e-5)
    kappa = context_of(q, 4).numpy()
    used = int(kappa[..., 1:].max())
    ctx.means.assign(ctx.means.numpy() + 3.0 * (np.arange(4) == used)[None, :, None])
    moved = ctx.bits(q, gain, q).numpy() - flat.bits(q, gain).numpy()
    has = (kappa == used).reshape(3, -1).any(axis=1)
    assert np.all(np.abs(moved[~has]) < 1e-3) and np.all(np.abs(moved[has]) > 1e-3)


def test_tiny_rd_training_with_rate_contexts(tiny_npz, tmp_path):
    from training.train import train

    out = tmp_path / "rdctx"
    summary = train(tiny_config(tiny_npz, out, steps=4, rate_contexts=4), quiet=True)
    assert all(np.isfinite(v) for v in summary["last_losses"].values())
    with np.load(out / "best" / "rate.npz", allow_pickle=False) as rate:
        assert rate["means"].shape == (8, 4, 3)
    with pytest.raises(CodecError, match="rate-contexts"):
        train(tiny_config(tiny_npz, tmp_path / "bad", steps=2, rate_contexts=0), quiet=True)


def test_residual_blocks_start_as_the_bundles_codec_and_export(tiny_npz, tiny_bundle, tmp_path):
    """--rd-g-blocks / --rd-e-blocks with --init-from: the added blocks start as the identity, so the
    deeper encoder and generator compute exactly the bundle's functions; a run with blocks trains,
    exports (ONNX parity checked by the exporter) and its bundle decodes."""
    import dataclasses

    import keras

    from export.onnx import export_run
    from runtime.codec import Codec
    from training.rd import RateModel, build_rd_models, warm_start
    from training.train import train

    cfg = dataclasses.replace(tiny_config(tiny_npz, tmp_path / "blk", init_from=str(tiny_bundle)).resolved(),
                              rd_g_blocks=1, rd_e_blocks=2)
    enc, gen = build_rd_models(cfg)
    assert len(gen.get_weights()) == len(keras.models.load_model(tiny_bundle / "generator.keras").get_weights()) + 4
    warm_start(tiny_bundle, enc, gen, RateModel(cfg.channels, cfg.levels))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    y = enc(x).numpy()
    np.testing.assert_allclose(y, keras.models.load_model(tiny_bundle / "encoder.keras")(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(gen(y).numpy(), keras.models.load_model(tiny_bundle / "generator.keras")(y).numpy(),
                               atol=1e-6)
    with pytest.raises(CodecError, match="need --rd-arch gdn"):
        dataclasses.replace(cfg, rd_arch="conv", rd_e_widths=None, rd_g_widths=None).resolved()

    train(dataclasses.replace(cfg, steps=3), quiet=True)
    manifest = export_run(cfg.out, tmp_path / "bundle")
    assert manifest["training"]["g_blocks"] == 1 and manifest["training"]["e_blocks"] == 2
    codec = Codec(tmp_path / "bundle")
    r = codec.compress([synthetic_images(1, 16)[0]], level=1, steps=2)[0]
    np.testing.assert_array_equal(codec.decompress(r.data), r.reconstruction)
