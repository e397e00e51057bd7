"""Request bounds: every string a request can carry has one, and so do the bounded integers (limits.INT_LIMITS);
the proto comments state them, the coordinator enforces them."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from taylorglo_tf import limits
from taylorglo_tf.connection import connect
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc

PROTOS = Path(__file__).resolve().parent.parent / "protos" / "taylorglo" / "v1"
SERVICES = [es.DESCRIPTOR.services_by_name["ExperimentService"], ws.DESCRIPTOR.services_by_name["WorkerService"]]


def request_string_fields() -> dict[str, str]:
    """Every string field reachable from any request message: full name -> path in the request."""
    found: dict[str, str] = {}

    def visit(message, path, seen):
        for field in message.fields:
            name = f"{path}.{field.name}" if path else field.name
            if field.message_type is not None and field.message_type.full_name not in seen:
                visit(field.message_type, name, seen | {field.message_type.full_name})
            elif field.type == field.TYPE_STRING:
                found.setdefault(field.full_name, name)

    for service in SERVICES:
        for method in service.methods:
            visit(method.input_type, "", {method.input_type.full_name})
    return found


def test_every_string_a_request_can_carry_has_a_bound():
    fields = request_string_fields()
    assert "taylorglo.v1.TaskSpec.dataset" in fields and "taylorglo.v1.ReportResultRequest.error" in fields
    assert sorted(set(fields) - set(limits.STRING_LIMITS)) == []
    assert sorted(set(limits.STRING_LIMITS) - set(fields)) == []  # no stale entries


def field_comment(full_name: str) -> str:
    """The comment lines right above a field's declaration in protos/."""
    _, message, field = full_name.rsplit(".", 2)
    for proto in PROTOS.glob("*.proto"):
        text = proto.read_text()
        block = re.search(r"\nmessage " + message + r" \{\n(.*?)\n\}", text, re.S)
        if not block:
            continue
        lines = block.group(1).splitlines()
        for i, line in enumerate(lines):
            if re.match(rf"\s*(repeated )?\w+ {field} = \d+;", line):
                comment = []
                for above in reversed(lines[:i]):
                    if not above.strip().startswith("//"):
                        break
                    comment.insert(0, above.strip()[2:].strip())
                return " ".join(comment)
    raise AssertionError(f"{full_name} not found in {PROTOS}")


@pytest.mark.parametrize("full_name", sorted(limits.STRING_LIMITS))
def test_the_proto_comment_of_each_string_field_states_its_bound(full_name):
    assert f"at most {limits.STRING_LIMITS[full_name]}" in field_comment(full_name).lower()


@pytest.mark.parametrize("full_name", sorted(limits.INT_LIMITS))
def test_the_proto_comment_of_each_bounded_integer_states_its_bound(full_name):
    assert f"0..{limits.INT_LIMITS[full_name]}" in field_comment(full_name)


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    server = serve(tmp_path_factory.mktemp("limits") / "c.db", "127.0.0.1:0")
    channel = connect(server.address)
    yield es_grpc.ExperimentServiceStub(channel), ws_grpc.WorkerServiceStub(channel)
    channel.close()
    server.stop(grace=0)


def valid_spec() -> types_pb2.ExperimentSpec:
    return types_pb2.ExperimentSpec(
        name="ok",
        task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=10),
        search=types_pb2.SearchSpec(population=4, generations=1),
    )


