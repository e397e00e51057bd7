"""Which experiments a lease call may be granted.

A trainer inside a user's script (``taylorglo_tf.LossSearch``) has the model and
data of its own experiment only: it names that experiment in
``LeaseCandidateRequest.experiment_id`` and is granted nothing else. An
experiment whose ``task.model`` is a script's (``script:...``) is granted only
to calls that name it, so a generic ``taylorglo trainer`` never leases one.
"""

from __future__ import annotations

import grpc
import pytest

from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc
from taylorglo_tf.rpc import worker_service_pb2 as ws
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc
from tests.helpers.leasing import take_leases
from tests.helpers.scheduling import make_spec, open_scheduler


def script_spec(name: str = "script:wine"):
    """A spec whose model and data were registered inside a script (as LossSearch submits it)."""
    spec = make_spec(population=4, generations=2)
    spec.task.model = spec.task.dataset = name
    return spec


def test_a_generic_trainer_is_never_granted_a_script_experiment(tmp_path):
    scheduler = open_scheduler(tmp_path / "c.db")
    try:
        scheduler.submit(script_spec())
        assert take_leases(scheduler, "generic", max_candidates=4) == []
    finally:
        scheduler.stop()


def test_a_script_trainer_is_granted_its_own_experiment_only(tmp_path):
    scheduler = open_scheduler(tmp_path / "c.db")
    try:
        zoo = scheduler.submit(make_spec(population=4, generations=2))
        script = scheduler.submit(script_spec())
        leases = take_leases(scheduler, "in-script", max_candidates=8, experiment_id=script.id)
        assert {lease.experiment_id for lease in leases} == {script.id}
        assert len(leases) == 4
        # nothing left of its experiment: the zoo experiment's candidates are not offered instead
        assert take_leases(scheduler, "in-script", max_candidates=8, experiment_id=script.id) == []
        # while a generic trainer still gets the zoo experiment's
        assert {lease.experiment_id for lease in take_leases(scheduler, "generic", max_candidates=8)} == {zoo.id}
    finally:
        scheduler.stop()


def test_a_call_naming_an_unknown_experiment_is_granted_nothing(tmp_path):
    scheduler = open_scheduler(tmp_path / "c.db")
    try:
        scheduler.submit(make_spec(population=4, generations=2))
        assert take_leases(scheduler, "in-script", experiment_id="no-such-experiment") == []
    finally:
        scheduler.stop()


def test_a_waiting_script_trainer_is_granted_when_its_experiment_is_submitted(tmp_path):
    """The filter holds for waiting calls too (granted later by whichever change made work available)."""
    scheduler = open_scheduler(tmp_path / "c.db")
    try:
        granted: list[list[ws.Lease]] = []
        generic = scheduler.wait_for_leases("generic", granted.append)
        script = scheduler.submit(script_spec())
        assert not generic.done  # a script's experiment does not wake a generic trainer
        named = scheduler.wait_for_leases("in-script", granted.append, max_candidates=2, experiment_id=script.id)
        assert named.done and [lease.experiment_id for lease in granted[0]] == [script.id, script.id]
        assert generic.cancel()
    finally:
        scheduler.stop()


def test_lease_candidate_refuses_an_experiment_id_that_is_not_printable(tmp_path):
    server = serve(tmp_path / "c.db", "127.0.0.1:0")
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = ws_grpc.WorkerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t", experiment_id="bad\nid"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "experiment_id" in caught.value.details()
    finally:
        server.stop(0)


def test_lease_candidate_over_grpc_grants_the_named_experiment_only(tmp_path):
    server = serve(tmp_path / "c.db", "127.0.0.1:0")
    try:
        with grpc.insecure_channel(server.address) as channel:
            experiments = experiment_service_pb2_grpc.ExperimentServiceStub(channel)
            first, second = (
                experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=make_spec(seed=seed)), timeout=10)
                for seed in (1, 2)
            )
            stub = ws_grpc.WorkerServiceStub(channel)
            named = stub.LeaseCandidate(
                ws.LeaseCandidateRequest(trainer_id="s", max_candidates=8, experiment_id=second.id), timeout=10
            )
        assert [lease.experiment_id for lease in named.leases] == [second.id] * 4
        assert first.id != second.id
    finally:
        server.stop(0)
