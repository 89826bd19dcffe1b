"""Issue 6 on a real kubelet: a pod's allocation is traceable in a real backend.

The session's plugin exports its spans over OTLP/gRPC to Jaeger v2 on
127.0.0.1 (conftest's `jaeger` fixture); these tests read them back through
Jaeger's own query API, as an SRE's tooling would, and check what an SRE needs
to answer "which GPUs did this pod get, and why those".
"""

from __future__ import annotations

import pytest
from e2e_support import RESOURCE

from conftest import ClusterUnderTest, PluginUnderTest, Pods, TracesUnderTest
from gdp_e2e.cluster.jaeger import SPAN_KIND_SERVER, STATUS_ERROR, StoredSpan

ALLOCATE = "/v1beta1.DevicePlugin/Allocate"
PREFERRED = "/v1beta1.DevicePlugin/GetPreferredAllocation"


@pytest.fixture
def traces(plugin: PluginUnderTest) -> TracesUnderTest:
    """The plugin's traces; first in each test's arguments, so a skip waits for nothing else."""
    if plugin.traces is None:
        why = "only the suite's own host-process plugin exports to its Jaeger (E2E_PLUGIN=process)"
        pytest.skip(reason=why)
    return plugin.traces


def test_a_pods_allocation_is_traceable_in_jaeger(
    traces: TracesUnderTest, cluster: ClusterUnderTest, pods: Pods, healthy_plugin: PluginUnderTest
) -> None:
    name = pods.create("traced", gpus=2)
    pods.running(name)
    devices = pods.devices(name)
    assert len(devices) == 2

    # The Allocate whose container got exactly this pod's devices.
    allocate = traces.query.wait_for_span(
        traces.service,
        ALLOCATE,
        lambda span: sorted(span.attributes.get("gpu.container_devices", [])) == sorted(devices),
        since=traces.since,
    )
    assert allocate.kind == SPAN_KIND_SERVER
    assert allocate.status_code != STATUS_ERROR
    assert allocate.attributes["gpu.resource_name"] == RESOURCE
    assert sorted(allocate.attributes["gpu.requested_ids"]) == sorted(devices)
    assert allocate.attributes["gpu.allocation_size"] == 2
    assert allocate.attributes["gpu.device_list_strategy"] == "envvar"
    assert allocate.attributes["gpu.device_id_strategy"] == "uuid"
    assert allocate.attributes["rpc.grpc.status_code"] == 0
    # Who sent it: the resource an SRE filters on.
    assert allocate.resource["service.name"] == traces.service
    assert allocate.resource["k8s.node.name"] == cluster.node_name
    assert allocate.resource["service.version"]

    # "Get one trace" finds it again by its id.
    assert allocate.span_id in {span.span_id for span in traces.query.trace(allocate.trace_id)}

    # With more devices free than asked for, the kubelet asked first which to prefer; the answer
    # (what was available, what was chosen and how well it is connected) is its own span.
    preferred = traces.query.wait_for_span(
        traces.service,
        PREFERRED,
        lambda span: sorted(span.attributes.get("gpu.chosen_ids", [])) == sorted(devices),
        since=traces.since,
    )
    assert preferred.status_code != STATUS_ERROR
    assert preferred.attributes["gpu.allocation_size"] == 2
    assert set(devices) <= set(preferred.attributes["gpu.available_ids"])
    assert preferred.attributes["gpu.must_include_ids"] == []
    assert preferred.attributes["gpu.preferred_policy"] == "topology"
    # dgx-h100: every pair is NVLinked, so the chosen pair scores.
    assert preferred.attributes["gpu.score"] > 0


def test_registration_and_discovery_are_in_jaeger(
    traces: TracesUnderTest, cluster: ClusterUnderTest, healthy_plugin: PluginUnderTest
) -> None:

    def accepted(span: StoredSpan) -> bool:
        return span.status_code != STATUS_ERROR

    register = traces.query.wait_for_span(traces.service, "Register", accepted, since=traces.since)
    assert register.attributes["gpu.resource_name"] == RESOURCE
    assert str(register.attributes["gpu.endpoint"]).endswith(".sock")
    assert register.attributes["gpu.attempt"] >= 1
    assert register.resource["k8s.node.name"] == cluster.node_name

    discover = traces.query.wait_for_span(traces.service, "Discover", accepted, since=traces.since)
    assert discover.attributes["gpu.discovery_backend"] == "fake"
    assert discover.attributes["gpu.device_count"] == len(healthy_plugin.uuids)
