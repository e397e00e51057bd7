"""The lease table: every lease of the current generations, in one map keyed by lease id.

A lease is *live* while its trainer may still heartbeat it (it has an expiry
time); once it expired, was returned or its candidate got a final result it is
*ended* but kept until its generation is over, so that a late report from it
is still recognised (the first final report for a candidate counts, whichever
lease it comes from). Leases of earlier generations are only in the database.

Not thread-safe: the scheduler calls it under its lock, and only after the
database has the change it records.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Lease:
    lease_id: str
    trainer_id: str
    experiment_id: str
    generation: int
    index: int
    # monotonic seconds at which it expires without a heartbeat; None once ended
    expires: float | None
    # training steps its trainer last reported, and the monotonic seconds by which it must
    # report more (the progress deadline; None: not enforced)
    steps_done: int = 0
    progress_by: float | None = None

    @property
    def live(self) -> bool:
        return self.expires is not None


class LeaseTable:
    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}

    def add(self, lease: Lease) -> None:
        self._leases[lease.lease_id] = lease

    def get(self, lease_id: str) -> Lease | None:
        """A lease of a current generation, live or ended."""
        return self._leases.get(lease_id)

    def live(self, lease_id: str, trainer_id: str) -> Lease | None:
        """The lease if it is live and held by ``trainer_id``."""
        lease = self._leases.get(lease_id)
        return lease if lease is not None and lease.live and lease.trainer_id == trainer_id else None

    def extend(self, lease: Lease, expires: float) -> None:
        lease.expires = expires

    def progressed(self, lease: Lease, steps_done: int, progress_by: float) -> None:
        """The trainer reported a new step count (more steps, or a retry from step 1): a new progress deadline."""
        lease.steps_done = steps_done
        lease.progress_by = progress_by

    def end(self, lease_id: str) -> None:
        """No more heartbeats for it; a report from it is still matched to its candidate."""
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.expires = None

    def expired(self, now: float) -> list[Lease]:
        """Live leases whose expiry time or progress deadline has passed."""
        return [
            lease
            for lease in self._leases.values()
            if lease.live and (self.silent(lease, now) or self.stalled(lease, now))
        ]

    @staticmethod
    def silent(lease: Lease, now: float) -> bool:
        return lease.expires is not None and lease.expires <= now

    @staticmethod
    def stalled(lease: Lease, now: float) -> bool:
        return lease.progress_by is not None and lease.progress_by <= now

    def forget(self, experiment_id: str) -> None:
        """Drop an experiment's leases: its generation is over, or the experiment is."""
        self._leases = {k: v for k, v in self._leases.items() if v.experiment_id != experiment_id}

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._leases.values()))

    def __len__(self) -> int:
        return len(self._leases)
