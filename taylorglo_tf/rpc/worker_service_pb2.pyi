from taylorglo_tf.rpc import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVALUATION_STATUS_UNSPECIFIED: _ClassVar[EvaluationStatus]
    EVALUATION_STATUS_OK: _ClassVar[EvaluationStatus]
    EVALUATION_STATUS_DIVERGED: _ClassVar[EvaluationStatus]
    EVALUATION_STATUS_ABORTED: _ClassVar[EvaluationStatus]
    EVALUATION_STATUS_ERROR: _ClassVar[EvaluationStatus]
    EVALUATION_STATUS_STOPPED: _ClassVar[EvaluationStatus]
EVALUATION_STATUS_UNSPECIFIED: EvaluationStatus
EVALUATION_STATUS_OK: EvaluationStatus
EVALUATION_STATUS_DIVERGED: EvaluationStatus
EVALUATION_STATUS_ABORTED: EvaluationStatus
EVALUATION_STATUS_ERROR: EvaluationStatus
EVALUATION_STATUS_STOPPED: EvaluationStatus

class LeaseCandidateRequest(_message.Message):
    __slots__ = ("trainer_id", "wait_ms", "max_candidates", "experiment_id")
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    trainer_id: str
    wait_ms: int
    max_candidates: int
    experiment_id: str
    def __init__(self, trainer_id: _Optional[str] = ..., wait_ms: _Optional[int] = ..., max_candidates: _Optional[int] = ..., experiment_id: _Optional[str] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "experiment_id", "generation", "index", "theta", "task", "loss", "attempt", "ttl_s", "checkpoints")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    THETA_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    experiment_id: str
    generation: int
    index: int
    theta: _containers.RepeatedScalarFieldContainer[float]
    task: _types_pb2.TaskSpec
    loss: _types_pb2.LossSpec
    attempt: int
    ttl_s: float
    checkpoints: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, lease_id: _Optional[str] = ..., experiment_id: _Optional[str] = ..., generation: _Optional[int] = ..., index: _Optional[int] = ..., theta: _Optional[_Iterable[float]] = ..., task: _Optional[_Union[_types_pb2.TaskSpec, _Mapping]] = ..., loss: _Optional[_Union[_types_pb2.LossSpec, _Mapping]] = ..., attempt: _Optional[int] = ..., ttl_s: _Optional[float] = ..., checkpoints: _Optional[_Iterable[float]] = ...) -> None: ...

class LeaseCandidateResponse(_message.Message):
    __slots__ = ("lease", "leases")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("lease_id", "trainer_id", "steps_done", "leases")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_DONE_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    trainer_id: str
    steps_done: int
    leases: _containers.RepeatedCompositeFieldContainer[LeaseProgress]
    def __init__(self, lease_id: _Optional[str] = ..., trainer_id: _Optional[str] = ..., steps_done: _Optional[int] = ..., leases: _Optional[_Iterable[_Union[LeaseProgress, _Mapping]]] = ...) -> None: ...

class LeaseProgress(_message.Message):
    __slots__ = ("lease_id", "steps_done", "checkpoints")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_DONE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    steps_done: int
    checkpoints: _containers.RepeatedCompositeFieldContainer[_types_pb2.CheckpointValue]
    def __init__(self, lease_id: _Optional[str] = ..., steps_done: _Optional[int] = ..., checkpoints: _Optional[_Iterable[_Union[_types_pb2.CheckpointValue, _Mapping]]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("keep_going", "ttl_s", "leases")
    KEEP_GOING_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    keep_going: bool
    ttl_s: float
    leases: _containers.RepeatedCompositeFieldContainer[LeaseHeartbeat]
    def __init__(self, keep_going: _Optional[bool] = ..., ttl_s: _Optional[float] = ..., leases: _Optional[_Iterable[_Union[LeaseHeartbeat, _Mapping]]] = ...) -> None: ...

class LeaseHeartbeat(_message.Message):
    __slots__ = ("lease_id", "keep_going", "ttl_s", "stop", "hold")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_GOING_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    keep_going: bool
    ttl_s: float
    stop: bool
    hold: bool
    def __init__(self, lease_id: _Optional[str] = ..., keep_going: _Optional[bool] = ..., ttl_s: _Optional[float] = ..., stop: _Optional[bool] = ..., hold: _Optional[bool] = ...) -> None: ...

class ReportResultRequest(_message.Message):
    __slots__ = ("lease_id", "trainer_id", "status", "fitness", "metrics", "error")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FITNESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    trainer_id: str
    status: EvaluationStatus
    fitness: float
    metrics: _types_pb2.EvaluationMetrics
    error: str
    def __init__(self, lease_id: _Optional[str] = ..., trainer_id: _Optional[str] = ..., status: _Optional[_Union[EvaluationStatus, str]] = ..., fitness: _Optional[float] = ..., metrics: _Optional[_Union[_types_pb2.EvaluationMetrics, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class ReportResultResponse(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ReturnLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "trainer_id", "reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    trainer_id: str
    reason: str
    def __init__(self, lease_id: _Optional[str] = ..., trainer_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReturnLeaseResponse(_message.Message):
    __slots__ = ("returned",)
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    returned: bool
    def __init__(self, returned: _Optional[bool] = ...) -> None: ...
