"""Keep TensorFlow's C++ and absl log lines off the terminal of the encode and train CLIs.

THE one place that decides how quiet TensorFlow is; :func:`quiet_tensorflow` is called by the
CLIs that end up importing TensorFlow (``runtime.encode``, ``training.train``) before anything
imports it, unless ``--verbose`` is given. What prints what, with the ``tensorflow`` 2.21 wheel on a
CPU-only Linux machine:

- ``I0000 … port.cc] oneDNN custom operations are on …`` and ``I0000 … cudart_stub.cc] Could not
  find cuda drivers …``, each preceded by ``WARNING: All log messages before absl::InitializeLog()
  is called are written to STDERR`` and printed twice (two shared libraries): absl logging from
  static initialisers run while ``import tensorflow`` loads the libraries. absl writes everything
  to stderr before ``absl::InitializeLog()``, which TensorFlow never calls, so no environment
  variable reaches them: they are removed by sending file descriptor 2 to a temporary file while
  ``tensorflow`` is imported and passing on every line that is not an absl log line.
- ``E0000 … cuda_platform.cc] failed call to cuInit …`` (first device enumeration) and
  ``E0000 … meta_optimizer.cc] remapper failed …`` (grappler, at the first gradient step): TSL
  logging after import, which honours ``TF_CPP_MIN_LOG_LEVEL``; level 3 keeps only fatal errors
  (TensorFlow's own default, and this project's old setting, 2, still prints errors).
- Python-side ``WARNING:absl:…`` / ``tensorflow`` logger messages: set to ERROR after the import.

Decoding never calls this and never imports TensorFlow; this module imports only the standard
library.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile

#: Environment set before TensorFlow is imported (quiet mode).
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TSL/TF C++ logging: fatal only
    "GRPC_VERBOSITY": "ERROR",  # gRPC (linked into TensorFlow) logs through its own switch
}

#: A line written by absl's C++ logging: ``I0000 00:00:1796092933.574891    2878 port.cc:153] …``,
#: or the notice absl prints before its first message.
_ABSL_LINE = re.compile(rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\]|"
                        rb"WARNING: All log messages before absl::InitializeLog\(\) is called)")
_MODULE = "tensorflow"


def quiet_tensorflow(verbose: bool = False) -> None:
    """Silence TensorFlow's C++/absl logging for this process (``verbose``: show everything).

    Call before TensorFlow is imported. Sets the logging environment and arranges for the first
    ``import tensorflow`` (direct, or through keras) to run with stderr captured at the file
    descriptor level; captured lines that are not absl log lines (a Python warning, a traceback)
    are passed on once the import is over.
    """
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.update(QUIET_ENV)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if _MODULE in sys.modules:
        return
    if not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


def filter_absl_lines(captured: bytes) -> bytes:
    """``captured`` without the absl log lines (every other byte kept, in order)."""
    return b"".join(line for line in captured.splitlines(keepends=True) if not _ABSL_LINE.match(line))


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, and wraps its loader so that the import runs quietly."""

    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)  # once; and find the real spec without meeting ourselves
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """Delegates to the real loader; ``exec_module`` runs with fd 2 captured."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with _stderr_captured():
            self._loader.exec_module(module)
        _python_loggers_to_error()


class _stderr_captured:
    """Context manager: file descriptor 2 goes to a temporary file; non-absl lines are replayed."""

    def __enter__(self):
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc):
        try:
            sys.stderr.flush()
        finally:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        self._tmp.seek(0)
        rest = filter_absl_lines(self._tmp.read())
        self._tmp.close()
        while rest:
            rest = rest[os.write(2, rest):]
        return False


def _python_loggers_to_error() -> None:
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:
        return
    absl_logging.set_verbosity(absl_logging.ERROR)
