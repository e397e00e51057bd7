"""A storage that keeps everything in this process's memory (``open_storage("memory://")``).

The second backend of the :class:`~taylorglo_tf.coordinator.storage.Storage`
contract, as Optuna keeps an ``InMemoryStorage`` beside its RDB one and OSS
Vizier a RAM datastore beside its SQL one: for tests, notebooks and throwaway
searches that need no file. Nothing survives the process; a coordinator on it
loses every experiment when it stops.

Each call is atomic: it checks everything first and changes nothing when it
refuses. Records go in and come out as copies, so a caller that changes a record
it stored or loaded changes nothing here, as with a database.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence

from .model import FINAL_EXPERIMENT_STATES, CandidateRecord, ExperimentRecord, GenerationRecord, LeaseRecord
from .storage import StorageConflict


def _page(rows: list, offset: int, limit: int | None) -> list:
    return rows[offset:] if limit is None else rows[offset : offset + max(0, limit)]


class MemoryStorage:
    """Experiments, candidates, generation summaries and leases in dictionaries, under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._experiments: dict[str, ExperimentRecord] = {}  # in submission order (dicts keep insertion order)
        self._optimizer_states: dict[str, bytes] = {}
        self._candidates: dict[tuple[str, int, int], CandidateRecord] = {}
        self._generations: dict[tuple[str, int], GenerationRecord] = {}
        self._leases: dict[str, LeaseRecord] = {}  # in grant order

    # -- writes

    def _put_experiment(self, e: ExperimentRecord) -> None:
        stored = copy.deepcopy(e)
        stored.es_state = b""  # the optimizer state lives apart, as in the SQLite schema
        if e.id in self._experiments:
            stored.create_time = self._experiments[e.id].create_time  # an update keeps the creation time
        self._experiments[e.id] = stored

    def _put_candidates(self, candidates: Sequence[CandidateRecord]) -> None:
        for c in candidates:
            self._candidates[(c.experiment_id, c.generation, c.index)] = copy.deepcopy(c)

    def insert_experiment(self, experiment: ExperimentRecord, candidates: Sequence[CandidateRecord]) -> None:
        with self._lock:
            self._put_experiment(experiment)
            self._optimizer_states[experiment.id] = experiment.es_state
            self._put_candidates(candidates)

    def advance_generation(
        self, experiment: ExperimentRecord, summary: GenerationRecord, candidates: Sequence[CandidateRecord]
    ) -> None:
        with self._lock:
            self._generations[(summary.experiment_id, summary.generation)] = copy.deepcopy(summary)
            self._put_candidates(candidates)
            self._put_experiment(experiment)
            self._optimizer_states[experiment.id] = experiment.es_state

    def update_experiment(self, experiment: ExperimentRecord) -> None:
        with self._lock:
            self._put_experiment(experiment)

    def grant_leases(self, grants: Sequence[tuple[LeaseRecord, CandidateRecord]]) -> None:
        with self._lock:
            ids = [lease.lease_id for lease, _ in grants]
            taken = sorted({i for i in ids if i in self._leases or ids.count(i) > 1})
            if taken:
                raise StorageConflict(f"lease ids already granted: {taken}")
            for lease, _ in grants:
                self._leases[lease.lease_id] = copy.deepcopy(lease)
            self._put_candidates([candidate for _, candidate in grants])

    def update_candidate(self, candidate: CandidateRecord, experiment: ExperimentRecord | None = None) -> None:
        self.update_candidates([candidate], experiment)

    def update_candidates(
        self, candidates: Sequence[CandidateRecord], experiment: ExperimentRecord | None = None
    ) -> None:
        with self._lock:
            self._put_candidates(candidates)
            stored = self._experiments.get(experiment.id) if experiment is not None else None
            if experiment is not None and stored is not None:
                # counters only, as the SQLite backend: the state and the rest of the row stay
                stored.evaluations_done = experiment.evaluations_done
                stored.best_fitness = experiment.best_fitness
                stored.best_theta = experiment.best_theta.copy()
                stored.update_time = experiment.update_time

    def delete_experiment(self, experiment_id: str) -> None:
        with self._lock:
            self._experiments.pop(experiment_id, None)
            self._optimizer_states.pop(experiment_id, None)
            for key in [k for k in self._candidates if k[0] == experiment_id]:
                del self._candidates[key]
            for summary_key in [k for k in self._generations if k[0] == experiment_id]:
                del self._generations[summary_key]
            for lease_id in [i for i, lease in self._leases.items() if lease.experiment_id == experiment_id]:
                del self._leases[lease_id]

    # -- reads

    def load_experiments(self) -> list[ExperimentRecord]:
        with self._lock:
            loaded = []
            for e in self._experiments.values():
                record = copy.deepcopy(e)
                # as the SQLite backend: a finished experiment's optimizer state is not loaded
                final = record.state in FINAL_EXPERIMENT_STATES
                record.es_state = b"" if final else self._optimizer_states.get(e.id, b"")
                loaded.append(record)
            return loaded

    def load_candidates(
        self, experiment_id: str, generation: int | None = None, *, offset: int = 0, limit: int | None = None
    ) -> list[CandidateRecord]:
        with self._lock:
            keys = sorted(
                k for k in self._candidates if k[0] == experiment_id and (generation is None or k[1] == generation)
            )
            return [copy.deepcopy(self._candidates[k]) for k in _page(keys, offset, limit)]

    def load_generations(
        self, experiment_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[GenerationRecord]:
        with self._lock:
            keys = sorted(k for k in self._generations if k[0] == experiment_id)
            return [copy.deepcopy(self._generations[k]) for k in _page(keys, offset, limit)]

    def load_leases(self, experiment_id: str, generation: int) -> list[LeaseRecord]:
        with self._lock:
            leases = [
                lease
                for lease in self._leases.values()
                if (lease.experiment_id, lease.generation) == (experiment_id, generation)
            ]
            # sorted() is stable: leases granted at the same time stay in grant order
            return [copy.deepcopy(lease) for lease in sorted(leases, key=lambda lease: lease.grant_time)]

    def find_lease(self, lease_id: str) -> LeaseRecord | None:
        with self._lock:
            lease = self._leases.get(lease_id)
            return copy.deepcopy(lease) if lease is not None else None

    def close(self) -> None:
        """Nothing to release: the data goes with the object."""
