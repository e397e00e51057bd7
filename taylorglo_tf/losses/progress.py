"""``TrainingProgress``: feeds the training progress ``t`` in [0, 1] to time-varying losses."""

from __future__ import annotations

from typing import Any

import keras


class TrainingProgress(keras.callbacks.Callback):
    """Set ``t = min(step / total_steps, 1)`` on the loss before every training batch.

    ``step`` counts batches from 0 across epochs (and across ``fit`` calls until
    :meth:`reset`). The loss is ``loss`` if given, else the model's compiled loss;
    it must have ``set_progress`` (e.g. a ``TaylorGLOLoss`` with input ``"t"``).
    Only a variable is assigned, so the compiled step is not retraced.
    """

    def __init__(self, total_steps: int, loss: Any = None) -> None:
        super().__init__()
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        self.total_steps = total_steps
        self.loss = loss
        self.step = 0

    def reset(self) -> None:
        self.step = 0

    def _target(self) -> Any:
        loss = self.loss if self.loss is not None else getattr(self.model, "loss", None)
        if not hasattr(loss, "set_progress"):
            raise ValueError(f"TrainingProgress needs a loss with set_progress (a TaylorGLOLoss), got {loss!r}")
        return loss

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._target().set_progress(min(self.step / self.total_steps, 1.0))
        self.step += 1
