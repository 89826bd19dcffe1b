"""What issue 3 asks of the plugin on a real kubelet: advertise, allocate, follow health, survive restarts.

Each test starts from `healthy_plugin`: the plugin running with all eight fake
devices healthy and the node's allocatable back at 8. Pods are deleted (and
waited for) after each test, so no test sees another's devices in use.
"""

from __future__ import annotations

import json
import time

import e2e_support
import pytest
from drivers import PluginDriver
from e2e_support import RESOURCE
from kubernetes import client

from conftest import PLUGIN_START_SLO_S, ClusterUnderTest, PluginUnderTest, Pods


def _assert_devices(devices: list[str], expected: int, plugin: PluginUnderTest) -> None:
    assert len(devices) == expected, f"expected {expected} devices, got {devices}"
    assert len(set(devices)) == expected, f"a device appears twice: {devices}"
    if plugin.uuids:
        assert set(devices) <= set(plugin.uuids), f"{devices} not among advertised {plugin.uuids}"


def test_capacity_and_allocatable_within_10s_of_start(
    cluster: ClusterUnderTest, healthy_plugin: PluginUnderTest
) -> None:
    node = cluster.core.read_node(cluster.node_name)
    assert e2e_support.node_resource(node, "capacity") == 8
    assert e2e_support.node_resource(node, "allocatable") == 8
    if healthy_plugin.seconds_to_allocatable is not None:
        assert healthy_plugin.seconds_to_allocatable <= PLUGIN_START_SLO_S, (
            f"allocatable reached 8 only {healthy_plugin.seconds_to_allocatable:.1f} s after the start"
        )


def test_plugin_advertises_the_configured_devices(healthy_plugin: PluginUnderTest) -> None:
    """`discover --json` where the plugin runs, on its config, lists exactly the UUIDs pods may see."""
    driver = healthy_plugin.require_driver()
    result = driver.cli("discover", "--json", "--discovery", "fake", "--fake-config", driver.config_path)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    devices = listed["devices"] if isinstance(listed, dict) else listed
    assert sorted(d["uuid"] for d in devices) == sorted(healthy_plugin.uuids)


def test_pod_gets_two_distinct_advertised_devices(pods: Pods, healthy_plugin: PluginUnderTest) -> None:
    name = pods.create("two", gpus=2)
    pods.running(name)
    _assert_devices(pods.devices(name), 2, healthy_plugin)


def test_eight_gpu_pod_waits_for_the_first_to_be_deleted(
    core: client.CoreV1Api, namespace: str, pods: Pods, healthy_plugin: PluginUnderTest
) -> None:
    first = pods.create("first", gpus=2)
    pods.running(first)
    big = pods.create("eight", gpus=8)
    pending = e2e_support.wait_pod(
        core, namespace, big, lambda pod: e2e_support.unschedulable_reason(pod) is not None,
        timeout=30, what="unschedulable",
    )  # fmt: skip
    reason = e2e_support.unschedulable_reason(pending)
    assert f"Insufficient {RESOURCE}" in (reason or ""), reason
    assert core.read_namespaced_pod(big, namespace).status.phase == "Pending"
    pods.delete(first)
    pods.running(big, timeout=90)
    _assert_devices(pods.devices(big), 8, healthy_plugin)


def test_eight_one_gpu_pods_never_share(pods: Pods, healthy_plugin: PluginUnderTest) -> None:
    names = [pods.create(f"one-{i}", gpus=1) for i in range(8)]
    seen: dict[str, str] = {}
    for name in names:
        pods.running(name, timeout=90)
        (device,) = pods.devices(name)
        assert device not in seen, f"{name} got {device}, already given to {seen.get(device)}"
        seen[device] = name
    if healthy_plugin.uuids:
        assert set(seen) == set(healthy_plugin.uuids)


def test_unhealthy_device_drops_allocatable_and_recovers(
    cluster: ClusterUnderTest, healthy_plugin: PluginUnderTest
) -> None:
    healthy_plugin.require_driver()
    victim = healthy_plugin.uuids[3]
    healthy_plugin.set_health(victim, healthy=False)
    node = e2e_support.wait_node_resource(cluster.core, cluster.node_name, 7, timeout=5)
    assert e2e_support.node_resource(node, "capacity") == 8, "an unhealthy device still counts in capacity"
    healthy_plugin.set_health(victim, healthy=True)
    e2e_support.wait_node_resource(cluster.core, cluster.node_name, 8, timeout=5)


