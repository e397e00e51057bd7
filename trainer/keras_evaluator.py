"""The Keras evaluation function of a trainer: a Lease in, an Outcome out.

``KerasEvaluator(data_dir=...)`` is the ``evaluate_fn`` that ``taylorglo trainer
--evaluator keras`` hands to :class:`trainer.worker.Worker`. For each lease it

1. maps ``lease.task`` (``TaskSpec``) to a :class:`taylorglo_tf.training.Task`,
   with the proto's defaults for 0/empty fields (``taylorglo_tf.spec.apply_defaults``)
   and the dataset's ``idx:``/``npz:`` path resolved strictly under ``data_dir``
   (absolute paths, ``..`` and symlinks leading out are refused, naming the path);
2. sets ``lease.theta`` into a :class:`~taylorglo_tf.losses.TaylorGLOLoss` of the
   lease's form (``LossSpec`` order and inputs);
3. trains with one long-lived :class:`~taylorglo_tf.training.Evaluator`, so the
   dataset, the model and the compiled train step of a task stay warm from one
   candidate to the next (only theta changes: no retracing);
4. forwards the evaluator's progress hook to the worker's ``heartbeat``: when it
   answers False (lease lost, experiment cancelled, shutdown grace over) training
   stops and :class:`~trainer.worker.EvaluationStopped` tells the worker not to
   report;
5. maps the ``EvaluationResult`` to an :class:`~trainer.worker.Outcome` (status
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
from typing import Any, Optional

from taylorglo_tf import spec as spec_module
from taylorglo_tf import taylor
from taylorglo_tf.rpc import types_pb2, worker_service_pb2
from taylorglo_tf.training import Task
from trainer.worker import EvaluationStopped, Heartbeat, Outcome

log = logging.getLogger(__name__)


def task_from_spec(task_spec: types_pb2.TaskSpec, data_dir: Optional[str | os.PathLike[str]]) -> Task:
    """The :class:`Task` a ``TaskSpec`` describes, for a trainer whose data lives in ``data_dir``.

    Fields left at 0 take the proto's documented defaults. ``abort_accuracy < 0``
    disables the abort rule. ``idx:DIR``/``npz:FILE`` become absolute paths under
    ``data_dir``; ValueError names the dataset when it is invalid, leaves
    ``data_dir``, or needs a data directory the trainer was not given.
    """
    if not isinstance(task_spec, types_pb2.TaskSpec):
        raise TypeError(f"task_spec must be a taylorglo.v1.TaskSpec, got {type(task_spec).__name__}")
    full = spec_module.apply_defaults(types_pb2.ExperimentSpec(task=task_spec)).task
    dataset = _resolve_dataset(full.dataset, data_dir)
    if full.steps <= 0:
        raise ValueError(f"task.steps must be > 0, got {full.steps}")
    augmentation = full.augmentation
    return Task(
        dataset=dataset,
        model=full.model,
        steps=int(full.steps),
        batch_size=int(full.batch_size),
        fraction=float(full.train_fraction),
        # The proto's augmentation is explicit: everything off unless set.
        augmentation={
            "flip": bool(augmentation.flip_crop),
            "crop_padding": int(augmentation.crop_padding) if augmentation.flip_crop else 0,
            "cutout": int(augmentation.cutout_length),
            "cutmix_prob": float(augmentation.cutmix_probability),
            "cutmix_alpha": float(augmentation.cutmix_alpha) or spec_module.DEFAULT_CUTMIX_ALPHA,
        },
        seed=int(full.seed),
        lr_scale=float(full.lr_scale),
        abort_threshold=max(0.0, float(full.abort_accuracy)),  # accuracy < 0 never happens: rule off
        abort_check_epoch=float(full.abort_epochs),
        data_dir=None if data_dir is None else str(Path(data_dir).resolve()),
    )


def _resolve_dataset(uri: str, data_dir: Optional[str | os.PathLike[str]]) -> str:
    """``uri`` checked, with an ``idx:``/``npz:`` path made absolute under ``data_dir``.

    Raises ``spec.SpecError`` (a ValueError naming the field and the path).
    """
    spec_module.check_dataset_uri(uri, "task.dataset")
    if uri.partition(":")[0] not in ("idx", "npz"):
        return uri
    if data_dir is None:
        raise ValueError(f"task.dataset {uri!r} names a file, but this trainer has no data directory (--data-dir)")
    return spec_module.resolve_dataset(uri, data_dir)


class KerasEvaluator:
    """``(lease, heartbeat) -> Outcome`` that trains candidates with TensorFlow/Keras.

    ``data_dir``: the trainer's data directory (TFDS downloads and ``idx:``/``npz:``
    files; None allows only ``digits`` and ``tfds:`` datasets in TFDS's default
    place). ``evaluator``: a :class:`taylorglo_tf.training.Evaluator` to use
    (default: one created on first use and kept for the trainer's lifetime).
    """

    def __init__(self, data_dir: Optional[str | os.PathLike[str]] = None, *, evaluator: Any = None) -> None:
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
        order = loss_spec.order or spec_module.DEFAULT_ORDER
        inputs = tuple(loss_spec.inputs) or spec_module.DEFAULT_INPUTS
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
        return task_from_spec(lease.task, self.data_dir)

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
            lease.experiment_id, lease.generation, lease.index, result.status, result.val_accuracy,
            result.wall_time_s,
        )
        return Outcome.from_result(result)
