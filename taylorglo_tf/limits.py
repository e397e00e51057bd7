"""Bounds on what one request may carry, and the defaults that several processes share: their one home.

The coordinator checks every string field of every request against
:data:`STRING_LIMITS` (INVALID_ARGUMENT naming the field) and the integer fields
of :data:`INT_LIMITS` against theirs, the spec loader does the same for specs,
and trainers and clients stay within them. The proto comments state the same
numbers; ``tests/test_limits.py`` checks that every string field of the API has
a bound here and that each bounded field's comment says so.
No heavy imports: the coordinator, the trainer and the CLI all read this.
"""

from __future__ import annotations

from typing import Any

MAX_ID_CHARS = 200  # experiment, lease and trainer ids
MAX_NAME_CHARS = 200  # ExperimentSpec.name, PaperResult.table
MAX_NOTE_CHARS = 500  # PaperResult.note
MAX_DATASET_CHARS = 1000  # a dataset URI (a path under the trainer's data directory)
MAX_CHOICE_CHARS = 100  # a name chosen from a fixed list: model, search algorithm, loss input
MAX_ERROR_CHARS = 4000  # a trainer's error text (the end of a traceback)
MAX_REASON_CHARS = 1000  # ReturnLease's informational reason
MAX_PAGE_TOKEN_CHARS = 200

# Integer bounds of requests, checked by the coordinator (INVALID_ARGUMENT naming the value).
MAX_WAIT_MS = 60_000  # LeaseCandidateRequest.wait_ms: how long one lease call may wait for work
# LeaseCandidateRequest.max_candidates: candidates one call may lease. Above what a trainer
# trains in one step (``--candidates-per-step auto`` measures at most 32); it bounds the
# work one call holds (and the response's size).
MAX_LEASE_CANDIDATES = 64
# Early-stopping checkpoint values one heartbeat or report may carry per lease.
MAX_CHECKPOINT_VALUES = 16

# Lease TTLs a coordinator may be given (--lease-ttl): below a second a heartbeat can
# hardly keep a lease; a day without a heartbeat is no lease at all.
MIN_LEASE_TTL_S, MAX_LEASE_TTL_S = 1.0, 86_400.0
# The TTL a trainer assumes for a lease whose coordinator states none (ttl_s unset: an
# older coordinator); it heartbeats at a third of it.
ASSUMED_LEASE_TTL_S = 30.0

# Shutdown grace periods (--grace; SIGTERM or Ctrl-C). Two, because they bound different
# work. A trainer finishes a candidate whose training ends within its grace, else gives the
# lease back: a candidate's training takes minutes (the compose and Kubernetes files leave
# room for it before their SIGKILL). A coordinator lets calls in flight finish: they take
# milliseconds (long polls and watch streams end at once), and its drain must fit within
# Kubernetes' default 30 s termination grace.
DEFAULT_TRAINER_GRACE_S = 60.0
DEFAULT_COORDINATOR_GRACE_S = 5.0

# Message sizes (client channels and the server use the same): requests are small
# (a spec, a report); responses may carry every candidate of an experiment.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# Paging (ListExperiments, GetResult): entries per page by default and at most,
# and a size no page exceeds whatever page_size asks (a quarter of the 64 MiB
# response limit, MAX_RESPONSE_BYTES).
DEFAULT_LIST_PAGE_SIZE, MAX_LIST_PAGE_SIZE = 100, 1000
DEFAULT_RESULT_PAGE_SIZE, MAX_RESULT_PAGE_SIZE = 1000, 10_000
MAX_PAGE_BYTES = 16 * 1024 * 1024

# A TaskSpec.model with this prefix names a model registered inside a user's script
# (taylorglo_tf.LossSearch): only trainers in that script, which name its experiment
# in LeaseCandidateRequest.experiment_id, are granted its candidates.
SCRIPT_MODEL_PREFIX = "script:"

