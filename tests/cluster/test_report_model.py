"""`report`'s arithmetic over Node and Pod JSON: who holds what, what is unhealthy, which pods are ours."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_device_plugin.cluster.report import DEFAULT_PLUGIN_SELECTOR, build_report, quantity, requested
from gpu_device_plugin.cluster.selector import LabelSelector

R = "example.com/gpu"
PLUGIN_LABELS = {"app.kubernetes.io/name": "gpu-device-plugin"}


def gpu_node(name: str, capacity: int | None, allocatable: int | None, **labels: str) -> dict[str, Any]:
    status: dict[str, Any] = {"capacity": {"cpu": "8"}, "allocatable": {"cpu": "8"}}
    if capacity is not None:
        status["capacity"][R] = str(capacity)
    if allocatable is not None:
        status["allocatable"][R] = str(allocatable)
    return {"metadata": {"name": name, "labels": labels}, "status": status}


def container(gpus: int | None = None, *, limits_only: bool = False, **extra: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if gpus is not None:
        resources = (
            {"limits": {R: str(gpus)}}
            if limits_only
            else {"requests": {R: str(gpus)}, "limits": {R: str(gpus)}}
        )
    return {"name": "c", "resources": resources, **extra}


def pod(
    name: str,
    node_name: str | None,
    *containers: dict[str, Any],
    namespace: str = "team-a",
    labels: dict[str, str] | None = None,
    init: tuple[dict[str, Any], ...] = (),
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers) or [container()]}
    if node_name:
        spec["nodeName"] = node_name
    if init:
        spec["initContainers"] = list(init)
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
        "status": status or {"phase": "Running"},
    }


def plugin_pod(name: str, node_name: str, *, ready: bool, restarts: int = 0) -> dict[str, Any]:
    status = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [{"name": "plugin", "restartCount": restarts}],
    }
    return pod(name, node_name, namespace="gpu-device-plugin", labels=PLUGIN_LABELS, status=status)


def report(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    return build_report(
        nodes,
        pods,
        resource=R,
        plugin_selector=LabelSelector.parse(DEFAULT_PLUGIN_SELECTOR),
        label_prefix="example.com/gpu.",
    )


def test_a_healthy_node_with_pods_holding_gpus() -> None:
    result = report(
        [gpu_node("gpu-1", 8, 8, **{"example.com/gpu.product": "H100", "team": "ml"})],
        [
            plugin_pod("gpu-device-plugin-x1", "gpu-1", ready=True, restarts=2),
            pod("train", "gpu-1", container(2), container(1)),
            pod("infer", "gpu-1", container(1), namespace="team-b"),
            pod("cpu-only", "gpu-1", container()),
        ],
    )
    assert result.ok
    (node,) = result.nodes
    assert (node.capacity, node.allocatable, node.unhealthy, node.in_use) == (8, 8, 0, 4)
    assert [(h.namespace, h.name, h.count) for h in node.holders] == [
        ("team-a", "train", 3),
        ("team-b", "infer", 1),
    ]
    assert [(p.name, p.ready, p.restarts) for p in node.plugin_pods] == [("gpu-device-plugin-x1", True, 2)]
    assert node.labels == {"example.com/gpu.product": "H100"}


def test_unhealthy_devices_and_a_not_ready_plugin_are_problems() -> None:
    result = report(
        [gpu_node("gpu-1", 8, 6), gpu_node("gpu-2", 8, 8)],
        [plugin_pod("p1", "gpu-1", ready=True), plugin_pod("p2", "gpu-2", ready=False, restarts=7)],
    )
    assert not result.ok
    assert result.nodes[0].unhealthy == 2
    assert result.problems == [
        "gpu-1: 2 of 8 example.com/gpu unhealthy (capacity 8, allocatable 6)",
        "gpu-2: plugin pod gpu-device-plugin/p2 is not ready (phase Running, 7 restarts)",
    ]
    data = result.to_json()
    assert data["ok"] is False
    assert data["nodes"][1]["plugin_pods"] == [
        {"namespace": "gpu-device-plugin", "name": "p2", "phase": "Running", "ready": False, "restarts": 7}
    ]


def test_nodes_without_gpus_or_plugin_are_left_out() -> None:
    result = report(
        [
            gpu_node("cpu-1", None, None),
            gpu_node("gpu-1", 4, 4),
            gpu_node("labelled-only", None, None, **{"example.com/gpu.count": "0"}),
        ],
        [pod("web", "cpu-1", container())],
    )
    assert [n.name for n in result.nodes] == ["gpu-1", "labelled-only"]


def test_a_plugin_pod_on_a_node_that_advertises_nothing_yet_is_shown() -> None:
    result = report([gpu_node("gpu-new", None, None)], [plugin_pod("p", "gpu-new", ready=False)])
    (node,) = result.nodes
    assert node.capacity is None
    assert node.unhealthy == 0
    assert not result.ok


def test_unscheduled_pods_hold_nothing() -> None:
    result = report(
        [gpu_node("gpu-1", 8, 8)], [pod("pending", None, container(4), status={"phase": "Pending"})]
    )
    assert result.nodes[0].holders == ()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"containers": [container(2), container(3)]}, 5, id="containers-add-up"),
        pytest.param({"containers": [container(2, limits_only=True)]}, 2, id="limits-only"),
        pytest.param(
            {"containers": [container(1)], "initContainers": [container(4)]}, 4, id="init-alone-larger"
        ),
        pytest.param(
            {"containers": [container(3)], "initContainers": [container(1)]}, 3, id="init-alone-smaller"
        ),
        pytest.param(
            {"containers": [container(2)], "initContainers": [container(1, restartPolicy="Always")]},
            3,
            id="sidecar-adds",
        ),
        pytest.param({"containers": [container()]}, 0, id="none"),
        pytest.param({}, 0, id="empty-spec"),
    ],
)
def test_requested_counts_like_the_scheduler(spec: dict[str, Any], expected: int) -> None:
    assert requested({"spec": spec}, R) == expected


@pytest.mark.parametrize(
    ("text", "value"), [("8", 8), ("0", 0), ("1k", 1000), ("2Ki", 2048), (" 16 ", 16), (None, 0), (3, 3)]
)
def test_quantity(text: str | int | None, value: int) -> None:
    assert quantity(text) == value


@pytest.mark.parametrize("text", ["1.5", "100m", "eight", "-1", "1K"])
def test_quantity_refuses_what_an_extended_resource_cannot_be(text: str) -> None:
    with pytest.raises(ValueError, match="whole-number"):
        quantity(text)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("app.kubernetes.io/name=gpu-device-plugin", PLUGIN_LABELS, True),
        ("app.kubernetes.io/name==gpu-device-plugin", PLUGIN_LABELS, True),
        ("app.kubernetes.io/name=gpu-device-plugin", {"app.kubernetes.io/name": "other"}, False),
        ("app=gdp,tier!=canary", {"app": "gdp", "tier": "stable"}, True),
        ("app=gdp,tier!=canary", {"app": "gdp", "tier": "canary"}, False),
        ("app=gdp,tier!=canary", {"app": "gdp"}, True),
        ("env in (prod, staging),app", {"env": "staging", "app": "x"}, True),
        ("env in (prod, staging),app", {"env": "dev", "app": "x"}, False),
        ("env notin (dev)", {}, True),
        ("!canary", {"canary": "true"}, False),
        ("!canary", {}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert LabelSelector.parse(selector).matches(labels) is matches


@pytest.mark.parametrize("selector", ["a=b,,c", "a in b", "=x", "a=b=c", "a in (x", "a b"])
def test_bad_selectors_say_so(selector: str) -> None:
    with pytest.raises(ValueError, match=r"cannot parse|empty term"):
        LabelSelector.parse(selector)
