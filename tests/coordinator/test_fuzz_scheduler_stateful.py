"""A stateful property test: any interleaving of leases, reports (good, stale, foreign or malformed),
heartbeats, returns, lease expiry and restarts loses no candidate.

Calls go through the servicers' validation (:func:`taylorglo_tf.coordinator.servicers.validate_report`)
into the :class:`~taylorglo_tf.coordinator.scheduler.Scheduler` with a hand-driven clock; after
every step the recorded counters agree with the stored candidates, and at the end
draining the queue finishes the experiment with every candidate accounted for.
"""

import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.coordinator.grpc_util import InvalidArgument
from taylorglo_tf.coordinator.scheduler import Scheduler
from taylorglo_tf.coordinator.servicers import validate_report
from taylorglo_tf.coordinator.storage import SqliteStorage
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.helpers.leasing import take_lease

TTL = 30.0
POPULATION, GENERATIONS, MAX_ATTEMPTS = 3, 2, 2
TRAINERS = ("a", "b")
FINAL_STATES = {types_pb2.EXPERIMENT_STATE_SUCCEEDED, types_pb2.EXPERIMENT_STATE_FAILED}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class SchedulerUnderAttack(RuleBasedStateMachine):
    leases = Bundle("leases")

    def __init__(self):
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.db = Path(self.dir.name) / "s.db"
        self.clock = Clock()
        self.scheduler = self._open()
        spec = spec_lib.load_spec(
            {
                "task": {"dataset": "digits", "model": "tiny", "steps": 5},
                "search": {
                    "population": POPULATION,
                    "generations": GENERATIONS,
                    "seed": 5,
                    "max_attempts": MAX_ATTEMPTS,
                },
            }
        )
        self.exp_id = self.scheduler.submit(spec).id

    def _open(self):
        self.storage = SqliteStorage(self.db)
        scheduler = Scheduler(self.storage, lease_ttl_s=TTL, prescreen=lambda theta, n: True, clock=self.clock)
        scheduler.start(reaper=False)
        return scheduler

    def _report(self, lease_id, trainer, status, fitness, metrics=None):
        request = ws.ReportResultRequest(lease_id=lease_id, trainer_id=trainer, status=status, fitness=fitness)
        if metrics is not None:
            request.metrics.CopyFrom(metrics)
        return self.scheduler.report(validate_report(request))

    def _state(self):
        result = self.scheduler.result(self.exp_id)
        return result.experiment.SerializeToString(deterministic=True), [
            c.SerializeToString(deterministic=True) for c in result.candidates
        ]

    # ------------------------------------------------------------------ legitimate traffic

    @rule(target=leases, trainer=st.sampled_from(TRAINERS))
    def lease(self, trainer):
        lease = take_lease(self.scheduler, trainer)
        return (lease.lease_id, trainer) if lease is not None else ("none", trainer)

    @rule(
        held=leases,
        status=st.sampled_from(
            [
                ws.EVALUATION_STATUS_OK,
                ws.EVALUATION_STATUS_DIVERGED,
                ws.EVALUATION_STATUS_ABORTED,
                ws.EVALUATION_STATUS_ERROR,
            ]
        ),
        fitness=st.floats(min_value=0, max_value=1),
    )
    def report(self, held, status, fitness):
        accepted, reason = self._report(*held, status, fitness)
        assert accepted or reason
        event(f"report {'accepted' if accepted else reason.split(':')[0]}")

    @rule(held=leases)
    def heartbeat(self, held):
        keep_going, ttl = self.scheduler.heartbeat(*held)
        assert (keep_going, ttl) in ((True, TTL), (False, 0.0))

    @rule(held=leases)
    def return_lease(self, held):
        self.scheduler.return_lease(*held)

    @rule(seconds=st.sampled_from([1.0, TTL / 2, TTL + 1]))
    def time_passes(self, seconds):
        self.clock.now += seconds
        self.scheduler.expire_leases()

    @rule()
    def restart(self):
        self.scheduler.stop()
        self.storage.close()
        self.scheduler = self._open()

    # ------------------------------------------------------------------ attacks

    @rule(held=leases, lease_id=st.text(max_size=8), trainer=st.text(max_size=4))
    def foreign_or_unknown_calls_change_nothing(self, held, lease_id, trainer):
        before = self._state()
        wrong = trainer if trainer != held[1] else trainer + "x"
        for lid, tid in ((held[0], wrong), (lease_id or "x", held[1])):
            if lid == held[0] and tid == held[1]:
                continue
            try:
                accepted, _ = self._report(lid, tid, ws.EVALUATION_STATUS_OK, 0.5)
                assert not accepted
            except InvalidArgument:
                pass
            if lid != held[0]:
                assert self.scheduler.heartbeat(lid, tid) == (False, 0.0)
            if tid != held[1]:
                assert not self.scheduler.return_lease(lid, tid)
        assert self._state() == before

    @rule(
        held=leases,
        status=st.one_of(
            st.integers(min_value=-3, max_value=100).filter(lambda s: s not in (1, 2, 3, 4, 5)),
            st.sampled_from([ws.EVALUATION_STATUS_OK]),
        ),
        fitness=st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.5, 1.5, 1e300])),
        steps=st.integers(min_value=-(2**31), max_value=-1),
    )
    def malformed_reports_are_refused_and_change_nothing(self, held, status, fitness, steps):
        before = self._state()
        for metrics in (None, types_pb2.EvaluationMetrics(val_accuracy=0.5, steps=steps)):
            for fit in (fitness, 0.5):
                if metrics is None and fit == 0.5 and status == ws.EVALUATION_STATUS_OK:
                    continue  # well-formed
                try:
                    self._report(*held, status, fit, metrics)
                except InvalidArgument as err:
                    assert err.field in ("status", "fitness", "metrics.steps"), err
                else:
                    raise AssertionError(f"a malformed report was accepted: {status}, {fit}, {metrics}")
        assert self._state() == before

    # ------------------------------------------------------------------ what must always hold

    @invariant()
    def counters_agree_with_the_stored_candidates(self):
        result = self.scheduler.result(self.exp_id)
        exp = result.experiment
        finals = [
            c
            for c in result.candidates
            if c.status not in (types_pb2.CANDIDATE_STATUS_QUEUED, types_pb2.CANDIDATE_STATUS_LEASED)
        ]
        assert exp.evaluations_done == len(finals)
        assert all(0 <= c.attempts <= MAX_ATTEMPTS for c in result.candidates)
        assert len(result.candidates) == POPULATION * min(GENERATIONS, exp.generation + 1)
        if exp.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED:
            assert len(finals) == POPULATION * GENERATIONS and len(result.generations) == GENERATIONS

    def teardown(self):
        try:
            for _ in range(100):
                lease = take_lease(self.scheduler, "drain")
                if lease is None:
                    break
                fitness = float(np.exp(-np.sum(np.square(lease.theta)) / 8))
                assert self._report(lease.lease_id, "drain", ws.EVALUATION_STATUS_OK, fitness)[0]
            if self.scheduler.get(self.exp_id).state not in FINAL_STATES:
                # leases still held by a or b: let them expire, then drain again
                self.clock.now += TTL + 1
                self.scheduler.expire_leases()
                while (lease := take_lease(self.scheduler, "drain")) is not None:
                    assert self._report(lease.lease_id, "drain", ws.EVALUATION_STATUS_OK, 0.5)[0]
            result = self.scheduler.result(self.exp_id)
            event(f"ended {types_pb2.ExperimentState.Name(result.experiment.state)}")
            assert result.experiment.state in FINAL_STATES, result.experiment
            if result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED:
                assert result.experiment.evaluations_done == POPULATION * GENERATIONS
                assert all(c.status != types_pb2.CANDIDATE_STATUS_QUEUED for c in result.candidates)
            else:  # a generation in which every candidate failed
                assert result.experiment.error  # names the failure
        finally:
            self.scheduler.stop()
            self.storage.close()
            self.dir.cleanup()


SchedulerUnderAttack.TestCase.settings = settings(
    max_examples=80, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestSchedulerUnderAttack = SchedulerUnderAttack.TestCase
