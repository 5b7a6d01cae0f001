"""gancodec runtime: the codec (encode with the TF mirror, decode with onnxruntime only).

``from runtime import Codec`` is light: TensorFlow is imported only when encoding starts.
"""

__all__ = ["Codec", "CodecError", "__version__"]
__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)


def __getattr__(name):
    if name == "Codec":
        from runtime.codec import Codec

        return Codec
    if name == "CodecError":
        from runtime.errors import CodecError

        return CodecError
    raise AttributeError(name)
