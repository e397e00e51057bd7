"""Property-based attacks on the coordinator's gRPC services, in process on 127.0.0.1 with tokens.

Whatever a client or trainer sends, the answer is OK or a named INVALID_ARGUMENT,
NOT_FOUND, FAILED_PRECONDITION, UNAUTHENTICATED or PERMISSION_DENIED (never UNKNOWN
or INTERNAL), and a rejected call changes nothing: an experiment in flight still
completes afterwards with every candidate accounted for.
"""

import math

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from taylorglo_tf.connection import connect
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc

TRAINER_TOKEN = "trainer-secret-0123456789"
CLIENT_TOKEN = "client-secret-0123456789"
ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- strategies

texts = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "\x00", "é" * 300, "x" * 201, "../x", "\n", "t"]))
doubles = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-1.0, 0.0, 0.5, 1.0, 1.5]))
int32s = st.one_of(st.integers(min_value=-(2**31), max_value=2**31 - 1), st.sampled_from([-1, 0, 1, 60_001]))
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
statuses = st.one_of(st.sampled_from(list(ws.EvaluationStatus.values())), st.integers(min_value=-5, max_value=1000))


GOOD = {  # a valid spec, field by field; the fuzzer makes a few of them wild at a time
    "name": "fuzz",
    "task.dataset": "digits",
    "task.model": "tiny",
    "task.steps": 5,
    "task.batch_size": 0,
    "task.seed": 0,
    "task.train_fraction": 1.0,
    "task.abort_accuracy": 0.15,
    "task.abort_epochs": 10,
    "task.augmentation.flip_crop": False,
    "task.augmentation.crop_padding": 0,
    "task.augmentation.cutout_length": 0,
    "task.augmentation.cutmix_probability": 0.0,
    "task.augmentation.cutmix_alpha": 0.0,
    "loss.order": 3,
    "loss.inputs": ["x", "y"],
    "search.population": 2,
    "search.generations": 1,
    "search.sigma0": 1.0,
    "search.seed": 1,
    "search.max_attempts": 3,
    "search.num_classes": 10,
    "search.invariant_prescreen": False,
}
WILD = {
    "name": texts,
    "task.dataset": st.one_of(st.sampled_from(["tfds:mnist", "idx:../x", "npz:/a.npz", "idx:a"]), texts),
    "task.model": st.one_of(st.sampled_from(["tiny", "nope"]), texts),
    "task.steps": int32s,
    "task.batch_size": int32s,
    "task.seed": int64s,
    "task.train_fraction": doubles,
    "task.abort_accuracy": doubles,
    "task.abort_epochs": int32s,
    "task.augmentation.flip_crop": st.booleans(),
    "task.augmentation.crop_padding": int32s,
    "task.augmentation.cutout_length": int32s,
    "task.augmentation.cutmix_probability": doubles,
    "task.augmentation.cutmix_alpha": doubles,
    "loss.order": st.one_of(st.integers(min_value=-2, max_value=12), int32s),
    "loss.inputs": st.lists(st.one_of(st.sampled_from(["x", "y", "t"]), texts), max_size=4),
    "search.population": st.one_of(st.integers(min_value=-2, max_value=5), int32s),
    "search.generations": st.one_of(st.integers(min_value=-2, max_value=3), int32s),
    "search.sigma0": doubles,
    "search.seed": int64s,
    "search.max_attempts": int32s,
    "search.num_classes": int32s,
    "search.invariant_prescreen": st.booleans(),
}


@st.composite
def spec_protos(draw):
    """A valid ExperimentSpec with up to three fields drawn wild (huge, negative, NaN, odd strings), or no task."""
    spec = types_pb2.ExperimentSpec()
    wild = draw(st.sets(st.sampled_from(sorted(WILD)), max_size=3))
    for path, good in GOOD.items():
        value = draw(WILD[path]) if path in wild else good
        *parents, leaf = path.split(".")
        message = spec
        for parent in parents:
            message = getattr(message, parent)
        if isinstance(value, list):
            getattr(message, leaf).extend(value)
        else:
            setattr(message, leaf, value)
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        spec.ClearField("task")
    return spec


