"""Coordinator security: tokens and roles, bind policy, TLS, request validation, size limits."""

import math
import shutil

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taylorglo_tf.connection import connect, load_token
from taylorglo_tf.coordinator.auth import TokenAuthInterceptor
from taylorglo_tf.coordinator.server import is_loopback, serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc
from tests.helpers.certificates import self_signed

TRAINER_TOKEN = "trainer-secret-0123456789"
CLIENT_TOKEN = "client-secret-0123456789"


def good_spec():
    return types_pb2.ExperimentSpec(
        task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=5),
        search=types_pb2.SearchSpec(population=2, generations=1),
    )


def code_of(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value.code(), err.value.details()


@pytest.fixture
def secured(tmp_path):
    server = serve(tmp_path / "s.db", trainer_token=TRAINER_TOKEN, client_token=CLIENT_TOKEN)
    yield server
    server.stop(grace=0)


def stubs(address, token=None):
    channel = connect(address, token=token)
    return es_grpc.ExperimentServiceStub(channel), ws_grpc.WorkerServiceStub(channel)


# ---------------------------------------------------------------- tokens and roles


def test_calls_without_a_token_are_unauthenticated(secured):
    experiments, worker = stubs(secured.address)
    assert code_of(experiments.ListExperiments, es.ListExperimentsRequest())[0] == grpc.StatusCode.UNAUTHENTICATED
    assert (
        code_of(worker.LeaseCandidate, ws.LeaseCandidateRequest(trainer_id="t"))[0] == grpc.StatusCode.UNAUTHENTICATED
    )


def test_a_wrong_token_is_unauthenticated(secured):
    experiments, _ = stubs(secured.address, token="not-the-right-token-at-all")
    code, details = code_of(experiments.ListExperiments, es.ListExperimentsRequest())
    assert code == grpc.StatusCode.UNAUTHENTICATED and "token" in details


def test_a_trainer_token_cannot_submit_or_cancel(secured):
    experiments, _ = stubs(secured.address, token=TRAINER_TOKEN)
    code, details = code_of(experiments.SubmitExperiment, es.SubmitExperimentRequest(spec=good_spec()))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "ExperimentService" in details
    code, _ = code_of(experiments.CancelExperiment, es.CancelExperimentRequest(experiment_id="x"))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_a_client_token_cannot_lease_or_report(secured):
    _, worker = stubs(secured.address, token=CLIENT_TOKEN)
    assert (
        code_of(worker.LeaseCandidate, ws.LeaseCandidateRequest(trainer_id="t"))[0] == grpc.StatusCode.PERMISSION_DENIED
    )
    request = ws.ReportResultRequest(lease_id="l", trainer_id="t", status=ws.EVALUATION_STATUS_OK, fitness=1)
    assert code_of(worker.ReportResult, request)[0] == grpc.StatusCode.PERMISSION_DENIED


def test_a_watch_stream_is_also_guarded(secured):
    experiments, _ = stubs(secured.address, token=TRAINER_TOKEN)
    stream = experiments.WatchExperiment(es.WatchExperimentRequest(experiment_id="x"), timeout=5)
    assert code_of(next, stream)[0] == grpc.StatusCode.PERMISSION_DENIED


def test_each_role_reaches_its_own_service(secured):
    client_experiments, _ = stubs(secured.address, token=CLIENT_TOKEN)
    _, trainer_worker = stubs(secured.address, token=TRAINER_TOKEN)
    exp = client_experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=good_spec()))
    lease = trainer_worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t")).lease
    assert lease.experiment_id == exp.id


def test_the_bearer_scheme_name_is_case_insensitive(secured):
    experiments = es_grpc.ExperimentServiceStub(grpc.insecure_channel(secured.address))
    response = experiments.ListExperiments(
        es.ListExperimentsRequest(), metadata=[("authorization", f"bearer {CLIENT_TOKEN}")]
    )
    assert list(response.experiments) == []
    code, _ = code_of(
        experiments.ListExperiments, es.ListExperimentsRequest(), metadata=[("authorization", f"Basic {CLIENT_TOKEN}")]
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_two_authorization_headers_are_unauthenticated_even_if_both_are_valid(secured):
    """Which of two headers counts is ambiguous (a proxy may add one): refused, naming the cause."""
    experiments = es_grpc.ExperimentServiceStub(grpc.insecure_channel(secured.address))
    for second in (CLIENT_TOKEN, "not-the-right-token-at-all"):
        code, details = code_of(
            experiments.ListExperiments,
            es.ListExperimentsRequest(),
            metadata=[("authorization", f"Bearer {CLIENT_TOKEN}"), ("authorization", f"Bearer {second}")],
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "2 authorization headers" in details


def test_health_checks_need_no_token(secured):
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(secured.address))
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_tokens_are_compared_in_constant_time(monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: (calls.append(1), real(a, b))[1])
    interceptor = TokenAuthInterceptor(trainer_token=TRAINER_TOKEN, client_token=CLIENT_TOKEN)
    assert interceptor._roles(TRAINER_TOKEN) == {"trainer"}
    assert len(calls) == 2  # every configured token is compared, with no early exit


def test_weak_tokens_are_refused(tmp_path):
    with pytest.raises(ValueError, match="trainer token"):
        serve(tmp_path / "w.db", trainer_token="short")


def test_token_files_are_read_and_an_empty_one_is_an_error(tmp_path, monkeypatch):
    good = tmp_path / "token"
    good.write_text(TRAINER_TOKEN + "\n")
    assert load_token(good) == TRAINER_TOKEN
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        load_token(tmp_path / "empty")
    with pytest.raises(ValueError, match="missing"):
        load_token(tmp_path / "missing")
    monkeypatch.setenv("SOME_TOKEN_ENV", CLIENT_TOKEN)
    assert load_token(None, env="SOME_TOKEN_ENV") == CLIENT_TOKEN


# ---------------------------------------------------------------- bind policy


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "coordinator.example"])
def test_a_non_loopback_bind_without_tokens_is_refused(tmp_path, host):
    listen = f"[{host}]:0" if ":" in host else f"{host}:0"
    with pytest.raises(ValueError, match="--insecure"):
        serve(tmp_path / "b.db", listen)
    assert not (tmp_path / "b.db").exists()  # refused before touching anything


