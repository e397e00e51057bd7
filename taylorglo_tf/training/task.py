"""What one candidate evaluation trains (``Task``) and what it reports (``EvaluationResult``).

Plain data with validation, no TensorFlow: the coordinator and the CLI build and
check tasks without importing it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from taylorglo_tf.rpc import types_pb2

Status = Literal["ok", "diverged", "aborted"]
STATUSES: tuple[str, ...] = ("ok", "diverged", "aborted")

# The paper's abort rule: an attempt below 15% validation accuracy after 10 epochs
# is retried, 3 attempts in all (the spec's task.abort_accuracy and task.abort_epochs
# default to these).
ABORT_THRESHOLD = 0.15
ABORT_CHECK_EPOCH = 10.0
ABORT_ATTEMPTS = 3

# Old spelling -> field: ``max_attempts`` read like the spec's search.max_attempts, which
# counts leases per candidate, not the abort rule's attempts inside one evaluation.
_RENAMED = {"max_attempts": "abort_attempts"}


def _renamed(values: Mapping[str, Any], category: type[Warning] = DeprecationWarning) -> dict[str, Any]:
    """``values`` with old field names replaced by the new ones (a ``category`` warning); both given is an error."""
    out = dict(values)
    for old, new in _RENAMED.items():
        if old in out:
            if new in out:
                raise ValueError(f"Task.{old} is the old name of Task.{new}; give only {new}")
            message = f"Task.{old} is renamed Task.{new} (search.max_attempts counts leases)"
            warnings.warn(message, category, stacklevel=3)
            out[new] = out.pop(old)
    return out


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Task.{name} must be an integer >= {minimum}, got {value!r}")


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any double
        return False


def _check_real(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"Task.{name} must be a number in {bracket}{low}, {high}], got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) or value <= 0:
        raise ValueError(f"Task.{name} must be a positive, finite number, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Task:
    """A partial (or full) training run that scores a candidate loss.

    Attributes:
        dataset: data URI for ``taylorglo_tf.data.load`` (``digits``, ``tfds:mnist``,
            ``idx:DIR``, ``npz:FILE``), or the ``script:`` name of a registered model.
        model: model-zoo name (``taylorglo_tf.models.names()``), a ``python:PACKAGE.MODULE:FUNCTION``
            builder or a ``script:`` name registered with ``training.sources.register``
            (see ``training.sources``).
        steps: optimizer steps to train; the first ``steps`` of the recipe's
            schedule. 0 means the recipe's full length.
        batch_size: training batch size; 0 means the recipe's.
        fraction: fraction of the training split used (seeded), in (0, 1].
        augmentation: ``data.Augmentation`` dict, the whole augmentation (options it
            leaves out are off; ``{}`` is none at all); ``None`` means the model
            recipe's (``models.recipe(model).augmentation``). A ``TaskSpec`` means
            the same: no ``augmentation`` block is ``None``, a block (even empty) a dict.
        seed: seeds the model's initial weights, dropout and the data order.
        lr_scale: multiplier of the recipe's learning rate, applied to every step
            of its schedule (1 = the recipe's rate); a positive, finite number.
            Tuned baselines (``compare.compare_tuned``) and searches at a tuned
            rate set it.
        abort_threshold: an attempt whose validation accuracy is below this at
            ``abort_check_epoch`` is aborted and retried (paper: 0.15).
        abort_check_epoch: epoch at which the rule is checked (paper: 10), in
            epochs of ``training examples // batch_size`` steps; only runs at least
            that long are checked.
        abort_attempts: attempts the abort rule allows in one evaluation: an attempt it
            aborts is retried with a fresh start until this many, then the evaluation
            reports ``aborted`` (paper: 3). Not the spec's ``search.max_attempts``,
            which counts leases of a candidate (whole evaluations, e.g. after a lost
            trainer). ``max_attempts`` is its old name, still read.
        data_dir: where datasets live (TFDS ``data_dir``; base of relative paths).
        recipe: the optimizer recipe of a ``python:`` model (required there, refused
            elsewhere): ``training.sources.check_recipe``'s fields, defaults filled in.
    """

    dataset: str = "digits"
    model: str = "tiny"
    steps: int = 200
    batch_size: int = 0
    fraction: float = 1.0
    augmentation: Mapping[str, Any] | None = None
    seed: int = 0
    lr_scale: float = 1.0
    abort_threshold: float = ABORT_THRESHOLD
    abort_check_epoch: float = ABORT_CHECK_EPOCH
    abort_attempts: int = ABORT_ATTEMPTS
    data_dir: str | None = None
    recipe: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("dataset", "model"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Task.{name} must be a non-empty string, got {value!r}")
        from taylorglo_tf.training import sources  # imports no TensorFlow (nor a python: builder)

        sources.check_model_name(self.model, self.dataset)
        if self.recipe is not None or sources.kind(self.model) == "python":
            object.__setattr__(self, "recipe", sources.check_recipe(self.recipe, self.model))
        _check_int("steps", self.steps, 0)
        _check_int("batch_size", self.batch_size, 0)
        if self.steps == 0 and sources.kind(self.model) == "script":
            raise ValueError(f"Task.steps must be > 0 for {self.model!r}: a registered model has no recipe length")
        _check_real("fraction", self.fraction, 0.0, 1.0, low_open=True)
        if self.augmentation is not None:
            if not isinstance(self.augmentation, Mapping) or not all(isinstance(k, str) for k in self.augmentation):
                raise ValueError(
                    f"Task.augmentation must be a mapping of option names or null, got {self.augmentation!r}"
                )
            object.__setattr__(self, "augmentation", dict(self.augmentation))
        _check_int("seed", self.seed, 0)
        _check_positive("lr_scale", self.lr_scale)
        _check_real("abort_threshold", self.abort_threshold, 0.0, 1.0)
        _check_real("abort_check_epoch", self.abort_check_epoch, 0.0, 1e9, low_open=True)
        _check_int("abort_attempts", self.abort_attempts, 1)
        if self.data_dir is not None and (not isinstance(self.data_dir, str) or not self.data_dir):
            raise ValueError(f"Task.data_dir must be a non-empty string or null, got {self.data_dir!r}")

    @property
    def max_attempts(self) -> int:
        """The old name of :attr:`abort_attempts`."""
        return self.abort_attempts

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-compatible form; ``Task.from_dict(t.to_dict()) == t``."""
        d = dataclasses.asdict(self)
        if self.augmentation is not None:
            d["augmentation"] = dict(self.augmentation)
        if self.recipe is not None:
            d["recipe"] = {**self.recipe, "milestones": list(self.recipe["milestones"])}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        """Build a task from a mapping; unknown keys and bad values raise ValueError naming them.

        The old name ``max_attempts`` is read as ``abort_attempts``, with a FutureWarning
        (shown by default: a task file is the user's, e.g. ``taylorglo compare --task``).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"a task must be a mapping of fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - set(_RENAMED), key=repr)  # keys may be of any type
        if unknown:
            raise ValueError(f"unknown Task field(s) {unknown}; known fields: {sorted(known)}")
        values = _renamed(d, FutureWarning)
        # YAML writes 10 for 10.0; accept integral numbers for the real-valued fields.
        for name in ("fraction", "lr_scale", "abort_threshold", "abort_check_epoch"):
            if isinstance(values.get(name), int) and not isinstance(values[name], bool) and _finite(values[name]):
                values[name] = float(values[name])
        return cls(**values)

    @classmethod
    def from_proto(cls, task_spec: types_pb2.TaskSpec, data_dir: str | os.PathLike[str] | None = None) -> Task:
        """The task a ``TaskSpec`` describes, for a trainer whose data lives in ``data_dir``.

        Unset fields take the proto's documented defaults; no ``augmentation`` block
        means the model recipe's augmentation (``augmentation=None``), a block (even
        empty) exactly what it sets. ``abort_accuracy <= 0``
        disables the abort rule. ``idx:DIR``/``npz:FILE`` become absolute paths under
        ``data_dir``; ValueError names the dataset when it is invalid, leaves
        ``data_dir``, or needs a data directory the trainer was not given.
        """
        from taylorglo_tf import spec as spec_module
        from taylorglo_tf.rpc import types_pb2

        if not isinstance(task_spec, types_pb2.TaskSpec):
            raise TypeError(f"task_spec must be a taylorglo.v1.TaskSpec, got {type(task_spec).__name__}")
        full = spec_module.apply_defaults(types_pb2.ExperimentSpec(task=task_spec)).task
        from taylorglo_tf.training import sources

        script = sources.kind(full.model) == "script"
        dataset = full.dataset if script else _resolve_dataset(full.dataset, data_dir)
        if full.steps <= 0:
            raise ValueError(f"task.steps must be > 0, got {full.steps}")
        augmentation = None  # no block: the recipe's
        if full.HasField("augmentation"):  # a block is the whole augmentation: what it leaves unset is off
            aug = full.augmentation
            augmentation = {
                "flip": bool(aug.flip_crop),
                "crop_padding": int(aug.crop_padding) if aug.flip_crop else 0,
                "cutout": int(aug.cutout_length),
                "cutmix_prob": float(aug.cutmix_probability),
                "cutmix_alpha": float(aug.cutmix_alpha) or spec_module.DEFAULT_CUTMIX_ALPHA,
            }
        return cls(
            dataset=dataset,
            model=full.model,
            steps=int(full.steps),
            batch_size=int(full.batch_size),
            fraction=float(full.train_fraction),
            augmentation=augmentation,
            seed=int(full.seed),
            lr_scale=float(full.lr_scale),
            abort_threshold=max(0.0, float(full.abort_accuracy)),  # accuracy < 0 never happens: rule off
            abort_check_epoch=float(full.abort_epochs),
            data_dir=None if data_dir is None else str(Path(data_dir).resolve()),
            recipe=sources.recipe_from_proto(full.recipe) if full.HasField("recipe") else None,
        )

    def to_proto(self) -> types_pb2.TaskSpec:
        """The ``TaskSpec`` of this task, :meth:`from_proto`'s inverse.

        ``data_dir`` stays behind (each trainer has its own), and so does
        ``abort_attempts`` (a trainer's setting, not the spec's). ValueError names a
        value a ``TaskSpec`` cannot carry: a crop without flips, an
        ``abort_check_epoch`` that is no whole number, ``steps`` = 0 (a spec's
        steps are > 0).
        """
        from taylorglo_tf.rpc import types_pb2

        if self.steps <= 0:
            raise ValueError(f"Task.steps {self.steps}: a TaskSpec needs > 0 steps (0, the full recipe, is Python's)")
        if not float(self.abort_check_epoch).is_integer():
            raise ValueError(f"Task.abort_check_epoch {self.abort_check_epoch!r}: a TaskSpec counts whole epochs")
        spec = types_pb2.TaskSpec(
            dataset=self.dataset,
            model=self.model,
            steps=self.steps,
            batch_size=self.batch_size,
            train_fraction=self.fraction,
            seed=self.seed,
            abort_accuracy=self.abort_threshold,
            abort_epochs=int(self.abort_check_epoch),
            lr_scale=self.lr_scale,
        )
        if self.recipe is not None:
            from taylorglo_tf.training import sources

            sources.recipe_to_proto(self.recipe, spec.recipe)
        if self.augmentation is not None:
            aug = dict(self.augmentation)
            unknown = sorted(set(aug) - {"flip", "crop_padding", "cutout", "cutmix_prob", "cutmix_alpha"})
            if unknown:
                raise ValueError(f"Task.augmentation: unknown option(s) {unknown}")
            flip, crop = bool(aug.get("flip", False)), int(aug.get("crop_padding", 0))
            if crop and not flip:
                raise ValueError(f"Task.augmentation {aug}: a TaskSpec crops only with flips (flip_crop)")
            spec.augmentation.SetInParent()  # a block, even an empty one: not the recipe's
            spec.augmentation.flip_crop = flip
            if flip:
                spec.augmentation.crop_padding = crop
            spec.augmentation.cutout_length = int(aug.get("cutout", 0))
            spec.augmentation.cutmix_probability = float(aug.get("cutmix_prob", 0.0))
            if "cutmix_alpha" in aug:
                spec.augmentation.cutmix_alpha = float(aug["cutmix_alpha"])
        return spec

    def replace(self, **changes: Any) -> Task:
        """A copy with some fields changed (validated); ``max_attempts`` is read as ``abort_attempts``."""
        return dataclasses.replace(self, **_renamed(changes))


def _resolve_dataset(uri: str, data_dir: str | os.PathLike[str] | None) -> str:
    """``uri`` checked, with an ``idx:``/``npz:`` path made absolute under ``data_dir``.

    Raises ``spec.SpecError`` (a ValueError naming the field and the path).
    """
    from taylorglo_tf import spec as spec_module

    spec_module.check_dataset_uri(uri, "task.dataset")
    if uri.partition(":")[0] not in ("idx", "npz"):
        return uri
    if data_dir is None:
        raise ValueError(f"task.dataset {uri!r} names a file, but this trainer has no data directory (--data-dir)")
    return spec_module.resolve_dataset(uri, data_dir)


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Outcome of one candidate evaluation.

    Attributes:
        fitness: validation accuracy when ``status == "ok"``, else 0.0.
        val_accuracy: accuracy on the validation split (fraction in [0, 1]);
            predictions with NaN/inf outputs count as wrong.
        val_loss: mean of the evaluated loss over the validation split (may be NaN/inf).
        steps: optimizer steps done in the reported (last) attempt.
        wall_time_s: seconds for the whole evaluation, all attempts included.
        attempts: attempts used (1 .. ``task.abort_attempts``).
        status: ``ok``, ``diverged`` (NaN/inf loss or weights) or ``aborted``
            (abort rule exhausted, or stopped by the progress callback).
        test_accuracy, test_loss: on the test split, only when asked for (comparisons).
        checkpoints: ``(index, steps, val_accuracy)`` at each early-stopping
            checkpoint the last attempt reached (``Evaluator.evaluate_many``'s
            ``checkpoints``); empty without them.
    """

    fitness: float
    val_accuracy: float
    val_loss: float
    steps: int
    wall_time_s: float
    attempts: int
    status: Status
    test_accuracy: float | None = None
    test_loss: float | None = None
    checkpoints: tuple[tuple[int, int, float], ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"EvaluationResult.status must be one of {STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form; non-finite losses become ``None`` (strict JSON has no NaN)."""
        d = dataclasses.asdict(self)
        for key in ("val_loss", "test_loss"):
            if d[key] is not None and not math.isfinite(d[key]):
                d[key] = None
        return d
