"""The coordinator's records (what the database stores) and their protobuf views.

Times are wall-clock seconds since the epoch (``time.time()``); 0 means "not yet".
Thetas are float64 NumPy arrays in the paper's convention, stored bit-exactly so
that a restored CMA-ES is told exactly the solutions it asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from taylorglo_tf.rpc import experiment_service_pb2 as es_pb2
from taylorglo_tf.rpc import types_pb2

ExperimentState = types_pb2.ExperimentState
CandidateStatus = types_pb2.CandidateStatus

FINAL_EXPERIMENT_STATES = frozenset(
    {
        types_pb2.EXPERIMENT_STATE_SUCCEEDED,
        types_pb2.EXPERIMENT_STATE_CANCELLED,
        types_pb2.EXPERIMENT_STATE_FAILED,
    }
)
FINAL_CANDIDATE_STATUSES = frozenset(
    {
        types_pb2.CANDIDATE_STATUS_SUCCEEDED,
        types_pb2.CANDIDATE_STATUS_DIVERGED,
        types_pb2.CANDIDATE_STATUS_ABORTED,
        types_pb2.CANDIDATE_STATUS_FAILED,
        types_pb2.CANDIDATE_STATUS_INVALID,
        types_pb2.CANDIDATE_STATUS_STOPPED,
    }
)

# A candidate's value at one early-stopping checkpoint: (checkpoint index, steps, validation accuracy).
Checkpoint = tuple[int, int, float]


def timestamp(seconds: float) -> Timestamp | None:
    """A protobuf Timestamp for ``seconds`` since the epoch, or None for 0 (unset)."""
    if not seconds:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(round(seconds * 1e9)))
    return ts


@dataclass
class ExperimentRecord:
    id: str
    spec: types_pb2.ExperimentSpec
    state: types_pb2.ExperimentState = types_pb2.EXPERIMENT_STATE_PENDING
    generation: int = 0
    evaluations_done: int = 0
    best_fitness: float = 0.0
    best_theta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    create_time: float = 0.0
    update_time: float = 0.0
    error: str = ""
    # pickled CMA-ES after the current generation's ask() (or the last tell() once finished)
    es_state: bytes = b""

    @property
    def final(self) -> bool:
        return self.state in FINAL_EXPERIMENT_STATES

    @property
    def evaluations_total(self) -> int:
        return self.spec.search.generations * self.spec.search.population

    def to_proto(self) -> types_pb2.Experiment:
        return types_pb2.Experiment(
            id=self.id,
            spec=self.spec,
            state=self.state,
            generation=self.generation,
            evaluations_done=self.evaluations_done,
            evaluations_total=self.evaluations_total,
            best_fitness=self.best_fitness,
            best_theta=self.best_theta.tolist(),
            create_time=timestamp(self.create_time),
            update_time=timestamp(self.update_time),
            error=self.error,
        )


@dataclass
class CandidateRecord:
    experiment_id: str
    generation: int
    index: int
    theta: np.ndarray
    status: types_pb2.CandidateStatus = types_pb2.CANDIDATE_STATUS_QUEUED
    fitness: float = 0.0
    attempts: int = 0
    trainer_id: str = ""
    metrics: types_pb2.EvaluationMetrics | None = None
    create_time: float = 0.0
    finish_time: float = 0.0
    error: str = ""
    # the lease currently granted for it ("" when none)
    lease_id: str = ""
    # early stopping: the first value reported at each checkpoint reached, by index
    checkpoints: tuple[Checkpoint, ...] = ()
    # the checkpoint (1-based) at which the rule stopped it; 0: not stopped
    stopped_at: int = 0
    # while WAITING: the final status it reported (it gets it unless the rule stops it)
    held_status: types_pb2.CandidateStatus = types_pb2.CANDIDATE_STATUS_UNSPECIFIED

    def value_at(self, index: int) -> float | None:
        """Its validation accuracy at checkpoint ``index`` (0-based), None if not reported."""
        return next((value for i, _, value in self.checkpoints if i == index), None)

    @property
    def final(self) -> bool:
        return self.status in FINAL_CANDIDATE_STATUSES

    def to_proto(self) -> types_pb2.Candidate:
        return types_pb2.Candidate(
            experiment_id=self.experiment_id,
            generation=self.generation,
            index=self.index,
            theta=self.theta.tolist(),
            status=self.status,
            fitness=self.fitness,
            attempts=self.attempts,
            trainer_id=self.trainer_id,
            metrics=self.metrics,
            create_time=timestamp(self.create_time),
            finish_time=timestamp(self.finish_time),
            error=self.error,
            checkpoints=checkpoint_protos(self.checkpoints),
            stopped_at=self.stopped_at,
        )


def checkpoint_protos(checkpoints: tuple[Checkpoint, ...]) -> list[types_pb2.CheckpointValue]:
    return [types_pb2.CheckpointValue(index=i, steps=steps, val_accuracy=value) for i, steps, value in checkpoints]


@dataclass
class GenerationRecord:
    experiment_id: str
    generation: int
    best_fitness: float
    mean_fitness: float
    best_theta: np.ndarray
    mean_theta: np.ndarray
    sigma: float
    finish_time: float

    def to_proto(self) -> types_pb2.GenerationSummary:
        return types_pb2.GenerationSummary(
            generation=self.generation,
            best_fitness=self.best_fitness,
            mean_fitness=self.mean_fitness,
            best_theta=self.best_theta.tolist(),
            mean_theta=self.mean_theta.tolist(),
            sigma=self.sigma,
            finish_time=timestamp(self.finish_time),
        )


@dataclass(frozen=True)
class LeaseRecord:
    lease_id: str
    experiment_id: str
    generation: int
    index: int
    attempt: int
    trainer_id: str
    grant_time: float


def result_proto(
    experiment: ExperimentRecord, generations: list[GenerationRecord], candidates: list[CandidateRecord]
) -> es_pb2.ExperimentResult:
    """The ExperimentResult message: experiment, best theta, history, every candidate."""
    return es_pb2.ExperimentResult(
        experiment=experiment.to_proto(),
        best_theta=experiment.best_theta.tolist(),
        best_fitness=experiment.best_fitness,
        generations=[g.to_proto() for g in generations],
        candidates=[c.to_proto() for c in sorted(candidates, key=lambda c: (c.generation, c.index))],
    )
