"""The codec's own exception: every user-facing failure is a CodecError."""


class CodecError(Exception):
    """A user mistake or a bad file: the CLIs print ``error: <message>`` and exit 2."""


def run_cli(function, *args) -> int:
    """Run a CLI body: a CodecError becomes one line ``error: …`` on stderr and exit status 2."""
    import sys

    try:
        return function(*args) or 0
    except CodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
