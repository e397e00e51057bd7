"""The Keras evaluation function of a trainer: a Lease in, an Outcome out.

``KerasEvaluator(data_dir=...)`` is the ``evaluate_fn`` that ``taylorglo trainer
--evaluator keras`` hands to :class:`taylorglo_tf.trainer.worker.Worker`. For each lease it

1. maps ``lease.task`` (``TaskSpec``) to a :class:`taylorglo_tf.training.Task`
   (:meth:`~taylorglo_tf.training.Task.from_proto`: the proto's defaults for
   unset fields, and the dataset's ``idx:``/``npz:`` path resolved strictly
   under ``data_dir``; absolute paths, ``..`` and symlinks leading out are
   refused, naming the path);
2. sets ``lease.theta`` into a :class:`~taylorglo_tf.losses.TaylorGLOLoss` of the
   lease's form (``LossSpec`` order and inputs);
3. trains with one long-lived :class:`~taylorglo_tf.training.Evaluator`, so the
   dataset, the model and the compiled train step of a task stay warm from one
   candidate to the next (only theta changes: no retracing);
4. forwards the evaluator's progress hook to the worker's ``heartbeat``: when it
   answers False (lease lost, experiment cancelled, shutdown grace over) training
   stops and :class:`~taylorglo_tf.trainer.worker.EvaluationStopped` tells the worker not to
   report;
5. maps the ``EvaluationResult`` to an :class:`~taylorglo_tf.trainer.worker.Outcome` (status
   ok/diverged/aborted, fitness = validation accuracy, metrics).

A bad task (unknown model, missing data, path outside ``data_dir``) raises
``ValueError``; the worker reports it as status ERROR with the message, and the
coordinator retries the candidate while attempts remain.
TensorFlow is imported when the first lease is evaluated, not at import.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from taylorglo_tf import spec as spec_module
from taylorglo_tf import taylor
from taylorglo_tf.rpc import types_pb2, worker_service_pb2
from taylorglo_tf.training import Task

from .worker import EvaluationStopped, Heartbeat, Outcome

log = logging.getLogger(__name__)


class KerasEvaluator:
    """``(lease, heartbeat) -> Outcome`` that trains candidates with TensorFlow/Keras.

    ``data_dir``: the trainer's data directory (TFDS downloads and ``idx:``/``npz:``
    files; None allows only ``digits`` and ``tfds:`` datasets in TFDS's default
    place). ``evaluator``: a :class:`taylorglo_tf.training.Evaluator` to use
    (default: one created on first use and kept for the trainer's lifetime).
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *, evaluator: Any = None) -> None:
        if data_dir is not None and not Path(data_dir).is_dir():
            raise ValueError(f"data directory {str(data_dir)!r} does not exist or is not a directory")
        self.data_dir = None if data_dir is None else Path(data_dir).resolve()
        self._evaluator = evaluator
        # One loss object per loss form; a new candidate only sets its theta.
        self._losses: dict[tuple[int, tuple[str, ...]], Any] = {}
        # The worker runs one evaluation at a time; the lock makes that a guarantee.
        self._lock = threading.Lock()
        self.evaluations = 0

    @property
    def evaluator(self) -> Any:
        """The long-lived training Evaluator (created on first use; imports TensorFlow)."""
        if self._evaluator is None:
            from taylorglo_tf.training import Evaluator

            self._evaluator = Evaluator()
        return self._evaluator

    @evaluator.setter
    def evaluator(self, evaluator: Any) -> None:
        self._evaluator = evaluator

    def loss_for(self, loss_spec: types_pb2.LossSpec, theta: Any) -> Any:
        """The :class:`TaylorGLOLoss` of ``loss_spec``'s form with ``theta`` (ValueError names a bad length)."""
        order, inputs = spec_module.loss_form(loss_spec)
        expected = taylor.expected_theta_length(order, inputs)
        if len(theta) != expected:
            raise ValueError(
                f"lease theta has {len(theta)} entries; a loss of order {order} in {list(inputs)} needs {expected}"
            )
        key = (order, inputs)
        loss = self._losses.get(key)
        if loss is None:
            from taylorglo_tf.losses import TaylorGLOLoss

            loss = TaylorGLOLoss(list(theta), order=order, inputs=inputs)
            self._losses[key] = loss
        else:
            loss.set_theta(list(theta))
        return loss

    def task(self, lease: worker_service_pb2.Lease) -> Task:
        """The lease's :class:`Task` with this trainer's data directory (ValueError names a bad dataset)."""
        return Task.from_proto(lease.task, self.data_dir)

    def __call__(self, lease: worker_service_pb2.Lease, heartbeat: Heartbeat) -> Outcome:
        task = self.task(lease)
        stopped = threading.Event()

        def progress(steps_done: int, total_steps: int) -> bool:
            if not heartbeat(int(steps_done)):
                stopped.set()
                return False
            return True

        with self._lock:
            loss = self.loss_for(lease.loss, lease.theta)
            if not heartbeat(0):
                raise EvaluationStopped(f"lease {lease.lease_id} stopped before training")
            result = self.evaluator.evaluate(loss, task, progress)
            self.evaluations += 1
        if stopped.is_set():
            raise EvaluationStopped(f"lease {lease.lease_id} stopped after {result.steps} steps")
        log.info(
            "candidate %s/%d/%d: %s, validation accuracy %.4f in %.1f s",
            lease.experiment_id,
            lease.generation,
            lease.index,
            result.status,
            result.val_accuracy,
            result.wall_time_s,
        )
        return Outcome.from_result(result)
