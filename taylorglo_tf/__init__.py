"""TaylorGLO-TF: loss-function discovery with multivariate Taylor expansions for Keras.

``import taylorglo_tf`` stays light (no TensorFlow): the Keras-facing names are
loaded on first use, so the coordinator can import the package's NumPy-only parts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taylorglo_tf import extras  # a missing training stack names the extra that installs it

if TYPE_CHECKING:  # the lazy names below, as type checkers and IDEs should see them
    from taylorglo_tf import data, invariant, losses, models, plotting, taylor, training
    from taylorglo_tf.losses import BaikalLoss, Poly1Loss, TaylorGLOLoss, TrainingProgress
    from taylorglo_tf.search import LossSearch

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily, PEP 562)
_LAZY = {
    "TaylorGLOLoss": "taylorglo_tf.losses",
    "BaikalLoss": "taylorglo_tf.losses",
    "Poly1Loss": "taylorglo_tf.losses",
    "TrainingProgress": "taylorglo_tf.losses",
    "LossSearch": "taylorglo_tf.search",
}
_SUBMODULES = {"models", "data", "training", "losses", "taylor", "invariant", "plotting"}

__all__ = [
    "BaikalLoss",
    "LossSearch",
    "Poly1Loss",
    "TaylorGLOLoss",
    "TrainingProgress",
    "__version__",
    "data",
    "invariant",
    "losses",
    "models",
    "plotting",
    "taylor",
    "training",
]


def __getattr__(name: str) -> Any:
    with extras.needs(f"taylorglo_tf.{name}"):
        if name in _LAZY:
            return getattr(importlib.import_module(_LAZY[name]), name)
        if name in _SUBMODULES:
            return importlib.import_module(f"taylorglo_tf.{name}")
    raise AttributeError(f"module 'taylorglo_tf' has no attribute {name!r}")