def _survives(cluster: ClusterUnderTest, pods: Pods, plugin: PluginUnderTest, disrupt: str) -> None:
    node = cluster.require_node()
    driver = plugin.require_driver()
    before = pods.create("before", gpus=2)
    running = pods.running(before)
    held = pods.devices(before)
    container_id = running.status.container_statuses[0].container_id

    if disrupt == "kubelet":
        node.restart_kubelet()
        restarted_at = time.monotonic()
        registered_before = 0  # a new kubelet counts from zero
    else:
        registered_before = e2e_support.registrations(cluster.kubelet_metrics())
        driver.kill()
        driver.start()
        restarted_at = driver.started_at

    # Allocatable may still read 8 from before the disruption: first see the
    # kubelet take the new registration, then allocatable 8 from it.
    e2e_support.wait_registered(cluster.kubelet_metrics, more_than=registered_before, timeout=10)
    e2e_support.wait_node_resource(cluster.core, cluster.node_name, 8, timeout=10)
    took = time.monotonic() - restarted_at
    assert took <= 10, f"allocatable back at 8 only {took:.1f} s after the {disrupt} restart"
    # Capacity counts the devices in use; allocatable too (it is per node, not free).
    still = pods.running(before, timeout=5)
    status = still.status.container_statuses[0]
    assert status.container_id == container_id, status
    assert status.restart_count == 0, status
    after = pods.create("after", gpus=2)
    pods.running(after)
    devices = pods.devices(after)
    _assert_devices(devices, 2, plugin)
    assert not set(devices) & set(held), f"new pod got {devices}, still held by the old pod: {held}"


def test_kubelet_restart(cluster: ClusterUnderTest, pods: Pods, healthy_plugin: PluginUnderTest) -> None:
    _survives(cluster, pods, healthy_plugin, "kubelet")


def test_plugin_sigkill_and_restart(
    cluster: ClusterUnderTest, pods: Pods, healthy_plugin: PluginUnderTest
) -> None:
    _survives(cluster, pods, healthy_plugin, "plugin")


@pytest.mark.parametrize(
    ("config_text", "field"),
    [
        pytest.param("devices:\n  - uuid: GPU-bad\n    health: Sick\n", "health", id="bad-health"),
        pytest.param("count: many\n", "count", id="count-not-a-number"),
    ],
)
def test_bad_config_exits_2_and_node_keeps_resources(
    cluster: ClusterUnderTest, healthy_plugin: PluginUnderTest, config_text: str, field: str
) -> None:
    driver = healthy_plugin.require_driver()
    before = cluster.core.read_node(cluster.node_name).status.allocatable
    code, output = driver.run_with_config(config_text)
    assert code == 2, f"exit {code}, output:\n{output}"
    assert field in output, f"the message does not name '{field}':\n{output}"
    after = cluster.core.read_node(cluster.node_name).status.allocatable
    assert after == before, f"node resources changed: {before} -> {after}"


def _topology_links(driver: PluginDriver) -> dict[frozenset[int], int]:
    """NVLink count per device-index pair, as the plugin itself reads its fake config now."""
    result = driver.cli(
        "discover", "--discovery", "fake", "--fake-config", driver.config_path, "--topology", "--json"
    )
    assert result.returncode == 0, result.stderr
    links = json.loads(result.stdout)["topology"]["links"]
    return {frozenset((link["a"], link["b"])): link["nvlinks"] for link in links}


def _preferred_pair(driver: PluginDriver) -> frozenset[str] | None:
    """What the running plugin answers to a GetPreferredAllocation for 2, via `probe`."""
    result = driver.cli(
        "probe",
        "--device-plugin-dir",
        driver.device_plugin_dir,
        "--resource-name",
        RESOURCE,
        "--preferred",
        "2",
    )
    prefix = "preferred allocation of 2: "
    answers = [line[len(prefix) :] for line in result.stdout.splitlines() if line.startswith(prefix)]
    return frozenset(answers[0].split(", ")) if answers else None


def test_two_gpu_pod_on_dgx_1v_gets_a_double_nvlinked_pair(
    cluster: ClusterUnderTest, pods: Pods, healthy_plugin: PluginUnderTest
) -> None:
    """Issue 4: on the hybrid cube-mesh the kubelet takes our topology-aware answer."""
    driver = healthy_plugin.require_driver()
    dgx_1v = e2e_support.fake_config(healthy_plugin.uuids) | {"topology": {"preset": "dgx-1v"}}
    index = {uuid: i for i, uuid in enumerate(healthy_plugin.uuids)}
    try:
        # The topology is part of the fake file: the running plugin picks it up live.
        driver.write_config(dgx_1v)
        deadline = time.monotonic() + 10
        # A ConfigMap edit takes a moment to reach the container's file.
        while max((links := _topology_links(driver)).values(), default=0) != 2:
            assert time.monotonic() < deadline, "the DGX-1V preset's doubly linked pairs never showed up"
            time.sleep(0.2)
        best = max(links.values())

        def nvlinks(uuids: frozenset[str] | list[str]) -> int:
            return links[frozenset(index[u] for u in uuids)]

        while (pair := _preferred_pair(driver)) is None or nvlinks(pair) != best:
            assert time.monotonic() < deadline, f"the plugin never preferred an NV{best} pair (last: {pair})"
            time.sleep(0.1)
        name = pods.create("nvlinked", gpus=2)
        pods.running(name)
        devices = pods.devices(name)
        _assert_devices(devices, 2, healthy_plugin)
        assert nvlinks(devices) == best, f"pod got {devices} with {nvlinks(devices)} NVLinks; best is {best}"
    finally:
        driver.write_config(e2e_support.fake_config(healthy_plugin.uuids))