_ID_FIELDS = (
    "GetExperimentRequest.experiment_id",
    "WatchExperimentRequest.experiment_id",
    "CancelExperimentRequest.experiment_id",
    "GetResultRequest.experiment_id",
    "DeleteExperimentRequest.experiment_id",
    "LeaseCandidateRequest.trainer_id",
    "LeaseCandidateRequest.experiment_id",
    "HeartbeatRequest.lease_id",
    "HeartbeatRequest.trainer_id",
    "LeaseProgress.lease_id",  # HeartbeatRequest.leases[i]
    "ReportResultRequest.lease_id",
    "ReportResultRequest.trainer_id",
    "ReturnLeaseRequest.lease_id",
    "ReturnLeaseRequest.trainer_id",
)

# Full proto field name -> most characters, for every string field a request can carry.
STRING_LIMITS: dict[str, int] = {
    **{f"taylorglo.v1.{name}": MAX_ID_CHARS for name in _ID_FIELDS},
    "taylorglo.v1.ExperimentSpec.name": MAX_NAME_CHARS,
    "taylorglo.v1.PaperResult.table": MAX_NAME_CHARS,
    "taylorglo.v1.PaperResult.note": MAX_NOTE_CHARS,
    "taylorglo.v1.TaskSpec.dataset": MAX_DATASET_CHARS,
    "taylorglo.v1.TaskSpec.model": MAX_CHOICE_CHARS,
    "taylorglo.v1.LossSpec.inputs": MAX_CHOICE_CHARS,
    "taylorglo.v1.SearchSpec.algorithm": MAX_CHOICE_CHARS,
    "taylorglo.v1.SearchSpec.early_stopping": MAX_CHOICE_CHARS,
    "taylorglo.v1.RecipeSpec.optimizer": MAX_CHOICE_CHARS,
    "taylorglo.v1.ReportResultRequest.error": MAX_ERROR_CHARS,
    "taylorglo.v1.ReturnLeaseRequest.reason": MAX_REASON_CHARS,
    "taylorglo.v1.ListExperimentsRequest.page_token": MAX_PAGE_TOKEN_CHARS,
    "taylorglo.v1.GetResultRequest.page_token": MAX_PAGE_TOKEN_CHARS,
}


# Full proto field name -> largest value, for the integer fields bounded above here (all are >= 0).
INT_LIMITS: dict[str, int] = {
    "taylorglo.v1.LeaseCandidateRequest.wait_ms": MAX_WAIT_MS,
    "taylorglo.v1.LeaseCandidateRequest.max_candidates": MAX_LEASE_CANDIDATES,
}


def overlong_string(message: Any, path: str = "") -> tuple[str, int, int] | None:
    """The first string field of ``message`` (nested messages included) longer than its bound.

    Returns ``(field path, length, bound)``, e.g. ``("spec.task.dataset", 3900000,
    1000)``, or None when every string is within bounds. ``path`` prefixes the
    field paths. Only fields that are set are visited, so this is cheap.
    """
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None:
            items = value if is_repeated(field) else [value]
            for i, item in enumerate(items):
                found = overlong_string(item, f"{name}[{i}]" if is_repeated(field) else name)
                if found:
                    return found
        elif field.type == field.TYPE_STRING:
            bound = STRING_LIMITS.get(field.full_name, MAX_ID_CHARS)
            for i, text in enumerate(value if is_repeated(field) else [value]):
                if len(text) > bound:
                    return (f"{name}[{i}]" if is_repeated(field) else name), len(text), bound
    return None


def int_out_of_range(message: Any) -> tuple[str, int, int] | None:
    """The first integer field of ``message`` outside ``0..`` its bound in :data:`INT_LIMITS`.

    Returns ``(field name, value, bound)`` or None. Only set fields are visited
    (an unset proto3 integer is 0, always within bounds).
    """
    for field, value in message.ListFields():
        bound = INT_LIMITS.get(field.full_name)
        if bound is not None and not 0 <= value <= bound:
            return field.name, value, bound
    return None


def is_repeated(field: Any) -> bool:
    """Whether a protobuf field descriptor is a repeated field."""
    is_repeated = getattr(field, "is_repeated", None)  # protobuf >= 5; older runtimes only the label
    return bool(is_repeated) if is_repeated is not None else field.label == field.LABEL_REPEATED
