"""The Resource on every span: our defaults, the downward API, and the OTEL_* variables winning."""

from __future__ import annotations

import socket

import pytest

from gpu_device_plugin import __version__
from gpu_device_plugin.telemetry.resource import build_resource
from gpu_device_plugin.telemetry.tracing import configure_tracing

DOWNWARD = {"NODE_NAME": "gpu-node-7", "POD_NAME": "gpu-device-plugin-x2b9k", "POD_NAMESPACE": "kube-system"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK reads OTEL_* from the process environment: start each case from none.
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", *DOWNWARD):
        monkeypatch.delenv(name, raising=False)


def test_defaults_name_the_service_its_version_and_host() -> None:
    attributes = build_resource({}).attributes
    assert attributes["service.name"] == "gpu-device-plugin"
    assert attributes["service.version"] == __version__
    assert attributes["host.name"] == socket.gethostname()
    # Nothing set by the downward API: no empty k8s.* attributes either.
    assert not [key for key in attributes if key.startswith("k8s.")]


def test_downward_api_variables_name_node_pod_and_namespace() -> None:
    attributes = build_resource(DOWNWARD).attributes
    assert attributes["k8s.node.name"] == "gpu-node-7"
    assert attributes["k8s.pod.name"] == "gpu-device-plugin-x2b9k"
    assert attributes["k8s.namespace.name"] == "kube-system"


def test_empty_downward_api_variable_is_left_out() -> None:
    assert "k8s.pod.name" not in build_resource({"POD_NAME": ""}).attributes


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"OTEL_SERVICE_NAME": "gpu-dp-canary"}, {"service.name": "gpu-dp-canary"}, id="service-name"
        ),
        pytest.param(
            {"OTEL_RESOURCE_ATTRIBUTES": "k8s.node.name=from-otel,deployment.environment=prod"},
            {"k8s.node.name": "from-otel", "deployment.environment": "prod"},
            id="resource-attributes-over-downward-api",
        ),
        pytest.param(
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs", "OTEL_SERVICE_NAME": "from-name"},
            {"service.name": "from-name"},
            id="service-name-over-resource-attributes",
        ),
    ],
)
def test_standard_variables_win(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    attributes = build_resource(DOWNWARD).attributes
    for key, value in expected.items():
        assert attributes[key] == value


def test_configured_tracing_puts_the_resource_on_its_provider() -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", **DOWNWARD}
    tracing = configure_tracing(env)
    try:
        resource = tracing.provider.resource  # type: ignore[attr-defined]
        assert resource.attributes["k8s.node.name"] == "gpu-node-7"
        assert resource.attributes["service.name"] == "gpu-device-plugin"
    finally:
        tracing.shutdown()
