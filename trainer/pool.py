"""K worker loops of one trainer process, run as threads and stopped and counted together.

``taylorglo trainer --candidates-per-step K`` runs K :class:`trainer.worker.Worker`
loops over one channel and one batching evaluation function: each loop leases,
heartbeats and reports its own candidate, and the evaluation function trains the
candidates that are leased at the same time together. The pool looks like one
``Worker`` to the command (``run``, ``request_stop``, ``returned``,
``abandoned_evaluation``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional


def split(total: Optional[int], parts: int) -> list[Optional[int]]:
    """``total`` in ``parts`` near-equal shares (None: no limit for anyone)."""
    if total is None:
        return [None] * parts
    return [total // parts + (index < total % parts) for index in range(parts)]


class WorkerPool:
    """``make_worker(max_candidates)`` loops, grown with :meth:`grow`; ``max_candidates`` is split among them."""

    def __init__(self, make_worker: Callable[[Optional[int]], Any], max_candidates: Optional[int] = None) -> None:
        self._make_worker = make_worker
        self.max_candidates = max_candidates
        self.workers: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop_grace: Optional[tuple] = None

    def grow(self, count: int) -> None:
        """At least ``count`` loops (an already running pool gets more; safe from any thread)."""
        with self._lock:
            while len(self.workers) < count:
                self.workers.append(self._make_worker(None))
            for worker, share in zip(self.workers, split(self.max_candidates, len(self.workers))):
                worker.max_candidates = share
            if self._stop_grace is not None:
                for worker in self.workers:
                    worker.request_stop(*self._stop_grace)
            if self._threads:  # already running: start the new ones
                self._start_missing()

    def _start_missing(self) -> None:
        for worker in self.workers[len(self._threads):]:
            thread = threading.Thread(target=self._run_one, args=(worker,), name="worker-loop", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run_one(self, worker: Any) -> None:
        try:
            worker.run()
        except BaseException as error:  # re-raised by run(); the other loops stop
            self._errors.append(error)
            self.request_stop(0.0)

    def run(self) -> int:
        """Runs every loop until all have stopped; returns the evaluations reported (re-raises a loop's error)."""
        with self._lock:
            self._start_missing()
        index = 0
        while True:
            with self._lock:
                if index >= len(self._threads):
                    break
                thread = self._threads[index]
            thread.join()
            index += 1
        if self._errors:
            raise self._errors[0]
        return self.reported

    def request_stop(self, *grace: Any) -> None:
        with self._lock:
            self._stop_grace = grace
            workers = list(self.workers)
        for worker in workers:
            worker.request_stop(*grace)

    @property
    def reported(self) -> int:
        return sum(worker.reported for worker in self.workers)

    @property
    def returned(self) -> int:
        return sum(worker.returned for worker in self.workers)

    @property
    def abandoned_evaluation(self) -> bool:
        return any(worker.abandoned_evaluation for worker in self.workers)
