"""DeleteExperiment and ``taylorglo delete``: finished or cancelled experiments only, committed before the answer."""

from __future__ import annotations

import argparse
import io
import sqlite3

import grpc
import pytest

from taylorglo_tf.commands import client
from taylorglo_tf.connection import connect
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws

SPEC = types_pb2.ExperimentSpec(
    name="to delete",
    task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=10),
    search=types_pb2.SearchSpec(population=3, generations=2),
)


def rows(db_path, experiment_id) -> dict[str, int]:
    """Rows per table that belong to the experiment, read from the file by a separate connection."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        counts = {
            table: db.execute(f"SELECT COUNT(*) FROM {table} WHERE experiment_id=?", (experiment_id,)).fetchone()[0]
            for table in ("candidates", "generations", "leases")
        }
        counts["experiments"] = db.execute("SELECT COUNT(*) FROM experiments WHERE id=?", (experiment_id,)).fetchone()[
            0
        ]
        return counts
    finally:
        db.close()


def test_a_running_experiment_cannot_be_deleted(served):
    _server, experiments, _ = served
    exp = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=SPEC), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        experiments.DeleteExperiment(es.DeleteExperimentRequest(experiment_id=exp.id), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "EXPERIMENT_STATE_RUNNING" in err.value.details() and "cancel it" in err.value.details()
    assert experiments.GetExperiment(es.GetExperimentRequest(experiment_id=exp.id), timeout=10).id == exp.id


def test_a_cancelled_experiment_is_deleted_from_the_database_before_the_answer(served, tmp_path):
    _server, experiments, worker = served
    keep = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=SPEC), timeout=10)
    exp = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=SPEC), timeout=10)
    leased = [worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t"), timeout=10).lease for _ in range(2)]
    assert {lease.experiment_id for lease in leased} == {keep.id, exp.id}
    experiments.CancelExperiment(es.CancelExperimentRequest(experiment_id=exp.id), timeout=10)
    assert rows(tmp_path / "c.db", exp.id)["leases"] == 1

    deleted = experiments.DeleteExperiment(es.DeleteExperimentRequest(experiment_id=exp.id), timeout=10).experiment
    assert deleted.id == exp.id and deleted.state == types_pb2.EXPERIMENT_STATE_CANCELLED
    assert rows(tmp_path / "c.db", exp.id) == {"experiments": 0, "candidates": 0, "generations": 0, "leases": 0}
    assert rows(tmp_path / "c.db", keep.id)["candidates"] == 3  # the other experiment is untouched
    for call, request in [
        (experiments.GetExperiment, es.GetExperimentRequest),
        (experiments.GetResult, es.GetResultRequest),
        (experiments.DeleteExperiment, es.DeleteExperimentRequest),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            call(request(experiment_id=exp.id), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = experiments.ListExperiments(es.ListExperimentsRequest(), timeout=10).experiments
    assert [e.id for e in listed] == [keep.id]


def test_a_deleted_experiment_stays_deleted_after_a_restart(tmp_path):
    server = serve(tmp_path / "c.db")
    with connect(server.address) as channel:
        experiments = es_grpc.ExperimentServiceStub(channel)
        exp = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=SPEC), timeout=10)
        experiments.CancelExperiment(es.CancelExperimentRequest(experiment_id=exp.id), timeout=10)
        experiments.DeleteExperiment(es.DeleteExperimentRequest(experiment_id=exp.id), timeout=10)
    server.stop(grace=0)
    server = serve(tmp_path / "c.db")
    try:
        assert server.scheduler.list() == []
    finally:
        server.stop(grace=0)


def test_the_delete_command_deletes_and_refuses_a_running_experiment(served, capsys):
    server, experiments, _ = served
    exp = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=SPEC), timeout=10)
    parser = argparse.ArgumentParser(prog="taylorglo")
    client.add_arguments(parser.add_subparsers(dest="command").add_parser("delete"), "delete")

    out = io.StringIO()
    assert client.run(parser.parse_args(["delete", exp.id, "--coordinator", server.address]), out=out) == 1
    assert "not possible now" in capsys.readouterr().err

    experiments.CancelExperiment(es.CancelExperimentRequest(experiment_id=exp.id), timeout=10)
    assert client.run(parser.parse_args(["delete", exp.id, "--coordinator", server.address]), out=out) == 0
    assert out.getvalue() == f"deleted experiment {exp.id} (to delete), cancelled with 0 evaluations\n"
    assert server.scheduler.list() == []
