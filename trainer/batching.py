"""K leased candidates trained together: a batching ``evaluate_fn`` for K worker loops.

``BatchingEvaluator(keras_evaluator, candidates_per_step=K)`` is the
``(lease, heartbeat) -> Outcome`` callable of K :class:`trainer.worker.Worker`
loops that run as threads of one trainer process (``taylorglo trainer
--candidates-per-step K``). Each loop leases, heartbeats and reports its own
candidate exactly as a one-candidate trainer does; only the training is shared:

- a call queues its candidate and waits;
- one batch thread takes the oldest queued candidate and every other queued one
  of the same task (at most K), after waiting up to ``gather_s`` for the other
  loops' leases to arrive, and trains them with
  :meth:`taylorglo_tf.training.Evaluator.evaluate_many`;
- each candidate's progress goes to its own loop's ``heartbeat``; when that
  answers False (lease lost, experiment cancelled, shutdown grace over) only
  that candidate stops and its call raises :class:`EvaluationStopped`;
- a failure of the whole batch (bad task, missing data) is raised in every
  call of the batch, so each candidate is reported as an error.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Optional

from trainer.keras_evaluator import KerasEvaluator
from trainer.worker import EvaluationStopped, Heartbeat, Outcome

log = logging.getLogger(__name__)

# Long enough for K loops that just reported to lease again; short against an evaluation.
DEFAULT_GATHER_S = 0.25


@dataclasses.dataclass(eq=False)
class _Request:
    lease: Any
    task: Any
    loss: Any
    heartbeat: Heartbeat
    arrived: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    stopped: bool = False
    outcome: Optional[Outcome] = None
    error: Optional[BaseException] = None


class BatchingEvaluator:
    """Trains up to ``candidates_per_step`` concurrently submitted leases of one task at once."""

    def __init__(self, keras_evaluator: KerasEvaluator, candidates_per_step: int | str, *,
                 xla: str = "off", gather_s: float = DEFAULT_GATHER_S) -> None:
        if candidates_per_step != "auto" and (
            isinstance(candidates_per_step, bool) or not isinstance(candidates_per_step, int) or candidates_per_step < 1
        ):
            raise ValueError(f"candidates_per_step must be an integer >= 1 or 'auto', got {candidates_per_step!r}")
        if xla not in ("on", "off", "auto"):
            raise ValueError(f"xla must be 'on', 'off' or 'auto', got {xla!r}")
        if not gather_s >= 0:
            raise ValueError(f"gather_s must be >= 0 seconds, got {gather_s!r}")
        self.keras = keras_evaluator
        self.candidates_per_step = candidates_per_step
        self.xla = xla
        # Called with the measured K when candidates_per_step is "auto" (the trainer starts more loops).
        self.on_chosen: Optional[Callable[[int], None]] = None
        self._tuned = candidates_per_step != "auto" and xla != "auto"
        self._tuning = threading.Lock()
        self.gather_s = float(gather_s)
        self._queue: collections.deque[_Request] = collections.deque()
        self._changed = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self.batch_sizes: list[int] = []  # candidates per trained batch (tests, logs)

    def __call__(self, lease: Any, heartbeat: Heartbeat) -> Outcome:
        from taylorglo_tf.losses import TaylorGLOLoss

        task = self.keras.task(lease)
        form = self.keras.loss_for(lease.loss, lease.theta)  # checks theta's length against the form
        request = _Request(lease, task, TaylorGLOLoss(list(lease.theta), order=form.order, inputs=form.inputs),
                           heartbeat, time.monotonic())
        if not heartbeat(0):
            raise EvaluationStopped(f"lease {lease.lease_id} stopped before training")
        self._tune(task)
        with self._changed:
            self._queue.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="batch-trainer", daemon=True)
                self._thread.start()
            self._changed.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        if request.stopped:
            raise EvaluationStopped(f"lease {lease.lease_id} stopped")
        return request.outcome

    def _tune(self, task: Any) -> None:
        """Once, on the first task: measure what is "auto" (K, XLA) on this device."""
        with self._tuning:
            if self._tuned:
                return
            from taylorglo_tf.training import Evaluator, tuning

            choice = tuning.choose(
                task,
                candidates=tuning.DEFAULT_CANDIDATES if self.candidates_per_step == "auto"
                else (self.candidates_per_step,),
                jit=(False, True) if self.xla == "auto" else (self.xla == "on",),
            )
            log.info("measured on %s: %d candidates per step, XLA %s (candidate-steps/s: %s)", tuning.device_name(),
                     choice.candidates_per_step, "on" if choice.jit_compile else "off", choice.rates)
            self.keras.evaluator = Evaluator(jit_compile=choice.jit_compile)
            self._tuned = True
            if self.candidates_per_step == "auto":
                self.candidates_per_step = choice.candidates_per_step
                if self.on_chosen is not None:
                    self.on_chosen(self.candidates_per_step)

    # ------------------------------------------------------------- batch thread

    def _next_batch(self) -> list[_Request]:
        """The oldest request and up to K-1 more of its task, once K are there or the gather time is up."""
        with self._changed:
            while not self._queue:
                self._changed.wait()
            head = self._queue[0]
            while True:
                batch = [r for r in self._queue if r.task == head.task][: self.candidates_per_step]
                left = head.arrived + self.gather_s - time.monotonic()
                if len(batch) == self.candidates_per_step or left <= 0:
                    break
                self._changed.wait(left)
            for request in batch:
                self._queue.remove(request)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._train(batch)
            except BaseException as error:  # every candidate of the batch reports it
                for request in batch:
                    request.error = error
            finally:
                for request in batch:
                    request.done.set()

    def _train(self, batch: list[_Request]) -> None:
        def progress_of(request: _Request):
            def progress(steps_done: int, total_steps: int) -> bool:
                if not request.heartbeat(int(steps_done)):
                    request.stopped = True
                    return False
                return True

            return progress

        self.batch_sizes.append(len(batch))
        results = self.keras.evaluator.evaluate_many(
            [r.loss for r in batch], batch[0].task, [progress_of(r) for r in batch]
        )
        self.keras.evaluations += len(batch)
        for request, result in zip(batch, results):
            request.outcome = Outcome.from_result(result)
            lease = request.lease
            log.info("candidate %s/%d/%d: %s, validation accuracy %.4f (%d trained together, %.1f s)",
                     lease.experiment_id, lease.generation, lease.index, result.status, result.val_accuracy,
                     len(batch), result.wall_time_s)
