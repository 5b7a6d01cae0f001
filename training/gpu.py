"""Rate–distortion training on a machine that has PyTorch and a CUDA GPU but no TensorFlow.

The project trains with TensorFlow (``training.rd``). The GPU machine the ``device`` tool lends
holds PyTorch, not TensorFlow, and takes at most 64 MiB of files per call, so a GPU cycle runs in
three steps:

``pack`` (here, TensorFlow)
    builds the run's Keras encoder and generator exactly as ``training.train --init-from BUNDLE``
    does (same flags), and writes one ``.npz``: their weights by layer name (rounded to
    float16 as the export rounds them, and stored so), the rate model (gains and
    context densities), the training images as one lossless WebP mosaic, validation images, the
    config, and reference outputs of the Keras networks and rate for the parity check.
``train`` (the GPU machine, PyTorch only: no module of this project that imports TensorFlow)
    rebuilds the networks in PyTorch from the pack, checks them against the reference outputs
    (encoder, generator and bits; aborts above :data:`PARITY_TOL`), then runs ``training.rd``'s
    loss for a wall-clock budget with the learning rates on a cosine over that time (the step count
    is not known in advance), after a linear warm-up of ``--warmup`` steps: the discriminator
    starts from scratch each cycle, and at the full rate its first gradients and Adam's first
    steps pulled the airplane bundle's score from 2.2385 to 2.2519 in 64 steps (with the warm-up:
    2.2298 after 170). It evaluates the start, then per level on the validation images every
    ``--eval-seconds`` and keeps the best by the same score as ``training.rd``. It writes the best
    weights and the logs as one ``.npz``.
``unpack`` (here, TensorFlow)
    writes a run directory that ``export.onnx`` reads (``config.json``, ``best/``, ``log.csv``,
    ``val.csv``, ``summary.json``, ``curves.png``), re-evaluating the selected weights in
    Keras, so ``make export-NAME RUN=gpu`` ships it as any CPU run.

The PyTorch networks mirror :mod:`training.rd` and :mod:`runtime.layers` layer by layer (TF's
"same" padding of stride-2 and transposed convolutions included), checked at every ``train``.

CLI::

    python -m training.gpu pack --data PATH.npz --init-from models/NAME --out gpu/NAME.npz [flags]
    python -m training.gpu train gpu/NAME.npz --seconds 480 --out OUT.npz
    python -m training.gpu unpack OUT.npz --run runs/gpu-NAME
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

WARMUP_STEPS = 1000  # steps of the linear learning-rate warm-up (see train)
PARITY_TOL = 2e-3  # max |Δ| in [-1, 1] image units / latent units; relative 1e-3 for bits
MOSAIC_COLS = 50
LEAK = 0.2
# pack's options: these TrainConfig fields (training.config.add_config_arguments), their defaults the
# dataclass's but for PACK_DEFAULTS: the fine-tuning recipe's (the Makefile's FT_LR and --eval-images
# 256, which `make gpu-pack-NAME` does not pass)
PACK_OPTIONS = ("data", "batch", "lr", "eval_images", "lam_max", "w_adv_rd", "rate_contexts", "rd_g_blocks",
                "rd_e_blocks")
PACK_DEFAULTS = {"lr": 1e-4, "eval_images": 256}
RATE_KEYS = ("log_gain", "log_inv_gain", "mix_logits", "means", "log_scales")  # training.rd.RateModel's state


# --- pack (TensorFlow) ---------------------------------------------------------------------------

def _mosaic(images: np.ndarray) -> bytes:
    from PIL import Image

    n, s = len(images), images.shape[1]
    rows = (n + MOSAIC_COLS - 1) // MOSAIC_COLS
    pad = np.zeros((rows * MOSAIC_COLS, s, s, 3), np.uint8)
    pad[:n] = images
    grid = pad.reshape(rows, MOSAIC_COLS, s, s, 3).transpose(0, 2, 1, 3, 4).reshape(rows * s, MOSAIC_COLS * s, 3)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, "WEBP", lossless=True, quality=100, method=6)
    return buf.getvalue()


def _unmosaic(data: bytes, n: int, s: int) -> np.ndarray:
    from PIL import Image

    grid = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    rows = grid.shape[0] // s
    return grid.reshape(rows, s, MOSAIC_COLS, s, 3).transpose(0, 2, 1, 3, 4).reshape(-1, s, s, 3)[:n]


def _keras_arrays(model, tag: str) -> dict:
    """A Keras model's weights as ``w/TAG/LAYER/I`` arrays, the pack's and the result's layout."""
    return {f"w/{tag}/{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())}


def _set_keras(model, arrays: dict, tag: str) -> None:
    """Set a Keras model's weights from ``w/TAG/LAYER/I`` arrays."""
    for layer in model.layers:
        n = len(layer.get_weights())
        if n:
            layer.set_weights([np.asarray(arrays[f"w/{tag}/{layer.name}/{i}"], np.float32) for i in range(n)])


def pack(cfg, out: Path, ref_images: int = 8) -> dict:
    """Write the pack of a resolved ``TrainConfig`` with ``init_from`` set (see the module doc)."""
    import keras
    import tensorflow as tf

    from runtime.images import to_unit_range
    from training.data import load_dataset
    from training.models import round_weights_to_half
    from training.rd import RateModel, build_rd_models, lambdas, warm_start

    keras.utils.set_random_seed(cfg.seed)
    encoder, generator = build_rd_models(cfg)
    rate = RateModel(cfg.channels, cfg.levels, contexts=cfg.rate_contexts)
    warm_start(cfg.init_from, encoder, generator, rate)
    round_weights_to_half(encoder)  # as the export will: the pack stores them in half the bytes
    round_weights_to_half(generator)
    arrays = {key: w.astype(np.float16) if np.array_equal(w.astype(np.float16).astype(np.float32), w) else w
              for tag, model in (("encoder", encoder), ("generator", generator))
              for key, w in _keras_arrays(model, tag).items()}
    for key, value in rate.numpy_state().items():
        arrays[f"rate/{key}"] = value
    arrays["rate/lambdas"] = lambdas(cfg.levels, (cfg.lam_min, cfg.lam_max))
    train_u8, val_u8 = load_dataset(cfg.data, cfg.image_size, cfg.seed)
    arrays["train_webp"] = np.frombuffer(_mosaic(train_u8), np.uint8)
    arrays["train_count"] = np.array(len(train_u8))
    arrays["val"] = val_u8[: cfg.eval_images]
    # reference outputs for the parity check
    x = to_unit_range(val_u8[:ref_images])
    y = encoder(x, training=False).numpy()
    mid = cfg.levels // 2
    gain, inv_gain = (v.numpy() for v in rate.gains(tf.fill([ref_images], mid)))
    q = np.round(y * gain[:, None, None, :]).astype(np.float32)
    arrays["ref/x"] = x
    arrays["ref/y"] = y
    arrays["ref/level"] = np.array(mid)
    arrays["ref/image"] = generator(q * inv_gain[:, None, None, :], training=False).numpy()
    arrays["ref/bits"] = rate.bits(q, gain[:, None, None, :], q).numpy()
    arrays["config"] = np.frombuffer(json.dumps(dataclasses.asdict(cfg)).encode(), np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    return {"file": str(out), "bytes": out.stat().st_size, "train": len(train_u8)}


# --- the PyTorch mirror (GPU machine) ------------------------------------------------------------

def _torch_modules():
    """The PyTorch classes, defined on first use so that importing this module needs no torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def same_pad(n: int, k: int, s: int) -> tuple[int, int]:
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        return total // 2, total - total // 2

    class Kernel(nn.Module):
        """A convolution's weight and bias, to and from Keras' layout: Keras keeps (kh, kw, in, out)
        for Conv2D and (kh, kw, out, in) for Conv2DTranspose, PyTorch (out, in, kh, kw) and
        (in, out, kh, kw): the same permutation both ways."""

        def __init__(self, shape, cout, k, stride):
            super().__init__()
            self.k, self.stride = k, stride
            self.weight = nn.Parameter(torch.empty(*shape, k, k))
            self.bias = nn.Parameter(torch.zeros(cout))
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

        def load_keras(self, kernel, bias):
            self.weight.data.copy_(torch.as_tensor(kernel).permute(3, 2, 0, 1))
            self.bias.data.copy_(torch.as_tensor(bias))

        def keras(self):
            return [self.weight.detach().permute(2, 3, 1, 0).cpu().numpy(), self.bias.detach().cpu().numpy()]

    class Conv(Kernel):
        """Keras Conv2D with padding="same" (TF's asymmetric padding for even sizes)."""

        def __init__(self, cin, cout, k, stride=1):
            super().__init__((cout, cin), cout, k, stride)

        def forward(self, x):
            ph = same_pad(x.shape[2], self.k, self.stride)
            pw = same_pad(x.shape[3], self.k, self.stride)
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
            return F.conv2d(x, self.weight, self.bias, stride=self.stride)

    class Deconv(Kernel):
        """Keras Conv2DTranspose with padding="same": output = input × stride, the full transposed
        convolution cropped as TF crops it."""

        def __init__(self, cin, cout, k, stride=2):
            super().__init__((cin, cout), cout, k, stride)

        def forward(self, x):
            h, w = x.shape[2] * self.stride, x.shape[3] * self.stride
            full = F.conv_transpose2d(x, self.weight, self.bias, stride=self.stride)
            crop = max(self.k - self.stride, 0) // 2
            return full[:, :, crop: crop + h, crop: crop + w]

    class GDN(nn.Module):
        """runtime.layers.GDN over channels (NCHW here)."""

        def __init__(self, c, inverse=False):
            super().__init__()
            self.inverse = inverse
            self.beta_raw = nn.Parameter(torch.zeros(c))
            self.gamma_raw = nn.Parameter(torch.zeros(c, c))

        def forward(self, x):
            beta = F.softplus(self.beta_raw) + 1e-6
            gamma = F.softplus(self.gamma_raw)
            norm = torch.sqrt(torch.einsum("nchw,cd->ndhw", x * x, gamma) + beta[None, :, None, None])
            return x * norm if self.inverse else x / norm

        def load_keras(self, beta_raw, gamma_raw):
            self.beta_raw.data.copy_(torch.as_tensor(beta_raw))
            self.gamma_raw.data.copy_(torch.as_tensor(gamma_raw))

        def keras(self):
            return [self.beta_raw.detach().cpu().numpy(), self.gamma_raw.detach().cpu().numpy()]

    class Net(nn.Module):
        """A chain of named layers as in the Keras model: ('name', module | 'lrelu' | 'tanh' |
        ('res', a, b))."""

        def __init__(self, spec):
            super().__init__()
            self.spec = spec
            named = {name: m for name, m in spec if isinstance(m, nn.Module)}
            for _, m in spec:  # a residual block's two convolutions
                if isinstance(m, tuple):
                    named.update({m[1]: m[3], m[2]: m[4]})
            self.layers = nn.ModuleDict(named)

        def forward(self, x):
            for name, m in self.spec:
                if isinstance(m, nn.Module):
                    x = self.layers[name](x)
                elif m == "tanh":
                    x = torch.tanh(x)
                elif m == "lrelu":
                    x = F.leaky_relu(x, LEAK)
                else:  # ("res", a, b, ...): x + b(lrelu(a(x)))
                    a, b = m[1], m[2]
                    x = x + self.layers[b](F.leaky_relu(self.layers[a](x), LEAK))
            return x

    def residual(spec, name, w):
        a, b = Conv(w, w, 3), Conv(w, w, 3)
        nn.init.zeros_(b.weight)
        spec.append((f"{name}add", ("res", f"{name}a", f"{name}b", a, b)))

    def encoder(cfg):
        spec, cin = [], 3
        for i, w in enumerate(cfg["rd_e_widths"], start=1):
            spec += [(f"conv{i}", Conv(cin, w, 5, 2)), (f"gdn{i}", GDN(w))]
            cin = w
        for b in range(1, cfg["rd_e_blocks"] + 1):
            residual(spec, f"eres{b}", cin)
        spec.append(("latent", Conv(cin, cfg["channels"], 5, 2)))
        return Net(spec)

    def generator(cfg):
        spec, cin = [], cfg["channels"]
        for i, w in enumerate(cfg["rd_g_widths"], start=1):
            spec += [(f"deconv{i}", Deconv(cin, w, 5, 2)), (f"igdn{i}", GDN(w, inverse=True))]
            cin = w
            if i == 1:
                for b in range(1, cfg["rd_g_blocks"] + 1):
                    residual(spec, f"gres{b}", w)
        spec += [("image", Deconv(cin, 3, 5, 2)), ("tanh", "tanh")]
        return Net(spec)

    class Discriminator(nn.Module):
        def __init__(self, widths, size):
            super().__init__()
            convs, cin = [], 3
            for w in widths:
                convs.append(Conv(cin, w, 4, 2))
                cin = w
            self.convs = nn.ModuleList(convs)
            s = size // 2 ** len(widths)
            self.logit = nn.Linear(cin * s * s, 1)

        def forward(self, x):
            for c in self.convs:
                x = F.leaky_relu(c(x), LEAK)
            return self.logit(x.flatten(1))

    class Rate(nn.Module):
        """training.rd.RateModel: gains and the per-(channel, context) logistic mixtures."""

        def __init__(self, state):
            super().__init__()
            for key in RATE_KEYS:
                setattr(self, key, nn.Parameter(torch.as_tensor(np.asarray(state[key], np.float32))))
            self.contexts = 1 if self.means.dim() == 2 else self.means.shape[1]

        def gains(self, level):
            return torch.exp(self.log_gain[level]), torch.exp(self.log_inv_gain[level])

        def bits(self, q, gain, symbols):
            """Per-image bits of scaled latents q (N, H, W, C), gain broadcastable."""
            params = (self.mix_logits, self.means, self.log_scales)
            if self.contexts > 1:
                ctx = context_of(symbols, self.contexts)
                ch = torch.arange(q.shape[-1], device=q.device)
                params = tuple(p[ch, ctx] for p in params)  # (N, H, W, C, MIX)
            mix_logits, means, log_scales = params
            upper, lower = ((q + 0.5) / gain)[..., None], ((q - 0.5) / gain)[..., None]
            s = torch.exp(log_scales)
            a, b = (upper - means) / s, (lower - means) / s
            sign = -torch.sign(a + b)
            sign = torch.where(sign == 0, torch.ones_like(sign), sign)
            mass = torch.abs(torch.sigmoid(sign * a) - torch.sigmoid(sign * b))
            p = torch.clamp((torch.softmax(mix_logits, -1) * mass).sum(-1), min=1e-9)
            return (-torch.log(p)).sum(dim=(1, 2, 3)) / math.log(2.0)

        def state(self):
            return {k: getattr(self, k).detach().cpu().numpy().copy() for k in RATE_KEYS}

    def context_of(symbols, k):
        """training.rd.context_of (runtime.entropy.contexts, every channel coded)."""
        nonzero = (symbols != 0).long()
        z = torch.cumsum(nonzero, -1) - nonzero
        m = torch.arange(symbols.shape[-1], device=symbols.device)
        return torch.where(m > 0, torch.clamp((k * z) // torch.clamp(m, min=1), max=k - 1), torch.zeros_like(z))

    return {"encoder": encoder, "generator": generator, "Discriminator": Discriminator, "Rate": Rate,
            "context_of": context_of}


def _load_weights(net, arrays: dict, tag: str) -> None:
    names = {key.split("/")[2] for key in arrays if key.startswith(f"w/{tag}/")}
    own = set(net.layers.keys())
    if names != own:
        raise SystemExit(f"pack's {tag} layers {sorted(names)} differ from the mirror's {sorted(own)}")
    for name in own:
        count = sum(1 for key in arrays if key.startswith(f"w/{tag}/{name}/"))
        net.layers[name].load_keras(*[np.asarray(arrays[f"w/{tag}/{name}/{i}"], np.float32) for i in range(count)])


def _weights_out(net, tag: str) -> dict:
    """The network's weights in Keras layout, as copies: on the CPU ``.cpu().numpy()`` shares the
    parameters' memory, and the optimizer's in-place steps would rewrite a snapshot."""
    return {f"w/{tag}/{name}/{i}": np.array(w, copy=True) for name, layer in net.layers.items()
            for i, w in enumerate(layer.keras())}


def train(pack_path: Path, seconds: float, out: Path, eval_seconds: float = 60.0, batch: int | None = None,
          lr: float | None = None, device: str | None = None, reserve: float = 15.0,
          warmup: int = WARMUP_STEPS) -> dict:
    """The GPU cycle (see the module doc); returns the summary it also stores in ``out``."""
    import torch
    from torch.nn import functional as F

    from runtime import metrics  # numpy and Pillow only: the GPU machine has no TensorFlow
    from runtime.images import from_unit_range, to_unit_range

    t_start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with np.load(pack_path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    cfg = json.loads(arrays["config"].tobytes())
    torch.manual_seed(cfg["seed"])
    T = _torch_modules()
    enc, gen = T["encoder"](cfg).to(dev), T["generator"](cfg).to(dev)
    _load_weights(enc, arrays, "encoder")
    _load_weights(gen, arrays, "generator")
    rate = T["Rate"]({k[5:]: v for k, v in arrays.items() if k.startswith("rate/") and k != "rate/lambdas"}).to(dev)
    disc = T["Discriminator"](cfg["rd_d_widths"], cfg["image_size"]).to(dev)
    lams = torch.as_tensor(arrays["rate/lambdas"], device=dev)

    def nchw(a):
        return torch.as_tensor(np.asarray(a, np.float32), device=dev).permute(0, 3, 1, 2).contiguous()

    # parity with the Keras networks the pack was made from
    with torch.no_grad():
        x_ref = nchw(arrays["ref/x"])
        y = enc(x_ref).permute(0, 2, 3, 1)
        lev = torch.full((len(x_ref),), int(arrays["ref/level"]), device=dev)
        gain, inv_gain = (g[:, None, None, :] for g in rate.gains(lev))
        q = torch.as_tensor(np.round(arrays["ref/y"] * gain.cpu().numpy()).astype(np.float32), device=dev)
        img = gen((q * inv_gain).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        bits = rate.bits(q, gain, q)
    parity = {"encoder": float(np.abs(y.cpu().numpy() - arrays["ref/y"]).max()),
              "generator": float(np.abs(img.cpu().numpy() - arrays["ref/image"]).max()),
              "bits_rel": float(np.abs(bits.cpu().numpy() / arrays["ref/bits"] - 1).max())}
    print("parity", json.dumps(parity), flush=True)
    if max(parity["encoder"], parity["generator"]) > PARITY_TOL or parity["bits_rel"] > 1e-3:
        raise SystemExit(f"the PyTorch mirror does not match the pack's Keras networks: {parity}")

    S = cfg["image_size"]
    train_u8 = _unmosaic(arrays["train_webp"].tobytes(), int(arrays["train_count"]), S)
    data = nchw(to_unit_range(train_u8))
    val_u8 = arrays["val"]
    val_x = nchw(to_unit_range(val_u8))
    B = int(batch or cfg["batch"])
    base_lr = float(lr or cfg["lr"])
    L, pixels = int(cfg["levels"]), float(S * S)
    g_params = list(enc.parameters()) + list(gen.parameters())
    g_opt = torch.optim.Adam(g_params, lr=base_lr, eps=1e-7)
    r_opt = torch.optim.Adam(rate.parameters(), lr=10 * base_lr, eps=1e-7)
    d_opt = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-7)
    w_adv = float(cfg["w_adv_rd"])

    def snapshot() -> dict:
        return {**_weights_out(enc, "encoder"), **_weights_out(gen, "generator"),
                **{f"rate/{k}": v for k, v in rate.state().items()}}

    def cosine(frac):  # keras CosineDecay(alpha=0.05) over the wall-clock budget
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    def evaluate():
        with torch.no_grad():
            yv = enc(val_x).permute(0, 2, 3, 1)
            row, score = {}, 0.0
            for lev in range(L):
                g, ig = (v[:, None, None, :] for v in rate.gains(torch.full((len(val_x),), lev, device=dev)))
                q = torch.round(yv * g)
                b = rate.bits(q, g, q)
                out = gen((q * ig).permute(0, 3, 1, 2))
                u8 = from_unit_range(out.permute(0, 2, 3, 1).cpu().numpy())
                row[f"bytes{lev}"] = float(b.mean()) / 8
                row[f"psnr{lev}"] = float(np.mean(metrics.psnr(u8, val_u8)))
                score += float(b.mean()) / pixels + float(lams[lev]) * float(np.mean(metrics.mse(u8, val_u8)))
            row["score"] = score / L
        return row

    budget = seconds - (time.perf_counter() - t_start) - reserve  # leave time to write the result
    log, step = [], 0
    val = [{"step": 0, **evaluate()}]  # the start: a cycle that does not beat it returns it
    best = (val[0], snapshot())
    print(f"start: score {val[0]['score']:.4f}", flush=True)
    t0 = time.perf_counter()
    next_eval, t_log, n_log = eval_seconds, t0, 0
    sums = {}
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= budget:
            break
        f = cosine(elapsed / budget) * min(1.0, (step + 1) / max(1, warmup))
        for group in g_opt.param_groups:
            group["lr"] = base_lr * f
        for group in r_opt.param_groups:
            group["lr"] = 10 * base_lr * f
        idx = torch.randint(0, len(data), (B,), device=dev)
        x = data[idx]
        flip = torch.rand(B, device=dev) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        level = torch.randint(0, L, (B,), device=dev)
        lam = lams[level]
        gain, inv_gain = (g[:, None, None, :] for g in rate.gains(level))
        ys = enc(x).permute(0, 2, 3, 1) * gain
        noisy = ys + torch.rand_like(ys) - 0.5
        bpp = rate.bits(noisy, gain, torch.round(ys).detach()) / pixels
        yq = ys + (torch.round(ys) - ys).detach()
        fake = gen((yq * inv_gain).permute(0, 3, 1, 2))
        mse = ((fake - x) ** 2).mean(dim=(1, 2, 3)) * metrics.MSE_SCALE
        adv = F.softplus(-disc(fake))[:, 0]
        loss = (bpp + lam * (mse + w_adv * adv)).mean()
        g_opt.zero_grad(set_to_none=True)
        r_opt.zero_grad(set_to_none=True)
        loss.backward()
        g_opt.step()
        r_opt.step()
        d_loss = (F.softplus(-disc(x))[:, 0] + F.softplus(disc(fake.detach()))[:, 0]).mean()
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        step += 1
        for k, v in (("loss", loss), ("bpp", bpp.mean()), ("mse", mse.mean()), ("adv", adv.mean()), ("d_loss", d_loss)):
            sums[k] = sums.get(k, 0.0) + v.detach()
        n_log += 1
        if step % 200 == 0:
            now = time.perf_counter()
            row = {"step": step, **{k: float(v) / n_log for k, v in sums.items()},
                   "s_per_step": (now - t_log) / n_log}
            if not math.isfinite(row["loss"]):
                raise SystemExit(f"training diverged at step {step}: {row}")
            log.append(row)
            sums, n_log, t_log = {}, 0, now
        if elapsed >= next_eval:
            next_eval += eval_seconds
            row = {"step": step, **evaluate()}
            val.append(row)
            print(f"{elapsed:.0f}s step {step}: score {row['score']:.4f} " + " ".join(
                f"{row[f'bytes{lev}']:.0f}B/{row[f'psnr{lev}']:.2f}" for lev in range(L)), flush=True)
            if row["score"] < best[0]["score"]:
                best = (row, snapshot())
    row = {"step": step, **evaluate()}
    val.append(row)
    print(f"final step {step}: score {row['score']:.4f}", flush=True)
    if row["score"] < best[0]["score"]:
        best = (row, snapshot())
    # what the selected networks compute, for unpack to check the way back into Keras
    _load_weights(enc, best[1], "encoder")
    _load_weights(gen, best[1], "generator")
    with torch.no_grad():
        check = {"check/x": arrays["ref/x"], "check/latent": arrays["ref/y"],
                 "check/y": enc(nchw(arrays["ref/x"])).permute(0, 2, 3, 1).cpu().numpy(),
                 "check/image": gen(nchw(arrays["ref/y"])).permute(0, 2, 3, 1).cpu().numpy()}
    timing = log[-1]["s_per_step"] if log else None
    summary = {"steps": step, "selected_step": best[0]["step"], "seconds_per_step": timing, "batch": B,
               "lr": base_lr, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
               "torch": torch.__version__, "parity": parity}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **best[1], **check, **{"rate/lambdas": arrays["rate/lambdas"], "config": arrays["config"]},
             log=np.frombuffer(json.dumps(log).encode(), np.uint8),
             val=np.frombuffer(json.dumps(val).encode(), np.uint8),
             summary=np.frombuffer(json.dumps(summary).encode(), np.uint8))
    tmp.replace(out)
    print("summary", json.dumps(summary), flush=True)
    return summary


# --- unpack (TensorFlow) -------------------------------------------------------------------------

def unpack(result: Path, run: Path) -> dict:
    """Write a run directory that ``export.onnx`` reads from a ``train`` result."""
    from runtime.errors import CodecError
    from training.config import TrainConfig, save_config
    from training.rd import RateModel, build_rd_models, plot_rd_curves
    from training.run import _append_csv, save_best

    if (run / "config.json").exists():
        raise CodecError(f"{run} already holds a run; choose another --run")
    with np.load(result, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    summary = json.loads(arrays["summary"].tobytes())
    cfg = TrainConfig(**json.loads(arrays["config"].tobytes()))
    cfg.steps, cfg.batch, cfg.lr = int(summary["steps"]), int(summary["batch"]), float(summary["lr"])
    cfg.out = str(run)
    encoder, generator = build_rd_models(cfg)
    _set_keras(encoder, arrays, "encoder")
    _set_keras(generator, arrays, "generator")
    if "check/x" in arrays:
        diff = max(float(np.abs(encoder(arrays["check/x"], training=False).numpy() - arrays["check/y"]).max()),
                   float(np.abs(generator(arrays["check/latent"], training=False).numpy() - arrays["check/image"]).max()))
        if diff > PARITY_TOL:
            raise CodecError(f"{result}: the Keras networks differ from the trained PyTorch ones by {diff:.2g}")
    rate = RateModel(cfg.channels, cfg.levels, contexts=cfg.rate_contexts)
    for key in RATE_KEYS:
        getattr(rate, key).assign(arrays[f"rate/{key}"])
    save_config(cfg, run)
    for row in json.loads(arrays["log"].tobytes()):
        _append_csv(run / "log.csv", row)
    for row in json.loads(arrays["val"].tobytes()):
        _append_csv(run / "val.csv", row)
    best = next(r for r in json.loads(arrays["val"].tobytes()) if r["step"] == summary["selected_step"])

    def write(tmp):
        generator.save_weights(tmp / "generator.weights.h5")
        encoder.save_weights(tmp / "encoder.weights.h5")
        np.savez(tmp / "rate.npz", lambdas=arrays["rate/lambdas"], **rate.numpy_state())

    save_best(run, best, write)
    (run / "summary.json").write_text(json.dumps({"run": str(run), "steps": cfg.steps, "best": best,
                                                  "trained_on": summary}, indent=2))
    plot_rd_curves(run)
    return {"run": str(run), "steps": cfg.steps, "selected_step": best["step"], "score": best["score"]}


def parser() -> argparse.ArgumentParser:
    """The CLI: pack, train and unpack (pack's options: PACK_OPTIONS, PACK_DEFAULTS)."""
    from training.config import add_config_arguments  # TensorFlow-free

    p = argparse.ArgumentParser(prog="python -m training.gpu", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="(TensorFlow) pack a warm-started run for the GPU machine")
    pk.add_argument("--init-from", required=True, metavar="BUNDLE", help="the shipped bundle to start from (models/NAME)")
    pk.add_argument("--out", required=True, type=Path, help="the pack to write (gpu/NAME.npz)")
    add_config_arguments(pk, PACK_OPTIONS, defaults=PACK_DEFAULTS)
    tr = sub.add_parser("train", help="(PyTorch) train a pack for a wall-clock budget")
    tr.add_argument("pack", type=Path)
    tr.add_argument("--seconds", type=float, required=True)
    tr.add_argument("--out", required=True, type=Path)
    tr.add_argument("--eval-seconds", type=float, default=60.0)
    tr.add_argument("--batch", type=int, default=None)
    tr.add_argument("--lr", type=float, default=None)
    tr.add_argument("--device", default=None)
    tr.add_argument("--reserve", type=float, default=15.0, help="seconds kept to write the result")
    tr.add_argument("--warmup", type=int, default=WARMUP_STEPS, help="steps of linear learning-rate warm-up")
    tr.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch (0: its default)")
    up = sub.add_parser("unpack", help="(TensorFlow) turn a GPU result into a run directory for export")
    up.add_argument("result", type=Path)
    up.add_argument("--run", required=True, type=Path)
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    if a.cmd == "train":
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
            torch.set_num_interop_threads(a.threads)
        print(json.dumps(train(a.pack, a.seconds, a.out, a.eval_seconds, a.batch, a.lr, a.device,
                               a.reserve, a.warmup)))
        return 0
    from runtime.errors import run_cli
    from runtime.quiet import quiet_tensorflow

    quiet_tensorflow(False)
    if a.cmd == "pack":
        from training.config import config_from_args

        cfg = config_from_args(a, out="").resolved()  # a.out is the pack, not a run directory
        return run_cli(lambda: print(json.dumps(pack(cfg, a.out))))
    return run_cli(lambda: print(json.dumps(unpack(a.result, a.run))))


if __name__ == "__main__":
    sys.exit(main())
