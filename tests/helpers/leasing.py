"""Leasing in tests through the production path: :meth:`LongPolls.lease`, as LeaseCandidate calls it.

The coordinator has one way to grant leases: a ticket from ``Scheduler.wait_for_leases``,
awaited by a coroutine on an event loop, its scheduler calls in a small thread pool. Tests that
need a lease (and no gRPC) take it the same way, here.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from taylorglo_tf.coordinator.defaults import LEASE_THREADS
from taylorglo_tf.coordinator.longpoll import LongPolls
from taylorglo_tf.coordinator.scheduler import Scheduler
from taylorglo_tf.rpc import worker_service_pb2 as ws_pb2

_POOL = ThreadPoolExecutor(max_workers=LEASE_THREADS, thread_name_prefix="test-lease")


def take_leases(
    scheduler: Scheduler,
    trainer_id: str = "t",
    *,
    max_candidates: int = 1,
    wait_s: float = 0.0,
    experiment_id: str = "",
) -> list[ws_pb2.Lease]:
    """What a LeaseCandidate call (``wait_ms = wait_s * 1000``) is granted: up to ``max_candidates``
    of one experiment (``experiment_id`` if given); ``[]`` when no work came within ``wait_s``."""
    polls = LongPolls(scheduler, _POOL)
    return asyncio.run(polls.lease(trainer_id, wait_s, max_candidates=max_candidates, experiment_id=experiment_id))


def take_lease(scheduler: Scheduler, trainer_id: str = "t", *, wait_s: float = 0.0) -> ws_pb2.Lease | None:
    """One lease, as a trainer of one candidate at a time asks for it; None when no work came."""
    leases = take_leases(scheduler, trainer_id, wait_s=wait_s)
    return leases[0] if leases else None


def hang_up_while_waiting(scheduler: Scheduler, trainer_id: str) -> None:
    """A LeaseCandidate call that waits for work, then is cancelled (its trainer hung up)."""

    async def call_and_hang_up() -> None:
        polls = LongPolls(scheduler, _POOL)
        waiting = len(scheduler._dispatcher.waiting)
        call = asyncio.ensure_future(polls.lease(trainer_id, 60.0))
        while len(scheduler._dispatcher.waiting) == waiting:  # its ticket waits
            await asyncio.sleep(0.01)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        others = asyncio.all_tasks() - {asyncio.current_task()}
        await asyncio.gather(*others)  # the withdrawal of its ticket

    asyncio.run(call_and_hang_up())
