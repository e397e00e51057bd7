"""The older spelling of a trainer with K candidates per step, kept for callers not yet moved.

The trainer has one evaluation adapter, :class:`taylorglo_tf.trainer.keras_evaluator.KerasEvaluator`,
which trains K >= 1 leases as a population; construct it with ``candidates_per_step`` and ``xla``.
"""

from __future__ import annotations

from .keras_evaluator import KerasEvaluator


def BatchingEvaluator(  # the former class's name, for existing callers
    keras_evaluator: KerasEvaluator, candidates_per_step: int | str, *, xla: str = "off"
) -> KerasEvaluator:
    """``keras_evaluator`` set to train ``candidates_per_step`` leases per step (ValueError names a bad setting)."""
    keras_evaluator.configure(candidates_per_step, xla)
    return keras_evaluator
