import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_PENDING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_SUCCEEDED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_CANCELLED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_FAILED: _ClassVar[ExperimentState]

class CandidateStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANDIDATE_STATUS_UNSPECIFIED: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_QUEUED: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_LEASED: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_SUCCEEDED: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_DIVERGED: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_ABORTED: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_FAILED: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_INVALID: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_STOPPED: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_WAITING: _ClassVar[CandidateStatus]
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_PENDING: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_SUCCEEDED: ExperimentState
EXPERIMENT_STATE_CANCELLED: ExperimentState
EXPERIMENT_STATE_FAILED: ExperimentState
CANDIDATE_STATUS_UNSPECIFIED: CandidateStatus
CANDIDATE_STATUS_QUEUED: CandidateStatus
CANDIDATE_STATUS_LEASED: CandidateStatus
CANDIDATE_STATUS_SUCCEEDED: CandidateStatus
CANDIDATE_STATUS_DIVERGED: CandidateStatus
CANDIDATE_STATUS_ABORTED: CandidateStatus
CANDIDATE_STATUS_FAILED: CandidateStatus
CANDIDATE_STATUS_INVALID: CandidateStatus
CANDIDATE_STATUS_STOPPED: CandidateStatus
CANDIDATE_STATUS_WAITING: CandidateStatus

