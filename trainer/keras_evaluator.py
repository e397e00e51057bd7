"""The trainer's one evaluation adapter: leases in, one result per lease out, trained as a population.

``KerasEvaluator(data_dir=..., candidates_per_step=K, xla=...)`` is what
``taylorglo trainer --evaluator keras`` hands to :class:`taylorglo_tf.trainer.worker.Worker`.
Its interface with the worker is all here:

``evaluate_many(leases, heartbeats) -> list[Outcome | BaseException]``
    ``leases``: K >= 1 ``worker_service_pb2.Lease`` (one LeaseCandidate call's, so
    usually of one task); ``heartbeats[i]``: lease i's ``heartbeat(steps_done) ->
    keep_going``. Blocking (TensorFlow): the worker runs it in one thread. The
    i-th entry of the result belongs to ``leases[i]``:

    - an :class:`~taylorglo_tf.trainer.worker.Outcome` (status ok/diverged/aborted,
      fitness = validation accuracy, metrics, the values at the lease's
      early-stopping checkpoints): report it; status ``"stopped"`` (fitness 0,
      the steps it trained) when its heartbeat says the early-stopping rule
      stopped it (``heartbeat.stopped_early``);
    - :class:`~taylorglo_tf.trainer.worker.EvaluationStopped`: its heartbeat asked
      it to stop; do not report it (give the lease back or let it go);
    - :class:`taylorglo_tf.training.sources.UnknownSource`: a ``script:`` model this
      process has not registered (another script's experiment): give the lease back
      unspent;
    - any other exception (bad task, missing data, a ``python:`` builder that does not
      import, theta of the wrong length, training failure): report it as status ERROR
      (a model source's error is also logged once per trainer).

    It never raises for a candidate's failure; an exception out of the call is a bug.

``heartbeat(steps_done) -> keep_going`` (the worker's, one per lease)
    Progress and stop request in one call. Called from the training thread: once
    with 0 before training starts, then every ``Evaluator.progress_every`` steps
    and at a candidate's last step (``steps_done`` starts again from 1 when the
    abort rule retries a candidate with a fresh seed). It must be cheap (no RPC:
    the worker sends the Heartbeat RPCs itself) and thread-safe. Returning False
    stops that candidate only, at once; the others train on.

``heartbeat.checkpoint(index, steps, val_accuracy)`` (when the heartbeat has it)
    The candidate's validation accuracy at each of ``lease.checkpoints`` (fractions
    of the steps), measured by the training loop and called just before the
    ``heartbeat(steps)`` of that step, which may block until the coordinator
    decides (see :mod:`taylorglo_tf.trainer.worker`).

``__call__(lease, heartbeat) -> Outcome``
    One lease alone (the older ``evaluate_fn`` form); raises what its entry would hold.

``candidates_per_step`` (an int, or ``"auto"`` until measured) and ``on_chosen``
    With ``candidates_per_step="auto"`` (or ``xla="auto"``) the first task measures
    K (and XLA on/off) on this device with :func:`taylorglo_tf.training.tuning.choose`
    (at most :data:`~taylorglo_tf.training.tuning.CPU_MAX_CANDIDATES` on a CPU);
    ``on_chosen(K)``, when set, then tells the worker to lease K at a time.

How leases map to training: ``Task.from_proto(lease.task, data_dir)`` (the dataset's
``idx:``/``npz:`` path strictly under ``data_dir``: absolute paths, ``..`` and
symlinks leading out are refused, naming the path); a
:class:`~taylorglo_tf.losses.TaylorGLOLoss` of the lease's form (``LossSpec`` order
and inputs) and theta; the leases of one task train together in one
:meth:`taylorglo_tf.training.Evaluator.evaluate_many` of a long-lived
``Evaluator`` (the task's data, models and compiled steps stay warm from one batch
to the next; a new theta needs no retracing), leases of different tasks one task
after another (leases with other early-stopping checkpoints too). TensorFlow is
imported when the first lease is trained, not at import.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taylorglo_tf import spec as spec_module
from taylorglo_tf import taylor
from taylorglo_tf.rpc import types_pb2, worker_service_pb2
from taylorglo_tf.training import Task, sources

from .worker import EvaluationStopped, Heartbeat, Outcome, Result, check_candidates_per_step

log = logging.getLogger(__name__)

XLA_SETTINGS = ("on", "off", "auto")


@dataclass
class _Candidate:
    """One lease in training: its heartbeat is the progress hook, and a False answer its stop request."""

    lease: Any
    heartbeat: Heartbeat
    loss: Any
    stopped: bool = False

    def progress(self, steps_done: int, total_steps: int) -> bool:
        if not self.heartbeat(int(steps_done)):
            self.stopped = True
        return not self.stopped

    @property
    def on_checkpoint(self) -> Callable[[int, int, float], None] | None:
        return getattr(self.heartbeat, "checkpoint", None)

    @property
    def stopped_early(self) -> bool:
        """The early-stopping rule stopped it: reported as ``"stopped"``, not given back."""
        return self.stopped and bool(getattr(self.heartbeat, "stopped_early", False))


class KerasEvaluator:
    """Trains leased candidates with TensorFlow/Keras: ``evaluate_many(leases, heartbeats)`` (see the module).

    Args:
        data_dir: the trainer's data directory (TFDS downloads and ``idx:``/``npz:``
            files); None allows only ``digits`` and ``tfds:`` datasets in TFDS's
            default place. Must exist.
        evaluator: a :class:`taylorglo_tf.training.Evaluator` to use (default: one
            created on first use, with ``xla``'s setting, kept for the trainer's lifetime).
        candidates_per_step: K, the most candidates one train step holds (1..
            ``limits.MAX_LEASE_CANDIDATES``), or ``"auto"`` to measure it.
        xla: ``"on"``, ``"off"`` or ``"auto"`` (measured with K on the first task).

    Raises:
        ValueError: naming a missing ``data_dir``, a bad ``candidates_per_step`` or ``xla``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        evaluator: Any = None,
        candidates_per_step: int | str = 1,
        xla: str = "off",
    ) -> None:
        if data_dir is not None and not Path(data_dir).is_dir():
            raise ValueError(f"data directory {str(data_dir)!r} does not exist or is not a directory")
        self.data_dir = None if data_dir is None else Path(data_dir).resolve()
        self._evaluator = evaluator
        self.configure(candidates_per_step, xla)
        # Called with the measured K when candidates_per_step is "auto" (the worker then leases K at a time).
        self.on_chosen: Callable[[int], None] | None = None
        # One training at a time (the models are shared); the lock makes that a guarantee.
        self._lock = threading.Lock()
        self.evaluations = 0  # candidates trained (tests, logs)
        self.batch_sizes: list[int] = []  # candidates per trained batch (tests, logs)
        self._source_errors: set[str] = set()  # model source errors already logged

    def configure(self, candidates_per_step: int | str, xla: str = "off") -> None:
        """Sets K (or ``"auto"``) and the XLA setting (ValueError names a bad one)."""
        if candidates_per_step != "auto":
            try:
                check_candidates_per_step(candidates_per_step)
            except ValueError:
                raise ValueError(
                    f"candidates_per_step must be an integer >= 1 or 'auto', got {candidates_per_step!r}"
                ) from None
        if xla not in XLA_SETTINGS:
            raise ValueError(f"xla must be one of {XLA_SETTINGS}, got {xla!r}")
        self.candidates_per_step = candidates_per_step
        self.xla = xla
        self._tuned = candidates_per_step != "auto" and xla != "auto"

    @property
    def evaluator(self) -> Any:
        """The long-lived training Evaluator (created on first use; imports TensorFlow)."""
        if self._evaluator is None:
            from taylorglo_tf.training import Evaluator

            self._evaluator = Evaluator(jit_compile=self.xla == "on")
        return self._evaluator

    @evaluator.setter
    def evaluator(self, evaluator: Any) -> None:
        self._evaluator = evaluator

    def loss_for(self, loss_spec: types_pb2.LossSpec, theta: Any) -> Any:
        """A :class:`TaylorGLOLoss` of ``loss_spec``'s form with ``theta`` (ValueError names a bad length)."""
        order, inputs = spec_module.loss_form(loss_spec)
        expected = taylor.expected_theta_length(order, inputs)
        if len(theta) != expected:
            raise ValueError(
                f"lease theta has {len(theta)} entries; a loss of order {order} in {list(inputs)} needs {expected}"
            )
        from taylorglo_tf.losses import TaylorGLOLoss

        return TaylorGLOLoss(list(theta), order=order, inputs=inputs)

    def task(self, lease: worker_service_pb2.Lease) -> Task:
        """The lease's :class:`Task` with this trainer's data directory (ValueError names a bad dataset)."""
        return Task.from_proto(lease.task, self.data_dir)

    def __call__(self, lease: worker_service_pb2.Lease, heartbeat: Heartbeat) -> Outcome:
        [result] = self.evaluate_many([lease], [heartbeat])
        if isinstance(result, BaseException):
            raise result
        return result

    def evaluate_many(self, leases: Sequence[Any], heartbeats: Sequence[Heartbeat]) -> list[Result]:
        """One entry per lease: its :class:`Outcome`, or the exception that ended it (see the module)."""
        if len(leases) != len(heartbeats):
            raise ValueError(f"{len(leases)} leases and {len(heartbeats)} heartbeats; give one heartbeat per lease")
        results: list[Result] = [EvaluationStopped("not trained")] * len(leases)
        # (task, checkpoints) -> the leases that train together (a Task holds a dict: not hashable)
        by_task: list[tuple[Task, tuple[float, ...], list[int]]] = []
        for i, lease in enumerate(leases):
            try:
                task = self.task(lease)
            except Exception as error:  # this candidate reports it
                results[i] = error
                continue
            checkpoints = tuple(lease.checkpoints)
            same = next((indices for t, c, indices in by_task if (t, c) == (task, checkpoints)), None)
            if same is None:
                by_task.append((task, checkpoints, [i]))
            else:
                same.append(i)
        for task, checkpoints, indices in by_task:
            trained = self._train(task, [leases[i] for i in indices], [heartbeats[i] for i in indices], checkpoints)
            for i, result in zip(indices, trained):
                results[i] = result
        return results

    def _train(
        self, task: Task, leases: list[Any], heartbeats: list[Heartbeat], checkpoints: tuple[float, ...] = ()
    ) -> list[Result]:
        """The leases of one task (and early-stopping checkpoints) trained together, one result each. A
        failure of the whole training (measuring, a missing dataset, bad checkpoints) is the result of every
        candidate that was in it."""
        results: list[Result] = [EvaluationStopped("not trained")] * len(leases)
        batch: list[tuple[int, _Candidate]] = []
        for j, (lease, heartbeat) in enumerate(zip(leases, heartbeats)):
            try:
                loss = self.loss_for(lease.loss, lease.theta)
            except ValueError as error:
                results[j] = error
                continue
            if not heartbeat(0):
                results[j] = EvaluationStopped(f"lease {lease.lease_id} stopped before training")
                continue
            batch.append((j, _Candidate(lease, heartbeat, loss)))
        if not batch:
            return results
        candidates = [candidate for _, candidate in batch]
        try:
            with self._lock:
                self._tune(task)
                self.batch_sizes.append(len(candidates))
                # Only asked for when there are checkpoints: an evaluator without them still serves the rest.
                extra = (
                    {"checkpoints": checkpoints, "on_checkpoint": [c.on_checkpoint for c in candidates]}
                    if checkpoints
                    else {}
                )
                trained = self.evaluator.evaluate_many(
                    [c.loss for c in candidates], task, [c.progress for c in candidates], **extra
                )
                self.evaluations += len(candidates)
        except Exception as error:  # each candidate of the batch reports it
            if isinstance(error, sources.SourceError) and str(error) not in self._source_errors:
                # e.g. a python: builder that does not import: said once here, reported per lease
                self._source_errors.add(str(error))
                log.error("cannot train %s: %s", task.model, error)
            for j, _ in batch:
                results[j] = error
            return results
        for (j, candidate), result in zip(batch, trained):
            lease = candidate.lease
            if candidate.stopped_early:  # the coordinator's rule, on a checkpoint's value: reported
                results[j] = dataclasses.replace(Outcome.from_result(result), status="stopped", fitness=0.0)
                log.info(
                    "candidate %s/%d/%d: stopped early after %d steps, validation accuracy %.4f",
                    *(lease.experiment_id, lease.generation, lease.index, result.steps, result.val_accuracy),
                )
                continue
            if candidate.stopped:
                results[j] = EvaluationStopped(f"lease {lease.lease_id} stopped after {result.steps} steps")
                continue
            results[j] = Outcome.from_result(result)
            log.info(
                "candidate %s/%d/%d: %s, validation accuracy %.4f (%d trained together, %.1f s)",
                lease.experiment_id,
                lease.generation,
                lease.index,
                result.status,
                result.val_accuracy,
                len(candidates),
                result.wall_time_s,
            )
        return results

    def _tune(self, task: Task) -> None:
        """Once, on the first task: measure what is "auto" (K, XLA) on this device."""
        if self._tuned:
            return
        from taylorglo_tf.training import Evaluator, tuning

        choice = tuning.choose(
            task,
            candidates=tuning.auto_candidates()
            if self.candidates_per_step == "auto"
            else (int(self.candidates_per_step),),
            jit=(False, True) if self.xla == "auto" else (self.xla == "on",),
        )
        log.info(
            "measured on %s: %d candidates per step, XLA %s (candidate-steps/s: %s)",
            tuning.device_name(),
            choice.candidates_per_step,
            "on" if choice.jit_compile else "off",
            choice.rates,
        )
        self._evaluator = Evaluator(jit_compile=choice.jit_compile)
        self._tuned = True
        if self.candidates_per_step == "auto":
            self.candidates_per_step = choice.candidates_per_step
            if self.on_chosen is not None:
                self.on_chosen(self.candidates_per_step)
