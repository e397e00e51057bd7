"""Datasets by URI, the paper's splits, input pipelines and augmentation.

    from taylorglo_tf import data
    splits = data.load("tfds:cifar10")          # 45k / 5k / 10k, standardised
    splits = data.load("digits", fraction=0.5, seed=1)
    ds = data.pipeline(splits.x_train, splits.y_train, batch_size=128, training=True,
                       augment=data.Augmentation(flip=True, crop_padding=2), seed=0)

``load``, ``parse_uri``, ``Splits`` and ``Augmentation`` need no TensorFlow
(``tfds:`` URIs import it when loading); ``pipeline`` and the augmentation ops
import it on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taylorglo_tf import extras
from taylorglo_tf.data.augmentation import CUTOUT_LENGTH, Augmentation
from taylorglo_tf.data.loader import load, parse_uri
from taylorglo_tf.data.splits import Splits

if TYPE_CHECKING:  # the lazy names below, as type checkers and IDEs should see them
    from taylorglo_tf.data.augment_ops import augment_batch
    from taylorglo_tf.data.input_pipeline import as_tensors, pipeline
    from taylorglo_tf.data.tfds_source import PAPER_SPLITS

_LAZY = {
    "pipeline": "taylorglo_tf.data.input_pipeline",
    "as_tensors": "taylorglo_tf.data.input_pipeline",
    "augment_batch": "taylorglo_tf.data.augment_ops",
    "PAPER_SPLITS": "taylorglo_tf.data.tfds_source",
}

__all__ = [
    "CUTOUT_LENGTH",
    "PAPER_SPLITS",
    "Augmentation",
    "Splits",
    "as_tensors",
    "augment_batch",
    "load",
    "parse_uri",
    "pipeline",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        with extras.needs(f"taylorglo_tf.data.{name}"):
            return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taylorglo_tf.data' has no attribute {name!r}")
