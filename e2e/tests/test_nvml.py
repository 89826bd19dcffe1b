"""The nvml backend on the real kubelet, over the C NVML fake (issue 13).

The fake's driver root (hack/nvmlfake: libnvidia-ml.so.1, its state file, stand-in
/dev/nvidia* files) is laid out on the node's host, and the plugin finds the library
under it with --driver-root, as on a node whose driver lives in a folder (NVIDIA's
own GPU-free CI does the same). In the `process` mode the plugin is a host process;
in the `daemonset` mode it is a second DaemonSet, from the image, with the folder
mounted as a hostPath. Either way it serves its own resource, NVML_RESOURCE, beside
the fake-backend plugin the rest of the suite uses, so neither disturbs the other.
Faults are injected on the node into the library the running plugin has loaded.
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import e2e_support
import pytest
from drivers import APP_LABEL, DaemonSetPlugin

from conftest import ENV_KIND_NVML_ROOT, ClusterUnderTest, PluginUnderTest, Pods, plugin_mode
from gdp_hack.nvmlfake import FakeDriver, build

NVML_RESOURCE = "example.com/nvml-gpu"
PROFILE = "dgx1-v100"
#: Seconds of quiet before a faulted GPU returns: short, so the test sees it come back.
QUIET_PERIOD_S = 5
INSTANCE_LABEL = "app.kubernetes.io/instance"
INSTANCE = "nvml-fake"
HEALTH_ENV = {
    "GPU_DP_HEALTH_QUIET_PERIOD": str(QUIET_PERIOD_S),
    "GPU_DP_HEALTH_PROBE_INTERVAL": "1",
}


@dataclass
class NvmlPlugin:
    """The plugin serving the fake driver's GPUs, and the driver to inject faults into."""

    driver: FakeDriver
    uuids: list[str]

    def wait_allocatable(self, cluster: ClusterUnderTest, count: int, timeout: float) -> None:
        e2e_support.wait_node_resource(
            cluster.core, cluster.node_name, count, timeout=timeout, resource=NVML_RESOURCE
        )


def nvml_host_process(
    root: Path,
    plugin_dir: Path,
    log: Path,
    *,
    resource: str = NVML_RESOURCE,
    extra: Sequence[str] = (),
) -> e2e_support.HostCommand:
    """`serve --discovery nvml --driver-root ROOT` as a host process of the local node."""
    args = [
        "serve", "--discovery", "nvml", "--driver-root", str(root),
        "--device-plugin-dir", str(plugin_dir), "--resource-name", resource, *extra,
    ]  # fmt: skip
    return e2e_support.HostCommand(
        args,
        log,
        # Nothing of the caller's driver set-up: the driver root alone must find the library.
        env={k: v for k, v in e2e_support.plugin_env().items() if k != "LD_LIBRARY_PATH"}
        | HEALTH_ENV
        | {"OTEL_SDK_DISABLED": "true"},
    )


def nvml_daemonset(
    rendered: list[dict[str, Any]],
    host_root: Path,
    *,
    resource: str = NVML_RESOURCE,
    env: Mapping[str, str] | None = None,
    name: str = "gpu-device-plugin-nvml",
    instance: str = INSTANCE,
) -> dict[str, Any]:
    """The kind overlay's DaemonSet, turned into a second one on the nvml backend.

    Its own name and instance label (so its pods are told apart from the overlay's),
    its own resource, no node labels or Events (the overlay's plugin owns those),
    and the driver root mounted read-only instead of the fake config.
    """
    daemonset = copy.deepcopy(next(obj for obj in rendered if obj["kind"] == "DaemonSet"))
    daemonset["metadata"]["name"] = name
    daemonset["spec"]["selector"]["matchLabels"][INSTANCE_LABEL] = instance
    daemonset["spec"]["template"]["metadata"]["labels"][INSTANCE_LABEL] = instance
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    replaced = {
        "GPU_DP_DISCOVERY": "nvml",
        # The same path inside as on the node: the plugin names host paths from it.
        "GPU_DP_DRIVER_ROOT": str(host_root),
        "GPU_DP_RESOURCE_NAME": resource,
        "GPU_DP_NODE_LABELS": "false",
        "GPU_DP_NODE_EVENTS": "false",
        **HEALTH_ENV,
        **(env or {}),
    }
    env = [e for e in container.get("env", []) if e["name"] not in {*replaced, "GPU_DP_FAKE_CONFIG"}]
    container["env"] = env + [{"name": k, "value": v} for k, v in replaced.items()]
    container["volumeMounts"] = [
        *(m for m in container.get("volumeMounts", []) if m["name"] != "fake-config"),
        {"name": "driver-root", "mountPath": str(host_root), "readOnly": True},
    ]
    pod["volumes"] = [
        *(v for v in pod.get("volumes", []) if v["name"] != "fake-config"),
        {"name": "driver-root", "hostPath": {"path": str(host_root), "type": "Directory"}},
    ]
    return daemonset


