"""MIG on the real kubelet: `--mig-strategy mixed` over the C NVML fake's `mig-a100` (issue 16).

The fake driver root is laid out on the node's host as in test_nvml.py (on a kind
node, in the folder mounted into it), with the `mig-a100` profile: GPU 0 split into
seven 1g.10gb, GPU 1 into 3g.40gb + 2g.20gb + 1g.10gb, GPU 2 whole (MIG off). The
plugin (a host process, or a DaemonSet from the image with the root as a hostPath)
serves it with `--mig-strategy mixed` under its own domain, so its resources never
meet the fake-backend plugin's. What is checked is what a cluster user sees: the
`mig-*` resources on the Node with their counts, a pod handed a MIG device (its env
names the MIG UUID), an XID on a parent GPU taking exactly its MIG devices out of
allocatable and back, and a MIG layout changed under the running plugin followed
within its re-discovery period.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import e2e_support
import pytest
from drivers import APP_LABEL, DaemonSetPlugin
from test_nvml import INSTANCE_LABEL, QUIET_PERIOD_S, driver_root, nvml_daemonset, nvml_host_process

from conftest import ClusterUnderTest, PluginUnderTest, Pods, plugin_mode
from gdp_hack.nvmlfake import FakeDriver, build

PROFILE = "mig-a100"
DOMAIN = "mig.example.com"
GPU_RESOURCE = f"{DOMAIN}/gpu"
SMALL = f"{DOMAIN}/mig-1g.10gb"
MEDIUM = f"{DOMAIN}/mig-2g.20gb"
LARGE = f"{DOMAIN}/mig-3g.40gb"
#: What mig-a100 gives under mixed: resource -> devices.
COUNTS = {GPU_RESOURCE: 1, SMALL: 8, MEDIUM: 1, LARGE: 1}
INSTANCE = "nvml-mig"
#: The MIG plugin's re-discovery period (issue 17): a layout changed under it is seen within it.
REDISCOVERY_S = 2


@dataclass
class MigPlugin:
    driver: FakeDriver

    def uuid(self, gpu: int, mig: int) -> str:
        spec = self.driver.profile.devices[gpu].mig
        assert spec is not None
        return self.driver.profile.mig_uuid(gpu, spec.instances[mig])

    def wait(self, cluster: ClusterUnderTest, want: dict[str, int], timeout: float) -> None:
        for resource, count in want.items():
            e2e_support.wait_node_resource(
                cluster.core, cluster.node_name, count, timeout=timeout, resource=resource
            )


@pytest.fixture(scope="module")
def mig_plugin(
    cluster: ClusterUnderTest, plugin: PluginUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MigPlugin]:
    root = driver_root(cluster, tmp_path_factory, "mig-driver-root")
    driver = FakeDriver(root, PROFILE, library=build())
    stop: Any
    if plugin_mode() == "daemonset":
        rendered = DaemonSetPlugin.render(
            cluster.kubectl,
            e2e_support.fake_config(e2e_support.fake_uuids(8)),
            local_api_port=cluster.api_port_on_node,
        )
        daemonset = cluster.daemonset(
            [
                nvml_daemonset(
                    rendered,
                    root,
                    resource=GPU_RESOURCE,
                    env={"GPU_DP_MIG_STRATEGY": "mixed", "GPU_DP_REDISCOVERY_INTERVAL": str(REDISCOVERY_S)},
                    name="gpu-device-plugin-mig",
                    instance=INSTANCE,
                )
            ],
            "gpu-device-plugin-mig-pod",
            selector=f"{APP_LABEL},{INSTANCE_LABEL}={INSTANCE}",
        )
        daemonset.start()
        stop = daemonset.stop
    else:
        local = cluster.require_host_control()
        process = nvml_host_process(
            root,
            local.device_plugin_dir,
            local.log_path("gpu-device-plugin-mig"),
            resource=GPU_RESOURCE,
            extra=("--mig-strategy", "mixed", "--rediscovery-interval", str(REDISCOVERY_S)),
        )
        process.start()
        stop = process.stop
    try:
        under_test = MigPlugin(driver)
        under_test.wait(cluster, COUNTS, timeout=60)
        yield under_test
    finally:
        stop()


@pytest.fixture
def healthy_mig(cluster: ClusterUnderTest, mig_plugin: MigPlugin) -> MigPlugin:
    mig_plugin.driver.heal()
    mig_plugin.wait(cluster, COUNTS, timeout=QUIET_PERIOD_S + 30)
    return mig_plugin


def test_the_node_has_one_resource_per_mig_profile(cluster: ClusterUnderTest, healthy_mig: MigPlugin) -> None:
    node = cluster.core.read_node(cluster.node_name)
    for resource, count in COUNTS.items():
        assert e2e_support.node_resource(node, "capacity", resource) == count, resource
        assert e2e_support.node_resource(node, "allocatable", resource) == count, resource


def test_a_pod_gets_a_mig_device(pods: Pods, healthy_mig: MigPlugin) -> None:
    name = pods.create("mig-3g", gpus=1, resource=LARGE)
    pods.running(name)

    assert pods.devices(name) == [healthy_mig.uuid(1, 0)]


def test_two_small_instances_go_to_two_parents(pods: Pods, healthy_mig: MigPlugin) -> None:
    name = pods.create("mig-1g-pair", gpus=2, resource=SMALL)
    pods.running(name)

    devices = pods.devices(name)
    assert all(d.startswith("MIG-") for d in devices)
    # distributed (the default): GPU 1's one 1g.10gb and one of GPU 0's seven.
    assert healthy_mig.uuid(1, 2) in devices
    assert len({*devices} & {healthy_mig.uuid(0, k) for k in range(7)}) == 1


def test_an_xid_on_a_parent_takes_its_mig_devices_out_and_back(
    cluster: ClusterUnderTest, healthy_mig: MigPlugin
) -> None:
    started = time.monotonic()
    healthy_mig.driver.inject_xid(0, 79)  # GPU 0: all seven of its 1g.10gb

    healthy_mig.wait(cluster, {SMALL: 1}, timeout=10)
    print(f"XID 79 on a parent to mig-1g.10gb allocatable 1: {time.monotonic() - started:.2f} s")
    node = cluster.core.read_node(cluster.node_name)
    for resource in (GPU_RESOURCE, MEDIUM, LARGE):  # GPU 0 has none of these
        assert e2e_support.node_resource(node, "allocatable", resource) == COUNTS[resource], resource
    # The quiet period of correct probes, then every instance of GPU 0 back.
    healthy_mig.wait(cluster, {SMALL: 8}, timeout=QUIET_PERIOD_S + 20)


def test_a_mig_layout_change_is_followed_without_a_restart(
    cluster: ClusterUnderTest, healthy_mig: MigPlugin
) -> None:
    driver = healthy_mig.driver
    spec = driver.profile.devices[1].mig
    assert spec is not None
    first = list(spec.instances)
    started = time.monotonic()
    # An operator re-partitions GPU 1 (mig-parted): its 3g.40gb and 2g.20gb destroyed, six
    # 1g.10gb made; its 1g.10gb (GI 13) is left alone and keeps its UUID.
    driver.set_mig_layout(1, [*({"profile": "1g.10gb", "gi": gi} for gi in range(7, 13)), first[2]])
    try:
        healthy_mig.wait(cluster, {SMALL: 14, MEDIUM: 0, LARGE: 0}, timeout=REDISCOVERY_S + 20)
        print(f"MIG layout change to allocatable on the Node: {time.monotonic() - started:.2f} s")
        node = cluster.core.read_node(cluster.node_name)
        assert e2e_support.node_resource(node, "allocatable", GPU_RESOURCE) == COUNTS[GPU_RESOURCE]
    finally:
        driver.set_mig_layout(1, first)
    # And back, by the same path: the profiles GPU 1 had are served again.
    healthy_mig.wait(cluster, COUNTS, timeout=REDISCOVERY_S + 60)
