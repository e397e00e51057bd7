"""Losses by name, JSON file or Keras config; saving a loss as JSON (its Keras serialization)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from taylorglo_tf import atomic
from taylorglo_tf.losses.baselines import BaikalLoss, Poly1Loss
from taylorglo_tf.losses.taylor_loss import TaylorGLOLoss

#: Loss names understood by :func:`get`.
NAMES = {
    "cross_entropy": lambda: keras.losses.CategoricalCrossentropy(name="cross_entropy"),
    "sparse_cross_entropy": lambda: keras.losses.SparseCategoricalCrossentropy(name="sparse_cross_entropy"),
    "baikal": BaikalLoss,
    "poly1": Poly1Loss,
}


def get(identifier: str | os.PathLike | Mapping[str, Any] | keras.losses.Loss) -> keras.losses.Loss:
    """A Keras loss from a name, a JSON file path, a Keras config dict, or a loss (returned as is).

    Names: ``"cross_entropy"`` (Keras ``CategoricalCrossentropy``, one-hot labels),
    ``"sparse_cross_entropy"`` (integer labels), ``"baikal"``, ``"poly1"``.
    A dict is either a full Keras serialization (``{"class_name": ..., "config": ...}``)
    or the bare config of a ``TaylorGLOLoss`` (has ``"theta"``).
    """
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, Mapping):
        return from_dict(identifier)
    if isinstance(identifier, str) and identifier in NAMES:
        return NAMES[identifier]()
    if isinstance(identifier, (str, os.PathLike)):
        path = Path(identifier)
        if path.suffix == ".json" or path.exists():
            return load_json(path)
        raise ValueError(f"unknown loss {str(identifier)!r}: not one of {sorted(NAMES)} and not a JSON file")
    raise ValueError(f"cannot make a loss from {identifier!r} (type {type(identifier).__name__})")


def from_dict(config: Mapping[str, Any]) -> keras.losses.Loss:
    """A loss from its Keras serialization or from a bare ``TaylorGLOLoss`` config."""
    config = dict(config)
    if "class_name" in config:
        loss = keras.saving.deserialize_keras_object(config)
        if not isinstance(loss, keras.losses.Loss):
            raise ValueError(f"config with class_name={config['class_name']!r} is not a Keras loss")
        return loss
    if "theta" in config:
        return TaylorGLOLoss.from_config(config)
    raise ValueError(f"a loss config needs 'class_name' (Keras serialization) or 'theta'; got keys {sorted(config)}")


def save_json(loss: keras.losses.Loss, path: str | os.PathLike) -> Path:
    """Write ``loss`` as its Keras serialization (JSON) to ``path``; returns the path."""
    if not isinstance(loss, keras.losses.Loss):
        raise ValueError(f"save_json needs a keras.losses.Loss, got {loss!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(keras.saving.serialize_keras_object(loss), indent=2, sort_keys=True)
    return atomic.write_text(path, text + "\n")


def load_json(path: str | os.PathLike) -> keras.losses.Loss:
    """Read a loss written by :func:`save_json` (or a bare ``TaylorGLOLoss`` config)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"loss file {str(path)!r} does not exist") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"loss file {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(config, Mapping):
        raise ValueError(f"loss file {str(path)!r} must hold a JSON object, got {type(config).__name__}")
    return from_dict(config)