def driver_root(cluster: ClusterUnderTest, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """An empty folder for a fake driver root that the plugin under test can see: on a kind
    node a subfolder of the one e2e/kind/run.sh mounts into it at the same path (extraMounts),
    elsewhere a temporary folder on the local node's host."""
    kind_root = os.environ.get(ENV_KIND_NVML_ROOT)
    if kind_root and cluster.local is None and plugin_mode() == "daemonset":
        root = Path(kind_root) / name
        shutil.rmtree(root, ignore_errors=True)  # an earlier run's, in a kept work folder
        root.mkdir(parents=True)
    else:
        cluster.require_host_control()
        root = tmp_path_factory.mktemp(name)
    # Readable by the container's root whatever the test process's umask made of it.
    os.chmod(root, 0o755)
    return root


@pytest.fixture(scope="module")
def nvml_plugin(
    cluster: ClusterUnderTest, plugin: PluginUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NvmlPlugin]:
    # `plugin` first: in the daemonset mode it made the namespace, account and RBAC this one uses.
    mode = plugin_mode()
    root = driver_root(cluster, tmp_path_factory, "nvml-driver-root")
    driver = FakeDriver(root, PROFILE, library=build())
    uuids = [d.uuid for d in driver.profile.devices]
    stop: Any
    if mode == "daemonset":
        rendered = DaemonSetPlugin.render(
            cluster.kubectl,
            e2e_support.fake_config(e2e_support.fake_uuids(8)),
            local_api_port=cluster.api_port_on_node,
        )
        daemonset = cluster.daemonset(
            [nvml_daemonset(rendered, root)],
            "gpu-device-plugin-nvml-pod",
            selector=f"{APP_LABEL},{INSTANCE_LABEL}={INSTANCE}",
        )
        daemonset.start()
        stop = daemonset.stop
    else:
        local = cluster.require_host_control()
        process = nvml_host_process(root, local.device_plugin_dir, local.log_path("gpu-device-plugin-nvml"))
        process.start()
        stop = process.stop
    try:
        under_test = NvmlPlugin(driver=driver, uuids=uuids)
        under_test.wait_allocatable(cluster, len(uuids), timeout=60)
        yield under_test
    finally:
        stop()


@pytest.fixture
def healthy_nvml(cluster: ClusterUnderTest, nvml_plugin: NvmlPlugin) -> NvmlPlugin:
    nvml_plugin.driver.heal()
    nvml_plugin.wait_allocatable(cluster, len(nvml_plugin.uuids), timeout=60)
    return nvml_plugin


def test_node_advertises_the_profiles_gpus(cluster: ClusterUnderTest, healthy_nvml: NvmlPlugin) -> None:
    node = cluster.core.read_node(cluster.node_name)
    assert e2e_support.node_resource(node, "capacity", NVML_RESOURCE) == 8
    assert e2e_support.node_resource(node, "allocatable", NVML_RESOURCE) == 8


def test_two_gpu_pod_gets_a_doubly_nvlinked_pair(pods: Pods, healthy_nvml: NvmlPlugin) -> None:
    name = pods.create("pair", gpus=2, resource=NVML_RESOURCE)
    pods.running(name)
    devices = pods.devices(name)
    index = {uuid: i for i, uuid in enumerate(healthy_nvml.uuids)}
    assert set(devices) <= set(index), f"{devices} are not the profile's GPUs"
    links = {tuple(sorted(p.gpus)): p.links for p in healthy_nvml.driver.profile.nvlink_pairs}
    best = max(links.values())
    pair = tuple(sorted(index[d] for d in devices))
    assert links.get(pair, 0) == best == 2, f"GPUs {pair} have {links.get(pair, 0)} NVLinks"
    assert len(list(itertools.combinations(devices, 2))) == 1


def test_critical_xid_takes_one_gpu_out_then_it_returns(
    cluster: ClusterUnderTest, healthy_nvml: NvmlPlugin
) -> None:
    started = time.monotonic()
    healthy_nvml.driver.inject_xid(3, 79)
    healthy_nvml.wait_allocatable(cluster, 7, timeout=5)
    dropped_after = time.monotonic() - started
    print(f"XID 79 to allocatable 7: {dropped_after:.2f} s")
    # The quiet period, then a correct probe: back to 8 without anyone touching it.
    healthy_nvml.wait_allocatable(cluster, 8, timeout=QUIET_PERIOD_S + 15)


def test_application_xid_leaves_the_gpu_in_service(
    cluster: ClusterUnderTest, healthy_nvml: NvmlPlugin
) -> None:
    # The application XID first, a critical one on another GPU second: once the
    # second shows, the first has been judged, and allocatable must be 7, not 6.
    healthy_nvml.driver.inject_xid(1, 13)
    healthy_nvml.driver.inject_xid(6, 79)
    healthy_nvml.wait_allocatable(cluster, 7, timeout=5)
    node = cluster.core.read_node(cluster.node_name)
    assert e2e_support.node_resource(node, "allocatable", NVML_RESOURCE) == 7


def test_lost_gpu_leaves_allocatable_until_it_answers(
    cluster: ClusterUnderTest, healthy_nvml: NvmlPlugin
) -> None:
    healthy_nvml.driver.lose(5)
    healthy_nvml.wait_allocatable(cluster, 7, timeout=10)
    healthy_nvml.driver.heal(5)
    healthy_nvml.wait_allocatable(cluster, 8, timeout=QUIET_PERIOD_S + 15)