class AugmentationSpec(_message.Message):
    __slots__ = ("flip_crop", "crop_padding", "cutout_length", "cutmix_probability", "cutmix_alpha")
    FLIP_CROP_FIELD_NUMBER: _ClassVar[int]
    CROP_PADDING_FIELD_NUMBER: _ClassVar[int]
    CUTOUT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CUTMIX_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CUTMIX_ALPHA_FIELD_NUMBER: _ClassVar[int]
    flip_crop: bool
    crop_padding: int
    cutout_length: int
    cutmix_probability: float
    cutmix_alpha: float
    def __init__(self, flip_crop: _Optional[bool] = ..., crop_padding: _Optional[int] = ..., cutout_length: _Optional[int] = ..., cutmix_probability: _Optional[float] = ..., cutmix_alpha: _Optional[float] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("dataset", "model", "steps", "batch_size", "train_fraction", "augmentation", "seed", "abort_accuracy", "abort_epochs", "lr_scale", "recipe")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FRACTION_FIELD_NUMBER: _ClassVar[int]
    AUGMENTATION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ABORT_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ABORT_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LR_SCALE_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    model: str
    steps: int
    batch_size: int
    train_fraction: float
    augmentation: AugmentationSpec
    seed: int
    abort_accuracy: float
    abort_epochs: int
    lr_scale: float
    recipe: RecipeSpec
    def __init__(self, dataset: _Optional[str] = ..., model: _Optional[str] = ..., steps: _Optional[int] = ..., batch_size: _Optional[int] = ..., train_fraction: _Optional[float] = ..., augmentation: _Optional[_Union[AugmentationSpec, _Mapping]] = ..., seed: _Optional[int] = ..., abort_accuracy: _Optional[float] = ..., abort_epochs: _Optional[int] = ..., lr_scale: _Optional[float] = ..., recipe: _Optional[_Union[RecipeSpec, _Mapping]] = ...) -> None: ...

class RecipeSpec(_message.Message):
    __slots__ = ("optimizer", "learning_rate", "momentum", "nesterov", "weight_decay", "batch_size", "steps", "milestones", "gamma")
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MILESTONES_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    optimizer: str
    learning_rate: float
    momentum: float
    nesterov: bool
    weight_decay: float
    batch_size: int
    steps: int
    milestones: _containers.RepeatedScalarFieldContainer[int]
    gamma: float
    def __init__(self, optimizer: _Optional[str] = ..., learning_rate: _Optional[float] = ..., momentum: _Optional[float] = ..., nesterov: _Optional[bool] = ..., weight_decay: _Optional[float] = ..., batch_size: _Optional[int] = ..., steps: _Optional[int] = ..., milestones: _Optional[_Iterable[int]] = ..., gamma: _Optional[float] = ...) -> None: ...

class LossSpec(_message.Message):
    __slots__ = ("order", "inputs")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    order: int
    inputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, order: _Optional[int] = ..., inputs: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchSpec(_message.Message):
    __slots__ = ("population", "generations", "sigma0", "seed", "max_attempts", "invariant_prescreen", "num_classes", "algorithm", "early_stopping")
    POPULATION_FIELD_NUMBER: _ClassVar[int]
    GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    SIGMA0_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INVARIANT_PRESCREEN_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_FIELD_NUMBER: _ClassVar[int]
    population: int
    generations: int
    sigma0: float
    seed: int
    max_attempts: int
    invariant_prescreen: bool
    num_classes: int
    algorithm: str
    early_stopping: str
    def __init__(self, population: _Optional[int] = ..., generations: _Optional[int] = ..., sigma0: _Optional[float] = ..., seed: _Optional[int] = ..., max_attempts: _Optional[int] = ..., invariant_prescreen: _Optional[bool] = ..., num_classes: _Optional[int] = ..., algorithm: _Optional[str] = ..., early_stopping: _Optional[str] = ...) -> None: ...

class PaperResult(_message.Message):
    __slots__ = ("table", "taylorglo", "taylorglo_std", "baseline", "baseline_std", "p_value", "note")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    TAYLORGLO_FIELD_NUMBER: _ClassVar[int]
    TAYLORGLO_STD_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_STD_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    table: str
    taylorglo: float
    taylorglo_std: float
    baseline: float
    baseline_std: float
    p_value: float
    note: str
    def __init__(self, table: _Optional[str] = ..., taylorglo: _Optional[float] = ..., taylorglo_std: _Optional[float] = ..., baseline: _Optional[float] = ..., baseline_std: _Optional[float] = ..., p_value: _Optional[float] = ..., note: _Optional[str] = ...) -> None: ...

class ExperimentSpec(_message.Message):
    __slots__ = ("name", "task", "loss", "search", "paper")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    PAPER_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: TaskSpec
    loss: LossSpec
    search: SearchSpec
    paper: PaperResult
    def __init__(self, name: _Optional[str] = ..., task: _Optional[_Union[TaskSpec, _Mapping]] = ..., loss: _Optional[_Union[LossSpec, _Mapping]] = ..., search: _Optional[_Union[SearchSpec, _Mapping]] = ..., paper: _Optional[_Union[PaperResult, _Mapping]] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("id", "spec", "state", "generation", "evaluations_done", "evaluations_total", "best_fitness", "best_theta", "create_time", "update_time", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_DONE_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BEST_FITNESS_FIELD_NUMBER: _ClassVar[int]
    BEST_THETA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: ExperimentSpec
    state: ExperimentState
    generation: int
    evaluations_done: int
    evaluations_total: int
    best_fitness: float
    best_theta: _containers.RepeatedScalarFieldContainer[float]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    error: str
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[ExperimentSpec, _Mapping]] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., generation: _Optional[int] = ..., evaluations_done: _Optional[int] = ..., evaluations_total: _Optional[int] = ..., best_fitness: _Optional[float] = ..., best_theta: _Optional[_Iterable[float]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class CheckpointValue(_message.Message):
    __slots__ = ("index", "steps", "val_accuracy")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    index: int
    steps: int
    val_accuracy: float
    def __init__(self, index: _Optional[int] = ..., steps: _Optional[int] = ..., val_accuracy: _Optional[float] = ...) -> None: ...

class EvaluationMetrics(_message.Message):
    __slots__ = ("val_accuracy", "val_loss", "steps", "wall_time_s", "attempts", "checkpoints")
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    val_accuracy: float
    val_loss: float
    steps: int
    wall_time_s: float
    attempts: int
    checkpoints: _containers.RepeatedCompositeFieldContainer[CheckpointValue]
    def __init__(self, val_accuracy: _Optional[float] = ..., val_loss: _Optional[float] = ..., steps: _Optional[int] = ..., wall_time_s: _Optional[float] = ..., attempts: _Optional[int] = ..., checkpoints: _Optional[_Iterable[_Union[CheckpointValue, _Mapping]]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("experiment_id", "generation", "index", "theta", "status", "fitness", "attempts", "trainer_id", "metrics", "create_time", "finish_time", "error", "checkpoints", "stopped_at")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    THETA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FITNESS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    STOPPED_AT_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    generation: int
    index: int
    theta: _containers.RepeatedScalarFieldContainer[float]
    status: CandidateStatus
    fitness: float
    attempts: int
    trainer_id: str
    metrics: EvaluationMetrics
    create_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    error: str
    checkpoints: _containers.RepeatedCompositeFieldContainer[CheckpointValue]
    stopped_at: int
    def __init__(self, experiment_id: _Optional[str] = ..., generation: _Optional[int] = ..., index: _Optional[int] = ..., theta: _Optional[_Iterable[float]] = ..., status: _Optional[_Union[CandidateStatus, str]] = ..., fitness: _Optional[float] = ..., attempts: _Optional[int] = ..., trainer_id: _Optional[str] = ..., metrics: _Optional[_Union[EvaluationMetrics, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., checkpoints: _Optional[_Iterable[_Union[CheckpointValue, _Mapping]]] = ..., stopped_at: _Optional[int] = ...) -> None: ...

class GenerationSummary(_message.Message):
    __slots__ = ("generation", "best_fitness", "mean_fitness", "best_theta", "mean_theta", "sigma", "finish_time")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    BEST_FITNESS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FITNESS_FIELD_NUMBER: _ClassVar[int]
    BEST_THETA_FIELD_NUMBER: _ClassVar[int]
    MEAN_THETA_FIELD_NUMBER: _ClassVar[int]
    SIGMA_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    generation: int
    best_fitness: float
    mean_fitness: float
    best_theta: _containers.RepeatedScalarFieldContainer[float]
    mean_theta: _containers.RepeatedScalarFieldContainer[float]
    sigma: float
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, generation: _Optional[int] = ..., best_fitness: _Optional[float] = ..., mean_fitness: _Optional[float] = ..., best_theta: _Optional[_Iterable[float]] = ..., mean_theta: _Optional[_Iterable[float]] = ..., sigma: _Optional[float] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