ids = st.one_of(texts, st.text(min_size=190, max_size=210), st.from_regex(r"[0-9a-f]{16}", fullmatch=True))

# --------------------------------------------------------------------------- fixtures


class Session:
    """A secured coordinator with one experiment in flight and one of its candidates leased to trainer ``t``."""

    def __init__(self, tmp_path):
        self.server = serve(
            tmp_path / "fuzz.db", trainer_token=TRAINER_TOKEN, client_token=CLIENT_TOKEN, lease_ttl_s=600
        )
        self.experiments = es_grpc.ExperimentServiceStub(connect(self.server.address, token=CLIENT_TOKEN))
        self.worker = ws_grpc.WorkerServiceStub(connect(self.server.address, token=TRAINER_TOKEN))
        spec = types_pb2.ExperimentSpec(
            task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=5),
            search=types_pb2.SearchSpec(population=4, generations=2, seed=3),
        )
        self.exp = self.experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec), timeout=10)
        self.lease = self.worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t"), timeout=10).lease
        assert self.lease.lease_id

    def snapshot(self):
        """What the coordinator has recorded: experiments, and every candidate of the one in flight."""
        experiments = self.experiments.ListExperiments(es.ListExperimentsRequest(), timeout=10).experiments
        result = self.experiments.GetResult(es.GetResultRequest(experiment_id=self.exp.id), timeout=10)
        return (
            [e.SerializeToString(deterministic=True) for e in experiments],
            [c.SerializeToString(deterministic=True) for c in result.candidates],
        )


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = Session(tmp_path_factory.mktemp("fuzz-coordinator"))
    yield s
    s.server.stop(grace=0)


def outcome(call, request):
    """``(code, details, response)`` of a unary call."""
    try:
        return grpc.StatusCode.OK, "", call(request, timeout=10)
    except grpc.RpcError as err:
        return err.code(), err.details(), None


def assert_allowed(code, details):
    assert code == grpc.StatusCode.OK or code in ALLOWED, (code, details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert ": " in details, details  # "field.path: what is wrong"


# --------------------------------------------------------------------------- submissions


@FUZZ
@given(spec_protos())
def test_any_submitted_spec_starts_an_experiment_or_is_invalid_argument_naming_a_field(session, spec):
    before = session.snapshot()
    code, details, exp = outcome(session.experiments.SubmitExperiment, es.SubmitExperimentRequest(spec=spec))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, details)
    event(f"{code.name} {details.split(':')[0]}")
    if code == grpc.StatusCode.OK:
        stored = session.experiments.GetResult(es.GetResultRequest(experiment_id=exp.id), timeout=10).experiment
        assert stored.spec.name == spec.name and stored.spec.task.dataset == spec.task.dataset
        if exp.state == types_pb2.EXPERIMENT_STATE_RUNNING:
            session.experiments.CancelExperiment(es.CancelExperimentRequest(experiment_id=exp.id), timeout=10)
        else:  # the invariant pre-screen rejected every candidate of every generation: nothing to train
            assert spec.search.invariant_prescreen and stored.evaluations_done == stored.evaluations_total
    else:
        assert details.startswith("spec"), details
        assert session.snapshot() == before  # nothing recorded