def test_insecure_explicitly_allows_a_non_loopback_bind(tmp_path):
    server = serve(tmp_path / "i.db", "0.0.0.0:0", insecure=True)
    try:
        experiments, _ = stubs(f"127.0.0.1:{server.port}")
        assert experiments.ListExperiments(es.ListExperimentsRequest()).experiments == []
    finally:
        server.stop(grace=0)


def test_loopback_addresses_are_recognised():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.com"))


def test_tls_needs_both_certificate_and_key(tmp_path):
    with pytest.raises(ValueError, match="--tls-key"):
        serve(tmp_path / "t.db", tls_cert=tmp_path / "cert.pem")


def _self_signed(folder):
    """A self-signed certificate (its own CA) for localhost and 127.0.0.1: (cert, key) paths."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    self_signed(cert, key, ["localhost"])
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_with_a_self_signed_certificate(tmp_path):
    cert, key = _self_signed(tmp_path)
    server = serve(tmp_path / "tls.db", tls_cert=cert, tls_key=key, client_token=CLIENT_TOKEN)
    try:
        experiments = es_grpc.ExperimentServiceStub(connect(server.address, token=CLIENT_TOKEN, tls_ca=cert))
        assert experiments.ListExperiments(es.ListExperimentsRequest(), timeout=10).experiments == []
        plaintext = es_grpc.ExperimentServiceStub(connect(server.address, token=CLIENT_TOKEN))
        assert (
            code_of(plaintext.ListExperiments, es.ListExperimentsRequest(), timeout=5)[0] == grpc.StatusCode.UNAVAILABLE
        )
    finally:
        server.stop(grace=0)


def _health_status(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service="")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_a_health_only_plaintext_port_serves_probes_that_cannot_speak_tls(tmp_path):
    cert, key = _self_signed(tmp_path)
    server = serve(
        tmp_path / "h.db",
        tls_cert=cert,
        tls_key=key,
        trainer_token=TRAINER_TOKEN,
        client_token=CLIENT_TOKEN,
        health_listen="127.0.0.1:0",
    )
    health_address = f"127.0.0.1:{server.health_port}"
    try:
        assert server.health_port not in (None, 0, server.port)
        assert _health_status(health_address) == health_pb2.HealthCheckResponse.SERVING
        # Only health there: the services (and their tokens) stay behind TLS.
        _, workers = stubs(health_address, token=TRAINER_TOKEN)
        code, _ = code_of(workers.LeaseCandidate, ws.LeaseCandidateRequest(trainer_id="t", wait_ms=0), timeout=5)
        assert code == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(grace=0)
    with pytest.raises(grpc.RpcError):  # gone with the coordinator
        _health_status(health_address)


def test_a_bad_health_address_is_named_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="'nowhere'"):
        serve(tmp_path / "b.db", health_listen="nowhere")
    assert not (tmp_path / "b.db").exists()


# ---------------------------------------------------------------- validation


@pytest.fixture
def open_coordinator(tmp_path):
    server = serve(tmp_path / "o.db")
    yield stubs(server.address)
    server.stop(grace=0)


def _spec_with(mutate):
    spec = good_spec()
    mutate(spec)
    return spec


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda s: s.ClearField("task"), "spec.task"),
        (lambda s: setattr(s.task, "steps", 0), "spec.task.steps"),
        (lambda s: setattr(s.task, "model", "Not A Model!"), "spec.task.model"),
        (lambda s: setattr(s.task, "train_fraction", 1.5), "spec.task.train_fraction"),
        (
            lambda s: setattr(s.task.augmentation, "cutmix_probability", math.nan),
            "spec.task.augmentation.cutmix_probability",
        ),
        (lambda s: setattr(s.search, "population", 1), "spec.search.population"),
        (lambda s: setattr(s.search, "sigma0", -1.0), "spec.search.sigma0"),
        (lambda s: setattr(s.search, "max_attempts", 1000), "spec.search.max_attempts"),
        (lambda s: setattr(s.loss, "order", 11), "spec.loss.order"),
        (lambda s: s.loss.inputs.extend(["x", "z"]), "spec.loss.inputs"),
        (lambda s: setattr(s, "name", "n" * 201), "spec.name"),
    ],
)
def test_a_malformed_spec_is_invalid_argument_naming_the_field(open_coordinator, mutate, field):
    experiments, _ = open_coordinator
    code, details = code_of(experiments.SubmitExperiment, es.SubmitExperimentRequest(spec=_spec_with(mutate)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field + ":"), details


@pytest.mark.parametrize(
    "dataset",
    ["npz:../secret.npz", "idx:/etc", "idx:data/../../x", "npz:~/x.npz", "idx:..", "idx:a\\..\\b", "file:/etc/passwd"],
)
def test_dataset_path_traversal_is_refused(open_coordinator, dataset):
    experiments, _ = open_coordinator
    spec = _spec_with(lambda s: setattr(s.task, "dataset", dataset))
    code, details = code_of(experiments.SubmitExperiment, es.SubmitExperimentRequest(spec=spec))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("spec.task.dataset:")


def test_a_submit_without_a_spec_names_the_spec_field(open_coordinator):
    experiments, _ = open_coordinator
    code, details = code_of(experiments.SubmitExperiment, es.SubmitExperimentRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("spec:")


def test_a_bad_identifier_is_named_with_its_value(open_coordinator):
    _, worker = open_coordinator
    code, details = code_of(worker.LeaseCandidate, ws.LeaseCandidateRequest(trainer_id="tab\there"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("trainer_id: 'tab\\there' is not")
    code, details = code_of(worker.LeaseCandidate, ws.LeaseCandidateRequest(trainer_id="t" * 300))
    assert details == "trainer_id: is 300 characters long; at most 200"


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"fitness": 1.5}, "fitness"),
        ({"fitness": -0.1}, "fitness"),
        ({"fitness": math.nan}, "fitness"),
        ({"status": 0}, "status"),
        ({"status": 42}, "status"),
        ({"lease_id": ""}, "lease_id"),
        ({"trainer_id": ""}, "trainer_id"),
        ({"trainer_id": "t" * 201}, "trainer_id"),
        ({"metrics": types_pb2.EvaluationMetrics(val_accuracy=math.inf)}, "metrics.val_accuracy"),
        ({"metrics": types_pb2.EvaluationMetrics(steps=-1)}, "metrics.steps"),
        ({"metrics": types_pb2.EvaluationMetrics(wall_time_s=math.nan)}, "metrics.wall_time_s"),
    ],
)
def test_a_malformed_report_is_invalid_argument_naming_the_field(open_coordinator, changes, field):
    _, worker = open_coordinator
    fields = {"lease_id": "lease", "trainer_id": "t", "status": ws.EVALUATION_STATUS_OK, "fitness": 0.5, **changes}
    code, details = code_of(worker.ReportResult, ws.ReportResultRequest(**fields))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field + ":"), details


def test_a_diverged_report_may_carry_a_nan_validation_loss(open_coordinator):
    experiments, worker = open_coordinator
    experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=good_spec()))
    lease = worker.LeaseCandidate(ws.LeaseCandidateRequest(trainer_id="t")).lease
    ack = worker.ReportResult(
        ws.ReportResultRequest(
            lease_id=lease.lease_id,
            trainer_id="t",
            status=ws.EVALUATION_STATUS_DIVERGED,
            metrics=types_pb2.EvaluationMetrics(val_loss=math.nan),
        )
    )
    assert ack.accepted


@pytest.mark.parametrize("wait_ms", [-1, 60_001])
def test_a_long_poll_beyond_a_minute_is_invalid(open_coordinator, wait_ms):
    _, worker = open_coordinator
    code, details = code_of(worker.LeaseCandidate, ws.LeaseCandidateRequest(trainer_id="t", wait_ms=wait_ms))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("wait_ms:")


def test_the_server_refuses_oversized_requests(tmp_path):
    server = serve(tmp_path / "big.db")
    try:
        # a client that would send anything: the limit must hold on the server side
        channel = grpc.insecure_channel(server.address, [("grpc.max_send_message_length", 64 * 1024 * 1024)])
        experiments = es_grpc.ExperimentServiceStub(channel)
        spec = _spec_with(lambda s: setattr(s, "name", "x" * (5 * 1024 * 1024)))
        code, _ = code_of(experiments.SubmitExperiment, es.SubmitExperimentRequest(spec=spec), timeout=10)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop(grace=0)
