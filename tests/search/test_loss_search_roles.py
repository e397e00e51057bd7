"""Who submits a script's experiment when many copies of the script share a coordinator.

``TAYLORGLO_ROLE=chief`` submits (or finds the experiment again by name); other roles
join. Without roles every copy looks for the experiment and submits one if there is
none; when two submitted at once, the first submitted wins and the later copy cancels
its own (no trainer can have leased it: a script's experiment is granted only to
trainers naming it) and joins the winner. These tests drive that choice directly,
without training.
"""

from __future__ import annotations

import io
import secrets

import pytest

from taylorglo_tf import connection
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from tests.helpers.loss_search import wine_search


@pytest.fixture
def coordinator(tmp_path, monkeypatch):
    """A coordinator, and the environment of a script copy pointed at it (no role)."""
    token = secrets.token_urlsafe(24)
    server = serve(tmp_path / "c.db", "127.0.0.1:0", trainer_token=token, client_token=token)
    monkeypatch.setenv("TAYLORGLO_COORDINATOR", server.address)
    monkeypatch.setenv("TAYLORGLO_TOKEN", token)
    monkeypatch.delenv("TAYLORGLO_ROLE", raising=False)
    try:
        with connection.connect(server.address, token=token) as channel:
            yield server, es_grpc.ExperimentServiceStub(channel)
    finally:
        server.stop(0)


def test_without_roles_a_copy_that_finds_the_experiment_joins_it(tmp_path, coordinator):
    server, stub = coordinator
    search = wine_search(tmp_path / "wine", out=io.StringIO())
    first = stub.SubmitExperiment(es.SubmitExperimentRequest(spec=search.spec), timeout=10)
    assert search._experiment(stub, remote=True).id == first.id
    assert not search.is_chief and len(server.scheduler.list()) == 1


def test_without_roles_two_copies_that_submit_at_once_end_on_the_first_submitted(tmp_path, coordinator, monkeypatch):
    server, stub = coordinator
    search = wine_search(tmp_path / "wine", out=io.StringIO())
    other = stub.SubmitExperiment(es.SubmitExperimentRequest(spec=search.spec), timeout=10)  # the other copy's
    real_ours = search._ours
    calls = {"n": 0}

    def ours_missing_the_others_at_first(stub):
        calls["n"] += 1
        return [] if calls["n"] == 1 else real_ours(stub)  # the other's submit crossed our look-up

    monkeypatch.setattr(search, "_ours", ours_missing_the_others_at_first)
    joined = search._experiment(stub, remote=True)
    assert joined.id == other.id and not search.is_chief
    states = {e.id: e.state for e in server.scheduler.list()}
    assert len(states) == 2 and states[other.id] == types_pb2.EXPERIMENT_STATE_RUNNING
    (withdrawn,) = set(states) - {other.id}
    assert states[withdrawn] == types_pb2.EXPERIMENT_STATE_CANCELLED


def test_the_chief_with_overwrite_submits_anew_and_a_worker_joins_the_newest(tmp_path, coordinator, monkeypatch):
    _, stub = coordinator
    monkeypatch.setenv("TAYLORGLO_ROLE", "chief")
    old = stub.SubmitExperiment(es.SubmitExperimentRequest(spec=wine_search(tmp_path / "w").spec), timeout=10)
    chief = wine_search(tmp_path / "w", overwrite=True, out=io.StringIO())
    new = chief._experiment(stub, remote=True)
    assert new.id != old.id and chief.is_chief
    monkeypatch.setenv("TAYLORGLO_ROLE", "worker")
    worker = wine_search(tmp_path / "w", out=io.StringIO())
    assert worker._experiment(stub, remote=True).id == new.id and not worker.is_chief
