"""K leased candidates trained together: the batched evaluation of a trainer.

``BatchingEvaluator(keras_evaluator, candidates_per_step=K)`` is the evaluation
function of a :class:`taylorglo_tf.trainer.worker.Worker` that leases up to K candidates in
one LeaseCandidate call (``taylorglo trainer --candidates-per-step K``). Its
:meth:`~BatchingEvaluator.evaluate_many` trains a leased batch with
:meth:`taylorglo_tf.training.Evaluator.evaluate_many`:

- leases of one task train in one compiled step (one call's leases are of one
  experiment, so of one task; leases of different tasks train one task after
  another);
- each candidate's progress goes to its own lease's ``heartbeat``; when that
  answers False (lease lost, experiment cancelled, shutdown grace over) only
  that candidate stops, and its entry is :class:`EvaluationStopped`;
- a failure of a whole task (bad task, missing data) is every entry of that
  task, and a bad theta only its own, so each candidate is reported as an error.

With ``candidates_per_step="auto"`` the first task measures K (and XLA on/off
with ``xla="auto"``) on this device (:func:`taylorglo_tf.training.tuning.choose`,
at most :data:`~taylorglo_tf.training.tuning.CPU_MAX_CANDIDATES` on a CPU);
``on_chosen(K)`` then tells the worker to lease K at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .keras_evaluator import KerasEvaluator
from .worker import EvaluationStopped, Heartbeat, Outcome, Result, check_candidates_per_step

log = logging.getLogger(__name__)


class BatchingEvaluator:
    """Trains the leases of one LeaseCandidate call together, ``candidates_per_step`` at most per step."""

    def __init__(self, keras_evaluator: KerasEvaluator, candidates_per_step: int | str, *, xla: str = "off") -> None:
        if candidates_per_step != "auto":
            try:
                check_candidates_per_step(candidates_per_step)
            except ValueError:
                raise ValueError(
                    f"candidates_per_step must be an integer >= 1 or 'auto', got {candidates_per_step!r}"
                ) from None
        if xla not in ("on", "off", "auto"):
            raise ValueError(f"xla must be 'on', 'off' or 'auto', got {xla!r}")
        self.keras = keras_evaluator
        self.candidates_per_step = candidates_per_step
        self.xla = xla
        # Called with the measured K when candidates_per_step is "auto" (the worker then leases K at a time).
        self.on_chosen: Callable[[int], None] | None = None
        self._tuned = candidates_per_step != "auto" and xla != "auto"
        self._tuning = threading.Lock()
        self.batch_sizes: list[int] = []  # candidates per trained batch (tests, logs)

    def __call__(self, lease: Any, heartbeat: Heartbeat) -> Outcome:
        """One lease alone (the ``evaluate_fn`` form); raises what its entry would hold."""
        [result] = self.evaluate_many([lease], [heartbeat])
        if isinstance(result, BaseException):
            raise result
        return result

    def evaluate_many(self, leases: Sequence[Any], heartbeats: Sequence[Heartbeat]) -> list[Result]:
        """One entry per lease: its :class:`Outcome`, or the exception that ended it."""
        results: list[Result | None] = [None] * len(leases)
        by_task: list[tuple[Any, list[int]]] = []  # (task, lease indices); a Task holds a dict: not hashable
        for i, lease in enumerate(leases):
            try:
                task = self.keras.task(lease)
            except Exception as error:  # this candidate reports it
                results[i] = error
                continue
            same = next((indices for known, indices in by_task if known == task), None)
            if same is None:
                by_task.append((task, [i]))
            else:
                same.append(i)
        for task, indices in by_task:
            for i, result in zip(
                indices, self._train(task, [leases[i] for i in indices], [heartbeats[i] for i in indices])
            ):
                results[i] = result
        return [result for result in results if result is not None]  # every entry is set

    def _tune(self, task: Any) -> None:
        """Once, on the first task: measure what is "auto" (K, XLA) on this device."""
        with self._tuning:
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
            self.keras.evaluator = Evaluator(jit_compile=choice.jit_compile)
            self._tuned = True
            if self.candidates_per_step == "auto":
                self.candidates_per_step = choice.candidates_per_step
                if self.on_chosen is not None:
                    self.on_chosen(self.candidates_per_step)

    def _train(self, task: Any, leases: list[Any], heartbeats: list[Heartbeat]) -> list[Result]:
        """The leases of one task trained together: one result per lease. A failure of the whole
        training (measuring, a missing dataset) is the result of every candidate that was in it."""
        from taylorglo_tf.losses import TaylorGLOLoss

        results: list[Result] = [EvaluationStopped("not trained")] * len(leases)
        batch: list[int] = []
        losses = []
        for j, (lease, heartbeat) in enumerate(zip(leases, heartbeats)):
            try:
                form = self.keras.loss_for(lease.loss, lease.theta)  # checks theta's length against the form
            except ValueError as error:
                results[j] = error
                continue
            if not heartbeat(0):
                results[j] = EvaluationStopped(f"lease {lease.lease_id} stopped before training")
                continue
            batch.append(j)
            losses.append(TaylorGLOLoss(list(lease.theta), order=form.order, inputs=form.inputs))
        if not batch:
            return results
        stopped = [False] * len(batch)

        def progress_of(slot: int):
            def progress(steps_done: int, total_steps: int) -> bool:
                if not heartbeats[batch[slot]](int(steps_done)):
                    stopped[slot] = True
                    return False
                return True

            return progress

        try:
            self._tune(task)
            self.batch_sizes.append(len(batch))
            trained = self.keras.evaluator.evaluate_many(losses, task, [progress_of(k) for k in range(len(batch))])
        except Exception as error:  # each candidate of the batch reports it
            for j in batch:
                results[j] = error
            return results
        self.keras.evaluations += len(batch)
        for slot, (j, result) in enumerate(zip(batch, trained)):
            lease = leases[j]
            if stopped[slot]:
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
                len(batch),
                result.wall_time_s,
            )
        return results
