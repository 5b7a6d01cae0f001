"""Run runtime.decode with TensorFlow made unimportable (used by the tests)."""

import sys

sys.modules["tensorflow"] = None
sys.modules["keras"] = None

from runtime.decode import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
