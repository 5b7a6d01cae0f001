#!/usr/bin/env bash
# benchmarks/aarch64.sh — issue #27: the decoder and the base-install encoder on aarch64, under
# qemu-user emulation, in a Debian arm64 root with numpy, onnxruntime and Pillow alone (no TensorFlow).
#
#   sudo bash benchmarks/aarch64.sh [--data PATH.npz] [--limit N] [--target-bytes B] [--root DIR]
#   (make bench-aarch64)
#
# 1. Builds, once, a Debian arm64 root (debootstrap --foreign, then its second stage run through
#    qemu-aarch64-static via binfmt_misc) with python3 and a venv holding the project's base
#    dependencies (pinned to the versions in the host's .venv, so both machines run the same
#    releases). Later runs reuse it (only the venv is redone when the pins change).
# 2. Copies the working tree (git ls-files, untracked files not ignored, models/) into the root and
#    runs there, on PYTHONPATH (no install step): machine and versions, a check that TensorFlow is not
#    importable, every golden file of tests/golden/ decoded as tests/test_golden.py does (and once
#    through `python -m runtime.decode`), the base encoder (effort "base") on the first --limit val
#    images of --data at --target-bytes (no WebP fallback: the model alone, as benchmarks.effort's
#    budget row) and at the default level, and `python -m runtime.cli encode/decode` on 4 of them.
# 3. Runs the same probe on the x86_64 host with .venv/bin/python and compares both machines: decoded
#    pixels and PNG bytes of the golden files, encoded bytes of every image.
# 4. Writes benchmarks/results/aarch64.{json,md}.
#
# One onnxruntime thread, one BLAS thread on both machines (one core). The aarch64 times are qemu's
# emulation on this host, not the speed of any arm64 device. Needs root (chroot, mount); installs
# qemu-user-static, binfmt-support and debootstrap with apt when they are missing. Mounts (proc, dev,
# binfmt_misc when it was not mounted) and the binfmt entry it registered are undone on exit; the
# data-set copy in the root's /tmp is deleted. The host's /sys is deliberately not mounted in the
# root: onnxruntime's arm64 cpuinfo parses the x86 host's /sys/devices/system/cpu there and segfaults
# on import (without /sys it warns and uses its generic aarch64 kernels).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${ARM64_ROOT:-/opt/gancodec-arm64}
SUITE=${ARM64_SUITE:-bookworm}
MIRROR=${ARM64_MIRROR:-http://deb.debian.org/debian}
DATA=${ARM64_DATA:-$REPO/../shared/data/cifar10_airplane.npz}
LIMIT=${ARM64_LIMIT:-64}
TARGET_BYTES=${ARM64_TARGET_BYTES:-51}
MODEL=airplane
HOST_PY=${HOST_PY:-$REPO/.venv/bin/python}
HOST_WAIT_S=${ARM64_HOST_WAIT_S:-1800}  # how long to wait for `make install` (.venv/.installed)
OUT_DIR=$REPO/benchmarks/results

while [[ $# -gt 0 ]]; do
  case $1 in
    --data) DATA=$2; shift 2 ;;
    --limit) LIMIT=$2; shift 2 ;;
    --target-bytes) TARGET_BYTES=$2; shift 2 ;;
    --root) ROOT=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[aarch64 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, mount): run it as root or with sudo"
