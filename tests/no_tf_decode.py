"""Run runtime.decode with TensorFlow made unimportable (used by the tests): a decode that needed
TensorFlow, even indirectly, fails here with an ImportError instead of passing."""

import sys

for name in ("tensorflow", "keras", "tf2onnx"):
    sys.modules[name] = None

from runtime.decode import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
