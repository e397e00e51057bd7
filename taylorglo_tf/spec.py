"""Experiment specs: YAML/JSON files or dicts <-> ``taylorglo.v1.ExperimentSpec``, with validation.

A minimal spec (every other field has a documented default, see
``protos/taylorglo/v1/types.proto``)::

    name: digits search
    task: {dataset: digits, model: tiny, steps: 200}
    search: {population: 8, generations: 5}

:func:`load_spec` parses, applies defaults and validates; :func:`validate` raises
:class:`SpecError` whose ``field`` is the offending field's path, e.g.
``spec.search.population``. Field names may be written in snake_case or the
protobuf JSON camelCase. No TensorFlow here: the coordinator validates specs.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import json_format

from taylorglo_tf import taylor, text
from taylorglo_tf.limits import MAX_CHECKPOINT_VALUES, is_repeated, overlong_string
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.training import task as task_defaults

ExperimentSpec = types_pb2.ExperimentSpec

# Defaults for fields left unset (the proto documents the same numbers).
DEFAULT_POPULATION = 20
DEFAULT_GENERATIONS = 10
DEFAULT_SIGMA0 = 1.2
DEFAULT_SEED = 1
DEFAULT_MAX_ATTEMPTS = 3
# Search algorithms by spec name (search.algorithm); the coordinator implements each (coordinator/optimizers.py).
SEARCH_ALGORITHMS = ("cmaes", "random")
DEFAULT_ALGORITHM = "cmaes"
# Early-stopping rules by spec name (search.early_stopping); coordinator/early_stopping.py
# implements each. "" in a stored experiment (one that predates the field) means "none".
EARLY_STOPPING_RULES = ("none", "successive_halving", "median")
# The rules that decide only from values every candidate of the generation reached:
# the same spec gives the same search.
DETERMINISTIC_EARLY_STOPPING = ("none", "successive_halving")
# What a new spec without search.early_stopping gets (docs/BENCHMARKS.md, "Early stopping").
DEFAULT_EARLY_STOPPING = "none"
DEFAULT_ORDER = taylor.DEFAULT_ORDER
DEFAULT_INPUTS = taylor.DEFAULT_INPUTS
DEFAULT_TRAIN_FRACTION = 1.0  # all of the training split
DEFAULT_ABORT_ACCURACY = task_defaults.ABORT_THRESHOLD
DEFAULT_ABORT_EPOCHS = int(task_defaults.ABORT_CHECK_EPOCH)
DEFAULT_LR_SCALE = 1.0  # the model recipe's own learning rate
DEFAULT_CROP_PADDING = 4
DEFAULT_CUTMIX_ALPHA = 1.0

# Classes per dataset, for the invariant pre-screen when num_classes is unset.
KNOWN_NUM_CLASSES = {
    "digits": 10,
    "tfds:mnist": 10,
    "tfds:fashion_mnist": 10,
    "tfds:cifar10": 10,
    "tfds:svhn_cropped": 10,
    "tfds:cifar100": 100,
}
DATASET_SCHEMES = ("tfds", "idx", "npz")

# Upper bounds that catch typos and keep one experiment from exhausting the coordinator
# (string lengths: taylorglo_tf.limits).
MAX_STEPS = 10_000_000
MAX_BATCH_SIZE = 65_536
MAX_POPULATION = 10_000
# What one experiment may cost: population x parameter count. The optimizer's state
# (about 25 bytes per unit for CMA-ES: 5 MiB at the limit) is stored every generation,
# and each generation adds that many numbers to the experiment's result.
MAX_SEARCH_SIZE = 200_000
MAX_GENERATIONS = 100_000
MAX_ATTEMPTS = 100
MAX_ORDER = taylor.MAX_ORDER
MAX_PIXELS = 1024
MAX_NUM_CLASSES = 100_000
MAX_SEED = 2**32 - 1  # pycma/NumPy seeds

_TFDS_NAME = re.compile(r"^[a-z0-9_]+(/[a-z0-9_.]+)?(:[0-9.]+)?$")


class SpecError(ValueError):
    """A spec value is invalid; ``field`` is its path (``spec.task.steps``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --------------------------------------------------------------------------- parsing


def load_spec(source: str | os.PathLike[str] | Mapping[str, Any] | ExperimentSpec) -> ExperimentSpec:
    """Parse a spec from a YAML/JSON file path, a dict, or a proto; apply defaults; validate.

    Raises :class:`SpecError` (``field`` = path of the bad field, or ``"spec"`` for an
    unreadable file).
    """
    if isinstance(source, ExperimentSpec):
        spec = ExperimentSpec()
        spec.CopyFrom(source)
    elif isinstance(source, Mapping):
        spec = from_dict(source)
    else:
        spec = from_dict(_read_file(Path(source)))
    _require(spec.HasField("task"), "spec.task", "is required (dataset, model, steps)")
    spec = apply_defaults(spec)
    validate(spec)
    return spec


def _read_file(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError("spec", f"cannot read spec file {str(path)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SpecError("spec", f"spec file {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except ValueError as exc:  # e.g. a NUL in the path
        raise SpecError("spec", f"cannot open spec file {str(path)!r}: {exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml  # YAML is a superset of JSON: any other suffix goes through it

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError or yaml.YAMLError
        raise SpecError("spec", f"cannot parse spec file {str(path)!r}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise SpecError("spec", f"spec file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def from_dict(data: Mapping[str, Any]) -> ExperimentSpec:
    """Convert a dict (snake_case or camelCase keys) to an ExperimentSpec; no defaults, no range checks.

    Unknown keys and values of the wrong type raise :class:`SpecError` naming the path.
    """
    spec = ExperimentSpec()
    _fill(spec, data, "spec")
    return spec


def _fill(message: Any, data: Any, path: str) -> None:
    if not isinstance(data, Mapping):
        raise SpecError(path, f"expected a mapping, got {type(data).__name__} {data!r}")
    fields = message.DESCRIPTOR.fields_by_name
    by_json = {f.json_name: f for f in message.DESCRIPTOR.fields}
    for key, value in data.items():
        field = (fields.get(key) or by_json.get(key)) if isinstance(key, str) else None
        if field is None:
            known = ", ".join(sorted(fields))
            raise SpecError(f"{path}.{key}", f"unknown field (known: {known})")
        field_path = f"{path}.{field.name}"
        if value is None:
            continue  # YAML "key:" with no value: leave the default
        if field.type == _descriptor.FieldDescriptor.TYPE_MESSAGE:
            # Present even when empty: ``augmentation: {}`` is "no augmentation", its absence "the recipe's".
            getattr(message, field.name).SetInParent()
            _fill(getattr(message, field.name), value, field_path)
        elif is_repeated(field):
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise SpecError(field_path, f"expected a list, got {value!r}")
            for i, item in enumerate(value):
                getattr(message, field.name).append(_scalar(field, item, f"{field_path}[{i}]"))
        else:
            setattr(message, field.name, _scalar(field, value, field_path))


def _scalar(field: _descriptor.FieldDescriptor, value: Any, path: str) -> Any:
    fd = _descriptor.FieldDescriptor
    kind = field.cpp_type
    if kind in (fd.CPPTYPE_INT32, fd.CPPTYPE_INT64, fd.CPPTYPE_UINT32, fd.CPPTYPE_UINT64):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise SpecError(path, f"expected an integer, got {value!r}")
        bits = 32 if kind in (fd.CPPTYPE_INT32, fd.CPPTYPE_UINT32) else 64
        if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise SpecError(path, f"{value} is out of the {bits}-bit integer range")
        return value
    if kind in (fd.CPPTYPE_DOUBLE, fd.CPPTYPE_FLOAT):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(path, f"expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an int beyond any double, e.g. 10**400
            raise SpecError(path, f"{value} is too large for a number") from None
    if kind == fd.CPPTYPE_BOOL:
        if not isinstance(value, bool):
            raise SpecError(path, f"expected true or false, got {value!r}")
        return value
    if kind == fd.CPPTYPE_STRING:
        if not isinstance(value, str):
            raise SpecError(path, f"expected a string, got {value!r}")
        try:
            value.encode("utf-8")  # protobuf strings are UTF-8: lone surrogates cannot be stored
        except UnicodeEncodeError as exc:
            raise SpecError(path, f"{value!r} is not valid Unicode text ({exc.reason})") from None
        return value
    raise SpecError(path, f"unsupported field type for {value!r}")  # enums: none in specs


def to_dict(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec as a plain dict with snake_case keys (defaults included as set)."""
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)


# --------------------------------------------------------------------------- defaults


def apply_defaults(spec: ExperimentSpec) -> ExperimentSpec:
    """A copy of ``spec`` with every unset field that has a default filled in.

    Unset, not 0: the fields with defaults are proto3 ``optional``, so a spec that
    says ``seed: 0`` keeps its 0 (and one that says ``sigma0: 0`` is refused by
    :func:`validate`). ``task.batch_size`` stays 0: it means "the model recipe's
    batch size", which the trainer resolves (the coordinator has no model zoo).
    """
    out = ExperimentSpec()
    out.CopyFrom(spec)
    task, loss, search, aug = out.task, out.loss, out.search, out.task.augmentation
    _default(task, "train_fraction", DEFAULT_TRAIN_FRACTION)
    _default(task, "abort_accuracy", DEFAULT_ABORT_ACCURACY)
    _default(task, "abort_epochs", DEFAULT_ABORT_EPOCHS)
    _default(task, "lr_scale", DEFAULT_LR_SCALE)
    if aug.flip_crop:
        _default(aug, "crop_padding", DEFAULT_CROP_PADDING)
    if aug.cutmix_probability > 0:
        _default(aug, "cutmix_alpha", DEFAULT_CUTMIX_ALPHA)
    _default(loss, "order", DEFAULT_ORDER)
    if not loss.inputs:
        loss.inputs.extend(DEFAULT_INPUTS)
    _default(search, "population", DEFAULT_POPULATION)
    _default(search, "generations", DEFAULT_GENERATIONS)
    _default(search, "sigma0", DEFAULT_SIGMA0)
    _default(search, "seed", DEFAULT_SEED)
    _default(search, "max_attempts", DEFAULT_MAX_ATTEMPTS)
    if not search.algorithm:
        search.algorithm = DEFAULT_ALGORITHM
    if not search.early_stopping:
        search.early_stopping = DEFAULT_EARLY_STOPPING
    if task.dataset in KNOWN_NUM_CLASSES:  # otherwise unset: the number of classes is not known
        _default(search, "num_classes", KNOWN_NUM_CLASSES[task.dataset])
    return out


def _default(message: Any, field: str, value: Any) -> None:
    """Set ``message.field`` to ``value`` unless the spec set it (to anything, 0 included)."""
    if not message.HasField(field):
        setattr(message, field, value)


# --------------------------------------------------------------------------- validation


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise SpecError(field, message)


def _check_range(value: float, lo: float, hi: float, field: str, what: str = "") -> None:
    _require(math.isfinite(value), field, f"must be a finite number, got {value!r}")
    _require(lo <= value <= hi, field, f"{what or 'value'} {value!r} is outside [{lo}, {hi}]")


def validate(spec: ExperimentSpec) -> None:
    """Check every field of a spec (after :func:`apply_defaults`); raise :class:`SpecError` on the first bad one."""
    overlong = overlong_string(spec, "spec")
    if overlong:
        field, length, bound = overlong
        raise SpecError(field, f"is {length} characters long; at most {bound}")
    controls = text.control_characters(spec.name)
    _require(
        not controls,
        "spec.name",
        f"{text.escape_controls(spec.name)!r} contains control characters ({', '.join(controls)}); "
        "a name is plain text",
    )
    _require(spec.HasField("task"), "spec.task", "is required (dataset, model, steps)")
    _validate_task(spec.task, "spec.task")
    _validate_loss(spec.loss, "spec.loss")
    _validate_search(spec.search, spec.task.dataset, spec.loss, "spec.search")
    if spec.HasField("paper"):
        _validate_paper(spec.paper, "spec.paper")


def _validate_task(task: types_pb2.TaskSpec, path: str) -> None:
    _require(bool(task.model), f"{path}.model", "is required (a name from taylorglo_tf.models.names())")
    _validate_model(task, path)
    _check_range(task.steps, 1, MAX_STEPS, f"{path}.steps", "steps")
    _check_range(task.batch_size, 0, MAX_BATCH_SIZE, f"{path}.batch_size", "batch size")
    _check_range(task.seed, 0, MAX_SEED, f"{path}.seed", "seed")  # trainers seed NumPy/Keras with it
    _require(
        math.isfinite(task.train_fraction) and 0 < task.train_fraction <= 1,
        f"{path}.train_fraction",
        f"{task.train_fraction!r} is outside (0, 1]",
    )
    _require(
        math.isfinite(task.abort_accuracy) and task.abort_accuracy <= 1,
        f"{path}.abort_accuracy",
        f"{task.abort_accuracy!r} must be <= 1 (0 or negative disables the abort rule)",
    )
    _check_range(task.abort_epochs, 1, MAX_STEPS, f"{path}.abort_epochs", "epochs")
    _require(
        math.isfinite(task.lr_scale) and task.lr_scale > 0,
        f"{path}.lr_scale",
        f"{task.lr_scale!r} must be a positive, finite multiplier of the recipe's learning rate",
    )
    aug = task.augmentation
    apath = f"{path}.augmentation"
    _check_range(aug.crop_padding, 0, MAX_PIXELS, f"{apath}.crop_padding", "padding")
    _check_range(aug.cutout_length, 0, MAX_PIXELS, f"{apath}.cutout_length", "length")
    _check_range(aug.cutmix_probability, 0, 1, f"{apath}.cutmix_probability", "probability")
    _check_range(aug.cutmix_alpha, 0, 1e6, f"{apath}.cutmix_alpha", "alpha")
    _require(
        aug.cutmix_probability == 0 or aug.cutmix_alpha > 0, f"{apath}.cutmix_alpha", "must be > 0 when CutMix is on"
    )


def _validate_model(task: types_pb2.TaskSpec, path: str) -> None:
    """The model (zoo, ``python:`` builder or ``script:`` name), its dataset and its recipe block."""
    from taylorglo_tf.training import sources  # no TensorFlow, no builder import

    kind = sources.kind(task.model)
    if kind == "script":  # a script's own data, registered in each process under the model's name
        _require(
            task.dataset == task.model,
            f"{path}.dataset",
            f"{task.dataset!r}: a script model's dataset is its own name, {task.model!r}",
        )
    else:
        check_dataset_uri(task.dataset, f"{path}.dataset")
    if kind == "zoo":
        known = _model_names()
        _require(task.model in known, f"{path}.model", f"unknown model {task.model!r}; known: {', '.join(known)}")
    try:
        sources.check_model_name(task.model, task.dataset, f"{path}.model")
    except ValueError as error:
        raise SpecError(f"{path}.model", str(error)) from None
    recipe = sources.recipe_from_proto(task.recipe) if task.HasField("recipe") else None
    try:
        sources.check_recipe(recipe, task.model, f"{path}.recipe")
    except ValueError as error:
        raise SpecError(f"{path}.recipe", str(error)) from None
    if recipe is not None:
        milestones = list(task.recipe.milestones)
        _require(
            all(0 < m < task.recipe.steps for m in milestones),
            f"{path}.recipe.milestones",
            f"{milestones} must lie within (0, {task.recipe.steps}) steps",
        )


def _model_names() -> list[str]:
    from taylorglo_tf import models  # the registry only: no TensorFlow

    return models.names()


def _validate_loss(loss: types_pb2.LossSpec, path: str) -> None:
    _check_range(loss.order, 1, MAX_ORDER, f"{path}.order", "order")
    inputs = tuple(loss.inputs)
    _require("x" in inputs and "y" in inputs, f"{path}.inputs", f"{list(inputs)} must contain 'x' and 'y'")
    try:
        taylor.check_inputs(inputs)
    except ValueError as exc:
        raise SpecError(f"{path}.inputs", str(exc)) from None


def _validate_search(search: types_pb2.SearchSpec, dataset: str, loss: types_pb2.LossSpec, path: str) -> None:
    _check_range(search.population, 2, MAX_POPULATION, f"{path}.population", "population")
    _check_range(search.generations, 1, MAX_GENERATIONS, f"{path}.generations", "generations")
    _require(
        math.isfinite(search.sigma0) and 0 < search.sigma0 <= 1e6,
        f"{path}.sigma0",
        f"{search.sigma0!r} must be in (0, 1e6]",
    )
    _check_range(search.seed, 0, MAX_SEED, f"{path}.seed", "seed")
    _check_range(search.max_attempts, 1, MAX_ATTEMPTS, f"{path}.max_attempts", "attempts")
    _check_range(search.num_classes, 0, MAX_NUM_CLASSES, f"{path}.num_classes", "classes")
    _require(
        search.algorithm in SEARCH_ALGORITHMS,
        f"{path}.algorithm",
        f"{search.algorithm!r} is not one of {', '.join(SEARCH_ALGORITHMS)}",
    )
    _require(
        search.early_stopping in EARLY_STOPPING_RULES,
        f"{path}.early_stopping",
        f"{search.early_stopping!r} is not one of {', '.join(EARLY_STOPPING_RULES)}",
    )
    size = search.population * theta_length(loss)
    _require(
        size <= MAX_SEARCH_SIZE,
        f"{path}.population",
        f"population {search.population} x {theta_length(loss)} parameters (order {loss.order} in "
        f"{', '.join(loss.inputs)}) = {size:,} exceeds the limit of {MAX_SEARCH_SIZE:,} for population x "
        f"parameter count; lower the population or the order",
    )
    if search.invariant_prescreen and prescreen_applies(loss):
        _require(
            search.num_classes >= 2,
            f"{path}.num_classes",
            f"the invariant pre-screen needs the number of classes (>= 2); dataset {dataset!r} does not tell it",
        )


def _validate_paper(paper: types_pb2.PaperResult, path: str) -> None:
    """The published numbers an experiment reproduces: fractions, not percentages."""
    _require(
        bool(paper.table.strip()),
        f"{path}.table",
        "is required when the paper block is given (where the numbers come from, e.g. 'Table 1, MNIST')",
    )
    for name in ("taylorglo", "taylorglo_std", "baseline", "baseline_std", "p_value"):
        value = getattr(paper, name)
        hint = "" if name == "p_value" else "; give accuracies as fractions (0.9271, not 92.71)"
        _require(math.isfinite(value) and 0 <= value <= 1, f"{path}.{name}", f"{value!r} is outside [0, 1]{hint}")


def prescreen_applies(loss: types_pb2.LossSpec) -> bool:
    """The invariant pre-screen is defined for the paper's form only (inputs x, y; order 3; 8 parameters)."""
    return tuple(loss.inputs) == DEFAULT_INPUTS and loss.order == DEFAULT_ORDER


def loss_form(loss: types_pb2.LossSpec) -> tuple[int, tuple[str, ...]]:
    """(order, inputs) of a loss spec, with the defaults for 0/empty: (3, ("x", "y"))."""
    return loss.order or DEFAULT_ORDER, tuple(loss.inputs) or DEFAULT_INPUTS


def theta_length(loss: types_pb2.LossSpec) -> int:
    """Search dimension: parameters of the trimmed expansion (8 for order 3 in x, y)."""
    return taylor.expected_theta_length(*loss_form(loss))


# --------------------------------------------------------------------------- dataset paths


def check_dataset_uri(uri: str, field: str = "spec.task.dataset") -> None:
    """Validate a dataset URI: ``digits``, ``tfds:NAME``, ``idx:DIR`` or ``npz:FILE``.

    ``DIR``/``FILE`` must be relative paths without ``..`` (they are resolved under
    each trainer's data directory, see :func:`resolve_dataset`).
    """
    _require(bool(uri), field, "is required (digits, tfds:NAME, idx:DIR or npz:FILE)")
    if uri == "digits":
        return
    scheme, sep, rest = uri.partition(":")
    _require(bool(sep) and scheme in DATASET_SCHEMES, field, f"{uri!r} is not digits, tfds:NAME, idx:DIR or npz:FILE")
    if scheme == "tfds":
        _require(bool(_TFDS_NAME.match(rest)), field, f"{rest!r} is not a TFDS dataset name")
        return
    _require(bool(rest), field, f"{uri!r} names no path")
    _require("\\" not in rest and "\x00" not in rest, field, f"path {rest!r} contains a backslash or NUL")
    path = PurePosixPath(rest)
    _require(
        not path.is_absolute() and not rest.startswith("~"),
        field,
        f"path {rest!r} must be relative to the trainer's data directory",
    )
    _require(".." not in path.parts, field, f"path {rest!r} must not contain '..'")


def resolve_dataset(uri: str, data_dir: str | os.PathLike[str]) -> str:
    """A dataset URI with its ``idx:``/``npz:`` path made absolute under ``data_dir``.

    Raises :class:`SpecError` if the URI is invalid or the resolved path (symlinks
    followed) leaves ``data_dir``. Other URIs are returned unchanged.
    """
    check_dataset_uri(uri)
    scheme, _, rest = uri.partition(":")
    if scheme not in ("idx", "npz"):
        return uri
    root = Path(data_dir).resolve()
    target = (root / rest).resolve()
    _require(
        target == root or root in target.parents,
        "spec.task.dataset",
        f"path {rest!r} resolves to {str(target)!r}, outside the data directory {str(root)!r}",
    )
    return f"{scheme}:{target}"


# --------------------------------------------------------------------------- early-stopping checkpoints


def checkpoint_steps(checkpoints: Sequence[float], total: int) -> list[int]:
    """The step of each early-stopping checkpoint of a ``total``-step attempt.

    Formula:

    ```python
    step_i = min(total, max(1, round(checkpoints[i] * total)))
    ```

    Args:
        checkpoints: fractions in (0, 1] of the attempt's steps, ascending
            (``Lease.checkpoints``).
        total: the schedule's training steps, >= 1.

    Returns:
        One step per fraction, in their order (neighbours may share a step in a short run).

    Raises:
        ValueError: naming a fraction outside (0, 1], not a finite number, or out of order.

    Example:

    >>> checkpoint_steps([0.25, 0.5], 300)
    [75, 150]
    >>> checkpoint_steps([0.001, 1.0], 10)
    [1, 10]
    """
    fractions = check_checkpoints(checkpoints)
    return [min(total, max(1, round(f * total))) for f in fractions]


def check_checkpoints(checkpoints: Sequence[float]) -> tuple[float, ...]:
    """``checkpoints`` as a tuple of floats if they are fractions in (0, 1], ascending; else ValueError naming them."""
    try:
        fractions = tuple(float(f) for f in checkpoints)
    except (TypeError, ValueError):
        raise ValueError(f"checkpoints must be fractions in (0, 1], got {checkpoints!r}") from None
    bad = [f for f in fractions if not (math.isfinite(f) and 0.0 < f <= 1.0)]
    if bad:
        raise ValueError(f"checkpoints must be fractions in (0, 1], got {bad[0]!r} in {list(fractions)}")
    if any(later < earlier for earlier, later in itertools.pairwise(fractions)):
        raise ValueError(f"checkpoints must be in ascending order, got {list(fractions)}")
    if len(fractions) > MAX_CHECKPOINT_VALUES:
        raise ValueError(f"at most {MAX_CHECKPOINT_VALUES} checkpoints, got {len(fractions)}")
    return fractions