def test_a_submission_without_a_spec_is_invalid_argument(session):
    code, details, _ = outcome(session.experiments.SubmitExperiment, es.SubmitExperimentRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("spec")


# --------------------------------------------------------------------------- worker calls


@st.composite
def report_requests(draw):
    request = ws.ReportResultRequest(
        lease_id=draw(ids), trainer_id=draw(ids), status=draw(statuses), fitness=draw(doubles), error=draw(texts)
    )
    if draw(st.booleans()):
        request.metrics.CopyFrom(
            types_pb2.EvaluationMetrics(
                val_accuracy=draw(doubles),
                val_loss=draw(doubles),
                steps=draw(int32s),
                wall_time_s=draw(doubles),
                attempts=draw(int32s),
            )
        )
    return request


def _aimed(session, request, target):
    """Point a garbage request at the live lease: with the right lease but a wrong trainer, or vice versa."""
    if target == "lease":
        request.lease_id = session.lease.lease_id
        if request.trainer_id == "t":
            request.trainer_id = "not-t"
    elif target == "trainer":
        request.trainer_id = "t"
    return request


@FUZZ
@given(report_requests(), st.sampled_from(["none", "lease", "trainer"]))
def test_a_report_that_is_garbage_or_not_the_lease_holders_is_refused_and_changes_nothing(session, request, target):
    request = _aimed(session, request, target)
    valid_from_holder = request.lease_id == session.lease.lease_id and request.trainer_id == "t"
    assert not valid_from_holder
    before = session.snapshot()
    code, details, response = outcome(session.worker.ReportResult, request)
    assert_allowed(code, details)
    if code == grpc.StatusCode.OK:
        assert not response.accepted and response.reason
    assert session.snapshot() == before


@FUZZ
@given(report_requests())
def test_a_malformed_report_from_the_lease_holder_is_invalid_argument_and_changes_nothing(session, request):
    request.lease_id, request.trainer_id = session.lease.lease_id, "t"
    well_formed = request.status in (1, 2, 3, 4, 5) and math.isfinite(request.fitness) and 0 <= request.fitness <= 1
    if well_formed and request.HasField("metrics"):
        m = request.metrics
        well_formed = (
            math.isfinite(m.val_accuracy)
            and 0 <= m.val_accuracy <= 1
            and m.steps >= 0
            and m.attempts >= 0
            and math.isfinite(m.wall_time_s)
            and m.wall_time_s >= 0
        )
    if well_formed:
        request.fitness = math.nan  # keep the lease for the completion check: only malformed reports here
    before = session.snapshot()
    code, details, _ = outcome(session.worker.ReportResult, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details.split(":")[0] in {
        "status",
        "fitness",
        "metrics.val_accuracy",
        "metrics.steps",
        "metrics.attempts",
        "metrics.wall_time_s",
    }, details
    assert session.snapshot() == before


@FUZZ
@given(ids, ids, int32s, texts, st.sampled_from(["none", "lease", "trainer"]))
def test_heartbeats_and_returns_of_leases_one_does_not_hold_change_nothing(
    session, lease_id, trainer_id, steps, reason, target
):
    beat = _aimed(session, ws.HeartbeatRequest(lease_id=lease_id, trainer_id=trainer_id, steps_done=steps), target)
    give = _aimed(session, ws.ReturnLeaseRequest(lease_id=lease_id, trainer_id=trainer_id, reason=reason), target)
    before = session.snapshot()
    code, details, response = outcome(session.worker.Heartbeat, beat)
    assert_allowed(code, details)
    if code == grpc.StatusCode.OK:
        assert not response.keep_going and response.ttl_s == 0
    code, details, response = outcome(session.worker.ReturnLease, give)
    assert_allowed(code, details)
    if code == grpc.StatusCode.OK:
        assert not response.returned
    assert session.snapshot() == before


@FUZZ
@given(ids)
def test_get_cancel_watch_and_result_with_any_unknown_id_are_refused_and_change_nothing(session, experiment_id):
    before = session.snapshot()
    for call, request in [
        (session.experiments.GetExperiment, es.GetExperimentRequest),
        (session.experiments.CancelExperiment, es.CancelExperimentRequest),
        (session.experiments.GetResult, es.GetResultRequest),
    ]:
        code, details, _ = outcome(call, request(experiment_id=experiment_id))
        assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (code, details)
    stream = session.experiments.WatchExperiment(es.WatchExperimentRequest(experiment_id=experiment_id), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    assert session.snapshot() == before


@settings(max_examples=40, deadline=None)
@given(
    st.one_of(ids, st.just("t")),
    st.one_of(st.integers(min_value=-(2**31), max_value=-1), st.integers(min_value=60_001, max_value=2**31 - 1)),
)
def test_a_lease_request_with_an_out_of_range_wait_is_invalid_argument_and_grants_nothing(session, trainer, wait_ms):
    before = session.snapshot()
    code, details, _ = outcome(
        session.worker.LeaseCandidate, ws.LeaseCandidateRequest(trainer_id=trainer, wait_ms=wait_ms)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.split(":")[0] in ("trainer_id", "wait_ms"), details
    assert session.snapshot() == before


METHODS = [
    ("/taylorglo.v1.ExperimentService/SubmitExperiment", CLIENT_TOKEN),
    ("/taylorglo.v1.ExperimentService/GetExperiment", CLIENT_TOKEN),
    ("/taylorglo.v1.ExperimentService/CancelExperiment", CLIENT_TOKEN),
    ("/taylorglo.v1.ExperimentService/GetResult", CLIENT_TOKEN),
    ("/taylorglo.v1.WorkerService/ReportResult", TRAINER_TOKEN),
    ("/taylorglo.v1.WorkerService/Heartbeat", TRAINER_TOKEN),
    ("/taylorglo.v1.WorkerService/ReturnLease", TRAINER_TOKEN),
]


@FUZZ
@given(st.sampled_from(METHODS), st.binary(max_size=64))
def test_undecodable_request_bytes_are_invalid_argument_never_internal(session, method_token, payload):
    method, token = method_token
    channel = connect(session.server.address, token=token)
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    before = session.snapshot()
    try:
        call(payload, timeout=10)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as err:
        code, details = err.code(), err.details()
    finally:
        channel.close()
    assert_allowed(code, details)
    assert session.snapshot() == before


@pytest.mark.parametrize(
    "method", ["/taylorglo.v1.ExperimentService/WatchExperiment", "/taylorglo.v1.ExperimentService/GetResult"]
)
def test_a_corrupt_request_is_invalid_argument_naming_the_method_and_the_message_type(session, method):
    channel = connect(session.server.address, token=CLIENT_TOKEN)
    try:
        if method.endswith("WatchExperiment"):
            call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
            code, details = code_of(lambda: next(call(b"\x0a\xff", timeout=10)))
        else:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            code, details = code_of(lambda: call(b"\x0a\xff", timeout=10))
    finally:
        channel.close()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("request: ") and method in details and "Request" in details, details


def code_of(thunk):
    with pytest.raises(grpc.RpcError) as err:
        thunk()
    return err.value.code(), err.value.details()


@settings(max_examples=40, deadline=None)
@given(
    st.one_of(st.none(), st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)),
    st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
)
def test_any_wrong_credential_is_unauthenticated(session, token, scheme):
    if token in (TRAINER_TOKEN, CLIENT_TOKEN):
        return
    metadata = () if token is None else (("authorization", f"{scheme}{token}"),)
    channel = grpc.insecure_channel(session.server.address)
    try:
        stub = es_grpc.ExperimentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListExperiments(es.ListExperimentsRequest(), metadata=metadata, timeout=10)
    finally:
        channel.close()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --------------------------------------------------------------------------- nothing was lost


def test_zz_after_the_attacks_the_experiment_completes_with_every_candidate_accounted_for(session):
    """Runs last in this module: the leased candidate and all others finish normally."""
    worker = session.worker
    ack = worker.ReportResult(
        ws.ReportResultRequest(
            lease_id=session.lease.lease_id,
            trainer_id="t",
            status=ws.EVALUATION_STATUS_OK,
            fitness=0.25,
            metrics=types_pb2.EvaluationMetrics(val_loss=math.inf),
            error="\x00 é \u2028",
        ),
        timeout=10,
    )
    assert ack.accepted, ack.reason
    while True:
        lease = worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t2", wait_ms=200), timeout=10)
        if not lease.HasField("lease"):
            break
        fitness = float(np.exp(-np.sum(np.square(lease.lease.theta)) / 8))
        assert worker.ReportResult(
            ws.ReportResultRequest(
                lease_id=lease.lease.lease_id, trainer_id="t2", status=ws.EVALUATION_STATUS_OK, fitness=fitness
            ),
            timeout=10,
        ).accepted
    result = session.experiments.GetResult(es.GetResultRequest(experiment_id=session.exp.id), timeout=10)
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
    assert len(result.candidates) == 8 and result.experiment.evaluations_done == 8
    assert all(c.status == types_pb2.CANDIDATE_STATUS_SUCCEEDED for c in result.candidates)
    assert [c.attempts for c in result.candidates] == [1] * 8  # no attack spent an attempt
    first = next(c for c in result.candidates if c.generation == 0 and c.index == session.lease.index)
    assert first.fitness == 0.25 and first.trainer_id == "t" and math.isinf(first.metrics.val_loss)
