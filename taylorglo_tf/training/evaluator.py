"""Partial training of a model with a candidate loss, scored by validation accuracy.

One training loop: ``evaluate`` is ``evaluate_many`` of one candidate. The loop
trains the candidates of one loss form side by side, in one compiled step over
model copies (``training.population``), and applies the stop rules per
candidate, all in :class:`_Attempt`: NaN/inf (``diverged``), the caller's
``progress`` answering False (``aborted``), the abort rule (retried with the next
seed, then ``aborted``); a candidate that stops leaves the others training on.
At early-stopping checkpoints (``checkpoints``, fractions of the steps) one
validation pass tells each running candidate's ``on_checkpoint`` hook its
accuracy, right before its ``progress`` call, which may stop it on that value.
What a task's evaluations share (data as tensors, the copies, initial weights)
is its session (``training.session``), kept between calls: a candidate that
differs from the previous one only in theta runs without retracing.

Determinism: with the same seed, an evaluation re-runs the same initial weights,
dropout masks, data order and augmentation (each attempt builds its training
pipeline over the session's tensors with that seed: no data is copied), alone or
beside others. TensorFlow does not promise bitwise-equal float results across
runs of multi-threaded CPU kernels (reduction order) unless
``tf.config.experimental.enable_op_determinism()`` is on, which we leave to the
caller because it slows some ops; results then agree to rounding.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from taylorglo_tf.spec import check_checkpoints, checkpoint_steps
from taylorglo_tf.training import session as sessions
from taylorglo_tf.training.population import Population, PopulationLoss, loss_signature
from taylorglo_tf.training.session import Session
from taylorglo_tf.training.task import EvaluationResult, Status, Task

ProgressFn = Callable[[int, int], "bool | None"]
CheckpointFn = Callable[[int, int, float], None]
"""``on_checkpoint(index, steps, val_accuracy)``: a candidate's validation accuracy at early-stopping checkpoint
``index`` (0-based), measured after ``steps`` optimizer steps of its attempt."""
# How a training attempt ends for one candidate: a result's status, or "retry" when the abort rule fired.
AttemptStatus = Literal["ok", "diverged", "aborted", "retry"]

# XLA on/off was measured with benchmarks/evaluation.py (docs/BENCHMARKS.md): on CPU
# XLA is slower for these convnets, so it is off by default; GPUs may differ.
DEFAULT_JIT_COMPILE = False


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, keras.losses.Loss):
        raise TypeError(f"loss must be a keras.losses.Loss, got {type(loss).__name__}")


def _check_task(task: Any) -> None:
    if not isinstance(task, Task):
        raise TypeError(f"task must be a training.Task, got {type(task).__name__}")


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
class _Ended:
    """How one training attempt of one candidate ended."""

    status: AttemptStatus  # aborted: stopped by ``progress``
    steps: int  # optimizer steps done

    def reported(self) -> Status:
        """The status of a result that ends with this attempt: the abort rule firing on the last one is ``aborted``."""
        return "aborted" if self.status == "retry" else self.status


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


@dataclass(frozen=True)
class _Plan:
    """What every chunk of one ``evaluate_many`` call trains with (indexed by loss)."""

    task: Task
    progress: list[ProgressFn | None]
    checkpoints: tuple[float, ...]
    on_checkpoint: list[CheckpointFn | None]
    test: bool


@dataclass
class _Times:
    """(wall, CPU) seconds of one ``evaluate_many`` call's phases, over its attempts and chunks."""

    train: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))
    checkpoint: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))
    wait: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))
    passes: int = 0

    def add(self, train: np.ndarray, attempt: _Attempt) -> None:
        self.train += train
        self.checkpoint += attempt.checkpoint_time
        self.wait += attempt.wait_time
        self.passes += attempt.checkpoint_passes


class _BatchFailed(Exception):
    """The train step of several candidates raised (e.g. a numerics check): the one to blame is unknown."""