[[ $(uname -m) == x86_64 ]] || log "note: host is $(uname -m), not x86_64; the host columns are this machine's"
[[ -f $DATA ]] || die "$DATA: no such file (--data PATH.npz, CIFAR-10 airplane with a 'val' key)"
[[ $LIMIT =~ ^[0-9]+$ && $LIMIT -ge 4 ]] || die "--limit must be an integer >= 4"
[[ $TARGET_BYTES =~ ^[0-9]+$ ]] || die "--target-bytes must be a positive integer"
ROOT=${ROOT%/}
[[ $ROOT == /* && $ROOT != / ]] || die "--root must be an absolute path other than /"

T_START=$(now)
mkdir -p /run/lock
exec 9>/run/lock/gancodec-arm64.lock
flock -n 9 || die "another benchmarks/aarch64.sh is running (lock /run/lock/gancodec-arm64.lock)"

WORK=$(mktemp -d /tmp/gancodec-aarch64.XXXXXX)
GUEST_WORK=/tmp/gancodec-aarch64      # inside the root
BINFMT_DIR=/proc/sys/fs/binfmt_misc
BINFMT_MOUNTED=0 BINFMT_REGISTERED=0 USE_BINFMT=0

mounts_under() {  # mount points at or below $1, deepest first
  findmnt -rn -o TARGET | awk -v r="$1" '$0 == r || index($0, r "/") == 1' | sort -r
}
cleanup() {
  local rc=$? m
  set +e
  for r in "$ROOT" "$ROOT.partial"; do
    for m in $(mounts_under "$r"); do umount "$m" 2>/dev/null || umount -l "$m"; done
  done
  if [[ $BINFMT_REGISTERED == 1 && -e $BINFMT_DIR/qemu-aarch64 ]]; then echo -1 > "$BINFMT_DIR/qemu-aarch64"; fi
  if [[ $BINFMT_MOUNTED == 1 ]]; then umount "$BINFMT_DIR"; fi
  rm -rf "$WORK" "$ROOT$GUEST_WORK"
  [[ $rc == 0 ]] || log "failed (exit $rc); mounts and binfmt entry undone"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- host tools -------------------------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null \
   || [[ ! -f /usr/lib/binfmt.d/qemu-aarch64.conf ]]; then
  log "installing qemu-user-static binfmt-support debootstrap on the host"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support debootstrap >/dev/null
fi
QEMU_VERSION=$(qemu-aarch64-static --version | head -1)

# --- binfmt_misc: run aarch64 ELF files through qemu (the F flag: no qemu needed inside the root) --
if [[ ! -e $BINFMT_DIR/register ]]; then
  if mount -t binfmt_misc binfmt_misc "$BINFMT_DIR" 2>/dev/null; then BINFMT_MOUNTED=1; fi
fi
if [[ -e $BINFMT_DIR/register ]]; then
  if [[ ! -e $BINFMT_DIR/qemu-aarch64 ]]; then
    if grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > "$BINFMT_DIR/register" 2>/dev/null; then
      BINFMT_REGISTERED=1
    fi
  fi
  if [[ -e $BINFMT_DIR/qemu-aarch64 ]] && grep -q '^enabled' "$BINFMT_DIR/qemu-aarch64" \
     && grep -q '^flags:.*F' "$BINFMT_DIR/qemu-aarch64"; then
    USE_BINFMT=1
  fi
fi
if [[ $USE_BINFMT == 1 ]]; then
  log "binfmt_misc: qemu-aarch64 registered (fix-binary)"
else
  log "binfmt_misc unavailable: aarch64 programs run explicitly through /usr/bin/qemu-aarch64-static"
fi

# Run a command inside a root (default $ROOT): a clean environment, one thread, through binfmt
# or explicitly through the static qemu copied into the root (no child processes then).
in_root() {
  local r=$ROOT
  if [[ $1 == --root ]]; then r=$2; shift 2; fi
  local emu=()
  [[ $USE_BINFMT == 1 ]] || emu=(/usr/bin/qemu-aarch64-static)
  env -i PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    ${QEMU_CPU:+QEMU_CPU=$QEMU_CPU} PYTHONPATH=/opt/gancodec/src \
    nice -n 5 chroot "$r" "${emu[@]}" "$@"
}
mount_root() {  # proc, dev for a root; undone by cleanup. No /sys: see the header (onnxruntime segfaults)
  local r=$1
  mountpoint -q "$r/proc" || mount -t proc proc "$r/proc"
  mountpoint -q "$r/dev" || mount --bind /dev "$r/dev"
}
umount_root() {
  local m
  for m in $(mounts_under "$1"); do umount "$m" || umount -l "$m"; done
}
safe_rm_root() {  # a partial or stale root: refuse while anything is mounted below it
  [[ -n $(mounts_under "$1") ]] && die "$1 has mounts below it; not deleting it"
  rm -rf --one-file-system "$1"
}

# --- the arm64 root ---------------------------------------------------------------------------
ROOT_BUILT=0 T_ROOT=0
if [[ ! -f $ROOT/.gancodec-root ]]; then
  [[ $USE_BINFMT == 1 ]] || die "building the arm64 root needs binfmt_misc (debootstrap's second stage and \
dpkg run many aarch64 programs, which qemu-user cannot chain without it); mount binfmt_misc or build $ROOT elsewhere"
  t0=$(now)
  P=$ROOT.partial
  [[ -e $P ]] && { log "removing an unfinished $P"; safe_rm_root "$P"; }
  [[ -e $ROOT ]] && { log "removing $ROOT (no .gancodec-root marker)"; safe_rm_root "$ROOT"; }
  mkdir -p "$(dirname "$ROOT")"
  log "debootstrap --foreign: Debian $SUITE arm64 (minbase + python3, python3-venv) into $P"
  debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$P" "$MIRROR" > "$WORK/debootstrap1.log" 2>&1 || { tail -20 "$WORK/debootstrap1.log" >&2; die "debootstrap first stage failed"; }
  cp /usr/bin/qemu-aarch64-static "$P/usr/bin/"
  log "debootstrap --second-stage inside the root (emulated; several minutes)"
  in_root --root "$P" /debootstrap/debootstrap --second-stage > "$WORK/debootstrap2.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap2.log" >&2; die "debootstrap second stage failed"; }
  umount_root "$P"
  echo "$SUITE arm64 $MIRROR $(date -u +%FT%TZ)" > "$P/.gancodec-root"
  mv "$P" "$ROOT"
  ROOT_BUILT=1 T_ROOT=$(since "$t0")
  log "root built in ${T_ROOT}s"
else
  log "reusing $ROOT ($(cat "$ROOT/.gancodec-root"))"
fi
[[ -x $ROOT/usr/bin/qemu-aarch64-static ]] || cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
mount_root "$ROOT"

# --- the host's .venv (make install may still be running) ------------------------------------
waited=0
while [[ ! -f $REPO/.venv/.installed || ! -x $HOST_PY ]] && (( waited < HOST_WAIT_S )); do
  (( waited == 0 )) && log "waiting for $REPO/.venv/.installed (make install), up to ${HOST_WAIT_S}s"
  sleep 10; waited=$((waited + 10))
done
HOST_OK=0
[[ -f $REPO/.venv/.installed && -x $HOST_PY ]] && HOST_OK=1
[[ $HOST_OK == 1 ]] || log "no host .venv after ${HOST_WAIT_S}s: the x86_64 columns are skipped"

# --- the venv in the root: the base dependencies of pyproject.toml, at the host's versions ----
REQS=$(python3 - "$REPO/pyproject.toml" "$( [[ $HOST_OK == 1 ]] && echo "$HOST_PY" )" <<'PY'
import re, subprocess, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
names = [re.match(r"[A-Za-z0-9_.-]+", d).group(0) for d in deps]
pins = {}
if sys.argv[2]:  # the host venv's versions, when they satisfy pyproject (they were installed from it)
    code = "import importlib.metadata as m, sys; print(' '.join(m.version(n) for n in sys.argv[1:]))"
    out = subprocess.run([sys.argv[2], "-c", code, *names], capture_output=True, text=True)
    if out.returncode == 0:
        pins = dict(zip(names, out.stdout.split()))
print(" ".join(f"{n}=={pins[n]}" if n in pins else d.replace(" ", "") for n, d in zip(names, deps)))
PY
)
T_VENV=0
if [[ ! -x $ROOT/opt/venv/bin/python || $(cat "$ROOT/opt/venv/.gancodec-reqs" 2>/dev/null) != "$REQS" ]]; then
  [[ $USE_BINFMT == 1 ]] || die "(re)making the venv in $ROOT needs binfmt_misc (venv and pip start aarch64 subprocesses)"
  t0=$(now)
  log "venv /opt/venv in the root: pip install $REQS (emulated)"
  rm -rf "$ROOT/opt/venv"
  in_root /usr/bin/python3 -m venv /opt/venv
  # pip inside the root trusts what the host trusts (a TLS-inspecting egress proxy's CA, if any)
  cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/gancodec-host-ca.crt"
  # shellcheck disable=SC2086
  in_root /opt/venv/bin/python -m pip install -q --disable-pip-version-check --only-binary=:all: \
    --cert /etc/gancodec-host-ca.crt $REQS \
    > "$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log" >&2; die "pip install in the arm64 root failed"; }
  echo "$REQS" > "$ROOT/opt/venv/.gancodec-reqs"
  T_VENV=$(since "$t0")
  log "venv ready in ${T_VENV}s"
fi

# --- the working tree, the data, the probe ----------------------------------------------------
t0=$(now)
SRC=$ROOT/opt/gancodec/src
rm -rf --one-file-system "$SRC"
mkdir -p "$SRC"
(cd "$REPO" && { git ls-files -z --cached --others --exclude-standard; find models -type f -print0; } \
  | sort -zu | while IFS= read -r -d '' f; do [[ -f $f ]] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf -) | tar -xf - -C "$SRC"
GIT_COMMIT=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
rm -rf "$ROOT$GUEST_WORK"
mkdir -p "$ROOT$GUEST_WORK"/{arm64,x86_64}
cp "$DATA" "$ROOT$GUEST_WORK/data.npz"
T_COPY=$(since "$t0")

cat > "$ROOT$GUEST_WORK/probe.py" <<'PY'
"""What runs on each machine: versions, golden decodes, the base encoder (writes OUT/probe.json)."""
import hashlib, importlib, importlib.util, json, os, platform, sys, time
from pathlib import Path

out = Path(sys.argv[1]); src = Path(sys.argv[2]); data = sys.argv[3]
limit, target, model_name = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
t_start = time.perf_counter()
res = {"machine": platform.machine(), "python": platform.python_version(), "uname": " ".join(platform.uname())}
# Is TensorFlow installed at all? find_spec, not an import: the host's .venv has it, and importing it
# here would load numpy and TensorFlow's threads before the timed runs (and hide whether they import it).
res["tensorflow_importable"] = importlib.util.find_spec("tensorflow") is not None
t0 = time.perf_counter()
import numpy as np, onnxruntime as ort, PIL
from PIL import Image
res["import_seconds"] = round(time.perf_counter() - t0, 2)
res["versions"] = {"numpy": np.__version__, "onnxruntime": ort.__version__, "pillow": PIL.__version__}
res["ort_providers"] = ort.get_available_providers()
from importlib import metadata
res["packages"] = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())

import runtime
from runtime import bitstream
from runtime.bundle import PROJECT_MODELS, load_bundle
from runtime.codec import Codec, decode_file_bytes
from runtime.output import png_bytes
res["gancodec"] = runtime.__version__
res["models_dir"] = str(PROJECT_MODELS)
res["runtime_file"] = runtime.__file__

# golden files, as tests/test_golden.py checks them
golden_dir = src / "tests" / "golden"
shipped = sorted(d.name for d in PROJECT_MODELS.iterdir() if (d / "manifest.json").is_file())
files, arrays = [], {}
for name in shipped:
    g = json.loads((golden_dir / name / "golden.json").read_text())
    bundle = load_bundle(PROJECT_MODELS / name)
    for entry in g["files"]:
        blob = (golden_dir / name / entry["file"]).read_bytes()
        grid = bundle.grid(*entry["size"]) if entry.get("size") else None
        _, level, symbols = bitstream.unpack_latent(blob, bundle.model_id_bytes, bundle.entropy, grid)
        t0 = time.perf_counter()
        image, found = decode_file_bytes(blob)
        ms = (time.perf_counter() - t0) * 1000
        expected = np.asarray(Image.open(golden_dir / name / entry["png"]).convert("RGB"))
        diff = int(np.abs(image.astype(int) - expected.astype(int)).max()) if image.shape == expected.shape else 999
        png = png_bytes(image)
        arrays[entry["file"]] = image
        files.append({"bundle": name, "file": entry["file"], "model_id_ok": g["model_id"] == bundle.model_id == found.model_id,
                      "level_ok": level == entry["level"],
                      "symbols_ok": bool(np.array_equal(symbols, np.asarray(entry["symbols"]))),
                      "shape": list(image.shape), "max_abs_diff": diff,
                      "png_sha256": hashlib.sha256(png).hexdigest(),
                      "bit_identical": hashlib.sha256(png).hexdigest() == entry["png_sha256"],
                      "decode_ms": round(ms, 2)})
np.savez_compressed(out / "golden.npz", **arrays)
res["golden"] = files

# the base encoder (no TensorFlow): benchmarks.effort's base rows, one thread
from benchmarks.rd import encode_set, load_split, summarise
codec = Codec(model_name, threads=1, encode_threads=1)
images = load_split(data, codec.bundle.image_size, "val", limit)
codec.compress(list(images[:2]), target_bytes=target, effort="base", fallback=False)  # sessions, tables: untimed
codec.compress(list(images[:2]), level=codec.default_level, effort="base")
rows, blobs = [], {}
for mode, rate in (("budget", {"target_bytes": target, "fallback": False}), ("level", {"level": codec.default_level})):
    t0 = time.perf_counter()
    per_image = encode_set(codec, images, 0, 64, effort="base", **rate)
    ms = (time.perf_counter() - t0) * 1000 / len(images)
    point = summarise("gancodec", mode, 0, per_image, keep_per_image=True)
    results = per_image["results"]
    assert all(r.encoder == "base" for r in results)
    for i, r in enumerate(results):
        blobs[f"{mode}_{i}"] = np.frombuffer(r.data, np.uint8)
    rows.append({"mode": mode, "setting": f"<= {target} B" if mode == "budget" else f"level {codec.default_level}",
                 "images": len(images), "bytes": point["bytes"], "bytes_max": point["bytes_max"],
                 "psnr": point["psnr"], "ms_ssim": point["ms_ssim"], "ms_per_image": round(ms, 2),
                 "levels": [int(v) for v in per_image["level"]], "psnr_per_image": point["per_image"]["psnr"],
                 "sha256": [hashlib.sha256(r.data).hexdigest() for r in results]})
np.savez_compressed(out / "encoded.npz", **blobs)
res["encode"] = {"model": codec.bundle.name, "model_id": codec.bundle.model_id, "rows": rows}
(out / "png").mkdir(exist_ok=True)  # 4 images for the CLI run
for i in range(4):
    Image.fromarray(images[i]).save(out / "png" / f"val_{i}.png")
res["tensorflow_imported"] = "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None
res["probe_seconds"] = round(time.perf_counter() - t_start, 1)
(out / "probe.json").write_text(json.dumps(res, indent=1) + "\n")
print(f"{res['machine']}: golden {sum(f['bit_identical'] for f in files)}/{len(files)} bit-identical, "
      + ", ".join(f"{r['setting']}: {r['psnr']:.2f} dB {r['bytes']:.1f} B {r['ms_per_image']:.1f} ms/image" for r in rows))
PY

# --- arm64: machine, versions, probe, CLI ------------------------------------------------------
G=$GUEST_WORK/arm64
ARGS=(/opt/gancodec/src "$GUEST_WORK/data.npz" "$LIMIT" "$TARGET_BYTES" "$MODEL")
log "arm64: uname -m = $(in_root /usr/bin/uname -m), platform.machine() = $(in_root /opt/venv/bin/python -c 'import platform; print(platform.machine())')"
in_root /usr/bin/uname -m > "$ROOT$G/uname_m.txt"
(. "$ROOT/etc/os-release"; echo "$PRETTY_NAME") > "$ROOT$G/os.txt"
if in_root /opt/venv/bin/python -c 'import tensorflow' > "$ROOT$G/tf_import.txt" 2>&1; then
  die "TensorFlow imports in the arm64 root: it must not be installed there"
fi
log "arm64: probe (golden decodes, base encoder on $LIMIT images at <= $TARGET_BYTES B; emulated)"
t0=$(now)
in_root /opt/venv/bin/python "$GUEST_WORK/probe.py" "$G" "${ARGS[@]}" >&2 || die "arm64 probe failed (exit $?)"
T_ARM_PROBE=$(since "$t0")
log "arm64: python -m runtime.decode on the golden files, python -m runtime.cli encode/decode on 4 images"
t0=$(now)
guest_glob() {  # a glob expanded on the host under $ROOT, printed as paths inside the root
  local f
  for f in "$ROOT"$1; do [[ -e $f ]] && printf '%s\n' "${f#"$ROOT"}"; done
}
mapfile -t GOLDEN_BINS < <(guest_glob "/opt/gancodec/src/tests/golden/*/*.bin")
in_root /opt/venv/bin/python -m runtime.decode --out-dir "$G/cli_golden" "${GOLDEN_BINS[@]}" > "$ROOT$G/cli_golden.txt" \
  || die "arm64: python -m runtime.decode on the golden files failed (exit $?)"
mapfile -t PNGS < <(guest_glob "$G/png/*.png")
in_root /opt/venv/bin/python -m runtime.cli encode "${PNGS[@]}" --model "$MODEL" --effort base \
  --target-bytes "$TARGET_BYTES" --no-fallback --json --out-dir "$G/cli_enc" > "$ROOT$G/cli_encode.jsonl" \
  || die "arm64: python -m runtime.cli encode failed (exit $?)"
mapfile -t BINS < <(guest_glob "$G/cli_enc/*.bin")
in_root /opt/venv/bin/python -m runtime.cli decode --out-dir "$G/cli_dec" "${BINS[@]}" > "$ROOT$G/cli_decode.txt" \
  || die "arm64: python -m runtime.cli decode failed (exit $?)"
T_ARM_CLI=$(since "$t0")

# --- x86_64 host: the same probe with .venv/bin/python ------------------------------------------
T_HOST_PROBE=0
if [[ $HOST_OK == 1 ]]; then
  H=$ROOT$GUEST_WORK/x86_64
  log "x86_64 host: the same probe with $HOST_PY"
  t0=$(now)
  (cd "$REPO" && env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2 \
     PYTHONPATH="$SRC" nice -n 5 "$HOST_PY" "$ROOT$GUEST_WORK/probe.py" "$H" "$SRC" "$ROOT$GUEST_WORK/data.npz" \
     "$LIMIT" "$TARGET_BYTES" "$MODEL") >&2 || die "x86_64 probe failed (exit $?)"
  T_HOST_PROBE=$(since "$t0")
  (cd "$SRC" && env PYTHONPATH="$SRC" "$HOST_PY" -m runtime.decode --out-dir "$H/cli_golden" tests/golden/*/*.bin) > "$H/cli_golden.txt" \
    || die "x86_64: python -m runtime.decode on the golden files failed (exit $?)"
fi

# --- report (computed inside the root: numpy there is all it needs) ----------------------------
cat > "$ROOT$GUEST_WORK/meta.json" <<EOF
{"created": "$(date -u +%FT%TZ)", "root": "$ROOT", "suite": "$SUITE", "mirror": "$MIRROR",
 "qemu": "$QEMU_VERSION", "qemu_cpu": "${QEMU_CPU:-max (qemu-user default)}", "binfmt": $USE_BINFMT,
 "host_cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')", "host_nproc": $(nproc),
 "host_kernel": "$(uname -r)", "host_os": "$(. /etc/os-release; echo "$PRETTY_NAME")",
 "host_python": "$([[ $HOST_OK == 1 ]] && "$HOST_PY" -c 'import platform; print(platform.python_version())')",
 "arm64_os": "$(cat "$ROOT$G/os.txt")", "arm64_uname_m": "$(cat "$ROOT$G/uname_m.txt")",
 "arm64_tf_import_error": "$(tail -1 "$ROOT$G/tf_import.txt" | tr -d '"\\')",
 "requirements": "$REQS", "git_commit": "$GIT_COMMIT", "git_dirty_files": $GIT_DIRTY,
 "data": "$DATA", "limit": $LIMIT, "target_bytes": $TARGET_BYTES, "model": "$MODEL", "host_ok": $HOST_OK,
 "root_built_this_run": $ROOT_BUILT,
 "seconds": {"root_build": $T_ROOT, "venv": $T_VENV, "copy": $T_COPY, "arm64_probe": $T_ARM_PROBE,
             "arm64_cli": $T_ARM_CLI, "x86_64_probe": $T_HOST_PROBE, "total": $(since "$T_START")}}
EOF
cat > "$ROOT$GUEST_WORK/report.py" <<'PY'
"""Both machines' probe results -> aarch64.json / aarch64.md."""
import json, sys
from pathlib import Path
import numpy as np

w = Path(sys.argv[1]); meta = json.loads((w / "meta.json").read_text())
arm = json.loads((w / "arm64" / "probe.json").read_text())
host = json.loads((w / "x86_64" / "probe.json").read_text()) if meta["host_ok"] else None

def golden_summary(p):
    f = p["golden"]
    return {"files": len(f), "bit_identical": sum(x["bit_identical"] for x in f),
            "within_1_lsb_not_identical": sum((not x["bit_identical"]) and x["max_abs_diff"] <= 1 for x in f),
            "moved_more_than_1_lsb": sum(x["max_abs_diff"] > 1 for x in f),
            "max_abs_diff": max(x["max_abs_diff"] for x in f),
            "symbols_levels_model_ok": all(x["symbols_ok"] and x["level_ok"] and x["model_id_ok"] for x in f),
            "decode_ms_mean": round(float(np.mean([x["decode_ms"] for x in f])), 2),
            "not_identical": [x["file"] for x in f if not x["bit_identical"]]}

def cli_identical(machine, probe):  # python -m runtime.decode's PNGs vs the library call's
    import hashlib
    d = w / machine / "cli_golden"
    return sum(hashlib.sha256((d / (x["file"][:-4] + ".png")).read_bytes()).hexdigest() == x["png_sha256"]
               for x in probe["golden"])

g = {"arm64": golden_summary(arm), "arm64_cli_decode_png_identical_to_library": cli_identical("arm64", arm)}
if host:
    g["x86_64"] = golden_summary(host)
    g["x86_64_cli_decode_png_identical_to_library"] = cli_identical("x86_64", host)
    a, h = np.load(w / "arm64" / "golden.npz"), np.load(w / "x86_64" / "golden.npz")
    per = {k: int(np.abs(a[k].astype(int) - h[k].astype(int)).max()) for k in a.files}
    same_png = sum(x["png_sha256"] == y["png_sha256"] for x, y in zip(arm["golden"], host["golden"]))
    g["arm64_vs_x86_64"] = {"png_bytes_identical": same_png, "pixels_identical": sum(v == 0 for v in per.values()),
                            "max_abs_diff": max(per.values()), "differing": {k: v for k, v in per.items() if v}}

enc = {"model": arm["encode"]["model"], "images": meta["limit"], "target_bytes": meta["target_bytes"], "rows": []}
for i, ra in enumerate(arm["encode"]["rows"]):
    row = {"mode": ra["mode"], "setting": ra["setting"],
           "arm64": {k: ra[k] for k in ("bytes", "bytes_max", "psnr", "ms_ssim", "ms_per_image")}}
    if host:
        rh = host["encode"]["rows"][i]
        row["x86_64"] = {k: rh[k] for k in ("bytes", "bytes_max", "psnr", "ms_ssim", "ms_per_image")}
        same = [x == y for x, y in zip(ra["sha256"], rh["sha256"])]
        row["bytes_identical"] = sum(same)
        row["differing_images"] = [{"image": j, "arm64_level": ra["levels"][j], "x86_64_level": rh["levels"][j],
                                    "arm64_psnr": ra["psnr_per_image"][j], "x86_64_psnr": rh["psnr_per_image"][j]}
                                   for j, s in enumerate(same) if not s]
        row["emulation_slowdown"] = round(ra["ms_per_image"] / max(rh["ms_per_image"], 1e-9), 1)
    enc["rows"].append(row)
cli = [json.loads(line) for line in (w / "arm64" / "cli_encode.jsonl").read_text().splitlines() if line.strip()]
budget_sha = arm["encode"]["rows"][0]["sha256"]
import hashlib
enc["arm64_cli"] = {"images": len(cli), "encoder": sorted({c["encoder"] for c in cli}),
                    "bytes": [c["bytes"] for c in cli], "psnr": [c["psnr"] for c in cli],
                    "files_identical_to_library": sum(hashlib.sha256(Path(c["output"]).read_bytes()).hexdigest() == budget_sha[k]
                                                      for k, c in enumerate(sorted(cli, key=lambda c: c["input"]))),
                    "decoded": len((w / "arm64" / "cli_decode.txt").read_text().splitlines())}

result = {"kind": "aarch64", "issue": 27, "created": meta["created"],
          "note": "qemu-user emulation of aarch64 on an x86_64 host (binfmt_misc + qemu-aarch64-static): the arm64 ms are "
                  "emulated time on this host, not the speed of an arm64 device",
          "arm64": {"os": meta["arm64_os"], "uname_m": meta["arm64_uname_m"], "platform_machine": arm["machine"],
                    "python": arm["python"], "versions": arm["versions"], "packages": arm["packages"],
                    "tensorflow_importable": arm["tensorflow_importable"], "tensorflow_import_error": meta["arm64_tf_import_error"],
                    "tensorflow_imported_by_the_run": arm["tensorflow_imported"], "onnxruntime_providers": arm["ort_providers"],
                    "import_seconds": arm["import_seconds"], "probe_seconds": arm["probe_seconds"],
                    "qemu": meta["qemu"], "qemu_cpu": meta["qemu_cpu"], "root": meta["root"], "suite": meta["suite"]},
          "x86_64": None if not host else {"os": meta["host_os"], "cpu": meta["host_cpu"], "nproc": meta["host_nproc"],
                                           "kernel": meta["host_kernel"], "python": host["python"], "versions": host["versions"],
                                           "tensorflow_importable": host["tensorflow_importable"],
                                           "tensorflow_imported_by_the_run": host["tensorflow_imported"],
                                           "import_seconds": host["import_seconds"], "probe_seconds": host["probe_seconds"]},
          "threads": "onnxruntime 1 intra-op thread (Codec(threads=1, encode_threads=1)), OMP/OpenBLAS 1 thread, on both machines",
          "source": {"git_commit": meta["git_commit"], "git_dirty_tracked_files": meta["git_dirty_files"], "requirements": meta["requirements"]},
          "golden": g, "encode": enc, "root_built_this_run": bool(meta["root_built_this_run"]),
          "wall_seconds": meta["seconds"]}
(w / "aarch64.json").write_text(json.dumps(result, indent=1) + "\n")

A = result["arm64"]; X = result["x86_64"]; ga = g["arm64"]
L = [f"### aarch64 under emulation — decoder and base encoder ({meta['created'][:10]})", "",
     f"Issue #27. The decoder and the base-install encoder run on **aarch64** ({A['os']}, `uname -m` = `{A['uname_m']}`, "
     f"`platform.machine()` = `{A['platform_machine']}`) with numpy {A['versions']['numpy']}, onnxruntime "
     f"{A['versions']['onnxruntime']} and Pillow {A['versions']['pillow']} alone, Python {A['python']}: TensorFlow is not "
     f"importable there (`{A['tensorflow_import_error']}`) and the run never imported it.", "",
     f"**This is qemu-user emulation** ({A['qemu']}, CPU model {A['qemu_cpu']}) on an x86_64 host ({X['cpu'] if X else '?'}, "
     f"{X['nproc'] if X else '?'} cores): the arm64 times are emulated time, **not the speed of an arm64 device**. "
     f"One thread on both machines. Built and run by `benchmarks/aarch64.sh` (`make bench-aarch64`); "
     f"source {meta['git_commit'][:10]}{' + uncommitted changes' if meta['git_dirty_files'] else ''}.", "",
     "#### Golden files (`tests/golden/`, checked as `tests/test_golden.py` does)", "",
     "| machine | files | bit-identical PNG | within 1 LSB, not identical | moved > 1 LSB | max abs pixel diff | symbols, levels, model ids | decode ms / file |",
     "|---|---|---|---|---|---|---|---|"]
for m in ("arm64", "x86_64"):
    if m in g:
        s = g[m]
        L.append(f"| {m}{' (emulated)' if m == 'arm64' else ''} | {s['files']} | {s['bit_identical']} | {s['within_1_lsb_not_identical']} | "
                 f"{s['moved_more_than_1_lsb']} | {s['max_abs_diff']} | {'all equal' if s['symbols_levels_model_ok'] else 'MISMATCH'} | {s['decode_ms_mean']:.1f} |")
L.append("")
if "arm64_vs_x86_64" in g:
    c = g["arm64_vs_x86_64"]
    L.append(f"arm64 against x86_64, file by file: {c['png_bytes_identical']} / {ga['files']} PNGs byte-identical, "
             f"{c['pixels_identical']} / {ga['files']} decodes pixel-identical, max abs pixel diff {c['max_abs_diff']}"
             + (f" (differing: {', '.join(f'{k} by {v}' for k, v in c['differing'].items())})" if c["differing"] else "") + ".")
L.append(f"`python -m runtime.decode` on the same files (arm64): {g['arm64_cli_decode_png_identical_to_library']} / {ga['files']} "
         "PNGs identical to the library call's.")
if ga["not_identical"]:
    L.append(f"Not bit-identical on arm64: {', '.join(ga['not_identical'])}.")
L += ["", f"#### Base encoder (`effort=\"base\"`, no TensorFlow), {enc['model']}, first {enc['images']} val images", "",
      "As `benchmarks.effort`'s base rows (budget: model alone, no WebP fallback), batch 64, one thread.", "",
      "| rate | machine | bytes (mean / max) | PSNR (dB) | MS-SSIM | ms / image | files byte-identical to x86_64 |", "|---|---|---|---|---|---|---|"]
for r in enc["rows"]:
    for m in ("arm64", "x86_64"):
        if m in r:
            v = r[m]
            ident = f"{r['bytes_identical']} / {enc['images']}" if m == "arm64" and "bytes_identical" in r else ""
            L.append(f"| {r['setting']} | {m}{' (emulated)' if m == 'arm64' else ''} | {v['bytes']:.1f} / {v['bytes_max']} | {v['psnr']:.2f} | "
                     f"{v['ms_ssim']:.4f} | {v['ms_per_image']:.1f} | {ident} |")
L.append("")
for r in enc["rows"]:
    if "emulation_slowdown" in r:
        L.append(f"{r['setting']}: emulated arm64 is {r['emulation_slowdown']}x the host's time per image.")
    for d in r.get("differing_images", []):
        L.append(f"{r['setting']}: image {d['image']} encodes differently (arm64 level {d['arm64_level']} {d['arm64_psnr']:.2f} dB, "
                 f"x86_64 level {d['x86_64_level']} {d['x86_64_psnr']:.2f} dB).")
ec = enc["arm64_cli"]
L += [f"`python -m runtime.cli encode --effort base --target-bytes {enc['target_bytes']} --no-fallback` (the `gancodec encode` "
      f"command) on 4 of the images on arm64: encoder {', '.join(ec['encoder'])}, bytes {ec['bytes']}, PSNR {ec['psnr']}; "
      f"{ec['files_identical_to_library']} / 4 files identical to the library's; `gancodec decode` decoded {ec['decoded']}.", "",
      "#### Wall time (s)", "",
      "| root build | venv | copy | arm64 probe | arm64 CLI runs | x86_64 probe | total (to the report) |", "|---|---|---|---|---|---|---|",
      "| " + " | ".join(str(meta["seconds"][k]) for k in ("root_build", "venv", "copy", "arm64_probe", "arm64_cli", "x86_64_probe", "total")) + " |",
      "", f"Root {'built in this run' if meta['root_built_this_run'] else 'reused'} ({meta['root']}, Debian {meta['suite']} arm64, "
      f"debootstrap --foreign + second stage under qemu); venv pins: `{meta['requirements']}`.", ""]
(w / "aarch64.md").write_text("\n".join(L))
print("\n".join(L))
PY
T_TOTAL=$(since "$T_START")
sed -i "s/\"total\": [0-9.]*/\"total\": $T_TOTAL/" "$ROOT$GUEST_WORK/meta.json"
in_root /opt/venv/bin/python "$GUEST_WORK/report.py" "$GUEST_WORK" >&2 || die "report failed (exit $?)"
mkdir -p "$OUT_DIR"
cp "$ROOT$GUEST_WORK/aarch64.json" "$OUT_DIR/aarch64.json.tmp" && mv "$OUT_DIR/aarch64.json.tmp" "$OUT_DIR/aarch64.json"
cp "$ROOT$GUEST_WORK/aarch64.md" "$OUT_DIR/aarch64.md.tmp" && mv "$OUT_DIR/aarch64.md.tmp" "$OUT_DIR/aarch64.md"
log "wrote $OUT_DIR/aarch64.json and aarch64.md in $(since "$T_START")s"
