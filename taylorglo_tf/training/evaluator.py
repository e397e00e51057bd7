"""Partial training of a model with a candidate loss, scored by validation accuracy.

A trainer evaluates thousands of candidates, mostly of one task, so an
``Evaluator`` keeps per task (a *session*): the splits as tensors (converted
once), the model (built once; re-initialised by assigning the seed's initial
variable values), the optimizer (its variables reset to their initial values) and
the compiled train/eval steps. A candidate loss that differs from the previous
one only in theta (``TaylorGLOLoss.set_theta``) is copied into the loss the
compiled step closes over, so it runs without retracing.

Determinism: with the same seed, an evaluation re-runs the same initial weights,
dropout masks, data order and augmentation (each attempt builds its training
pipeline over the session's tensors with that seed: no data is copied). TensorFlow does not promise
bitwise-equal float results across runs of multi-threaded CPU kernels (reduction
order) unless ``tf.config.experimental.enable_op_determinism()`` is on, which we
leave to the caller because it slows some ops; results then agree to rounding.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from taylorglo_tf.data.augmentation import Augmentation
from taylorglo_tf.models.recipe import Recipe
from taylorglo_tf.training.population import Population, PopulationLoss
from taylorglo_tf.training.task import EvaluationResult, Status, Task

ProgressFn = Callable[[int, int], "bool | None"]
# How a training attempt ends: a result's status, or "retry" when the abort rule fired.
AttemptStatus = Literal["ok", "diverged", "aborted", "retry"]

# XLA on/off was measured with benchmarks/evaluation.py (docs/BENCHMARKS.md): on CPU
# XLA is slower for these convnets, so it is off by default; GPUs may differ.
DEFAULT_JIT_COMPILE = False
# Inference batch of the validation/test passes: per-image CPU time is flat from
# 100 to 5,000 on basic_cnn (benchmarks/evaluation.py), and 512 bounds the memory.
_EVAL_BATCH = 512
# Initial weights kept per session: the task's seed and its retry seeds; more
# seeds (comparisons run one per seed) rebuild a throwaway model instead.
_KEPT_INITIAL_STATES = 4


def _loss_signature(loss: Any) -> tuple[str, str, bool]:
    """(class, config without theta, theta-settable) identifying a compiled step's loss."""
    config = dict(loss.get_config())
    settable = hasattr(loss, "set_theta") and hasattr(loss, "theta")
    if settable:
        config.pop("theta", None)
    config.pop("name", None)
    cls = type(loss)
    return f"{cls.__module__}.{cls.__qualname__}", json.dumps(config, sort_keys=True, default=str), settable


def _label_encoder(num_classes: int, one_hot: bool) -> Callable:
    """Sparse integer labels -> what the loss takes (one-hot float or unchanged)."""
    if not one_hot:
        return lambda y: y
    return lambda y: tf.one_hot(tf.cast(y, tf.int32), num_classes)


def _labels_for(session: _Session, loss: Any) -> tuple[bool, Callable]:
    """Labels go in one-hot (every loss here takes them) except for the sparse-only Keras loss."""
    one_hot = not isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
    return one_hot, _label_encoder(session.num_classes, one_hot)


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, keras.losses.Loss):
        raise TypeError(f"loss must be a keras.losses.Loss, got {type(loss).__name__}")


def batch_loss(loss_fn: Any, labels: Callable, y: Any, predictions: Any):
    """The loss of one training batch; CutMix batches mix the losses, not the labels.

    ``y`` is either the labels or CutMix's ``(y_a, y_b, lam)`` (``lam`` a scalar or
    one value per example). The Taylor loss is not linear in the label, so the
    mixed batch's loss is ``lam * L(y_a, p) + (1 - lam) * L(y_b, p)``, computed as
    two sample-weighted losses (for the default ``sum_over_batch_size`` reduction
    this is exactly the mix of the two batch means).
    """
    if isinstance(y, (tuple, list)):
        y_a, y_b, lam = y
        weight = tf.broadcast_to(tf.cast(lam, tf.float32), tf.shape(y_a)[:1])
        return loss_fn(labels(y_a), predictions, sample_weight=weight) + loss_fn(
            labels(y_b), predictions, sample_weight=1.0 - weight
        )
    return loss_fn(labels(y), predictions)


def _clock() -> np.ndarray:
    """(wall seconds, process CPU seconds of all threads): CPU time is what a phase
    costs even when other jobs share the machine."""
    return np.array([time.perf_counter(), time.process_time()])