class _Attempt:
    """One training attempt of the candidates in ``slots``: the per-candidate stop rules, in one place.

    After each step, in this order (every candidate stops exactly where it would alone):

    1. at a report step (every ``progress_every`` steps, the last, and each
       early-stopping checkpoint's), NaN/inf in a candidate's training loss since
       the reset: ``diverged``;
    2. at a checkpoint's step, one validation pass over the candidates still
       running, then ``on_checkpoint[slot](index, step, accuracy)`` for each (not
       counted as training time; ``checkpoint_time`` has its seconds);
    3. at a report step, its ``progress(steps_done, total)`` answering False
       (cancelled, lease lost, stopped by the early-stopping rule: a progress
       callback may block here on the coordinator's decision): ``aborted``;
    4. at ``schedule.check_step``, its validation accuracy below
       ``task.abort_threshold``: ``retry`` (the abort rule; not counted as training
       time; a checkpoint's pass at the same step is reused).

    A train step that raises stops its candidate as ``diverged`` when it trains
    alone, else raises :class:`_BatchFailed`. A candidate still training after the
    last step ends ``ok`` (``diverged`` with a non-finite loss).
    """

    def __init__(
        self,
        session: Session,
        population: Population,
        compiled: PopulationLoss,
        slots: Sequence[int],
        task: Task,
        progress: Sequence[ProgressFn | None],
        every: int,
        checkpoints: Sequence[float] = (),
        on_checkpoint: Sequence[CheckpointFn | None] = (),
    ) -> None:
        self.session, self.population, self.compiled = session, population, compiled
        self.schedule = session.schedule(task)
        self.task, self.progress, self.every = task, progress, every
        # step -> the checkpoints measured there (a short run may put several at one step)
        self.checkpoints: dict[int, list[int]] = collections.defaultdict(list)
        for index, step in enumerate(checkpoint_steps(checkpoints, self.schedule.total)):
            self.checkpoints[step].append(index)
        self.on_checkpoint = on_checkpoint
        # per slot, (index, steps, val_accuracy) of each checkpoint it reached in this attempt
        self.values: dict[int, list[tuple[int, int, float]]] = collections.defaultdict(list)
        self.checkpoint_time = np.zeros(2)  # (wall, CPU) seconds of the checkpoint passes
        self.wait_time = np.zeros(2)  # (wall, CPU) seconds in progress callbacks at checkpoints
        self.checkpoint_passes = 0
        self.active = np.zeros(max(slots) + 1, dtype=bool)  # the step runs this many copies, no more
        self.active[list(slots)] = True
        self.ended: dict[int, _Ended] = {}
        self.clock = _LoopClock()

    def running(self) -> list[int]:
        return np.flatnonzero(self.active).tolist()

    def stop(self, slot: int, status: AttemptStatus, step: int) -> None:
        self.ended[slot] = _Ended(status, step)
        self.active[slot] = False  # its copy does no more work (training.population)

    def run(self, batches: Iterator) -> tuple[dict[int, _Ended], np.ndarray]:
        """Train from the current weights: how each candidate ended, (wall, CPU) seconds of the step loop."""
        schedule, compiled = self.schedule, self.compiled
        # A time-varying loss (input "t") sees progress through the full recipe.
        time_varying = "t" in getattr(compiled.losses[0], "inputs", ())
        for step in range(1, schedule.total + 1):
            if not self.active.any():
                break
            x, y = next(batches)
            self.clock.start()
            if time_varying:
                for loss in compiled.losses:
                    loss.set_progress(schedule.progress_at(step))
            try:
                compiled.train_step(x, y, self.active)
            except (tf.errors.InvalidArgumentError, FloatingPointError) as error:
                # e.g. a numerics check inside a loss or an XLA kernel
                if len(self.running()) > 1:
                    raise _BatchFailed() from error
                self.stop(self.running()[0], "diverged", step)
                break
            self.apply_stop_rules(step)
        finite = self.population.finite_flags()
        for slot in self.running():
            self.stop(slot, "ok" if finite[slot] else "diverged", schedule.total)
        return self.ended, self.clock.elapsed()

    def apply_stop_rules(self, step: int) -> None:
        checkpoints = self.checkpoints.get(step, ())
        accuracy: np.ndarray | None = None  # of this step's validation pass, when there is one
        if checkpoints or self.schedule.reports_at(step, self.every):
            finite = self.population.finite_flags()
            for slot in self.running():
                if not finite[slot]:
                    self.stop(slot, "diverged", step)
            if checkpoints and self.active.any():
                accuracy = self.measure_checkpoints(step, checkpoints)
            # At a checkpoint, progress may wait for the coordinator's decision: not training time.
            paused = _clock()
            with self.clock.excluded() if checkpoints else contextlib.nullcontext():
                for slot in self.running():
                    report = self.progress[slot]
                    if report is not None and report(step, self.schedule.total) is False:
                        self.stop(slot, "aborted", step)
            if checkpoints:
                self.wait_time += _clock() - paused
        if step == self.schedule.check_step and self.active.any():
            if accuracy is None:  # the weights have not moved since a checkpoint's pass at this step
                with self.clock.excluded():
                    accuracy, _ = self.session.score(self.compiled, "val", self.active)
            for slot in self.running():
                if accuracy[slot] < self.task.abort_threshold:
                    self.stop(slot, "retry", step)

    def measure_checkpoints(self, step: int, indices: Sequence[int]) -> np.ndarray:
        """One validation pass over the running candidates at ``step``, given to each one's hook per checkpoint."""
        paused = _clock()
        with self.clock.excluded():
            accuracy, _ = self.session.score(self.compiled, "val", self.active)
        self.checkpoint_time += _clock() - paused
        self.checkpoint_passes += 1
        for slot in self.running():
            value = float(accuracy[slot])
            hook = self.on_checkpoint[slot] if self.on_checkpoint else None
            for index in indices:
                self.values[slot].append((index, step, value))
                if hook is not None:
                    hook(index, step, value)
        return accuracy


