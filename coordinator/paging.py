"""Pages of ListExperiments and GetResult: page sizes, opaque page tokens, the byte bound.

A token is URL-safe base64 of a small JSON object; clients treat it as opaque.
- ListExperiments (newest first): the id and create time of the last experiment
  sent. The next page starts after it; if it was deleted meanwhile, at the first
  experiment created before it.
- GetResult: the experiment id and how many generation summaries and candidates
  were sent. Both lists only grow at their end (a generation's candidates are
  stored together, summaries in order), so offsets stay valid while a search runs.
A page also stops before :data:`~taylorglo_tf.limits.MAX_PAGE_BYTES`, whatever
``page_size`` asks, so a response never nears the 64 MiB limit.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any

from taylorglo_tf.limits import (
    DEFAULT_LIST_PAGE_SIZE,
    DEFAULT_RESULT_PAGE_SIZE,
    MAX_LIST_PAGE_SIZE,
    MAX_PAGE_BYTES,
    MAX_RESULT_PAGE_SIZE,
)
from taylorglo_tf.rpc import experiment_service_pb2 as es_pb2

from .grpc_util import InvalidArgument
from .model import ExperimentRecord


def page_size(requested: int, default: int, maximum: int) -> int:
    if not 0 <= requested <= maximum:
        raise InvalidArgument("page_size", f"{requested} is outside 0..{maximum}")
    return requested or default


def _encode(fields: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()).decode()


def _decode(token: str, keys: dict[str, type]) -> dict[str, Any]:
    try:
        fields = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        fields = None
    if not (
        isinstance(fields, dict)
        and set(fields) == set(keys)
        and all(isinstance(fields[k], kind) and not isinstance(fields[k], bool) for k, kind in keys.items())
    ):
        raise InvalidArgument("page_token", f"{token[:40]!r} is not a next_page_token of this call")
    return fields


def _fits(sizes: Sequence[int], budget: int) -> int:
    """How many leading items of these serialized sizes fit in ``budget`` bytes (at least one)."""
    total = 0
    for n, size in enumerate(sizes):
        total += size + 8  # field tag and length prefix
        if total > budget and n > 0:
            return n
    return len(sizes)


# --------------------------------------------------------------------------- ListExperiments


def list_page(
    records: Sequence[ExperimentRecord], request: es_pb2.ListExperimentsRequest
) -> es_pb2.ListExperimentsResponse:
    """One page of ``records`` (every experiment, newest first) for ``request``."""
    size = page_size(request.page_size, DEFAULT_LIST_PAGE_SIZE, MAX_LIST_PAGE_SIZE)
    start = 0
    if request.page_token:
        after = _decode(request.page_token, {"id": str, "t": float})
        ids = [r.id for r in records]
        if after["id"] in ids:
            start = ids.index(after["id"]) + 1
        else:  # deleted meanwhile: continue with what was created before it
            start = next((i for i, r in enumerate(records) if r.create_time < after["t"]), len(records))
    chosen = [r.to_proto() for r in records[start : start + size]]
    chosen = chosen[: _fits([e.ByteSize() for e in chosen], MAX_PAGE_BYTES)]
    response = es_pb2.ListExperimentsResponse(experiments=chosen)
    if start + len(chosen) < len(records):
        last = records[start + len(chosen) - 1]
        response.next_page_token = _encode({"id": last.id, "t": float(last.create_time)})
    return response


# --------------------------------------------------------------------------- GetResult


def result_page(
    read: Callable[..., es_pb2.ExperimentResult], request: es_pb2.GetResultRequest
) -> es_pb2.ExperimentResult:
    """One page of an experiment's result.

    ``read(experiment_id, generations_from=, candidates_from=, limit=)`` is
    :meth:`taylorglo_tf.coordinator.scheduler.Scheduler.result`; one more entry than the page
    holds is read to know whether another page follows.
    """
    size = page_size(request.page_size, DEFAULT_RESULT_PAGE_SIZE, MAX_RESULT_PAGE_SIZE)
    sent_generations = sent_candidates = 0
    if request.page_token:
        cursor = _decode(request.page_token, {"e": str, "g": int, "c": int})
        if cursor["e"] != request.experiment_id or cursor["g"] < 0 or cursor["c"] < 0:
            raise InvalidArgument("page_token", "belongs to another experiment's result")
        sent_generations, sent_candidates = cursor["g"], cursor["c"]
    result = read(
        request.experiment_id, generations_from=sent_generations, candidates_from=sent_candidates, limit=size + 1
    )
    entries = [g.ByteSize() for g in result.generations] + [c.ByteSize() for c in result.candidates]
    keep = min(size, _fits(entries, MAX_PAGE_BYTES - _header_bytes(result)))
    more = keep < len(entries)
    keep_generations = min(keep, len(result.generations))
    keep_candidates = keep - keep_generations
    del result.generations[keep_generations:]
    del result.candidates[keep_candidates:]
    if more:
        result.next_page_token = _encode(
            {
                "e": request.experiment_id,
                "g": sent_generations + keep_generations,
                "c": sent_candidates + keep_candidates,
            }
        )
    return result


def _header_bytes(result: es_pb2.ExperimentResult) -> int:
    """The bytes every page repeats: the experiment, best theta and fitness."""
    header = es_pb2.ExperimentResult(
        experiment=result.experiment, best_theta=result.best_theta, best_fitness=result.best_fitness
    )
    return header.ByteSize()