def _initial_seed(seed: int, attempt: int) -> int:
    """Seed of an attempt: the task's seed first, then seeds derived from (seed, attempt)."""
    if attempt == 1:
        return seed
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])


@dataclass(frozen=True)
class _Schedule:
    """How far an evaluation trains and where the abort rule looks (steps count from 1)."""

    total: int  # optimizer steps to train
    full_length: int  # steps of the whole recipe: a time-varying loss's t runs over these
    check_step: int  # the step after which the abort rule scores the validation split

    def progress_at(self, step: int) -> float:
        """``t`` at ``step``: partial training is exactly the first steps of the full run."""
        return min(1.0, (step - 1) / self.full_length)

    def reports_at(self, step: int, every: int) -> bool:
        """Whether ``step`` checks for divergence and calls ``progress`` (every ``every`` steps and the last)."""
        return step % every == 0 or step == self.total


@dataclass(frozen=True)
class _Attempt:
    """How one training attempt of one candidate ended."""

    status: AttemptStatus  # aborted: stopped by ``progress``
    steps: int  # optimizer steps done

    def reported(self) -> Status:
        """The status of a result that ends with this attempt: the abort rule firing on the last one is ``aborted``."""
        if self.status == "retry":
            return "aborted"
        return self.status


@dataclass(frozen=True)
class _Outcome:
    """One candidate's evaluation: an ``EvaluationResult`` but for the wall time (known at the end of the call)."""

    status: Status
    steps: int
    attempts: int
    val_accuracy: float
    val_loss: float
    test_accuracy: float | None = None
    test_loss: float | None = None

    @classmethod
    def of(cls, result: EvaluationResult) -> _Outcome:
        return cls(
            result.status,
            result.steps,
            result.attempts,
            result.val_accuracy,
            result.val_loss,
            result.test_accuracy,
            result.test_loss,
        )

    def result(self, wall_time_s: float) -> EvaluationResult:
        return EvaluationResult(
            fitness=self.val_accuracy if self.status == "ok" else 0.0,
            val_accuracy=self.val_accuracy,
            val_loss=self.val_loss,
            steps=self.steps,
            wall_time_s=wall_time_s,
            attempts=self.attempts,
            status=self.status,
            test_accuracy=self.test_accuracy,
            test_loss=self.test_loss,
        )


class _LoopClock:
    """(wall, CPU) seconds of a step loop from its first batch on, less the phases run in ``excluded()``.

    The training pipeline's start-up (before the first batch) and the abort rule's
    validation count as overhead, not as training.
    """

    def __init__(self) -> None:
        self._started: np.ndarray | None = None
        self._excluded = np.zeros(2)

    def start(self) -> None:
        if self._started is None:
            self._started = _clock()

    @contextlib.contextmanager
    def excluded(self):
        paused = _clock()
        try:
            yield
        finally:
            self._excluded += _clock() - paused

    def elapsed(self) -> np.ndarray:
        return np.zeros(2) if self._started is None else _clock() - self._started - self._excluded


@dataclass
class _CompiledLoss:
    loss: Any
    settable: bool
    one_hot: bool
    train_step: Any
    eval_step: Any


@dataclass
class _Session:
    """What one task's evaluations share."""

    model_name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    # split name -> (images, labels) tensors, converted once
    tensors: dict[str, tuple[tf.Tensor, tf.Tensor]]
    recipe: Recipe
    batch_size: int
    steps_per_epoch: int
    augmentation: Augmentation
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    optimizer_initial: list[np.ndarray]
    finite: tf.Variable
    jit_compile: bool
    # multiple of the recipe's learning rate, read by the optimizers at every step (Task.lr_scale)
    lr_scale: tf.Variable
    # seed -> initial variable values, least recently used first
    initial_states: collections.OrderedDict[int, list[np.ndarray]] = field(default_factory=collections.OrderedDict)
    losses: dict[tuple, _CompiledLoss] = field(default_factory=dict)
    # K model copies for batched evaluations (the largest K asked for so far)
    population: Population | None = None


class _BatchFailed(Exception):
    """The batched step raised (e.g. a numerics check): the slot to blame is unknown."""


