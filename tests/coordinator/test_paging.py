"""ListExperiments and GetResult in pages: tokens, page sizes, the byte bound, and clients that follow them."""

from __future__ import annotations

import argparse
import io
import json

import grpc
import pytest

from taylorglo_tf import limits
from taylorglo_tf.commands import client
from taylorglo_tf.coordinator import paging
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws


def spec(name="s", population=6, generations=3):
    return types_pb2.ExperimentSpec(
        name=name,
        task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=10),
        search=types_pb2.SearchSpec(population=population, generations=generations),
    )


def train(worker, limit):
    for _ in range(limit):
        lease = worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t", wait_ms=2000), timeout=10).lease
        assert lease.lease_id
        worker.ReportResult(
            ws.ReportResultRequest(
                lease_id=lease.lease_id, trainer_id="t", status=ws.EVALUATION_STATUS_OK, fitness=0.5
            ),
            timeout=10,
        )


def all_pages(call, request):
    pages = []
    while True:
        page = call(request, timeout=10)
        pages.append(page)
        if not page.next_page_token:
            return pages
        request.page_token = page.next_page_token


def test_list_pages_hold_every_experiment_once_newest_first(served):
    _server, experiments, _ = served
    ids = [
        experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(f"e{i}")), timeout=10).id for i in range(7)
    ]
    pages = all_pages(experiments.ListExperiments, es.ListExperimentsRequest(page_size=3))
    assert [len(p.experiments) for p in pages] == [3, 3, 1]
    assert [e.id for p in pages for e in p.experiments] == ids[::-1]


def test_a_list_page_continues_after_its_last_experiment_even_if_that_one_was_deleted(served):
    _server, experiments, _ = served
    ids = [
        experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(f"e{i}")), timeout=10).id for i in range(5)
    ]
    first = experiments.ListExperiments(es.ListExperimentsRequest(page_size=2), timeout=10)
    assert [e.id for e in first.experiments] == [ids[4], ids[3]]
    experiments.CancelExperiment(es.CancelExperimentRequest(experiment_id=ids[3]), timeout=10)
    experiments.DeleteExperiment(es.DeleteExperimentRequest(experiment_id=ids[3]), timeout=10)
    rest = experiments.ListExperiments(es.ListExperimentsRequest(page_token=first.next_page_token), timeout=10)
    assert [e.id for e in rest.experiments] == [ids[2], ids[1], ids[0]]


def test_result_pages_concatenate_to_the_whole_result_of_a_running_search(served):
    server, experiments, worker = served
    exp = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(population=6, generations=3)), timeout=10)
    train(worker, 6 + 6 + 2)  # two generations done, the third under way
    whole = server.scheduler.result(exp.id)
    assert len(whole.generations) == 2 and len(whole.candidates) == 18
    pages = all_pages(experiments.GetResult, es.GetResultRequest(experiment_id=exp.id, page_size=5))
    assert [len(p.generations) + len(p.candidates) for p in pages] == [5, 5, 5, 5]
    assert all(p.experiment.id == exp.id and p.best_fitness == whole.best_fitness for p in pages)
    assert [g for p in pages for g in p.generations] == list(whole.generations)
    assert [c for p in pages for c in p.candidates] == list(whole.candidates)
    assert client.fetch_result(experiments, exp.id) == whole


def test_no_result_page_passes_the_byte_bound_whatever_the_page_size(served, monkeypatch):
    server, experiments, _worker = served
    exp = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(population=40, generations=2)), timeout=10)
    whole = server.scheduler.result(exp.id)
    bound = 1200
    monkeypatch.setattr(paging, "MAX_PAGE_BYTES", bound)
    pages = all_pages(
        experiments.GetResult, es.GetResultRequest(experiment_id=exp.id, page_size=limits.MAX_RESULT_PAGE_SIZE)
    )
    assert len(pages) > 3
    assert all(p.ByteSize() <= bound for p in pages)
    assert [c for p in pages for c in p.candidates] == list(whole.candidates)


def test_the_default_page_is_bounded_so_old_clients_get_a_page_not_an_error(served, monkeypatch):
    _server, experiments, _ = served
    monkeypatch.setattr(paging, "DEFAULT_RESULT_PAGE_SIZE", 10)
    exp = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(population=25)), timeout=10)
    first = experiments.GetResult(es.GetResultRequest(experiment_id=exp.id), timeout=10)
    assert len(first.candidates) == 10 and first.next_page_token


@pytest.mark.parametrize(
    "field,request_fields,message",
    [
        ("page_size", {"page_size": -1}, "-1 is outside 0..10000"),
        ("page_size", {"page_size": 10_001}, "10001 is outside 0..10000"),
        ("page_token", {"page_token": "not a token"}, "is not a next_page_token of this call"),
        ("page_token", {"page_token": "eyJ4IjoxfQ=="}, "is not a next_page_token of this call"),
    ],
)
def test_a_bad_page_request_is_invalid_argument_naming_the_field(served, field, request_fields, message):
    _server, experiments, _ = served
    exp = experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec()), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        experiments.GetResult(es.GetResultRequest(experiment_id=exp.id, **request_fields), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}: ") and message in err.value.details()


def test_a_result_token_of_another_experiment_is_refused(served):
    _server, experiments, _ = served
    a, b = (experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec()), timeout=10) for _ in range(2))
    token = experiments.GetResult(es.GetResultRequest(experiment_id=a.id, page_size=2), timeout=10).next_page_token
    with pytest.raises(grpc.RpcError) as err:
        experiments.GetResult(es.GetResultRequest(experiment_id=b.id, page_token=token), timeout=10)
    assert err.value.details() == "page_token: belongs to another experiment's result"


def run_command(argv):
    parser = argparse.ArgumentParser(prog="taylorglo")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("status", "result"):
        client.add_arguments(sub.add_parser(name), name)
    out = io.StringIO()
    return client.run(parser.parse_args(argv), out=out), out.getvalue()


def test_status_and_result_commands_follow_every_page(served, tmp_path, monkeypatch):
    server, experiments, _worker = served
    monkeypatch.setattr(paging, "DEFAULT_LIST_PAGE_SIZE", 2)
    monkeypatch.setattr(paging, "DEFAULT_RESULT_PAGE_SIZE", 4)
    monkeypatch.setenv("COLUMNS", "200")
    ids = [
        experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec(f"e{i}")), timeout=10).id for i in range(5)
    ]
    code, out = run_command(["status", "--coordinator", server.address])
    assert code == 0 and all(i in out for i in ids)
    code, _ = run_command(["result", ids[0], "--out", str(tmp_path / "r"), "--coordinator", server.address])
    assert code == 0
    rows = (tmp_path / "r" / "candidates.csv").read_text().splitlines()
    assert len(rows) == 1 + 6  # header + every candidate of generation 0: two pages
    assert json.loads((tmp_path / "r" / "experiment.json").read_text())["id"] == ids[0]
