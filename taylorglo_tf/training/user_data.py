"""A user's model, optimizer factory and data checked and made ready for the evaluator (TensorFlow).

``prepare`` is what ``sources.register`` runs: every check happens here, before
any training, and each error names the value (see ``training.sources``).
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from taylorglo_tf.training.sources import Registration, SourceError

log = logging.getLogger(__name__)

# Rows of probabilities must sum to 1 within this (a float32 softmax does, to ~1e-6).
PROBABILITY_TOLERANCE = 1e-3
# Rows of the training inputs fed to a fresh model to check its output.
PROBE_ROWS = 2


class ClassProbabilities(keras.Model):
    """``inner``'s output as one probability per class: one sigmoid unit p -> [1 - p, p];
    logits -> softmax (in float32). Only used where the user's output is not that already."""

    def __init__(self, inner: keras.Model, from_logits: bool, binary: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner
        self.from_logits = from_logits
        self.binary = binary

    def call(self, x: Any, training: Any = None) -> Any:
        out = keras.ops.cast(self.inner(x, training=training), "float32")
        if self.binary:
            other = keras.ops.zeros_like(out) if self.from_logits else 1.0 - out
            out = keras.ops.concatenate([other, out], axis=-1)
        if self.from_logits:
            out = keras.ops.softmax(out, axis=-1)
        return out


def materialise(data: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` arrays from a pair or a ``tf.data.Dataset`` of ``(x, y)`` batches (read once, in order)."""
    if isinstance(data, tf.data.Dataset):
        xs, ys = [], []
        for element in data.as_numpy_iterator():
            if not isinstance(element, tuple) or len(element) != 2:
                raise SourceError(f"{what}: a dataset must yield (x, y) batches, got {type(element).__name__}")
            xs.append(np.asarray(element[0]))
            ys.append(np.asarray(element[1]))
        if not xs:
            raise SourceError(f"{what}: the dataset is empty")
        try:
            return np.concatenate(xs), np.concatenate(ys)
        except ValueError as error:
            raise SourceError(f"{what}: the dataset's batches do not stack ({error}); batch it (x, y)") from None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise SourceError(f"{what} must be a pair (x, y) or a tf.data.Dataset of (x, y) batches, got {data!r:.80}")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    return x, y


def inputs(x: np.ndarray, what: str) -> np.ndarray:
    """Integer inputs (token ids) as int32, others as float32; refuses non-numeric or scalar rows."""
    if x.ndim < 1 or x.dtype.kind not in "biuf":
        raise SourceError(f"{what} x must be a numeric array of rows, got dtype {x.dtype} and shape {x.shape}")
    if x.dtype.kind in "biu":
        return x.astype(np.int32)
    return x.astype(np.float32)


def sparse_labels(y: np.ndarray, n: int, num_classes: int, what: str) -> np.ndarray:
    """Labels as int32 class indices: sparse ``(N,)``/``(N, 1)`` integers or one-hot ``(N, C)`` rows."""
    if len(y) != n:
        raise SourceError(f"{what}: x has {n} rows but y has {len(y)} labels")
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        valid = np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()
        if not valid:
            raise SourceError(f"{what}: labels of shape {y.shape} must be one-hot rows (one 1 per row)")
        return np.argmax(y, axis=1).astype(np.int32)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise SourceError(
            f"{what}: labels of shape {y.shape} are neither class indices (N,) nor one-hot (N, {num_classes})"
        )
    if y.dtype.kind not in "biuf" or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise SourceError(f"{what}: labels must be integer class indices, got dtype {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)][0].item()
        raise SourceError(f"{what}: label {bad!r} is out of range for a model with {num_classes} classes")
    return y.astype(np.int32)


def _output(model: Any, name: str, probe: np.ndarray, from_logits: bool) -> tuple[int, bool]:
    """(classes, one sigmoid unit) of ``model``'s output on ``probe``; SourceError names a bad one."""
    try:
        out = np.asarray(keras.ops.convert_to_numpy(model(probe, training=False)))
    except Exception as error:
        raise SourceError(
            f"{name}: the model cannot be called on the training inputs of shape "
            f"{probe.shape[1:]}: {type(error).__name__}: {error}"
        ) from error
    if out.ndim != 2 or out.shape[0] != len(probe):
        raise SourceError(
            f"{name}: the model's output has shape {out.shape[1:]}; it must be one "
            f"{'logit' if from_logits else 'probability'} per class, shape (classes,)"
        )
    width = int(out.shape[1])
    binary = width == 1
    if not from_logits:
        rows = np.concatenate([1 - out, out], axis=1) if binary else out
        if not (
            np.all(rows >= -PROBABILITY_TOLERANCE) and np.allclose(rows.sum(axis=1), 1, atol=PROBABILITY_TOLERANCE)
        ):
            raise SourceError(
                f"{name}: the model's outputs (first row {out[0].tolist()!r:.120}) are not class probabilities; "
                "end it with a softmax (or one sigmoid unit), or register it with from_logits=True"
            )
    return (2 if binary else width), binary


def _builder(name: str, build_model: Any) -> tuple[Any, int | None, str]:
    """(zero-argument builder, max copies, why one copy): a function as it is; an instance cloned."""
    if isinstance(build_model, keras.Model):
        instance = build_model
        try:
            keras.models.clone_model(instance)
        except Exception as error:  # e.g. a subclassed model without get_config
            reason = f"keras.models.clone_model failed ({type(error).__name__}: {error})"
            return (lambda: instance), 1, reason
        return (lambda: keras.models.clone_model(instance)), None, ""
    if not callable(build_model):
        raise SourceError(f"{name}: build_model must be a function returning a keras.Model, got {build_model!r:.80}")
    return build_model, None, ""


def _checked_model(name: str, build: Any) -> Any:
    model = build()
    if not isinstance(model, keras.Model):
        raise SourceError(f"{name}: build_model returned {type(model).__name__} ({model!r:.80}), not a keras.Model")
    return model


def check_optimizer_factory(name: str, optimizer: Any) -> None:
    """The factory returns a fresh keras optimizer per call (two calls, two instances)."""
    if not callable(optimizer) or isinstance(optimizer, keras.optimizers.Optimizer):
        raise SourceError(
            f"{name}: optimizer must be a zero-argument function returning a fresh keras optimizer "
            f"(e.g. lambda: keras.optimizers.SGD(0.05)), got {optimizer!r:.80}"
        )
    first, second = optimizer(), optimizer()
    for made in (first, second):
        if not isinstance(made, keras.optimizers.Optimizer):
            raise SourceError(f"{name}: the optimizer factory returned {made!r:.80}, not a keras optimizer")
    if first is second:
        raise SourceError(
            f"{name}: the optimizer factory returned the same instance twice ({first!r:.80}); "
            "it must create a new optimizer per call, or its state would leak between candidates"
        )


def prepare(
    name: str, build_model: Any, optimizer: Any, train: Any, validation: Any, test: Any, from_logits: bool
) -> Registration:
    """The registration of ``name``, every check done (see ``training.sources``)."""
    check_optimizer_factory(name, optimizer)
    build, max_copies, reason = _builder(name, build_model)
    arrays = {"train": materialise(train, f"{name} train"), "val": materialise(validation, f"{name} validation")}
    if test is not None:
        arrays["test"] = materialise(test, f"{name} test")
    for split, (x, _) in arrays.items():
        if len(x) == 0:
            raise SourceError(f"{name}: the {split} split is empty")
    xs = {split: inputs(x, f"{name} {split}") for split, (x, _) in arrays.items()}
    shape = xs["train"].shape[1:]
    for split, x in xs.items():
        if x.shape[1:] != shape:
            raise SourceError(f"{name}: {split} rows have shape {x.shape[1:]}, training rows {shape}")
    model = _checked_model(name, build)
    num_classes, binary = _output(model, name, xs["train"][:PROBE_ROWS], from_logits)
    splits = {
        split: (xs[split], sparse_labels(y, len(xs[split]), num_classes, f"{name} {split}"))
        for split, (_, y) in arrays.items()
    }
    probe = xs["train"][:PROBE_ROWS]
    user_build = build
    wrap = binary or from_logits

    def ready() -> Any:
        """A fresh copy, wrapped into class probabilities where needed, with its weights created."""
        model = _checked_model(name, user_build)
        if wrap:
            model = ClassProbabilities(model, from_logits, binary)
        if not model.built:  # a model without an Input creates its weights on its first call
            model(probe, training=False)
        return model

    copies: Any = ready
    fixed_initial = None
    if max_copies == 1:
        log.warning("%s: the model trains one candidate at a time (K = 1): %s", name, reason)
        instance = ready()
        fixed_initial = [v.numpy() for v in instance.variables]
        copies = lambda: instance  # noqa: E731 (one copy: the instance itself)
    return Registration(
        name=name,
        build_model=copies,
        optimizer=optimizer,
        splits=splits,
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in shape),
        max_copies=max_copies,
        fixed_initial=fixed_initial,
    )


def scaled_optimizer(factory: Any, lr_scale: Any, name: str) -> Any:
    """``factory()``'s optimizer with its learning rate times ``lr_scale`` (a variable read every step)."""
    from taylorglo_tf.models.scaled_rate import ScaledRate

    optimizer = factory()
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise SourceError(f"{name}: the optimizer factory returned {optimizer!r:.80}, not a keras optimizer")
    base = optimizer._learning_rate  # a variable, a schedule or a function (keras stores it here)
    if isinstance(base, keras.optimizers.schedules.LearningRateSchedule):
        rate: Any = base
    elif callable(base):
        rate = lambda _step, fn=base: fn()  # noqa: E731
    else:
        rate = float(keras.ops.convert_to_numpy(base))
    optimizer.learning_rate = ScaledRate(rate, lr_scale)
    return optimizer


def python_builder(model: str, builder: Any, splits: Any) -> Any:
    """A zero-argument builder of a ``python:`` model for ``splits``; the first model it builds is checked
    (a keras.Model with one probability per class: SourceError names what is wrong) before any training."""
    shape, num_classes = tuple(splits.input_shape), int(splits.num_classes)

    def build() -> Any:
        return _checked_model(model, lambda: builder(input_shape=shape, num_classes=num_classes))

    classes, binary = _output(build(), model, np.asarray(splits.x_train[:PROBE_ROWS], np.float32), False)
    if binary:
        return lambda: ClassProbabilities(build(), False, True)
    if classes != num_classes:
        raise SourceError(f"{model}: the model outputs {classes} classes; the dataset has {num_classes}")
    return build