class Evaluator:
    """Evaluates candidate losses on tasks, reusing everything reusable between calls.

    Formula:

    ```python
    fitness = val_accuracy(model trained task.steps steps with loss) if status == "ok" else 0.0
    ```

    :meth:`evaluate` trains ``task.model`` on ``task.dataset`` with the candidate
    loss for the first ``task.steps`` steps of the model's recipe and scores it
    on the validation split (``EvaluationResult``); :meth:`evaluate_many` trains
    several candidates of one task in one compiled step. Per task the evaluator
    keeps a session (the data as tensors, the model, the optimizer, the compiled
    steps), so a loss that differs from the last one only in theta trains
    without retracing.

    Args:
        jit_compile: compile the train/eval steps with XLA. Defaults to the
            measured best on CPU, ``DEFAULT_JIT_COMPILE`` (off).
        progress_every: steps between progress/divergence checks, >= 1.
            Defaults to 10.
        max_sessions: tasks kept warm at once (least recently used dropped), >= 1.
            Defaults to 2.

    Raises:
        ValueError: for ``progress_every`` or ``max_sessions`` below 1; from
            :meth:`evaluate`, for a dataset that ``data.load`` refuses
            (``FileNotFoundError`` for a missing file).
        TypeError: from :meth:`evaluate`, for a loss that is not a
            ``keras.losses.Loss`` or a task that is not a ``training.Task``.

    Example:

    >>> from taylorglo_tf import taylor
    >>> from taylorglo_tf.losses import TaylorGLOLoss
    >>> from taylorglo_tf.training import Evaluator, Task
    >>> evaluator = Evaluator()
    >>> task = Task(dataset="digits", model="tiny", steps=10)
    >>> loss = TaylorGLOLoss(taylor.PAPER_MNIST_THETA)
    >>> result = evaluator.evaluate(loss, task)
    >>> result.status, result.steps, result.attempts
    ('ok', 10, 1)
    >>> result.fitness == result.val_accuracy and 0.0 <= result.fitness <= 1.0
    True

    The next candidate of a search changes only theta: same compiled step, no retracing.

    >>> traces = evaluator.trace_count()
    >>> loss.set_theta([0.5, 0.5, 1.0, -2.0, 8.0, 2.0, -4.0, 0.0])
    >>> evaluator.evaluate(loss, task).status
    'ok'
    >>> evaluator.trace_count() == traces
    True
    """

    def __init__(
        self,
        *,
        jit_compile: bool | None = None,
        progress_every: int = 10,
        max_sessions: int = 2,
    ) -> None:
        if progress_every < 1:
            raise ValueError(f"progress_every must be >= 1, got {progress_every!r}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions!r}")
        self.jit_compile = DEFAULT_JIT_COMPILE if jit_compile is None else bool(jit_compile)
        self.progress_every = int(progress_every)
        self.max_sessions = int(max_sessions)
        self._sessions: collections.OrderedDict[tuple, _Session] = collections.OrderedDict()
        # seconds of the last evaluation by phase, wall and ``*_cpu_s`` (benchmarks read it)
        self.last_timings: dict[str, float] = {}

    # ------------------------------------------------------------------ public

    def evaluate(
        self,
        loss: Any,
        task: Task,
        progress: ProgressFn | None = None,
        *,
        test: bool = False,
    ) -> EvaluationResult:
        """Train ``task.model`` on ``task.dataset`` with ``loss`` and score it.

        Runs the first ``task.steps`` optimizer steps of the model's recipe (whole
        recipe when 0), then measures accuracy and mean loss on the validation
        split (and the test split when ``test``). NaN/inf in the training loss or
        the weights ends the attempt with status ``diverged`` (fitness 0). The
        abort rule (accuracy below ``task.abort_threshold`` at epoch
        ``task.abort_check_epoch``) retries with a fresh seed up to
        ``task.max_attempts`` attempts, then reports ``aborted``.

        ``progress(steps_done, total_steps)`` is called every ``progress_every``
        steps and at the end of training; returning ``False`` stops the evaluation
        with status ``aborted``.
        """
        _check_task(task)
        started = _clock()
        session = self._session(task)
        compiled = self._compiled_loss(session, loss)
        attempt, attempts, train_time = self._train_attempts(session, compiled, task, progress)
        validation_started = _clock()
        outcome = self._scored_outcome(session, compiled, attempt, attempts, test)
        self._record_timings(started, train_time, validation_started)
        return outcome.result(self.last_timings["total_s"])

    def evaluate_many(
        self,
        losses: Sequence[Any],
        task: Task,
        progress: Sequence[ProgressFn | None] | None = None,
        *,
        test: bool = False,
    ) -> list[EvaluationResult]:
        """Train ``task.model`` once per loss, all at once, and score each: one result per loss.

        The candidates train side by side in one compiled step (see
        ``training.population``): each has its own model copy, optimizer state and
        theta, and gets the same batches, initial weights and dropout and
        augmentation randomness as ``evaluate`` would give it alone, so its result
        does not depend on the others (equal to rounding). Everything that
        ``evaluate`` does is per candidate: a candidate whose loss or weights turn
        NaN/inf stops and is ``diverged`` while the others go on; the abort rule's
        retries run the candidates that hit it together, with the next attempt's
        seed; ``progress[i](steps_done, total_steps)`` reports candidate ``i``
        and returning ``False`` stops only that one (status ``aborted``).

        Losses of different forms (class and configuration other than theta)
        train in one batch per form. ``wall_time_s`` of each result is the whole
        call's. If the batched step raises (a numerics check inside a loss), the
        batch is evaluated again one candidate at a time, so the failure lands on
        its own candidate.
        """
        _check_task(task)
        losses = list(losses)
        for loss in losses:
            _check_loss(loss)
        if progress is None:
            progress = [None] * len(losses)
        progress = list(progress)
        if len(progress) != len(losses):
            raise ValueError(
                f"progress has {len(progress)} callbacks for {len(losses)} losses; give one per loss or None"
            )
        if not losses:
            return []
        started = _clock()
        session = self._session(task)
        groups: dict[tuple, list[int]] = collections.defaultdict(list)
        for index, loss in enumerate(losses):
            groups[_loss_signature(loss)].append(index)
        outcomes: dict[int, _Outcome] = {}
        train_time = np.zeros(2)
        validation_started = None
        for indices in groups.values():
            try:
                group, seconds, validation_started = self._train_together(
                    session, [losses[i] for i in indices], task, [progress[i] for i in indices], test
                )
            except _BatchFailed:
                for i in indices:
                    outcomes[i] = _Outcome.of(self.evaluate(losses[i], task, progress[i], test=test))
                continue
            train_time += seconds
            outcomes.update(zip(indices, group))
        self._record_timings(started, train_time, _clock() if validation_started is None else validation_started)
        return [outcomes[index].result(self.last_timings["total_s"]) for index in range(len(losses))]

    def step_rate(
        self,
        task: Task,
        candidates: int,
        steps: int = 3,
        *,
        seconds: float = 0.0,
        ready: Callable[[], None] | None = None,
    ) -> float:
        """Candidate-steps per second of ``task``'s train step with ``candidates`` per step (after a warm-up step).

        One candidate uses ``evaluate``'s step, more the batched one; the models
        train on the task's data with the paper's MNIST TaylorGLO loss. Times at
        least ``steps`` steps and ``seconds`` seconds; ``ready()`` is called after
        the warm-up, before the clock starts (e.g. to wait for other processes).
        """
        from taylorglo_tf import taylor
        from taylorglo_tf.losses import TaylorGLOLoss

        _check_task(task)
        session = self._session(task)
        losses = [TaylorGLOLoss(taylor.PAPER_MNIST_THETA) for _ in range(candidates)]
        if candidates == 1:
            step = self._compiled_loss(session, losses[0]).train_step
        else:
            population = self._population(session, candidates)
            batched = self._population_loss(session, population, losses).train_step
            active = np.ones(candidates, dtype=bool)
            step = lambda x, y: batched(x, y, active)  # noqa: E731
        iterator = iter(self._train_dataset(session, task.seed))
        step(*next(iterator)).numpy()  # traces and warms up
        if ready is not None:
            ready()
        started = time.perf_counter()
        done = 0
        while done < steps or time.perf_counter() - started < seconds:
            step(*next(iterator)).numpy()
            done += 1
        return candidates * done / (time.perf_counter() - started)

    def trace_count(self) -> int:
        """Total traces of all compiled steps so far (tests check for retracing)."""
        single = sum(
            fn.experimental_get_tracing_count()
            for session in self._sessions.values()
            for compiled in session.losses.values()
            for fn in (compiled.train_step, compiled.eval_step)
        )
        return single + sum(s.population.trace_count() for s in self._sessions.values() if s.population)

    def _record_timings(self, started: np.ndarray, train_time: np.ndarray, validation_started: np.ndarray) -> None:
        finished = _clock()
        phases = {"total": finished - started, "train_steps": train_time, "validation": finished - validation_started}
        self.last_timings = {
            f"{phase}_{kind}": float(seconds[i])
            for phase, seconds in phases.items()
            for i, kind in enumerate(("s", "cpu_s"))
        }

    # ---------------------------------------------------------------- sessions

    def _session(self, task: Task) -> _Session:
        key = (
            task.dataset,
            task.data_dir,
            task.fraction,
            task.seed if task.fraction < 1.0 else None,  # the subset depends on the seed
            task.model,
            task.batch_size,
            json.dumps(task.augmentation, sort_keys=True),
        )
        if key in self._sessions:
            self._sessions.move_to_end(key)
            session = self._sessions[key]
        else:
            session = self._new_session(task)
            self._sessions[key] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        # The optimizers read the rate's multiple at every step: another lr_scale
        # needs no new session and no retracing.
        session.lr_scale.assign(task.lr_scale)
        return session

    def _new_session(self, task: Task) -> _Session:
        from taylorglo_tf import data, models

        recipe = models.recipe(task.model, task.dataset)  # unknown names raise, naming the model
        splits = data.load(task.dataset, data_dir=task.data_dir, fraction=task.fraction, seed=task.seed)
        batch_size = task.batch_size or recipe.batch_size
        n_train = len(splits.y_train)
        if n_train < batch_size:
            raise ValueError(
                f"task batch_size {batch_size} exceeds the {n_train} training examples of {task.dataset!r}"
            )
        steps_per_epoch = recipe.steps_per_epoch(n_train, batch_size)
        augmentation_options = recipe.augmentation if task.augmentation is None else task.augmentation
        augmentation = data.Augmentation.from_dict(dict(augmentation_options))
        keras.utils.set_random_seed(task.seed)
        model = self._build_model(task.model, recipe, splits.input_shape, splits.num_classes)
        lr_scale = tf.Variable(task.lr_scale, dtype=tf.float32, trainable=False)
        optimizer = recipe.optimizer(steps_per_epoch, lr_scale=lr_scale)
        optimizer.build(model.trainable_variables)
        session = _Session(
            model_name=task.model,
            input_shape=splits.input_shape,
            num_classes=splits.num_classes,
            tensors={
                split: data.as_tensors(getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}"))
                for split in ("train", "val", "test")
            },
            recipe=recipe,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            augmentation=augmentation,
            model=model,
            optimizer=optimizer,
            optimizer_initial=[v.numpy() for v in optimizer.variables],
            finite=tf.Variable(True, trainable=False),
            jit_compile=self.jit_compile,
            lr_scale=lr_scale,
        )
        session.initial_states[task.seed] = [v.numpy() for v in model.variables]
        return session

    @staticmethod
    def _build_model(name: str, recipe: Recipe, input_shape: tuple[int, int, int], num_classes: int):
        from taylorglo_tf import models

        return models.build(name, input_shape=input_shape, num_classes=num_classes, **dict(recipe.model_options))

    def _train_dataset(self, session: _Session, seed: int):
        """The training stream for one attempt, rebuilt so that the order depends only on ``seed``."""
        from taylorglo_tf import data

        images, labels = session.tensors["train"]
        return data.pipeline(
            images, labels, batch_size=session.batch_size, training=True, augment=session.augmentation, seed=seed
        ).repeat()

    def _reset(self, session: _Session, seed: int) -> None:
        """Seed's initial model variables (weights, dropout state), fresh optimizer state."""
        for variable, value in zip(session.model.variables, self._initial_state(session, seed)):
            variable.assign(value)
        for variable, value in zip(session.optimizer.variables, session.optimizer_initial):
            variable.assign(value)
        session.finite.assign(True)
        # The training pipeline is built next; ops seeded from the global seed (and
        # tf.data's seed derivation) must not depend on what ran before.
        keras.utils.set_random_seed(seed)

    def _initial_state(self, session: _Session, seed: int) -> list[np.ndarray]:
        """The model's initial variable values for ``seed`` (kept per session, LRU-bounded)."""
        states = session.initial_states
        if seed in states:
            states.move_to_end(seed)
        else:
            # A throwaway model gives the new seed's initialisation; the session's
            # model (and its compiled steps) stay.
            keras.utils.set_random_seed(seed)
            fresh = self._build_model(session.model_name, session.recipe, session.input_shape, session.num_classes)
            states[seed] = [v.numpy() for v in fresh.variables]
            del fresh
            while len(states) > _KEPT_INITIAL_STATES:
                states.popitem(last=False)
        return states[seed]

    # ------------------------------------------------------------------ losses

    def _compiled_loss(self, session: _Session, loss: Any) -> _CompiledLoss:
        _check_loss(loss)
        signature = _loss_signature(loss)
        compiled = session.losses.get(signature)
        if compiled is None:
            # Own copy: the compiled step must not depend on the caller's object.
            held = type(loss).from_config(loss.get_config())
            one_hot, labels = _labels_for(session, held)
            compiled = _CompiledLoss(
                loss=held,
                settable=signature[2],
                one_hot=one_hot,
                train_step=self._make_train_step(session, held, labels),
                eval_step=self._make_eval_step(session, held, labels),
            )
            session.losses[signature] = compiled
        if compiled.settable:
            compiled.loss.set_theta(loss.theta)
        return compiled

    def _make_train_step(self, session: _Session, loss_fn: Any, labels: Callable):
        model, optimizer, finite = session.model, session.optimizer, session.finite

        @tf.function(jit_compile=session.jit_compile, reduce_retracing=True)
        def train_step(x, y):
            with tf.GradientTape() as tape:
                predictions = model(x, training=True)
                loss = tf.cast(batch_loss(loss_fn, labels, y, predictions), tf.float32)
                total = loss
                if model.losses:  # weight decay as kernel regularisers
                    total = total + tf.add_n([tf.cast(penalty, tf.float32) for penalty in model.losses])
            gradients = tape.gradient(total, model.trainable_variables)
            optimizer.apply(gradients, model.trainable_variables)
            finite.assign(tf.logical_and(finite, tf.math.is_finite(total)))
            return loss

        return train_step

    def _make_eval_step(self, session: _Session, loss_fn: Any, labels: Callable):
        model = session.model

        @tf.function(jit_compile=session.jit_compile, reduce_retracing=True)
        def eval_step(x, y):
            predictions = model(x, training=False)
            y = tf.cast(y, tf.int64)
            rows_finite = tf.reduce_all(tf.math.is_finite(predictions), axis=-1)
            hits = tf.logical_and(tf.equal(tf.argmax(predictions, axis=-1), y), rows_finite)
            batch = tf.cast(tf.shape(y)[0], tf.float32)
            loss = tf.cast(loss_fn(labels(y), predictions), tf.float32)
            return tf.reduce_sum(tf.cast(hits, tf.float32)), loss * batch

        return eval_step

    # ---------------------------------------------------------------- training

    def _train_attempts(
        self, session: _Session, compiled: _CompiledLoss, task: Task, progress: ProgressFn | None
    ) -> tuple[_Attempt, int, np.ndarray]:
        """Train until an attempt ends other than by the abort rule, at most ``task.max_attempts``.

        Returns the last attempt (``retry`` when the abort rule fired on every
        one), its number, and the (wall, CPU) training seconds of all attempts.
        """
        schedule = _schedule(session, task)
        train_time = np.zeros(2)
        for number in range(1, task.max_attempts + 1):
            seed = _initial_seed(task.seed, number)
            self._reset(session, seed)
            attempt, seconds = self._train(
                session, compiled, iter(self._train_dataset(session, seed)), schedule, task, progress
            )
            train_time += seconds
            if attempt.status != "retry":
                return attempt, number, train_time
        return attempt, task.max_attempts, train_time

    def _train(
        self,
        session: _Session,
        compiled: _CompiledLoss,
        batches: Iterator,
        schedule: _Schedule,
        task: Task,
        progress: ProgressFn | None,
    ) -> tuple[_Attempt, np.ndarray]:
        """Run one attempt from the current weights: how it ended, (wall, CPU) seconds of its step loop.

        Every ``progress_every`` steps (and at the last) the divergence flag is read
        and ``progress`` called; after ``schedule.check_step`` the abort rule scores
        the validation split (not counted as training time).
        """
        step_fn = compiled.train_step
        # A time-varying loss (input "t") sees progress through the full recipe.
        set_progress = compiled.loss.set_progress if "t" in getattr(compiled.loss, "inputs", ()) else None
        clock = _LoopClock()
        for step in range(1, schedule.total + 1):
            x, y = next(batches)
            clock.start()
            if set_progress is not None:
                set_progress(schedule.progress_at(step))
            try:
                step_fn(x, y)
            except (tf.errors.InvalidArgumentError, FloatingPointError):
                # e.g. a numerics check inside a loss or an XLA kernel
                return _Attempt("diverged", step), clock.elapsed()
            if schedule.reports_at(step, self.progress_every):
                if not bool(session.finite.numpy()):
                    return _Attempt("diverged", step), clock.elapsed()
                if progress is not None and progress(step, schedule.total) is False:
                    return _Attempt("aborted", step), clock.elapsed()
            if step == schedule.check_step:
                with clock.excluded():
                    accuracy, _ = self._score(session, compiled, "val")
                if accuracy < task.abort_threshold:
                    return _Attempt("retry", step), clock.elapsed()
        return _Attempt("ok" if bool(session.finite.numpy()) else "diverged", schedule.total), clock.elapsed()

    def _scored_outcome(
        self, session: _Session, compiled: _CompiledLoss, attempt: _Attempt, attempts: int, test: bool
    ) -> _Outcome:
        """Score the trained model on the validation split (and test when ``test``); NaN/inf weights: diverged."""
        val_accuracy, val_loss = self._score(session, compiled, "val")
        test_accuracy = test_loss = None
        if test:
            test_accuracy, test_loss = self._score(session, compiled, "test")
        status = attempt.reported()
        if status == "ok" and not self._weights_finite(session):
            status = "diverged"
        return _Outcome(status, attempt.steps, attempts, val_accuracy, val_loss, test_accuracy, test_loss)

    def _score(self, session: _Session, compiled: _CompiledLoss, split: str) -> tuple[float, float]:
        """(accuracy, mean loss) of the current model on ``split`` (never empty: ``data.load`` refuses that).

        Slices of the session's tensors go straight to the compiled step (no input
        pipeline to start); the sums stay tensors, read once at the end.
        """
        images, labels = session.tensors[split]
        count = int(labels.shape[0])
        hits = loss_sum = tf.constant(0.0)
        for start in range(0, count, _EVAL_BATCH):
            batch_hits, batch_loss = compiled.eval_step(
                images[start : start + _EVAL_BATCH], labels[start : start + _EVAL_BATCH]
            )
            hits += batch_hits
            loss_sum += batch_loss
        return float(hits) / count, float(loss_sum) / count

    def _weights_finite(self, session: _Session) -> bool:
        return all(bool(np.all(np.isfinite(v.numpy()))) for v in session.model.trainable_variables)

    # -------------------------------------------------------------- populations

    def _population(self, session: _Session, size: int) -> Population:
        """The session's model copies, at least ``size`` of them (a larger batch replaces a smaller one)."""
        population = session.population
        if population is not None and population.size >= size:
            return population
        models = [
            self._build_model(session.model_name, session.recipe, session.input_shape, session.num_classes)
            for _ in range(size)
        ]
        optimizers = [session.recipe.optimizer(session.steps_per_epoch, lr_scale=session.lr_scale) for _ in models]
        for model, optimizer in zip(models, optimizers):
            optimizer.build(model.trainable_variables)
        session.population = Population(
            models=models,
            optimizers=optimizers,
            optimizer_initial=[[v.numpy() for v in optimizer.variables] for optimizer in optimizers],
            finite=[tf.Variable(True, trainable=False) for _ in models],
            jit_compile=session.jit_compile,
        )
        return session.population

    def _population_loss(self, session: _Session, population: Population, group: list[Any]) -> PopulationLoss:
        """The population's steps for the losses' form, each slot's loss set to its candidate's theta."""
        signature = _loss_signature(group[0])
        compiled = population.losses.get(signature)
        if compiled is None:
            held = [type(group[0]).from_config(group[0].get_config()) for _ in range(population.size)]
            _, labels = _labels_for(session, held[0])
            compiled = population.compile_loss(held, signature[2], labels, batch_loss)
            population.losses[signature] = compiled
        if compiled.settable:
            for slot_loss, loss in zip(compiled.losses, group):
                slot_loss.set_theta(loss.theta)
        return compiled

    def _train_together(
        self, session: _Session, group: list[Any], task: Task, progress: list[ProgressFn | None], test: bool
    ) -> tuple[list[_Outcome], np.ndarray, np.ndarray]:
        """Train the losses of one form in population slots 0..len(group)-1, all attempts, and score them.

        Returns the outcome per loss, the (wall, CPU) training seconds, and when
        validation started.
        """
        population = self._population(session, len(group))
        compiled = self._population_loss(session, population, group)
        schedule = _schedule(session, task)
        count = len(group)
        ended: dict[int, _Attempt] = {}
        attempts = [0] * count
        pending = list(range(count))
        train_time = np.zeros(2)
        for number in range(1, task.max_attempts + 1):
            seed = _initial_seed(task.seed, number)
            population.reset(pending, self._initial_state(session, seed))
            keras.utils.set_random_seed(seed)  # as _reset: the pipeline's seeding must not depend on history
            batches = iter(self._train_dataset(session, seed))
            this_attempt, seconds = self._train_population(
                session, population, compiled, batches, pending, schedule, task, progress
            )
            train_time += seconds
            ended.update(this_attempt)
            for slot in this_attempt:
                attempts[slot] = number
            pending = [slot for slot in pending if ended[slot].status == "retry"]
            if not pending:
                break
        validation_started = _clock()
        everyone = np.ones(count, dtype=bool)
        val_accuracy, val_loss = self._score_population(session, population, compiled, "val", everyone)
        tested = self._score_population(session, population, compiled, "test", everyone) if test else None
        outcomes = []
        for k in range(count):
            status = ended[k].reported()
            if status == "ok" and not population.weights_finite(k):
                status = "diverged"
            test_accuracy, test_loss = (None, None) if tested is None else (float(tested[0][k]), float(tested[1][k]))
            outcomes.append(
                _Outcome(
                    status,
                    ended[k].steps,
                    attempts[k],
                    float(val_accuracy[k]),
                    float(val_loss[k]),
                    test_accuracy,
                    test_loss,
                )
            )
        return outcomes, train_time, validation_started

    def _train_population(
        self,
        session: _Session,
        population: Population,
        compiled: PopulationLoss,
        batches: Iterator,
        slots: Sequence[int],
        schedule: _Schedule,
        task: Task,
        progress: list[ProgressFn | None],
    ) -> tuple[dict[int, _Attempt], np.ndarray]:
        """One attempt of the candidates in ``slots``: how each ended, (wall, CPU) seconds of the step loop.

        The same rules as ``_train``, applied per slot, in the same order (NaN
        check, then ``progress``, then the abort rule) so that every candidate
        stops exactly where it would alone.
        """
        active = np.zeros(max(slots) + 1, dtype=bool)  # the step runs this many copies, no more
        active[list(slots)] = True
        ended: dict[int, _Attempt] = {}
        # Non-trainable state of candidates stopped before the last step: their copy's
        # forward pass goes on while others train (see training.population).
        stopped_state: dict[int, list[np.ndarray]] = {}

        def stop(slot: int, status: AttemptStatus, step: int) -> None:
            ended[slot] = _Attempt(status, step)
            active[slot] = False
            if step < schedule.total:
                stopped_state[slot] = population.non_trainable_state(slot)

        time_varying = "t" in getattr(compiled.losses[0], "inputs", ())
        clock = _LoopClock()
        for step in range(1, schedule.total + 1):
            if not active.any():
                break
            x, y = next(batches)
            clock.start()
            if time_varying:
                for loss in compiled.losses:
                    loss.set_progress(schedule.progress_at(step))
            try:
                compiled.train_step(x, y, active)
            except (tf.errors.InvalidArgumentError, FloatingPointError) as error:
                raise _BatchFailed() from error
            if schedule.reports_at(step, self.progress_every):
                finite = population.finite_flags()
                for slot in np.flatnonzero(active).tolist():
                    report = progress[slot]
                    if not finite[slot]:
                        stop(slot, "diverged", step)
                    elif report is not None and report(step, schedule.total) is False:
                        stop(slot, "aborted", step)
            if step == schedule.check_step and active.any():
                with clock.excluded():
                    accuracy, _ = self._score_population(session, population, compiled, "val", active)
                for slot in np.flatnonzero(active).tolist():
                    if accuracy[slot] < task.abort_threshold:
                        stop(slot, "retry", step)
        finite = population.finite_flags()
        for slot in np.flatnonzero(active).tolist():
            stop(slot, "ok" if finite[slot] else "diverged", schedule.total)
        for slot, state in stopped_state.items():
            population.restore_non_trainable(slot, state)
        return ended, clock.elapsed()

    def _score_population(self, session, population, compiled, split, active) -> tuple[np.ndarray, np.ndarray]:
        """Per slot of ``active`` (accuracy, mean loss) on ``split``; slots not ``active`` score 0."""
        images, labels = session.tensors[split]
        count = int(labels.shape[0])
        sums = tf.zeros((len(active), 2))
        for start in range(0, count, _EVAL_BATCH):
            sums += compiled.eval_step(images[start : start + _EVAL_BATCH], labels[start : start + _EVAL_BATCH], active)
        sums = sums.numpy().astype(np.float64) / count
        return sums[:, 0], sums[:, 1]


def _check_task(task: Any) -> None:
    if not isinstance(task, Task):
        raise TypeError(f"task must be a training.Task, got {type(task).__name__}")


def _schedule(session: _Session, task: Task) -> _Schedule:
    """The task's schedule on the session's data: ``task.steps`` (0: the whole recipe), the abort check's step."""
    full_length = session.recipe.total_steps(session.steps_per_epoch)
    return _Schedule(
        total=task.steps or full_length,
        full_length=full_length,
        check_step=math.ceil(task.abort_check_epoch * session.steps_per_epoch),
    )


def evaluate(loss: Any, task: Task, progress: ProgressFn | None = None) -> EvaluationResult:
    """One-shot evaluation of ``loss`` on ``task`` (builds and discards an ``Evaluator``)."""
    return Evaluator().evaluate(loss, task, progress)