def request_with(full_name: str, text: str):
    """A call and a request that is valid except that the named field holds ``text``."""
    spec = valid_spec()
    spec_fields = {
        "taylorglo.v1.ExperimentSpec.name": lambda: setattr(spec, "name", text),
        "taylorglo.v1.TaskSpec.dataset": lambda: setattr(spec.task, "dataset", text),
        "taylorglo.v1.TaskSpec.model": lambda: setattr(spec.task, "model", text),
        "taylorglo.v1.LossSpec.inputs": lambda: spec.loss.inputs.extend(["x", "y", text]),
        "taylorglo.v1.SearchSpec.algorithm": lambda: setattr(spec.search, "algorithm", text),
        "taylorglo.v1.SearchSpec.early_stopping": lambda: setattr(spec.search, "early_stopping", text),
        "taylorglo.v1.RecipeSpec.optimizer": lambda: setattr(spec.task.recipe, "optimizer", text),
        "taylorglo.v1.PaperResult.table": lambda: setattr(spec.paper, "table", text),
        "taylorglo.v1.PaperResult.note": lambda: (
            setattr(spec.paper, "table", "T1"),
            setattr(spec.paper, "note", text),
        ),
    }
    if full_name in spec_fields:
        spec_fields[full_name]()
        return "SubmitExperiment", es.SubmitExperimentRequest(spec=spec)
    if full_name == "taylorglo.v1.LeaseProgress.lease_id":  # a lease of a batched heartbeat
        return "Heartbeat", ws.HeartbeatRequest(trainer_id="t", leases=[ws.LeaseProgress(lease_id=text)])
    _, message, field = full_name.rsplit(".", 2)
    valid = {
        "GetExperimentRequest": {},
        "WatchExperimentRequest": {},
        "CancelExperimentRequest": {},
        "GetResultRequest": {},
        "DeleteExperimentRequest": {},
        "ListExperimentsRequest": {},
        "LeaseCandidateRequest": {"trainer_id": "t"},
        "HeartbeatRequest": {"lease_id": "l", "trainer_id": "t"},
        "ReportResultRequest": {"lease_id": "l", "trainer_id": "t", "status": ws.EVALUATION_STATUS_ERROR},
        "ReturnLeaseRequest": {"lease_id": "l", "trainer_id": "t"},
    }[message]
    module = es if hasattr(es, message) else ws
    fields = (
        {"experiment_id": "e", **valid}
        if "experiment_id" in module.DESCRIPTOR.message_types_by_name[message].fields_by_name
        else dict(valid)
    )
    fields[field] = text
    return message.removesuffix("Request"), getattr(module, message)(**fields)


@pytest.mark.parametrize("full_name", sorted(limits.STRING_LIMITS))
def test_a_string_over_its_bound_is_invalid_argument_naming_the_field(stubs, full_name):
    bound = limits.STRING_LIMITS[full_name]
    method, request = request_with(full_name, "x" * (bound + 1))
    stub = stubs[0] if hasattr(stubs[0], method) else stubs[1]
    call = getattr(stub, method)
    with pytest.raises(grpc.RpcError) as err:
        response = call(request, timeout=10)
        if method == "WatchExperiment":
            next(iter(response))
    path = request_string_fields()[full_name]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    expected = f"{path}: is {bound + 1} characters long; at most {bound}"
    if full_name == "taylorglo.v1.LossSpec.inputs":
        expected = f"spec.loss.inputs[2]: is {bound + 1} characters long; at most {bound}"
    if full_name == "taylorglo.v1.LeaseProgress.lease_id":
        expected = f"leases[0].lease_id: is {bound + 1} characters long; at most {bound}"
    assert err.value.details() == expected


def test_a_megabyte_dataset_uri_is_refused_before_anything_is_stored(stubs):
    experiments, _ = stubs
    spec = valid_spec()
    spec.task.dataset = "npz:" + "d" * 3_900_000
    before = len(experiments.ListExperiments(es.ListExperimentsRequest(), timeout=10).experiments)
    with pytest.raises(grpc.RpcError) as err:
        experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        f"spec.task.dataset: is {len(spec.task.dataset)} characters long; at most {limits.MAX_DATASET_CHARS}"
    )
    assert len(experiments.ListExperiments(es.ListExperimentsRequest(), timeout=10).experiments) == before


def test_a_string_at_its_bound_is_accepted(stubs):
    experiments, _ = stubs
    spec = valid_spec()
    spec.name = "n" * limits.MAX_NAME_CHARS
    assert experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec), timeout=10).spec.name == spec.name


@pytest.mark.parametrize("full_name", sorted(limits.INT_LIMITS))
def test_an_integer_over_its_bound_is_invalid_argument_naming_the_value(stubs, full_name):
    _, message, field = full_name.rsplit(".", 2)
    assert message == "LeaseCandidateRequest"  # the only bounded integers so far
    bound = limits.INT_LIMITS[full_name]
    for value in (bound + 1, -1):
        with pytest.raises(grpc.RpcError) as err:
            stubs[1].LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t", **{field: value}), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == f"{field}: {value} is outside 0..{bound}"


def test_integers_at_their_bounds_are_accepted(stubs):
    response = stubs[1].LeaseCandidate(
        ws.LeaseCandidateRequest(trainer_id="t", wait_ms=0, max_candidates=limits.MAX_LEASE_CANDIDATES), timeout=10
    )
    assert len(response.leases) <= limits.MAX_LEASE_CANDIDATES  # what is queued (other tests' experiments)
    assert not response.leases or response.lease == response.leases[0]
