"""Lease dispatch: which waiting call gets which queued candidate, each batch in one transaction.

Waiting calls are :class:`LeaseTicket` s in a first-come-first-served queue. When
work appears, :meth:`Dispatcher.dispatch` plans a grant for every ticket it can
serve (up to ``max_candidates`` of one experiment each, experiments taken
round-robin), commits all of them in one transaction, then applies them in
memory and calls each ticket's ``on_granted``. A failed commit changes nothing:
the tickets keep waiting.

Who may be granted what: a ticket that names an experiment (a trainer inside a
user's script, which has that experiment's model and data only) is granted that
experiment's candidates only. An experiment whose ``task.model`` starts with
:data:`SCRIPT_MODEL_PREFIX` (a model registered in a script) is granted only to
tickets that name it: a generic ``taylorglo trainer`` never sees it.

The dispatcher shares the scheduler's lock and its running experiments; every
method but :meth:`LeaseTicket.cancel` is called with that lock held.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from taylorglo_tf.limits import SCRIPT_MODEL_PREFIX
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws_pb2

from . import early_stopping
from .errors import StorageUnavailable
from .leases import Lease, LeaseTable
from .model import CandidateRecord, LeaseRecord
from .ratelog import RateLimitedLog
from .runner import ExperimentRun
from .storage import Storage

log = logging.getLogger(__name__)
storage_log = RateLimitedLog(log)

OnGranted = Callable[[list[ws_pb2.Lease]], None]


def serves(experiment_id: str, run: ExperimentRun) -> bool:
    """Whether a lease call naming ``experiment_id`` ("": none, a generic trainer) may get ``run``'s candidates."""
    if experiment_id:
        return run.id == experiment_id
    return not run.record.spec.task.model.startswith(SCRIPT_MODEL_PREFIX)


@dataclass(eq=False)
class LeaseTicket:
    """A waiting lease request (see :meth:`taylorglo_tf.coordinator.scheduler.Scheduler.wait_for_leases`)."""

    trainer_id: str
    max_candidates: int
    on_granted: OnGranted
    is_active: Callable[[], bool]
    _dispatcher: Dispatcher = field(repr=False)
    experiment_id: str = ""  # serve only this experiment; "": any a generic trainer can serve (:func:`serves`)
    done: bool = False
    withdrawn: bool = False
    # why the last grant planned for it could not be stored (disk full, locked): a wait that
    # ends without leases then ends with this error (UNAVAILABLE), not with "no work"
    error: StorageUnavailable | None = None

    def cancel(self) -> bool:
        """Withdraw the request: True if it was still waiting (nothing will be granted to it),
        False if ``on_granted`` was already called (the caller owns those leases). Idempotent:
        a second call answers as the first did."""
        return self._dispatcher.withdraw(self)


@dataclass
class _Grant:
    run: ExperimentRun
    candidate: CandidateRecord  # as stored: LEASED, with its attempt and lease id
    lease: LeaseRecord


