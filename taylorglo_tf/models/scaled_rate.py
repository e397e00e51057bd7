"""A learning-rate schedule times a scale that can change after the optimizer is built.

``Recipe.optimizer(lr_scale=variable)`` uses it: the evaluator keeps one optimizer
(and one compiled train step) per task and only assigns the variable when a
task asks for another multiple of the recipe's rate (``Task.lr_scale``).
"""

from __future__ import annotations

from typing import Any

import keras


class ScaledRate(keras.optimizers.schedules.LearningRateSchedule):
    """``scale * base(step)``; ``base`` is a schedule or a number, ``scale`` a number or a variable read each step."""

    def __init__(self, base: Any, scale: Any) -> None:
        super().__init__()
        self.base = base
        self.scale = scale

    def __call__(self, step: Any) -> Any:
        base = self.base(step) if callable(self.base) else self.base
        return keras.ops.cast(base, "float32") * keras.ops.cast(self.scale, "float32")

    def get_config(self) -> dict[str, Any]:
        base = keras.optimizers.schedules.serialize(self.base) if callable(self.base) else self.base
        return {"base": base, "scale": float(keras.ops.convert_to_numpy(self.scale))}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ScaledRate:
        base = config["base"]
        if isinstance(base, dict):
            base = keras.optimizers.schedules.deserialize(base)
        return cls(base, config["scale"])
