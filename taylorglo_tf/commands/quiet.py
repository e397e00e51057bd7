"""Importing TensorFlow without its C++ start-up lines on the user's terminal."""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 sent to /dev/null meanwhile.

    TensorFlow 2.21 writes its start-up lines (oneDNN notice, CUDA stubs) through
    absl before ``TF_CPP_MIN_LOG_LEVEL`` takes effect, straight to the
    descriptor, so only redirecting it hides them. An import error still raises,
    with the descriptor restored, so its traceback is shown.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
