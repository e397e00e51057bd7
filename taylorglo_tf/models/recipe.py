"""Training recipes as data: optimizer, learning-rate schedule, weight decay, batch, length.

No TensorFlow at import time (the coordinator reads recipes to validate specs);
``Recipe.optimizer`` imports Keras when called.

Weight decay convention: a recipe's ``weight_decay`` is PyTorch's coupled SGD
weight decay (gradient += wd * w, before momentum). The models express it as an
``l2(wd / 2)`` kernel regulariser (d/dw of (wd/2)*w^2 is wd*w), added by
``models.build`` from the recipe; the optimizer itself applies no decay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast


@dataclass(frozen=True)
class Recipe:
    """One model's training recipe from the literature (REFERENCE section 4).

    Length is given either in ``epochs`` (milestones in epochs) or in ``steps``
    (milestones in steps). The learning rate is piecewise constant: ``lr`` until
    the first milestone, multiplied by ``gamma`` at each milestone.
    """

    name: str
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int | None = None
    steps: int | None = None
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    # keyword options for models.build (e.g. {"dropout": 0.4})
    model_options: Mapping[str, Any] = field(default_factory=dict)
    # data.Augmentation.from_dict input used with this recipe
    augmentation: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if self.epochs is not None and self.steps is None:
            length = self.epochs
        elif self.steps is not None and self.epochs is None:
            length = self.steps
        else:
            raise ValueError(f"recipe {self.name!r}: give exactly one of epochs and steps")
        if list(self.milestones) != sorted(self.milestones) or any(not 0 < m < length for m in self.milestones):
            raise ValueError(f"recipe {self.name!r}: milestones {self.milestones} must increase within (0, {length})")

    @property
    def unit(self) -> str:
        """``"epochs"`` or ``"steps"``: the unit of the length and the milestones."""
        return "epochs" if self.epochs is not None else "steps"

    def _check_spe(self, steps_per_epoch: int | None) -> int:
        if self.unit == "steps":
            return 1
        if steps_per_epoch is None or int(steps_per_epoch) < 1:
            raise ValueError(
                f"recipe {self.name!r} is epoch-based: steps_per_epoch must be a positive "
                f"integer, got {steps_per_epoch!r}"
            )
        return int(steps_per_epoch)

    def total_steps(self, steps_per_epoch: int | None = None) -> int:
        """Optimizer steps of the full run (epochs x steps_per_epoch, or ``steps``)."""
        spe = self._check_spe(steps_per_epoch)
        if self.steps is not None:
            return self.steps
        return cast(int, self.epochs) * spe  # epoch-based: __post_init__ checked that epochs is set

    def boundaries(self, steps_per_epoch: int | None = None) -> list[int]:
        """0-based indices of the first step at each new learning rate.

        Milestone ``m`` comes after ``m`` epochs (``m * steps_per_epoch`` steps), so
        step ``m * steps_per_epoch`` is the first one at the decayed rate (as
        PyTorch's ``MultiStepLR`` does it).
        """
        spe = self._check_spe(steps_per_epoch)
        return [int(m) * spe for m in self.milestones]

    def values(self) -> list[float]:
        """Learning rate before the first boundary, then after each one."""
        return [self.lr * self.gamma**i for i in range(len(self.milestones) + 1)]

    def lr_at(self, step: int, steps_per_epoch: int | None = None) -> float:
        """Learning rate used for optimizer step ``step`` (0-based), as the optimizer applies it.

        Partial training is the first N steps of this schedule.
        """
        bounds = self.boundaries(steps_per_epoch)
        return self.values()[sum(step >= b for b in bounds)]

    @staticmethod
    def steps_per_epoch(num_train: int, batch_size: int) -> int:
        """Batches per epoch over ``num_train`` examples (last partial batch dropped, min 1)."""
        return max(1, num_train // batch_size)

    def optimizer(self, steps_per_epoch: int | None = None, *, lr_scale: Any = 1.0):
        """A fresh ``keras.optimizers.SGD`` with this recipe's schedule in steps.

        ``lr_scale`` multiplies every rate of the schedule: a positive, finite
        number, or a variable (``keras.Variable``/``tf.Variable``) read at every
        step, so that assigning it changes the rate of an optimizer already built
        into a compiled train step. Weight decay is not in the optimizer (see the
        module docstring).
        """
        import keras

        if isinstance(lr_scale, bool) or (isinstance(lr_scale, (int, float, str)) and not _positive(lr_scale)):
            raise ValueError(f"recipe {self.name!r}: lr scale must be a positive, finite number, got {lr_scale!r}")
        bounds = self.boundaries(steps_per_epoch)
        lr: Any = self.lr
        if bounds:
            # Keras's schedule uses values[i] while step <= boundaries[i] (step = the
            # optimizer's iterations before the update): its boundaries are the last
            # step at each rate, one before ours.
            lr = keras.optimizers.schedules.PiecewiseConstantDecay([b - 1 for b in bounds], self.values())
        if not (isinstance(lr_scale, (int, float)) and lr_scale == 1):
            from taylorglo_tf.models.scaled_rate import ScaledRate

            lr = ScaledRate(lr, lr_scale)
        return keras.optimizers.SGD(learning_rate=lr, momentum=self.momentum, nesterov=self.nesterov)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-compatible)."""
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        d["model_options"] = dict(self.model_options)
        d["augmentation"] = dict(self.augmentation)
        return d


def _positive(value: Any) -> bool:
    """A number that is finite and > 0 (a string is not a number)."""
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0
