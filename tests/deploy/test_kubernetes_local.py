"""docker/kubernetes/'s containers, run as local processes (no cluster).

The base's plain manifests give each container its command and environment;
the Secrets a user creates become their keys' values (secretKeyRef), volumes
become temporary folders (a claim is one folder shared by every pod that
mounts it), the Service's names dial the coordinator on loopback, and the
kubelet's gRPC probes are gRPC health checks of the port they name.

- The coordinator starts, both trainer replicas join it, the example submit
  Job (a small search in its ConfigMap) submits and waits, and the search
  completes with candidates from both trainers; every pod then exits 0 on
  SIGTERM within its grace period.
- Scaling the trainers while a search runs (a replica more, then one fewer)
  spends no attempt.
- The tls overlay (rendered by Kustomize), with a certificate in its Secret:
  probes pass in plaintext on the health-only port, while trainers and clients
  reach the coordinator over TLS only.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taylorglo_tf.connection import connect
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from tests.helpers.certificates import self_signed
from tests.helpers.kube_manifests import SUBMIT_EXAMPLE, find, flag, load, plain_base, render
from tests.helpers.local_deploy import Host, Processes, client, free_port, wait_until

# The Secrets of the Kubernetes guide's `kubectl create secret` commands (docs/how-to/kubernetes.md), per namespace.
SECRETS = {
    ("taylorglo", "taylorglo-tokens"): {
        "trainer-token": "kube-trainer-token-0123456789",
        "client-token": "kube-client-token-0123456789",
    },
    ("taylorglo-clients", "taylorglo-tokens"): {"client-token": "kube-client-token-0123456789"},
}
SUCCEEDED, LEASED, QUEUED = (
    types_pb2.CANDIDATE_STATUS_SUCCEEDED,
    types_pb2.CANDIDATE_STATUS_LEASED,
    types_pb2.CANDIDATE_STATUS_QUEUED,
)
SMALL_SEARCH = {
    "name": "kubernetes wiring",
    "task": {"dataset": "digits", "model": "tiny", "steps": 20},
    "search": {"population": 4, "generations": 2},
}


class Pod:
    """One pod of a workload: its container's command, environment and volumes on ``host``."""

    def __init__(self, host: Host, workload: dict, name: str, config_maps: list[dict], secrets=SECRETS):
        self.host, self.name, self.secrets = host.with_own_mounts(), name, secrets
        self.namespace = workload["metadata"]["namespace"]
        self.spec = workload["spec"]["template"]["spec"]
        [self.container] = self.spec["containers"]
        claims = {
            t["metadata"]["name"]: f"{t['metadata']['name']}-{name}"  # a StatefulSet's per-pod claims
            for t in workload["spec"].get("volumeClaimTemplates", [])
        }
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            if "persistentVolumeClaim" in volume:
                folder = host.volume(volume["persistentVolumeClaim"]["claimName"])
            elif mount["name"] in claims:
                folder = host.volume(claims[mount["name"]])
            elif "emptyDir" in volume:
                folder = host.volume(f"{name}-{mount['name']}")
            elif "configMap" in volume or "secret" in volume:
                folder = host.volume(f"{name}-{mount['name']}")
                if "configMap" in volume:
                    data = find(config_maps, "ConfigMap", volume["configMap"]["name"])["data"]
                else:
                    data = secrets[(self.namespace, volume["secret"]["secretName"])]
                    data = {item["path"]: data[item["key"]] for item in volume["secret"].get("items", [])} or data
                for file, text in data.items():
                    (folder / file).write_text(text)
            else:
                raise AssertionError(f"{name}: volume {mount['name']} of an unknown kind: {volume}")
            self.host.mount(mount["mountPath"], folder)

    def environment(self) -> dict[str, str]:
        values = {}
        for variable in self.container.get("env", []):
            if "valueFrom" in variable:
                ref = variable["valueFrom"]["secretKeyRef"]
                values[variable["name"]] = self.secrets[(self.namespace, ref["name"])][ref["key"]]
            else:
                values[variable["name"]] = variable["value"]
        return self.host.environment(values)

    def start(self, processes: Processes):
        return processes.start(self.name, self.host.argv(self.container["command"]), self.environment())

    def grace_s(self) -> float:
        return float(self.spec["terminationGracePeriodSeconds"])


def probe_passes(host: Host, probe: dict) -> bool:
    """What the kubelet's gRPC probe does: a plaintext Health/Check of the named port."""
    with grpc.insecure_channel(f"127.0.0.1:{host.ports[str(probe['grpc']['port'])]}") as channel:
        request = health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", ""))
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=2)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


def use_evaluator(workload: dict, evaluator: str) -> None:
    """Put ``evaluator`` in place of the trainer command's ``--evaluator keras``."""
    command = workload["spec"]["template"]["spec"]["containers"][0]["command"]
    assert flag(command, "--evaluator") == "keras"
    if EVALUATORS[evaluator]:
        at = command.index("--evaluator")
        command[at : at + 2] = EVALUATORS[evaluator]


