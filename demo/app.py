"""gancodec demo page: ``streamlit run demo/app.py``.

Pick a model and an image, compress it at a rate level or to a byte budget, and see it next to
JPEG, WebP, AVIF and JPEG XL (those installed) at the same file size (runtime.classic); an
any-size model codes an upload at its own size; download the latent.bin, or upload one
to decode it. The page only lays things out: the
work is done by the runtime (through demo/samples.py).
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run demo/app.py` puts demo/ on the path, not the root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from demo import samples as demo  # noqa: E402
from runtime.bundle import manifests  # noqa: E402
from runtime.codec import DEFAULT_STEPS, Codec  # noqa: E402
from runtime.errors import CodecError  # noqa: E402

log = logging.getLogger("gancodec.demo")
EFFORTS = sorted({0, 10, DEFAULT_STEPS, 50, 100, 200})


@st.cache_resource(show_spinner="Loading the model…")
def get_codec(directory: str, model_id: str) -> Codec:
    """One Codec (onnxruntime sessions, TF mirror once loaded) per bundle, shared by all sessions."""
    return Codec(directory)


@st.cache_data(show_spinner=False)
def get_samples(directory: str, model_id: str, samples_dir: str | None):
    codec = get_codec(directory, model_id)
    return demo.sample_images(codec.bundle, directory=Path(samples_dir) if samples_dir else None)


def digest(pixels) -> str:
    return hashlib.sha256(pixels.tobytes()).hexdigest()[:16]


def show_row(column, row, highlight: bool = False) -> None:
    with column:
        st.markdown(f"**{row.name}**" + (" (this codec)" if highlight else ""))
        st.image(demo.enlarge(row.image), width="content")
        st.markdown(f"**{row.num_bytes} bytes** · {row.bpp:.2f} bpp  \nPSNR {row.psnr:.2f} dB · SSIM {row.ssim:.3f}")
        if row.note:
            st.caption(row.note)


def unexpected(exc: Exception) -> None:
    log.exception("demo error")
    st.error(f"Something went wrong inside the codec ({type(exc).__name__}: {exc}). "
             "Please report it with the file you used.")


# -- page -------------------------------------------------------------------------------------------

st.set_page_config(page_title="gancodec demo", page_icon="🗜️", layout="wide")
# Enlarged images must stay blocky: a browser's smooth scaling would hide the pixels being compared.
st.markdown("<style>img {image-rendering: pixelated;}</style>", unsafe_allow_html=True)

st.title("gancodec: a learned codec for tiny images")
st.markdown(
    "A generator network (a GAN decoder) was trained with a rate–distortion loss on one kind of small "
    "image, e.g. CIFAR-10 airplanes. **To compress** an image, the encoder maps it to a small grid of "
    "latent values, scales them by the chosen **rate level** (finer levels: more bytes, better image), "
    "refines them by gradient descent and range-codes the integers into a `latent.bin` of a few dozen "
    "bytes. **To decode**, the generator simply runs once. With a byte budget, a WebP or AVIF payload is stored "
    "instead when one does better (images unlike the training set).  \n"
    "Below, the reconstruction is shown next to **JPEG, WebP, AVIF and JPEG XL squeezed to the same file "
    "size**, with PSNR and SSIM against the original (higher is better). It only works well on "
    "images like the model's training set."
)

found = manifests()
if not found:
    st.error("No model bundle found. Export one (`make export-airplane`) into `models/NAME/`, "
             "or point `$GANCODEC_MODELS` at a directory of bundles, then reload this page.")
    st.stop()

by_dir = {str(d): m for d, m in found}
with st.sidebar:
    st.header("Model")
    directory = st.selectbox(
        "Model bundle", list(by_dir), key="model",
        format_func=lambda d: f"{by_dir[d].get('name', Path(d).name)} ({by_dir[d].get('dataset', '?')})")
    manifest = by_dir[directory]
    try:
        codec = get_codec(directory, manifest["model_id"])
    except CodecError as exc:
        st.error(f"This model bundle cannot be used: {exc}")
        st.stop()
    bundle = codec.bundle
    size = bundle.image_size
    grid_h, grid_w, channels = bundle.latent_shape
    val_psnr = manifest.get("validation", {}).get("psnr") or []
    shape = (f"- image size: **any** (trained on crops; the latent below is for {size}×{size})\n" if bundle.any_size
             else f"- image size: **{size}×{size}**\n")
    st.markdown(
        f"- data set: **{manifest.get('dataset', 'unknown')}**\n" + shape
        + f"- latent: **{grid_h}×{grid_w}×{channels} values**, **{codec.levels} rate levels**\n"
        + (f"- validation PSNR: **{min(val_psnr):.1f}–{max(val_psnr):.1f} dB** (coarsest to finest level)\n"
           if val_psnr else "")
        + f"- model id: `{bundle.model_id[:12]}…`")

    st.header("Rate and effort")
    rate_mode = st.radio("Rate control", ["level", "target"], key="rate_mode", horizontal=True,
                         format_func=lambda m: {"level": "Rate level", "target": "Target bytes"}[m])
    if rate_mode == "level":
        level = st.slider("Rate level", 0, codec.levels - 1, value=codec.default_level, key="level",
                          help="0: the smallest file. Finer levels: more bytes, a better image.")
        target_bytes = None
    else:
        level = None
        target_bytes = int(st.number_input("Largest file size (bytes)", min_value=1, max_value=4000, value=64,
                                           step=4, key="target_bytes",
                                           help="The finest rate level whose file fits is chosen; where WebP "
                                                "or AVIF fits and does better, the file holds its payload."))
    steps = st.select_slider("Encode effort (optimization steps)", options=EFFORTS, value=DEFAULT_STEPS, key="steps",
                             help="0: the amortized encoder's guess only (instant). More steps: better "
                                  "reconstruction, slower encoding.")

tab_compress, tab_decode = st.tabs(["Compress an image", "Decode a latent.bin"])

with tab_compress:
    left, right = st.columns([3, 1])
    with left:
        st.subheader("1 · Pick an image")
        samples_dir = demo.samples_dir()
        origin, picks = get_samples(directory, bundle.model_id, str(samples_dir) if samples_dir else None)
        st.caption(f"Samples: {origin}.")
        thumbs = st.columns(len(picks))
        for i, (_label, px) in enumerate(picks):
            thumbs[i].image(demo.enlarge(px, 96), caption=f"#{i + 1}", width="content")
        choice = st.radio("Sample", list(range(len(picks))), format_func=lambda i: f"#{i + 1}",
                          horizontal=True, key="sample")
        upload = st.file_uploader(
            (f"…or upload your own image (coded at its own size; above {demo.MAX_DEMO_SIDE} px a side it is "
             "shrunk to fit first, to keep this page quick)") if bundle.any_size
            else f"…or upload your own image (it is center-cropped and shrunk to {size}×{size})",
            key="image_file", max_upload_size=demo.MAX_IMAGE_UPLOAD_MB)

        pixels, source = None, None
        if upload is not None:
            try:
                pixels, (w, h) = demo.image_from_upload(upload.getvalue(), None if bundle.any_size else size)
                source = f"your upload {upload.name} ({w}×{h})"
                if pixels.shape[:2] != (h, w):
                    source += f", coded at {pixels.shape[1]}×{pixels.shape[0]}"
            except CodecError as exc:
                st.error(f"Cannot use this upload: {exc}")
            except Exception as exc:  # noqa: BLE001 - the page must never show a traceback
                unexpected(exc)
        else:
            label, pixels = picks[choice]
            source = f"sample #{choice + 1} ({label})"

    with right:
        st.subheader("Original")
        if pixels is not None:
            st.image(demo.enlarge(pixels, 192), width="content")
            st.caption(source)
        run = st.button("Compress", type="primary", key="compress", disabled=pixels is None)
        busy = st.empty()

    settings = dict(level=level, target_bytes=target_bytes, steps=steps)
    if run and pixels is not None:
        bar = busy.progress(0.0, text="Searching for the latent…")

        def progress(done: int) -> None:
            bar.progress(min(done / max(steps, 1), 1.0), text=f"Optimization step {done} of {steps}")

        try:
            with right, st.spinner("Encoding… (the first encode loads TensorFlow, which takes a few seconds)"):
                result = codec.compress([pixels], level=level, target_bytes=target_bytes, steps=steps,
                                        progress=progress)[0]
            bar.progress(1.0, text="Now the classic codecs at the same size…")
            rows = demo.compare(pixels, result)
            st.session_state["result"] = dict(key=(directory, digest(pixels)), settings=settings,
                                               result=result, rows=rows, source=source)
        except CodecError as exc:
            st.error(f"Cannot compress this image: {exc}")
        except Exception as exc:  # noqa: BLE001
            unexpected(exc)
        finally:
            bar.empty()

    shown = st.session_state.get("result")
    if shown and pixels is not None and shown["key"] == (directory, digest(pixels)):
        result, rows = shown["result"], shown["rows"]
        ours = rows[0]
        st.subheader("2 · Result")
        how = (f"rate level {result.level}" if result.kind == "latent"
               else f"a {'WebP' if result.kind == 'webp' else result.kind.upper()} payload")
        st.success(f"Compressed to {ours.num_bytes} bytes ({ours.bpp:.2f} bits per pixel, {how}): "
                   f"PSNR {ours.psnr:.2f} dB, SSIM {ours.ssim:.3f}.")
        for warning in result.warnings:
            st.warning(warning[0].upper() + warning[1:] + ".")
        if shown["settings"] != settings:
            st.caption("The settings changed since: press Compress again to update.")
        cols = st.columns(len(rows) + 1)
        with cols[0]:
            st.markdown("**Original**")
            st.image(demo.enlarge(pixels), width="content")
            ph, pw = pixels.shape[:2]
            st.markdown(f"{pw}×{ph} pixels  \n{pw * ph * 3} bytes uncompressed")
        for column, row in zip(cols[1:], rows):
            show_row(column, row, highlight=row is ours)
        st.caption("The classic codecs use the highest quality whose file is no larger than this codec's "
                   "(whole files, headers included). PSNR and SSIM are measured against the original at "
                   f"{pixels.shape[1]}×{pixels.shape[0]}.")
        st.download_button("Download latent.bin", data=result.data, file_name="latent.bin",
                           mime="application/octet-stream", key="download", on_click="ignore")

with tab_decode:
    st.subheader("Decode a latent.bin")
    st.caption("No Python needed: `make web-demo` serves a static page that decodes the same latent.bin "
               "files in the browser (onnxruntime-web, nothing uploaded) on "
               "[localhost:8000](http://localhost:8000/); see the README's *Decode in the browser*.")
    st.markdown("The decoder reads the model id from the file's header, finds that model among the "
                "installed bundles and runs its generator (onnxruntime only, no TensorFlow).")
    latent = st.file_uploader("Upload a latent.bin", key="latent_file", max_upload_size=demo.MAX_LATENT_UPLOAD_MB)
    if latent is not None:
        try:
            decoded = demo.decode_upload(latent.getvalue())
        except CodecError as exc:
            st.error(f"Cannot decode this file: {exc}")
        except Exception as exc:  # noqa: BLE001
            unexpected(exc)
        else:
            h, w = decoded.image.shape[:2]
            if decoded.kind != "latent":
                name = "WebP" if decoded.kind == "webp" else decoded.kind.upper()
                st.success(f"Decoded {decoded.num_bytes} bytes: a {name} payload (the encoder's fallback; "
                           f"no model needed), a {w}×{h} image.")
            else:
                st.success(f"Decoded {decoded.num_bytes} bytes with model {decoded.bundle.name} "
                           f"({decoded.bundle.manifest.get('dataset', '?')}), rate level {decoded.level}: "
                           f"a {w}×{h} image.")
            st.image(demo.enlarge(decoded.image), width="content")