class Dispatcher:
    def __init__(
        self,
        storage: Storage,
        leases: LeaseTable,
        running: dict[str, ExperimentRun],
        lock: threading.RLock,
        *,
        lease_ttl_s: float,
        startup_progress_s: float,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self._storage, self._leases, self._running, self._lock = storage, leases, running, lock
        self._ttl, self._clock, self._wall = lease_ttl_s, clock, wall
        self._startup_progress_s = startup_progress_s  # until the first training step is reported
        self.waiting: deque[LeaseTicket] = deque()
        self._rr_next = 0

    def ticket(
        self,
        trainer_id: str,
        max_candidates: int,
        on_granted: OnGranted,
        is_active: Callable[[], bool],
        experiment_id: str = "",
    ) -> LeaseTicket:
        return LeaseTicket(trainer_id, max_candidates, on_granted, is_active, self, experiment_id=experiment_id)

    def wait(self, ticket: LeaseTicket) -> None:
        """Queue a ticket and grant it (and any older ones) at once if there is work.

        Raises :class:`StorageUnavailable` (the ticket withdrawn) if there is work but the
        database refused the grant: the caller hears UNAVAILABLE now rather than "no work" later.
        """
        self.waiting.append(ticket)
        self.dispatch()
        if ticket.error is not None and not ticket.done:
            self.waiting.remove(ticket)
            ticket.done = ticket.withdrawn = True
            raise ticket.error

    def dispatch(self) -> None:
        """Grant every waiting call that can be served, in one transaction, first come first served."""
        if not self.waiting or not any(run.queue for run in self._running.values()):
            return  # callers that hung up meanwhile are let go when work comes, or cancel themselves
        tickets: list[LeaseTicket] = []
        gone: list[LeaseTicket] = []
        for ticket in self.waiting:
            (tickets if ticket.is_active() else gone).append(ticket)
        self.waiting = deque(tickets)
        for ticket in gone:
            self.resolve(ticket, [])
        if tickets:
            try:
                granted = self.grant([(t.trainer_id, t.max_candidates, t.experiment_id) for t in tickets])
            except Exception as exc:
                # Nothing changed; the tickets keep waiting and the reaper's next pass retries. The
                # change that made work available is committed already: it must not fail with this.
                if isinstance(exc, StorageUnavailable):
                    storage_log.warning(f"granting waiting lease calls postponed: {exc}")
                    for ticket in tickets:
                        ticket.error = exc
                else:
                    log.exception("granting waiting lease calls failed")
            else:
                self.waiting = deque(t for t, leases in zip(tickets, granted) if not leases)
                for ticket in self.waiting:
                    ticket.error = None  # the database works again; there is just no work for it
                for ticket, leases in zip(tickets, granted):
                    if leases:
                        self.resolve(ticket, leases)

    def withdraw(self, ticket: LeaseTicket) -> bool:
        with self._lock:
            if ticket.done:
                return ticket.withdrawn
            self.waiting.remove(ticket)
            ticket.done = ticket.withdrawn = True
            return True

    def resolve(self, ticket: LeaseTicket, leases: list[ws_pb2.Lease]) -> None:
        ticket.done = True
        try:
            ticket.on_granted(leases)
        except Exception:  # a broken callback must not break the grant of the others
            log.exception("lease callback of trainer %s failed", ticket.trainer_id)

    def close(self) -> None:
        """End every waiting call with nothing (the coordinator is stopping)."""
        while self.waiting:
            self.resolve(self.waiting.popleft(), [])

    def grant(self, requests: Sequence[tuple[str, int, str]]) -> list[list[ws_pb2.Lease]]:
        """Grant ``(trainer_id, max_candidates, experiment_id)`` requests in order, in one transaction.

        Each request gets up to ``max_candidates`` candidates of one experiment it may
        be served (:func:`serves`), the experiments taken round-robin. Planned first without changing
        anything, then committed, then applied: a failed commit changes nothing.
        """
        taken: dict[str, int] = {}
        rr = self._rr_next
        plan: list[list[_Grant]] = []
        now = self._wall()
        for trainer_id, max_candidates, experiment_id in requests:
            run, rr = self._pick(rr, taken, experiment_id)
            grants: list[_Grant] = []
            while run is not None and len(grants) < max_candidates and taken.get(run.id, 0) < len(run.queue):
                c = run.candidates[run.queue[taken.get(run.id, 0)]]
                taken[run.id] = taken.get(run.id, 0) + 1
                lease_id = secrets.token_urlsafe(16)
                updated = replace(
                    c, status=types_pb2.CANDIDATE_STATUS_LEASED, attempts=c.attempts + 1, lease_id=lease_id
                )
                grants.append(
                    _Grant(
                        run,
                        updated,
                        LeaseRecord(
                            lease_id, c.experiment_id, c.generation, c.index, updated.attempts, trainer_id, now
                        ),
                    )
                )
            plan.append(grants)
        flat = [g for grants in plan for g in grants]
        if not flat:
            return [[] for _ in requests]
        self._storage.grant_leases([(g.lease, g.candidate) for g in flat])
        self._rr_next = rr
        now = self._clock()
        expires, progress_by = now + self._ttl, now + self._startup_progress_s
        for g in flat:
            g.run.queue.popleft()
            g.run.candidates[g.candidate.index] = g.candidate
            self._leases.add(
                Lease(
                    g.lease.lease_id,
                    g.lease.trainer_id,
                    g.run.id,
                    g.candidate.generation,
                    g.candidate.index,
                    expires,
                    progress_by=progress_by,
                )
            )
        return [[self._lease_proto(g) for g in grants] for grants in plan]

    def _pick(self, rr: int, taken: dict[str, int], experiment_id: str) -> tuple[ExperimentRun | None, int]:
        """The next experiment the request may be served with queued work not yet planned, round-robin from ``rr``.

        A request naming its experiment leaves the round-robin position alone."""
        if experiment_id:
            run = self._running.get(experiment_id)
            if run is not None and len(run.queue) > taken.get(run.id, 0):
                return run, rr
            return None, rr
        ids = list(self._running)
        for k in range(len(ids)):
            i = (rr + k) % len(ids)
            run = self._running[ids[i]]
            if len(run.queue) > taken.get(run.id, 0) and serves("", run):
                return run, i + 1
        return None, rr

    def _lease_proto(self, grant: _Grant) -> ws_pb2.Lease:
        c, spec = grant.candidate, grant.run.record.spec
        return ws_pb2.Lease(
            lease_id=grant.lease.lease_id,
            experiment_id=c.experiment_id,
            generation=c.generation,
            index=c.index,
            theta=c.theta.tolist(),
            task=spec.task,
            loss=spec.loss,
            attempt=c.attempts,
            ttl_s=self._ttl,
            checkpoints=early_stopping.checkpoints(early_stopping.rule_of(spec)),
        )