# The trainers' evaluator: the manifests' own (Keras: TensorFlow in each trainer,
# minutes on two cores, so marked slow) or, for the default suite, the synthetic
# one in its place (seconds), with every other argument as the manifest gives it.
EVALUATORS = {
    "keras": [],
    "synthetic": ["--evaluator", "synthetic", "--synthetic-sleep", "0.2"],
}


def base_host(tmp_path, objects: list[dict]) -> Host:
    """Loopback standing for the coordinator's Service, by its short and its namespaced name."""
    service = find(objects, "Service", "taylorglo-coordinator")["metadata"]
    return Host(tmp_path, free_port(), service_names=[service["name"], f"{service['name']}.{service['namespace']}.svc"])


def start_ready(pod: Pod, processes: Processes) -> None:
    """Start the coordinator's pod and wait for its readiness probe, as the Service does."""
    process = pod.start(processes)
    wait_until(lambda: probe_passes(pod.host, pod.container["readinessProbe"]), process, f"{pod.name} readiness")
    assert probe_passes(pod.host, pod.container["livenessProbe"])


@pytest.mark.parametrize("evaluator", [pytest.param("keras", marks=pytest.mark.slow), "synthetic"])
def test_the_manifests_containers_run_locally_and_complete_a_search_with_two_trainers(tmp_path, evaluator):
    objects = plain_base()
    example = load(SUBMIT_EXAMPLE)
    host = base_host(tmp_path, objects)
    coordinator_set = find(objects, "StatefulSet", "taylorglo-coordinator")
    trainers = find(objects, "Deployment", "taylorglo-trainer")
    use_evaluator(trainers, evaluator)
    submit_job = find(example, "Job", "taylorglo-submit-digits")
    # The user's own search in the example's ConfigMap: small, so that it runs in seconds.
    config_map = find(example, "ConfigMap", "taylorglo-search-digits")
    config_map["data"]["search.yaml"] = yaml.safe_dump(SMALL_SEARCH)

    coordinator = Pod(host, coordinator_set, "taylorglo-coordinator-0", example)
    replicas = [Pod(host, trainers, f"taylorglo-trainer-{i}", example) for i in range(trainers["spec"]["replicas"])]
    assert len(replicas) == 2
    submitter = Pod(host, submit_job, "taylorglo-submit-digits", example)
    with Processes(tmp_path) as processes:
        start_ready(coordinator, processes)
        trainer_processes = [pod.start(processes) for pod in replicas]
        for pod, process in zip(replicas, trainer_processes):  # each has imported TensorFlow and dialled
            wait_until(lambda name=pod.name: "working for" in processes.log(name), process, pod.name, timeout_s=120)

        job = submitter.start(processes)
        assert job.wait(timeout=240) == 0, processes.log(submitter.name)
        output = processes.log(submitter.name)
        experiment_id = re.search(r"experiment (\w+) succeeded: best fitness 0\.\d+", output).group(1)

        result = client(
            host,
            SECRETS[("taylorglo-clients", "taylorglo-tokens")]["client-token"],
            "result",
            experiment_id,
            "--out",
            str(tmp_path / "result"),
        )
        assert result.returncode == 0, result.stderr
        candidates = (tmp_path / "result" / "candidates.csv").read_text().splitlines()
        assert len(candidates) == 1 + 8
        trainer_ids = {line.split(",")[5] for line in candidates[1:]}
        assert len(trainer_ids) == 2 and "" not in trainer_ids  # both replicas trained

        # The database is on the StatefulSet's claim.
        database = coordinator.host.localize(flag(coordinator.container["command"], "--db"))
        assert Path(database).is_file() and Path(database).parent == host.volume("database-taylorglo-coordinator-0")

        # Scale to zero, then stop the coordinator: SIGTERM, exit 0 within the grace period.
        for pod in [*replicas, coordinator]:
            processes.running[pod.name].send_signal(signal.SIGTERM)
            assert processes.running[pod.name].wait(timeout=pod.grace_s()) == 0, processes.log(pod.name)


