"""LeaseCandidate long polls on an asyncio event loop: no thread per waiting trainer.

The scheduler's :meth:`~taylorglo_tf.coordinator.scheduler.Scheduler.wait_for_leases` queues a
ticket and later calls ``on_granted`` from whichever thread made work
available; here that call only hands the leases to the waiting coroutine
(``loop.call_soon_threadsafe``). Scheduler calls themselves take its lock and a
database transaction, so they run in a small thread pool, never on the loop.
Thousands of trainers can wait at once for the price of a future each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import Executor

from taylorglo_tf.rpc import worker_service_pb2 as ws_pb2

from .errors import StorageUnavailable
from .ratelog import RateLimitedLog
from .scheduler import Scheduler

log = logging.getLogger(__name__)
storage_log = RateLimitedLog(log)


_HUNG_UP = "the trainer hung up before the lease reached it"


def _resolve(future: asyncio.Future, leases: list[ws_pb2.Lease]) -> None:
    if not future.done():
        future.set_result(leases)


class LongPolls:
    """Grants leases to coroutines: ``await lease(trainer_id, wait_s)``."""

    def __init__(self, scheduler: Scheduler, executor: Executor):
        self._scheduler = scheduler
        self._executor = executor
        self._withdrawals: set[asyncio.Task] = set()  # held: the loop keeps only weak references to tasks

    async def call(self, function, *args, **kwargs):
        """``function(*args, **kwargs)`` (a blocking scheduler call) in the pool, awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    async def lease(
        self, trainer_id: str, wait_s: float, *, max_candidates: int = 1, experiment_id: str = ""
    ) -> list[ws_pb2.Lease]:
        """The leases granted to ``trainer_id`` within ``wait_s`` seconds (``[]``: none came):
        up to ``max_candidates``, all of one experiment (``experiment_id`` if given).

        A caller that hangs up (the task is cancelled) at any point, even while its
        ticket is still being taken in the pool, withdraws its request; leases
        granted to it in that instant are given back, costing no attempt.
        """
        loop = asyncio.get_running_loop()
        granted: asyncio.Future = loop.create_future()
        caller = {"active": True}

        def on_granted(leases: list[ws_pb2.Lease]) -> None:  # scheduler thread, under its lock
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped
                loop.call_soon_threadsafe(_resolve, granted, leases)

        # The pool call goes on whether or not this coroutine is cancelled (a thread cannot be
        # interrupted), so its ticket is awaited through a shield and withdrawn on a hang-up.
        taking = loop.run_in_executor(
            self._executor,
            functools.partial(
                self._scheduler.wait_for_leases,
                trainer_id,
                on_granted,
                max_candidates=max_candidates,
                is_active=lambda: caller["active"],
                experiment_id=experiment_id,
            ),
        )
        try:
            ticket = await asyncio.shield(taking)
            try:
                return await asyncio.wait_for(asyncio.shield(granted), wait_s)
            except asyncio.TimeoutError:
                if await self.call(ticket.cancel):
                    if ticket.error is not None:  # there was work, but the database refused to grant it
                        raise ticket.error from None
                    return []
                return await granted  # granted just as the wait ran out: the leases are ours
        except asyncio.CancelledError:
            caller["active"] = False  # a grant not yet planned passes this caller by
            withdrawal = loop.create_task(self._withdraw(taking, granted, trainer_id))
            self._withdrawals.add(withdrawal)
            withdrawal.add_done_callback(self._withdrawals.discard)
            raise

    async def _withdraw(self, taking: asyncio.Future, granted: asyncio.Future, trainer_id: str) -> None:
        """Cancel the ticket of a caller that hung up, once it is taken, and give back what it was granted.

        A task of its own, so that it finishes even if the server cancels the call's task again."""
        try:
            ticket = await taking
        except Exception:  # no ticket was taken (the call failed): nothing to withdraw
            return
        try:
            if await self.call(ticket.cancel):
                return
            for lease in await granted:
                await self.call(self._scheduler.return_lease, lease.lease_id, trainer_id, _HUNG_UP)
        except StorageUnavailable as exc:  # the lease expires after its TTL instead
            storage_log.warning(f"giving back the leases of trainer {trainer_id}, which hung up, failed: {exc}")
        except Exception:
            log.exception("giving back the leases of trainer %s, which hung up, failed", trainer_id)