class Evaluator:
    """Evaluates candidate losses on tasks, reusing everything reusable between calls.

    Formula:

    ```python
    fitness = val_accuracy(model trained task.steps steps with loss) if status == "ok" else 0.0
    ```

    :meth:`evaluate` trains ``task.model`` on ``task.dataset`` with the candidate
    loss for the first ``task.steps`` steps of the model's recipe and scores it
    on the validation split (``EvaluationResult``); :meth:`evaluate_many` trains
    several candidates of one task in one compiled step. Both run one loop, the
    population loop (``evaluate`` is a population of one). Per task the evaluator
    keeps a session (the data as tensors, the model copies with their optimizers,
    the compiled steps), so a loss that differs from the last one only in theta
    trains without retracing.

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
        self._sessions: collections.OrderedDict[tuple, Session] = collections.OrderedDict()  # LRU first
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
        checkpoints: Sequence[float] = (),
        on_checkpoint: CheckpointFn | None = None,
    ) -> EvaluationResult:
        """Train ``task.model`` on ``task.dataset`` with ``loss`` and score it.

        Runs the first ``task.steps`` optimizer steps of the model's recipe (whole
        recipe when 0), then measures accuracy and mean loss on the validation
        split (and the test split when ``test``). NaN/inf in the training loss or
        the weights ends the attempt with status ``diverged`` (fitness 0). The
        abort rule (accuracy below ``task.abort_threshold`` at epoch
        ``task.abort_check_epoch``) retries with a fresh seed up to
        ``task.abort_attempts`` attempts, then reports ``aborted``.

        ``progress(steps_done, total_steps)`` is called every ``progress_every``
        steps and at the end of training; returning ``False`` stops the evaluation
        with status ``aborted``.

        ``checkpoints`` (fractions in (0, 1] of the steps, ascending) are where
        ``on_checkpoint(index, steps, val_accuracy)`` hears the validation accuracy
        (see :meth:`evaluate_many`); the result's ``checkpoints`` repeat them. This
        is :meth:`evaluate_many` of one loss.

        Example:

        >>> from taylorglo_tf import taylor
        >>> from taylorglo_tf.losses import TaylorGLOLoss
        >>> from taylorglo_tf.training import Evaluator, Task
        >>> heard = []
        >>> result = Evaluator().evaluate(
        ...     TaylorGLOLoss(taylor.PAPER_MNIST_THETA),
        ...     Task(dataset="digits", model="tiny", steps=20),
        ...     checkpoints=[0.25, 0.5],
        ...     on_checkpoint=lambda index, steps, accuracy: heard.append((index, steps)),
        ... )
        >>> heard, [steps for _, steps, _ in result.checkpoints]
        ([(0, 5), (1, 10)], [5, 10])
        """
        _check_task(task)
        _check_loss(loss)
        return self.evaluate_many(
            [loss], task, [progress], test=test, checkpoints=checkpoints, on_checkpoint=[on_checkpoint]
        )[0]

    def evaluate_many(
        self,
        losses: Sequence[Any],
        task: Task,
        progress: Sequence[ProgressFn | None] | None = None,
        *,
        test: bool = False,
        checkpoints: Sequence[float] = (),
        on_checkpoint: Sequence[CheckpointFn | None] | None = None,
    ) -> list[EvaluationResult]:
        """Train ``task.model`` once per loss, all at once, and score each: one result per loss.

        The candidates train side by side in one compiled step (see
        ``training.population``): each has its own model copy, optimizer state and
        theta, and gets the same batches, initial weights and dropout and
        augmentation randomness as it would alone, so its result does not depend
        on the others (equal to rounding). Everything that :meth:`evaluate` does is
        per candidate (the stop rules of ``_Attempt``): a candidate whose loss or
        weights turn NaN/inf stops and is ``diverged`` while the others go on; the
        abort rule's retries run the candidates that hit it together, with the
        next attempt's seed; ``progress[i](steps_done, total_steps)`` reports
        candidate ``i`` and returning ``False`` stops only that one (``aborted``).

        Losses of different forms (class and configuration other than theta)
        train in one batch per form. ``wall_time_s`` of each result is the whole
        call's. If the step of several candidates raises (a numerics check inside
        a loss), they are trained again one at a time, so the failure lands on its
        own candidate.

        Early-stopping checkpoints: checkpoint ``i`` of an attempt is at step

        ```python
        step_i = min(total, max(1, round(checkpoints[i] * total)))  # total: the schedule's steps
        ```

        where, after the train step, one validation pass scores the candidates
        still running and ``on_checkpoint[k](i, step_i, val_accuracy)`` hears
        candidate ``k``'s accuracy; the step is a report step, so ``progress[k]``
        is called right after and may wait for a decision on that value and answer
        False to stop the candidate (``aborted``, with the steps it trained). The
        passes and those waits are not training time: ``last_timings`` has them as
        ``checkpoint_s``/``checkpoint_cpu_s`` (``checkpoint_passes`` of them) and
        ``checkpoint_wait_s``. A candidate's result does not depend on the
        checkpoints (equal to rounding to a run without them), and each result's
        ``checkpoints`` lists ``(index, steps, val_accuracy)`` of its last attempt.

        Args:
            losses: the candidate losses (``keras.losses.Loss``).
            task: the ``training.Task`` they all train on.
            progress: one ``progress(steps_done, total_steps)`` or None per loss.
            test: also score the test split (``test_accuracy``, ``test_loss``).
            checkpoints: fractions in (0, 1] of the steps, ascending (at most
                ``limits.MAX_CHECKPOINT_VALUES``); empty: none.
            on_checkpoint: one ``on_checkpoint(index, steps, val_accuracy)`` or
                None per loss; None: no hooks.

        Raises:
            ValueError: naming bad ``checkpoints``, or ``progress`` or
                ``on_checkpoint`` of another length than ``losses``.
        """
        _check_task(task)
        losses = list(losses)
        for loss in losses:
            _check_loss(loss)
        progress = [None] * len(losses) if progress is None else list(progress)
        if len(progress) != len(losses):
            raise ValueError(
                f"progress has {len(progress)} callbacks for {len(losses)} losses; give one per loss or None"
            )
        fractions = check_checkpoints(checkpoints)
        hooks: list[CheckpointFn | None] = [None] * len(losses) if on_checkpoint is None else list(on_checkpoint)
        if len(hooks) != len(losses):
            raise ValueError(
                f"on_checkpoint has {len(hooks)} hooks for {len(losses)} losses; give one per loss or None"
            )
        if not losses:
            return []
        started = _clock()
        session = self._session(task)
        groups: dict[tuple, list[int]] = collections.defaultdict(list)
        for index, loss in enumerate(losses):
            groups[loss_signature(loss)].append(index)
        outcomes: dict[int, EvaluationResult] = {}
        times = _Times()
        validation_started = None
        # A source that gives fewer copies than candidates (a model that cannot be cloned) trains them in turns.
        width = session.max_copies or len(losses)
        chunks = [group[i : i + width] for group in groups.values() for i in range(0, len(group), width)]
        for indices in chunks:
            plan = _Plan(task, progress, fractions, hooks, test)
            try:
                batches = [indices]
                trained = [self._train_together(session, losses, indices, plan, times)]
            except _BatchFailed:  # alone, a step that raises is its candidate's divergence
                batches = [[i] for i in indices]
                trained = [self._train_together(session, losses, [i], plan, times) for i in indices]
            for batch, (results, scoring_started) in zip(batches, trained):
                outcomes.update(zip(batch, results))
                validation_started = scoring_started
        self._record_timings(started, times, _clock() if validation_started is None else validation_started)
        wall_time_s = self.last_timings["total_s"]
        return [dataclasses.replace(outcomes[index], wall_time_s=wall_time_s) for index in range(len(losses))]

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

        The models train on the task's data with the paper's MNIST TaylorGLO loss.
        Times at least ``steps`` steps and ``seconds`` seconds; ``ready()`` is called
        after the warm-up, before the clock starts (e.g. to wait for other processes).
        """
        from taylorglo_tf import taylor
        from taylorglo_tf.losses import TaylorGLOLoss

        _check_task(task)
        session = self._session(task)
        losses = [TaylorGLOLoss(taylor.PAPER_MNIST_THETA) for _ in range(candidates)]
        compiled = session.steps_for(losses, batch_loss)
        active = np.ones(candidates, dtype=bool)
        iterator = session.train_batches(task.seed)

        def step() -> None:
            x, y = next(iterator)
            compiled.train_step(x, y, active).numpy()

        step()  # traces and warms up
        if ready is not None:
            ready()
        started = time.perf_counter()
        done = 0
        while done < steps or time.perf_counter() - started < seconds:
            step()
            done += 1
        return candidates * done / (time.perf_counter() - started)

    def trace_count(self) -> int:
        """Total traces of all compiled steps so far (tests check for retracing)."""
        return sum(s.population.trace_count() for s in self._sessions.values() if s.population)

    def _record_timings(self, started: np.ndarray, times: _Times, validation_started: np.ndarray) -> None:
        finished = _clock()
        phases = {
            "total": finished - started,
            "train_steps": times.train,
            "validation": finished - validation_started,
            "checkpoint": times.checkpoint,
            "checkpoint_wait": times.wait,
        }
        self.last_timings = {
            f"{phase}_{kind}": float(seconds[i])
            for phase, seconds in phases.items()
            for i, kind in enumerate(("s", "cpu_s"))
        }
        self.last_timings["checkpoint_passes"] = float(times.passes)

    # ---------------------------------------------------------------- sessions

    def _session(self, task: Task) -> Session:
        key = sessions.key(task)
        if key in self._sessions:
            self._sessions.move_to_end(key)
        else:
            self._sessions[key] = Session.open(task, self.jit_compile)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        session = self._sessions[key]
        # The optimizers read the rate's multiple at every step: another lr_scale
        # needs no new session and no retracing.
        session.lr_scale.assign(task.lr_scale)
        return session

    def _train_together(
        self,
        session: Session,
        losses: list[Any],
        indices: list[int],
        plan: _Plan,
        times: _Times,
    ) -> tuple[list[EvaluationResult], np.ndarray]:
        """Train ``losses[indices]`` (of one form) in population slots 0..len(indices)-1, all attempts,
        and score them: the outcome per loss and when validation started; ``times`` adds up the phases."""
        task, test = plan.task, plan.test
        count = len(indices)
        compiled = session.steps_for([losses[i] for i in indices], batch_loss)
        population = session.copies(count)
        slot_progress = [plan.progress[i] for i in indices]
        slot_hooks = [plan.on_checkpoint[i] for i in indices]
        ended: dict[int, _Ended] = {}
        values: dict[int, list[tuple[int, int, float]]] = {}
        attempts = [0] * count
        pending = list(range(count))
        for number in range(1, task.abort_attempts + 1):
            seed = _initial_seed(task.seed, number)
            population.reset(pending, session.initial_state(seed))
            attempt = _Attempt(
                session,
                population,
                compiled,
                pending,
                task,
                slot_progress,
                self.progress_every,
                plan.checkpoints,
                slot_hooks,
            )
            this_attempt, seconds = attempt.run(session.train_batches(seed))
            times.add(seconds, attempt)
            ended.update(this_attempt)
            for slot in this_attempt:
                attempts[slot] = number
                values[slot] = attempt.values.get(slot, [])
            pending = [slot for slot in pending if ended[slot].status == "retry"]
            if not pending:
                break
        validation_started = _clock()
        everyone = np.ones(count, dtype=bool)
        val_accuracy, val_loss = session.score(compiled, "val", everyone)
        tested = session.score(compiled, "test", everyone) if test else None
        outcomes = []
        for k in range(count):
            status = ended[k].reported()
            if status == "ok" and not population.weights_finite(k):
                status = "diverged"
            outcomes.append(
                EvaluationResult(
                    fitness=float(val_accuracy[k]) if status == "ok" else 0.0,
                    val_accuracy=float(val_accuracy[k]),
                    val_loss=float(val_loss[k]),
                    steps=ended[k].steps,
                    wall_time_s=0.0,  # the whole call's, known at its end
                    attempts=attempts[k],
                    status=status,
                    test_accuracy=None if tested is None else float(tested[0][k]),
                    test_loss=None if tested is None else float(tested[1][k]),
                    checkpoints=tuple(values.get(k, ())),
                )
            )
        return outcomes, validation_started


def evaluate(loss: Any, task: Task, progress: ProgressFn | None = None) -> EvaluationResult:
    """One-shot evaluation of ``loss`` on ``task`` (builds and discards an ``Evaluator``)."""
    return Evaluator().evaluate(loss, task, progress)
