"""Issue 17 on a real kubelet and API server: the Node's label picks the config, changed live.

The plugin runs as a host process of the local cluster with `--config-dir` (a
folder of NVIDIA-format configs, as a mounted ConfigMap would give it) and the
admin kubeconfig; the Node is labelled as `kubectl label` would. What a user
sees is asserted: the Node's allocatable, a pod started before a switch still
running, the Warning Event of a config that cannot be served.

DaemonSet mode needs the configs as a ConfigMap in the kind overlay, which is
not there yet: skipped there, saying so. Until time-slicing is merged the
config switched to is a renamed resource (`example.com/gpu-renamed`), which
exercises the same path: parse, validate, plan, diff, register, stop.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import e2e_support
import pytest
from drivers import HostProcessPlugin
from kubernetes import client

from conftest import ClusterUnderTest, Pods, plugin_mode

LABEL = "nvidia.com/device-plugin.config"
RENAMED = "example.com/gpu-renamed"
CONFIGS = {
    "whole": f"version: v1\ngpuDevicePlugin:\n  resourceName: {e2e_support.RESOURCE}\n",
    "renamed": f"version: v1\ngpuDevicePlugin:\n  resourceName: {RENAMED}\n",
    # A key NVIDIA's file does not have: refused, naming it.
    "bad-key": "version: v1\nflags:\n  migStrateg: mixed\n",
}
#: The issue's target for a label switch to reach the Node's allocatable.
SWITCH_SLO_S = 5.0


def label_node(core: client.CoreV1Api, node: str, value: str | None) -> None:
    core.patch_node(node, {"metadata": {"labels": {LABEL: value}}})


@pytest.fixture
def live_plugin(cluster: ClusterUnderTest, tmp_path: Path) -> Iterator[HostProcessPlugin]:
    if plugin_mode() != "process":
        pytest.skip(reason="DaemonSet mode needs the configs as a ConfigMap in the kind overlay (not yet)")
    local = cluster.require_host_control()
    configs = tmp_path / "configs"
    configs.mkdir()
    for name, text in CONFIGS.items():
        (configs / name).write_text(text)
    fake = tmp_path / "fake.yaml"
    e2e_support.write_config(fake, e2e_support.fake_config(e2e_support.fake_uuids(8)))
    label_node(cluster.core, cluster.node_name, "whole")
    driver = HostProcessPlugin(
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
    driver.start()
    try:
        yield driver
    finally:
        driver.stop()
        label_node(cluster.core, cluster.node_name, None)


def test_the_label_switches_the_config_live(
    cluster: ClusterUnderTest, live_plugin: HostProcessPlugin, pods: Pods
) -> None:
    core, node = cluster.core, cluster.node_name
    e2e_support.wait_node_resource(core, node, 8, timeout=60)
    before = pods.create("before", gpus=1)
    pods.running(before)

    # A config that differs: the same GPUs under another resource name.
    switched = time.monotonic()
    label_node(core, node, "renamed")
    e2e_support.wait_node_resource(core, node, 8, timeout=60, resource=RENAMED)
    took = time.monotonic() - switched
    print(f"label switch to allocatable[{RENAMED}] == 8: {took:.2f} s")
    assert took <= SWITCH_SLO_S, f"the new allocatable took {took:.1f} s after the label switch"
    # The old resource is no longer served: the kubelet shows none of it allocatable.
    e2e_support.wait_node_resource(core, node, 0, timeout=60)
    # The pod that held a GPU of the old config keeps running.
    pod = core.read_namespaced_pod(before, pods.namespace)
    assert pod.status.phase == "Running", pod.status.phase

    # A config with a key we do not have: a Warning Event, and nothing changes.
    label_node(core, node, "bad-key")
    event = e2e_support.wait_for(
        core.list_namespaced_event,
        lambda e: e is not None and "bad-key" in (e.message or ""),
        timeout=30,
        what="a ConfigRejected Event naming the config",
        namespace="default",
        field_selector=f"involvedObject.name={node},reason=ConfigRejected",
    )
    assert event.type == "Warning"
    assert "bad-key" in event.message
    assert "flags.migStrateg" in event.message
    assert e2e_support.node_resource(core.read_node(node), resource=RENAMED) == 8
    assert live_plugin.running()
