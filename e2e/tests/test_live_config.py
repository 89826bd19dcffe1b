"""Issue 17 on a real kubelet and API server: the Node's label picks the config, changed live.

The plugin serves the suite's 8 fake GPUs with `--config-dir`, a folder of
NVIDIA-format configs: as a host process given a plain folder, or as the kind
overlay's DaemonSet with the folder a mounted ConfigMap (one key per config,
what NVIDIA's config-manager reads). The Node is labelled as `kubectl label`
would. What a user sees is asserted: `whole` gives 8 allocatable, `timeslice-4`
32 within the issue's 5 s while a pod started before keeps running, and a
config with a key NVIDIA's file does not have gives a Warning Event
`ConfigRejected` naming it while allocatable stays 32.

The configs serve nvidia.com/gpu (NVIDIA's file time-slices nvidia.com/
resources only), so this module runs its own plugin for its own resource. As a
host process it runs beside the session's example.com/gpu plugin; as the
DaemonSet it takes the kind overlay's place while it runs (one DaemonSet name),
and the session's plugin is applied again by the next test that needs it
(`healthy_plugin`), as test_time_slicing.py does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import e2e_support
import pytest
from drivers import DaemonSetPlugin, HostProcessPlugin, PluginDriver
from kubernetes import client

from conftest import ClusterUnderTest, Pods, plugin_mode

LABEL = "nvidia.com/device-plugin.config"
SHARED = "nvidia.com/gpu"
WHOLE = f"version: v1\ngpuDevicePlugin:\n  resourceName: {SHARED}\n"
CONFIGS = {
    "whole": WHOLE,
    # Each GPU four ways under the same name: the same registration lists 32 replicas.
    "timeslice-4": WHOLE
    + f"sharing:\n  timeSlicing:\n    resources:\n      - name: {SHARED}\n        replicas: 4\n",
    # A key NVIDIA's file does not have: refused, naming it.
    "bad-key": "version: v1\nflags:\n  migStrateg: mixed\n",
}
#: The issue's target for a label switch to reach the Node's allocatable.
SWITCH_SLO_S = 5.0
CONFIGMAP = "gpu-device-plugin-live-configs"
CONFIG_DIR = "/etc/gpu-device-plugin/configs"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def label_node(core: client.CoreV1Api, node: str, value: str | None) -> None:
    core.patch_node(node, {"metadata": {"labels": {LABEL: value}}})


def live_daemonset(cluster: ClusterUnderTest, uuids: list[str]) -> DaemonSetPlugin:
    """The kind overlay's DaemonSet with the configs as a ConfigMap folder and --config-dir on it."""
    rendered = DaemonSetPlugin.render(
        cluster.kubectl,
        e2e_support.fake_config(uuids),
        local_api_port=cluster.api_port_on_node,
    )
    daemonset = next(o for o in rendered if o["kind"] == "DaemonSet")
    namespace = daemonset["metadata"]["namespace"]
    configmap: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "gpu-device-plugin"},
        },
        "data": dict(CONFIGS),
    }
    pod = daemonset["spec"]["template"]["spec"]
    pod.setdefault("volumes", []).append({"name": "live-configs", "configMap": {"name": CONFIGMAP}})
    for container in pod["containers"]:
        # The whole folder, never a subPath: the kubelet swaps its `..data` link on an update.
        container.setdefault("volumeMounts", []).append(
            {"name": "live-configs", "mountPath": CONFIG_DIR, "readOnly": True}
        )
        # The base sets GPU_DP_RESOURCE_NAME, which outranks a config file (flag > env > file):
        # dropped, so the configs name the resource.
        container["env"] = [e for e in container.get("env", []) if e["name"] != "GPU_DP_RESOURCE_NAME"]
        container["env"].append({"name": "GPU_DP_CONFIG_DIR", "value": CONFIG_DIR})
        for probe in PROBES:
            container[probe]["exec"]["command"] += ["--resource-name", SHARED]
    # After the Namespace the overlay renders first: apply creates them in order.
    return cluster.daemonset([*rendered, configmap], "gpu-device-plugin-live-pod")


