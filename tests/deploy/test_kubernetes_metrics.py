"""Prometheus metrics on Kubernetes: the metrics component and overlay, and the ServiceMonitor example.

The base stays free of them (metrics are off by default and the base must not need the
Prometheus operator); ``overlays/metrics`` adds the coordinator's ``--metrics-listen``, a
``metrics`` port on the Service, and ingress to it from the monitoring namespace only.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.kube_manifests import KUBERNETES, find, flag, load, tool

METRICS_OVERLAY = KUBERNETES / "overlays" / "metrics"
SERVICE_MONITOR = KUBERNETES / "examples" / "service-monitor.yaml"


def _render(path) -> list[dict]:
    import yaml

    result = subprocess.run([tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return _render(METRICS_OVERLAY)


def test_the_base_serves_no_metrics():
    base = _render(KUBERNETES / "base")
    [container] = find(base, "StatefulSet", "taylorglo-coordinator")["spec"]["template"]["spec"]["containers"]
    assert "--metrics-listen" not in container["command"]
    assert all(obj["kind"] != "ServiceMonitor" for obj in base)


@pytest.mark.parametrize("version", ["1.37.0", "1.30.0"])
def test_the_metrics_overlay_passes_strict_schema_validation(version, rendered, tmp_path):
    import yaml

    path = tmp_path / "metrics.yaml"
    path.write_text(yaml.safe_dump_all(rendered))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_service_monitor_scrapes_the_port_the_coordinator_serves_metrics_on(rendered):
    [container] = find(rendered, "StatefulSet", "taylorglo-coordinator")["spec"]["template"]["spec"]["containers"]
    listen_port = int(flag(container["command"], "--metrics-listen").rpartition(":")[2])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = find(rendered, "Service", "taylorglo-coordinator")
    [metrics_port] = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
    assert named[metrics_port["targetPort"]] == metrics_port["port"] == listen_port
    [monitor] = load(SERVICE_MONITOR)
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("metrics", "/metrics")]


def test_only_the_monitoring_namespace_may_reach_the_metrics_port(rendered):
    policy = find(rendered, "NetworkPolicy", "taylorglo-coordinator")
    rules = [rule for rule in policy["spec"]["ingress"] if {"port": 9100, "protocol": "TCP"} in rule["ports"]]
    assert len(rules) == 1
    assert rules[0]["ports"] == [{"port": 9100, "protocol": "TCP"}]
    assert rules[0]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
