"""Safe output files: atomic writes and output names that stay inside their directory."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from runtime.errors import CodecError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str | os.PathLike) -> str:
    """A file stem reduced to [A-Za-z0-9._-], never empty, never starting with a dot."""
    stem = _UNSAFE.sub("_", Path(name).stem).lstrip(".")
    return stem or "image"


def output_in_dir(out_dir: str | os.PathLike, source: str | os.PathLike, suffix: str) -> Path:
    """``out_dir/<sanitised stem of source><suffix>``, guaranteed to lie inside ``out_dir``."""
    base = Path(out_dir).resolve()
    path = (base / (safe_stem(source) + suffix)).resolve()
    if path.parent != base:
        raise CodecError(f"refusing to write outside {out_dir}: {path}")
    return path


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    A failure leaves neither a partial file nor a damaged previous version.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise CodecError(f"output directory {directory} does not exist")
    if path.is_dir():
        raise CodecError(f"{path} is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CodecError(f"cannot write in {directory}: {exc.strerror}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CodecError(f"cannot write {path}: {exc.strerror}") from None
        raise


@contextmanager
def atomic_directory(out: str | os.PathLike):
    """Build a directory in a temporary sibling (yielded) and swap it in for ``out`` only when the
    block succeeds; on any failure the temporary is removed and ``out`` is left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def png_bytes(pixels) -> bytes:
    """Encode a uint8 RGB array as PNG bytes (deterministic: no timestamps, fixed settings)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
