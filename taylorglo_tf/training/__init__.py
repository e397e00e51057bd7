"""Candidate evaluation: train a model with a loss for N steps, score it by validation accuracy.

``Task`` and ``EvaluationResult`` are plain data (no TensorFlow); ``Evaluator``,
``evaluate`` and ``loss_scale`` import TensorFlow on first use. Where a task's
model and data come from (the zoo, a ``python:`` builder, a model registered in
this process under ``script:NAME``) is ``training.sources``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taylorglo_tf import extras
from taylorglo_tf.training.task import STATUSES, EvaluationResult, Task

if TYPE_CHECKING:  # the lazy names below, as type checkers and IDEs should see them
    from taylorglo_tf.training.evaluator import Evaluator, evaluate
    from taylorglo_tf.training.gradient_scale import LossScale, loss_scale

_LAZY = {
    "Evaluator": "taylorglo_tf.training.evaluator",
    "evaluate": "taylorglo_tf.training.evaluator",
    "LossScale": "taylorglo_tf.training.gradient_scale",
    "loss_scale": "taylorglo_tf.training.gradient_scale",
}

__all__ = ["STATUSES", "EvaluationResult", "Evaluator", "LossScale", "Task", "evaluate", "loss_scale"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        with extras.needs(f"taylorglo_tf.training.{name}"):
            return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taylorglo_tf.training' has no attribute {name!r}")
