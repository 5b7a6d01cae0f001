"""The codec's own exception: every user-facing failure is a CodecError."""


class CodecError(Exception):
    """A user mistake or a bad file: the CLIs print ``error: <message>`` and exit 2."""