def live_process(cluster: ClusterUnderTest, uuids: list[str], folder: Path) -> HostProcessPlugin:
    local = cluster.require_host_control()
    configs = folder / "configs"
    configs.mkdir()
    for name, text in CONFIGS.items():
        (configs / name).write_text(text)
    fake = folder / "fake.yaml"
    e2e_support.write_config(fake, e2e_support.fake_config(uuids))
    return HostProcessPlugin(
        e2e_support.PluginProcess(
            binary=e2e_support.plugin_binary(),
            config=fake,
            device_plugin_dir=local.device_plugin_dir,
            log=local.log_path("gpu-device-plugin-live"),
            extra_args=[
                *("--config-dir", str(configs)),
                *("--kubeconfig", str(local.kubeconfig)),
                *("--node-name", cluster.node_name),
            ],
            resource_name=None,
        )
    )


@pytest.fixture
def live_plugin(cluster: ClusterUnderTest, tmp_path: Path) -> Iterator[PluginDriver]:
    mode = plugin_mode()
    if mode is None:
        pytest.skip(reason="the plugin was deployed outside the suite (set E2E_PLUGIN)")
    uuids = e2e_support.fake_uuids(8)
    driver: PluginDriver = (
        live_daemonset(cluster, uuids) if mode == "daemonset" else live_process(cluster, uuids, tmp_path)
    )
    label_node(cluster.core, cluster.node_name, "whole")
    if isinstance(driver, DaemonSetPlugin):
        # Over the session's DaemonSet, if it runs: start() alone would find its pod and stop there.
        driver.apply()
    driver.start()
    try:
        yield driver
    finally:
        driver.stop()
        label_node(cluster.core, cluster.node_name, None)


def rejected_event(core: client.CoreV1Api, node: str, config: str) -> Any:
    return e2e_support.wait_for(
        core.list_namespaced_event,
        lambda e: e is not None and config in (e.message or ""),
        timeout=30,
        what=f"a ConfigRejected Event naming {config}",
        namespace="default",
        field_selector=f"involvedObject.name={node},reason=ConfigRejected",
    )


def test_the_label_switches_the_config_live(
    cluster: ClusterUnderTest, live_plugin: PluginDriver, pods: Pods
) -> None:
    core, node = cluster.core, cluster.node_name
    e2e_support.wait_node_resource(core, node, 8, timeout=90, resource=SHARED)
    before = pods.create("before", gpus=1, resource=SHARED)
    pods.running(before)

    # Whole GPUs to four replicas each, under the same name.
    switched = time.monotonic()
    label_node(core, node, "timeslice-4")
    e2e_support.wait_node_resource(core, node, 32, timeout=60, resource=SHARED)
    took = time.monotonic() - switched
    print(f"label switch whole -> timeslice-4 to allocatable[{SHARED}] == 32: {took:.2f} s")
    assert took <= SWITCH_SLO_S, f"the new allocatable took {took:.1f} s after the label switch"
    # The pod that holds a whole GPU of the old config keeps running.
    pod = core.read_namespaced_pod(before, pods.namespace)
    assert pod.status.phase == "Running", pod.status.phase

    # A config with a key we do not have: a Warning Event, and nothing changes.
    label_node(core, node, "bad-key")
    event = rejected_event(core, node, "bad-key")
    assert event.type == "Warning"
    assert "flags.migStrateg" in event.message
    assert "still serving config timeslice-4" in event.message
    assert e2e_support.node_resource(core.read_node(node), resource=SHARED) == 32
    assert live_plugin.running()
    pod = core.read_namespaced_pod(before, pods.namespace)
    assert pod.status.phase == "Running", pod.status.phase