def test_scaling_the_trainers_while_a_search_runs_spends_no_attempt(tmp_path):
    """`kubectl scale` up: a new replica takes work at once; down: SIGTERM, and the candidate
    in progress is finished or handed back, never left to expire."""
    objects = plain_base()
    host = base_host(tmp_path, objects)
    trainers = find(objects, "Deployment", "taylorglo-trainer")
    use_evaluator(trainers, "synthetic")
    coordinator = Pod(host, find(objects, "StatefulSet", "taylorglo-coordinator"), "taylorglo-coordinator-0", [])
    client_token = SECRETS[("taylorglo", "taylorglo-tokens")]["client-token"]
    spec = tmp_path / "spec.yaml"  # far more work than the test waits for; it is cancelled at the end
    spec.write_text(
        yaml.safe_dump(
            {
                "task": {"dataset": "digits", "model": "tiny", "steps": 20},
                "search": {"population": 4, "generations": 100},
            }
        )
    )
    with Processes(tmp_path) as processes:
        start_ready(coordinator, processes)
        first, second, third = (Pod(host, trainers, f"taylorglo-trainer-{i}", []) for i in range(3))
        running = {pod.name: pod.start(processes) for pod in (first, second)}
        submitted = client(host, client_token, "submit", str(spec), timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        experiment_id = submitted.stdout.strip()
        channel = connect(f"127.0.0.1:{host.port}", token=client_token)
        results = es_grpc.ExperimentServiceStub(channel)

        def trained_by(pod: Pod) -> int:
            trainer_id = f"{socket.gethostname()}-{running[pod.name].pid}"  # the trainer's default id
            candidates = results.GetResult(es.GetResultRequest(experiment_id=experiment_id), timeout=10).candidates
            return sum(c.trainer_id == trainer_id and c.status == SUCCEEDED for c in candidates)

        wait_until(lambda: trained_by(second) >= 2, running[second.name], "the second replica at work")
        running[third.name] = third.start(processes)  # --replicas=3
        wait_until(lambda: trained_by(third) >= 2, running[third.name], "the new replica at work")
        running[second.name].send_signal(signal.SIGTERM)  # --replicas=2
        assert running[second.name].wait(timeout=second.grace_s()) == 0
        done_by_second, done_by_others = trained_by(second), trained_by(first) + trained_by(third)
        # Two generations more: the one the second replica was in has closed, so its candidate
        # was finished or handed back (an abandoned lease would hold the generation for the 60 s TTL).
        wait_until(
            lambda: trained_by(first) + trained_by(third) >= done_by_others + 8,
            running[first.name],
            "two generations after the scale-down",
        )
        assert trained_by(second) == done_by_second

        candidates = results.GetResult(es.GetResultRequest(experiment_id=experiment_id), timeout=10).candidates
        # No lease expired and none was retried: every candidate leased once at most.
        assert max(c.attempts for c in candidates) == 1
        assert all(c.status in (SUCCEEDED, QUEUED, LEASED) for c in candidates)
        channel.close()
        assert client(host, client_token, "cancel", experiment_id, timeout=60).returncode == 0
        for pod in (first, third, coordinator):
            processes.running[pod.name].send_signal(signal.SIGTERM)
            assert processes.running[pod.name].wait(timeout=pod.grace_s()) == 0, processes.log(pod.name)


def test_the_tls_overlay_serves_probes_in_plaintext_and_trainers_and_clients_over_tls_only(tmp_path):
    objects = render("tls")  # Kustomize: the base with the tls component
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a certificate")
    certificate = tmp_path / "certificate"
    certificate.mkdir()
    self_signed(
        certificate / "crt",
        certificate / "key",
        ["taylorglo-coordinator", "taylorglo-coordinator.taylorglo.svc"],
    )
    pem = (certificate / "crt").read_text()
    secrets = {
        **SECRETS,
        ("taylorglo", "taylorglo-tls"): {"tls.crt": pem, "tls.key": (certificate / "key").read_text(), "ca.crt": pem},
    }
    coordinator_set = find(objects, "StatefulSet", "taylorglo-coordinator")
    trainers = find(objects, "Deployment", "taylorglo-trainer")
    use_evaluator(trainers, "synthetic")
    probe = coordinator_set["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    host = Host(
        tmp_path, free_port(), service_names=["taylorglo-coordinator"], other_ports=[str(probe["grpc"]["port"])]
    )
    coordinator = Pod(host, coordinator_set, "taylorglo-coordinator-0", [], secrets)
    trainer = Pod(host, trainers, "taylorglo-trainer-0", [], secrets)
    client_token = SECRETS[("taylorglo", "taylorglo-tokens")]["client-token"]
    with Processes(tmp_path) as processes:
        start_ready(coordinator, processes)  # the kubelet's plaintext probes, on the health-only port
        trainer.start(processes)

        spec = tmp_path / "spec.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "task": {"dataset": "digits", "model": "tiny", "steps": 20},
                    "search": {"population": 2, "generations": 1},
                }
            )
        )
        ca = trainer.host.localize(flag(trainer.container["command"], "--tls-ca"))
        submitted = client(host, client_token, "submit", str(spec), "--watch", "--tls-ca", ca, timeout=120)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr + processes.log(trainer.name)
        assert "succeeded" in submitted.stdout
        # The services themselves are not reachable in plaintext.
        assert client(host, client_token, "status", timeout=60).returncode != 0

        for pod in (trainer, coordinator):
            processes.running[pod.name].send_signal(signal.SIGTERM)
            assert processes.running[pod.name].wait(timeout=pod.grace_s()) == 0, processes.log(pod.name)
