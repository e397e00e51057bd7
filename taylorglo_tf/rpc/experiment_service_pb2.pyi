from taylorglo_tf.rpc import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitExperimentRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _types_pb2.ExperimentSpec
    def __init__(self, spec: _Optional[_Union[_types_pb2.ExperimentSpec, _Mapping]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[_types_pb2.Experiment]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[_types_pb2.Experiment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class ProgressEvent(_message.Message):
    __slots__ = ("kind", "experiment", "candidate", "generation")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ProgressEvent.Kind]
        KIND_SNAPSHOT: _ClassVar[ProgressEvent.Kind]
        KIND_CANDIDATE_FINISHED: _ClassVar[ProgressEvent.Kind]
        KIND_GENERATION_FINISHED: _ClassVar[ProgressEvent.Kind]
        KIND_EXPERIMENT_FINISHED: _ClassVar[ProgressEvent.Kind]
    KIND_UNSPECIFIED: ProgressEvent.Kind
    KIND_SNAPSHOT: ProgressEvent.Kind
    KIND_CANDIDATE_FINISHED: ProgressEvent.Kind
    KIND_GENERATION_FINISHED: ProgressEvent.Kind
    KIND_EXPERIMENT_FINISHED: ProgressEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    kind: ProgressEvent.Kind
    experiment: _types_pb2.Experiment
    candidate: _types_pb2.Candidate
    generation: _types_pb2.GenerationSummary
    def __init__(self, kind: _Optional[_Union[ProgressEvent.Kind, str]] = ..., experiment: _Optional[_Union[_types_pb2.Experiment, _Mapping]] = ..., candidate: _Optional[_Union[_types_pb2.Candidate, _Mapping]] = ..., generation: _Optional[_Union[_types_pb2.GenerationSummary, _Mapping]] = ...) -> None: ...

class CancelExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("experiment_id", "page_size", "page_token")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    page_size: int
    page_token: str
    def __init__(self, experiment_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ExperimentResult(_message.Message):
    __slots__ = ("experiment", "best_theta", "best_fitness", "generations", "candidates", "next_page_token")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    BEST_THETA_FIELD_NUMBER: _ClassVar[int]
    BEST_FITNESS_FIELD_NUMBER: _ClassVar[int]
    GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiment: _types_pb2.Experiment
    best_theta: _containers.RepeatedScalarFieldContainer[float]
    best_fitness: float
    generations: _containers.RepeatedCompositeFieldContainer[_types_pb2.GenerationSummary]
    candidates: _containers.RepeatedCompositeFieldContainer[_types_pb2.Candidate]
    next_page_token: str
    def __init__(self, experiment: _Optional[_Union[_types_pb2.Experiment, _Mapping]] = ..., best_theta: _Optional[_Iterable[float]] = ..., best_fitness: _Optional[float] = ..., generations: _Optional[_Iterable[_Union[_types_pb2.GenerationSummary, _Mapping]]] = ..., candidates: _Optional[_Iterable[_Union[_types_pb2.Candidate, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class DeleteExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: _types_pb2.Experiment
    def __init__(self, experiment: _Optional[_Union[_types_pb2.Experiment, _Mapping]] = ...) -> None: ...

class GetFleetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrainerInfo(_message.Message):
    __slots__ = ("trainer_id", "idle_s", "lost", "leases_held", "evaluations", "failures", "candidate_steps_per_s", "seen_for_s")
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    IDLE_S_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    LEASES_HELD_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_STEPS_PER_S_FIELD_NUMBER: _ClassVar[int]
    SEEN_FOR_S_FIELD_NUMBER: _ClassVar[int]
    trainer_id: str
    idle_s: float
    lost: bool
    leases_held: int
    evaluations: int
    failures: int
    candidate_steps_per_s: float
    seen_for_s: float
    def __init__(self, trainer_id: _Optional[str] = ..., idle_s: _Optional[float] = ..., lost: _Optional[bool] = ..., leases_held: _Optional[int] = ..., evaluations: _Optional[int] = ..., failures: _Optional[int] = ..., candidate_steps_per_s: _Optional[float] = ..., seen_for_s: _Optional[float] = ...) -> None: ...

class ExperimentPace(_message.Message):
    __slots__ = ("experiment_id", "candidates_per_s", "remaining_candidates", "eta_s")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_PER_S_FIELD_NUMBER: _ClassVar[int]
    REMAINING_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    candidates_per_s: float
    remaining_candidates: int
    eta_s: float
    def __init__(self, experiment_id: _Optional[str] = ..., candidates_per_s: _Optional[float] = ..., remaining_candidates: _Optional[int] = ..., eta_s: _Optional[float] = ...) -> None: ...

class GetFleetResponse(_message.Message):
    __slots__ = ("trainers", "experiments")
    TRAINERS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    trainers: _containers.RepeatedCompositeFieldContainer[TrainerInfo]
    experiments: _containers.RepeatedCompositeFieldContainer[ExperimentPace]
    def __init__(self, trainers: _Optional[_Iterable[_Union[TrainerInfo, _Mapping]]] = ..., experiments: _Optional[_Iterable[_Union[ExperimentPace, _Mapping]]] = ...) -> None: ...
