"""Where a task's model, optimizer and data come from: the *sources* of an evaluation.

A ``Task`` names its model and dataset; this module turns the names into what
the evaluator trains. There are three model sources, all trained by the same
evaluator code (``training.session`` / ``training.population``; no second path):

``"NAME"`` (the zoo)
    ``models.build(NAME, ...)`` with the recipe ``models.recipe(NAME)``
    (optimizer, schedule, weight decay, batch size, length, augmentation); the
    data is a URI of ``data.load`` (``digits``, ``tfds:``, ``idx:``, ``npz:``).

``"python:PACKAGE.MODULE:FUNCTION"`` (a builder a trainer imports)
    ``FUNCTION(input_shape=..., num_classes=...)`` returns an uncompiled
    ``keras.Model``; the data is a ``data.load`` URI as for the zoo, and the
    optimizer recipe is the task's validated ``Task.recipe`` block (see
    :func:`check_recipe`: optimizer ``sgd``, learning rate, momentum, nesterov,
    weight decay, batch size, length in steps, schedule milestones in steps and
    gamma). Weight decay of a ``python:`` model is the optimizer's (decoupled)
    ``weight_decay``, not a kernel regulariser as in the zoo (the builder is the
    user's). A reference that does not import raises :class:`SourceError` naming it.

``"script:NAME"`` (registered in this process)
    ``register("script:NAME", build_model, optimizer, train=(x, y),
    validation=(x, y), test=None, from_logits=False)`` registers a model builder,
    an optimizer factory and the data under ``Task.model == Task.dataset ==
    "script:NAME"``. A task on the wire carries only the name: every process
    (a script on each machine) registers its own builder and data; no code is
    shipped. ``unregister(name)`` removes it. A task whose ``script:`` name is not
    registered here raises :class:`UnknownSource` (a trainer gives such a lease
    back unspent).

Registration, what it accepts and checks (all before any training; a
``ValueError`` names the value):

- ``build_model``: a zero-argument function returning a fresh, uncompiled
  ``keras.Model`` (called once per model copy: population batching trains K
  copies), or a ``keras.Model`` instance (copied with
  ``keras.models.clone_model``; where cloning fails, one copy: K = 1, with a
  logged reason, and every seed starts from the instance's own weights).
  Its output must be one probability (softmax) per class, or one logit per class
  with ``from_logits=True``; a single sigmoid unit (or logit) is two classes,
  ``p -> [1 - p, p]``. Logits are turned into probabilities inside the model
  (a softmax in float32), so every loss sees probabilities.
- ``optimizer``: a zero-argument factory returning a *fresh*
  ``keras.optimizers.Optimizer`` per call (one per model copy); a factory that
  returns the same instance twice is refused (optimizer state would leak between
  candidates). ``Task.lr_scale`` multiplies its learning rate at every step: a
  number or a schedule is wrapped in ``models.scaled_rate.ScaledRate`` with the
  evaluator's scale variable (so a tuned baseline's scale needs no new optimizer).
- ``train``, ``validation`` (required, not empty), ``test`` (optional): each a
  pair ``(x, y)`` of arrays, or a ``tf.data.Dataset`` of ``(x, y)`` batches,
  materialised into NumPy arrays once at registration (the whole split is held
  in memory, about ``x.nbytes + y.nbytes`` per split, plus one copy as tensors
  when a session opens). Inputs may have any shape (images, feature vectors,
  integer token sequences: integer inputs stay int32, others become float32);
  augmentation is off for ``script:`` tasks. Labels are sparse integers
  (shape ``(N,)`` or ``(N, 1)``) or one-hot rows (converted to sparse), in
  ``[0, num_classes)``, where ``num_classes`` is the model's output width
  (2 for one sigmoid unit).

A ``script:`` task's batch size is ``Task.batch_size`` (0: :data:`DEFAULT_BATCH_SIZE`)
and its length is ``Task.steps`` (required > 0: there is no recipe length);
epochs (for the abort rule) count ``len(train) // batch_size`` steps. Seeds,
partial training, the abort rule, divergence and population batching are the
zoo's.

Importing this module does not import TensorFlow; :func:`register` and
:func:`resolve` do.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import logging
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

SCRIPT_PREFIX = "script:"
PYTHON_PREFIX = "python:"
# Batch size of a script: task that gives none (Task.batch_size = 0).
DEFAULT_BATCH_SIZE = 32
# Recipe fields of a python: model (Task.recipe) and their defaults; learning_rate and steps are required.
RECIPE_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd",
    "learning_rate": None,
    "momentum": 0.0,
    "nesterov": False,
    "weight_decay": 0.0,
    "batch_size": 32,
    "steps": 0,
    "milestones": (),
    "gamma": 0.1,
}
OPTIMIZERS = ("sgd",)


class SourceError(ValueError):
    """A model or data source that cannot be used (bad builder, data or reference); names the value."""


class UnknownSource(LookupError):
    """A ``script:`` model that this process has not registered (another process's search)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} is not registered in this process (sources.register)")
        self.name = name


def kind(model: str) -> str:
    """``"script"``, ``"python"`` or ``"zoo"``: which source a ``Task.model`` name is for."""
    if model.startswith(SCRIPT_PREFIX):
        return "script"
    if model.startswith(PYTHON_PREFIX):
        return "python"
    return "zoo"


def check_model_name(model: str, dataset: str, field: str = "Task.model") -> None:
    """ValueError naming ``model`` unless it is a zoo name, a ``python:`` reference or a ``script:`` name
    (whose dataset must be the same name). Imports neither TensorFlow nor the builder."""
    which = kind(model)
    if which == "script":
        if not model[len(SCRIPT_PREFIX) :].strip():
            raise ValueError(f"{field} {model!r}: a script model needs a name after 'script:'")
        if dataset != model:
            raise ValueError(f"{field} {model!r}: a script model's dataset must be the same name, got {dataset!r}")
    elif which == "python":
        parse_reference(model)
    else:
        from taylorglo_tf import models

        if model not in models.names():
            raise ValueError(f"{field}: unknown model {model!r}; valid names: {', '.join(models.names())}")


def parse_reference(model: str) -> tuple[str, str]:
    """``"python:PACKAGE.MODULE:FUNCTION"`` -> (module, function); ValueError naming a malformed one."""
    module, sep, function = model[len(PYTHON_PREFIX) :].partition(":")
    ok = sep and module and function.isidentifier() and all(p.isidentifier() for p in module.split("."))
    if not ok:
        raise ValueError(f"model reference {model!r} must look like 'python:PACKAGE.MODULE:FUNCTION'")
    return module, function


def import_builder(model: str) -> Callable[..., Any]:
    """The function a ``python:`` reference names; :class:`SourceError` says why it does not import."""
    module_name, function = parse_reference(model)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or the module's own failure
        raise SourceError(
            f"model {model!r}: module {module_name!r} does not import ({type(error).__name__}: {error}); "
            "install it in the trainer's environment or image"
        ) from error
    builder = getattr(module, function, None)
    if not callable(builder):
        raise SourceError(f"model {model!r}: module {module_name!r} has no function {function!r}")
    return builder


def recipe_from_proto(recipe: Any) -> dict[str, Any]:
    """The fields a ``RecipeSpec`` sets, as a ``Task.recipe`` mapping (unset fields take the defaults)."""
    out: dict[str, Any] = {}
    for name in ("optimizer", "learning_rate", "momentum", "nesterov", "weight_decay", "batch_size", "steps"):
        value = getattr(recipe, name)
        if value:  # proto3 zero = unset
            out[name] = value
    if recipe.milestones:
        out["milestones"] = list(recipe.milestones)
    if recipe.HasField("gamma"):
        out["gamma"] = recipe.gamma
    return out


def recipe_to_proto(recipe: Mapping[str, Any], message: Any) -> None:
    """Writes a checked ``Task.recipe`` into the ``RecipeSpec`` ``message``."""
    message.SetInParent()
    for name in ("optimizer", "learning_rate", "momentum", "nesterov", "weight_decay", "batch_size", "steps", "gamma"):
        setattr(message, name, recipe[name])
    message.milestones.extend(recipe["milestones"])


def check_recipe(recipe: Mapping[str, Any] | None, model: str = "", field: str = "Task.recipe") -> dict[str, Any]:
    """The ``python:`` model's recipe block with defaults filled in; ValueError naming a bad field.

    A zoo or ``script:`` model takes no recipe block (the zoo has its own; a script
    gives its optimizer factory).
    """
    if recipe is None:
        if kind(model) == "python":
            raise ValueError(f"{field} is required for the custom model {model!r} (optimizer, learning rate, steps)")
        return {}
    if not isinstance(recipe, Mapping):
        raise ValueError(f"{field} must be a mapping of recipe fields, got {recipe!r}")
    if model and kind(model) != "python":
        raise ValueError(f"{field} is only for 'python:' models; {model!r} has its own recipe")
    unknown = sorted(set(recipe) - set(RECIPE_DEFAULTS), key=repr)
    if unknown:
        raise ValueError(f"{field}: unknown field(s) {unknown}; known: {sorted(RECIPE_DEFAULTS)}")
    out = {**RECIPE_DEFAULTS, **recipe}
    if out["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"{field}.optimizer must be one of {OPTIMIZERS}, got {out['optimizer']!r}")

    def number(name: str, low: float, high: float, low_open: bool = False) -> None:
        value = out[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and value <= high
        if not ok:
            raise ValueError(
                f"{field}.{name} must be a number in {'(' if low_open else '['}{low}, {high}], got {value!r}"
            )
        out[name] = float(value)

    number("learning_rate", 0.0, 1e6, low_open=True)
    number("momentum", 0.0, 1.0)
    number("weight_decay", 0.0, 1.0)
    number("gamma", 0.0, 1.0, low_open=True)
    if not isinstance(out["nesterov"], bool):
        raise ValueError(f"{field}.nesterov must be true or false, got {out['nesterov']!r}")
    for name, minimum in (("batch_size", 1), ("steps", 1)):
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{field}.{name} must be an integer >= {minimum}, got {value!r}")
    milestones = out["milestones"]
    if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
        raise ValueError(f"{field}.milestones must be a list of steps, got {milestones!r}")
    milestones = tuple(milestones)
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones) or list(milestones) != sorted(
        set(milestones)
    ):
        raise ValueError(f"{field}.milestones must be increasing whole steps >= 1, got {list(milestones)!r}")
    out["milestones"] = milestones
    return out


@dataclasses.dataclass
class Registration:
    """A ``script:`` source: the user's builder, optimizer factory and data (NumPy arrays)."""

    name: str
    build_model: Callable[[], Any]
    optimizer: Callable[[], Any]
    splits: dict[str, tuple[Any, Any]]  # "train"/"val"/"test" -> (x, y); test may be missing
    num_classes: int
    input_shape: tuple[int, ...]
    # 1 when the model cannot be copied (an instance clone_model refuses): K = 1
    max_copies: int | None = None
    # the weights every seed starts from when the model cannot be rebuilt (max_copies = 1)
    fixed_initial: list[Any] | None = None
    version: int = 0  # a new registration under the same name opens a new session


_registry: dict[str, Registration] = {}
_lock = threading.Lock()
_versions = itertools.count(1)


def recipe(task: Any) -> Any:
    """The training recipe (a ``models.recipe.Recipe``) of a zoo task, or of a ``python:`` task's
    ``task.recipe`` block (a ``script:`` model's recipe is its optimizer factory: none here)."""
    from taylorglo_tf import models
    from taylorglo_tf.models.recipe import Recipe

    if kind(task.model) != "python":
        return models.recipe(task.model, task.dataset)
    r = check_recipe(task.recipe, task.model)
    return Recipe(
        task.model,
        lr=r["learning_rate"],
        momentum=r["momentum"],
        nesterov=r["nesterov"],
        weight_decay=r["weight_decay"],
        batch_size=r["batch_size"],
        steps=r["steps"],
        milestones=tuple(r["milestones"]),
        gamma=r["gamma"],
    )


def register(
    name: str,
    build_model: Any,
    optimizer: Callable[[], Any],
    *,
    train: Any,
    validation: Any,
    test: Any = None,
    from_logits: bool = False,
) -> Registration:
    """Register ``build_model``, ``optimizer`` and the data under ``name`` (``"script:..."``); see the module.

    Replaces an earlier registration of ``name``. Raises ``ValueError``
    (:class:`SourceError`) naming a bad name, builder, model output, optimizer
    factory or data, before any training.
    """
    if not isinstance(name, str) or not name.startswith(SCRIPT_PREFIX) or not name[len(SCRIPT_PREFIX) :].strip():
        raise SourceError(f"a registered model's name must start with {SCRIPT_PREFIX!r} and name it, got {name!r}")
    from taylorglo_tf.training import user_data

    registration = user_data.prepare(name, build_model, optimizer, train, validation, test, bool(from_logits))
    with _lock:
        registration.version = next(_versions)
        _registry[name] = registration
    return registration


def unregister(name: str) -> None:
    """Forget ``name``'s registration (UnknownSource when there is none)."""
    with _lock:
        if name not in _registry:
            raise UnknownSource(name)
        del _registry[name]


def registered() -> list[str]:
    """The ``script:`` names registered in this process, sorted."""
    with _lock:
        return sorted(_registry)


def lookup(name: str) -> Registration:
    """The registration of ``name``; :class:`UnknownSource` when this process has none."""
    with _lock:
        registration = _registry.get(name)
    if registration is None:
        raise UnknownSource(name)
    return registration


def version(model: str) -> int | None:
    """What tells two registrations of one ``script:`` name apart (None for other sources)."""
    if kind(model) != "script":
        return None
    return lookup(model).version
