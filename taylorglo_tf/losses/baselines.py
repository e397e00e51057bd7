"""Baseline losses for comparisons: Baikal (GLO) and Poly-1 (PolyLoss). Cross-entropy is Keras's own."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from taylorglo_tf.losses._common import PACKAGE, full_precision_dtype, one_hot_labels, probabilities


class _ClassificationLoss(keras.losses.Loss):
    """A loss on class probabilities that accepts one-hot or sparse labels and logits or probabilities."""

    def __init__(self, from_logits: bool, reduction: str | None, name: str | None, dtype: Any) -> None:
        super().__init__(name=name, reduction=reduction, dtype=full_precision_dtype(dtype))
        self.from_logits = bool(from_logits)

    def _clipped(self, y_pred: Any) -> Any:
        # Clip away from 0 so log(y) and 1/y stay finite (Keras's epsilon, as its cross-entropy does).
        eps = keras.config.epsilon()
        return ops.clip(probabilities(y_pred, self.from_logits), eps, 1.0)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"dtype": self.dtype, "from_logits": self.from_logits})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class BaikalLoss(_ClassificationLoss):
    """Baikal loss (GLO): ``L = -(1/n) sum_i (log y_i - x_i / y_i)``, ``y`` clipped to ``[eps, 1]``."""

    def __init__(
        self,
        from_logits: bool = False,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "baikal",
        dtype: Any = None,
    ) -> None:
        super().__init__(from_logits, reduction, name, dtype)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y = self._clipped(y_pred)
        x = one_hot_labels(y_true, y)
        return -ops.mean(self.per_class(x, y), axis=-1)

    @staticmethod
    def per_class(x: Any, y: Any, t: Any = 0.0) -> Any:
        """``f(x, y) = log y - x / y`` (TaylorGLO sign convention, ``L = -(1/n) sum f``; no ``t``)."""
        return ops.log(y) - x / y


@keras.saving.register_keras_serializable(package=PACKAGE)
class Poly1Loss(_ClassificationLoss):
    """Poly-1 (PolyLoss, Leng et al. 2022): ``L = CE + epsilon * (1 - p_t)``.

    ``CE = -sum_i x_i log y_i`` and ``p_t = sum_i x_i y_i`` (the probability of the
    true class), with ``x`` the (optionally smoothed) labels.
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        label_smoothing: float = 0.0,
        from_logits: bool = False,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "poly1",
        dtype: Any = None,
    ) -> None:
        super().__init__(from_logits, reduction, name, dtype)
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"label_smoothing={label_smoothing!r} must lie in [0, 1]")
        self.epsilon = float(epsilon)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y = self._clipped(y_pred)
        x = one_hot_labels(y_true, y)
        if self.label_smoothing:
            num_classes = y.shape[-1]
            x = x * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        cross_entropy = -ops.sum(x * ops.log(y), axis=-1)
        p_true = ops.sum(x * y, axis=-1)
        return cross_entropy + self.epsilon * (1.0 - p_true)

    def per_class(self, x: Any, y: Any, t: Any = 0.0) -> Any:
        """Per-class term ``x log y + epsilon x y`` (up to y-free terms, which do not affect training; no ``t``)."""
        return x * ops.log(y) + self.epsilon * x * y

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "label_smoothing": self.label_smoothing})
        return config
