"""Issue 16, part 7 (a): time-slicing on a real kubelet, configured with NVIDIA's file.

The plugin serves the suite's 8 fake GPUs with the file of
manifests/kustomize/components/time-slicing (each GPU four times as
nvidia.com/gpu, failRequestsGreaterThanOne): as a host process given
`--config-file`, or as the DaemonSet of overlays/kind-time-slicing. The node
must then show 32 allocatable, 32 one-replica pods must all run (each GPU in
four of them), a pod asking for two replicas must fail admission with an
Event naming the option, and with `rename` in the file the replicas must move
to the new name.

This module runs its own plugin for its own resource (nvidia.com/gpu, then the
renamed one). As a host process it may run beside the session's example.com/gpu
plugin; as the DaemonSet it takes the kind overlay's place while it runs (one
DaemonSet name), and the session's plugin is applied again by the next test
that needs it (`healthy_plugin`).
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import e2e_support
import pytest
import yaml
from drivers import DaemonSetPlugin, HostProcessPlugin, PluginDriver
from kubernetes import client

from conftest import ClusterUnderTest, Pods, plugin_mode

SHARED = "nvidia.com/gpu"
RENAMED = "nvidia.com/gpu-quarter"
REPLICAS = 4
COMPONENT = e2e_support.REPO_ROOT / "manifests" / "kustomize" / "components" / "time-slicing"
OVERLAY = e2e_support.REPO_ROOT / "manifests" / "kustomize" / "overlays" / "kind-time-slicing"
CONFIGMAP = "gpu-device-plugin-config"
OPTION = "failRequestsGreaterThanOne"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def nvidia_file(*, rename: str | None = None) -> str:
    """The component's file as shipped; with `rename`, the replicas offered under that name."""
    text = (COMPONENT / "time-slicing.yaml").read_text()
    if rename is None:
        return text
    data = yaml.safe_load(text)
    data["sharing"]["timeSlicing"]["resources"][0]["rename"] = rename
    return yaml.safe_dump(data, sort_keys=False)


@dataclass
class SharedPlugin:
    """The plugin under test, with what it takes to restart it on another NVIDIA file."""

    cluster: ClusterUnderTest
    uuids: list[str]
    mode: str
    folder: Path
    driver: PluginDriver

    def restart_with(self, text: str, *, resource: str) -> None:
        """Run the plugin on this NVIDIA file (read at start) instead, its replicas named `resource`."""
        driver = make_driver(self.cluster, self.uuids, self.mode, self.folder, text, resource=resource)
        if isinstance(driver, DaemonSetPlugin):
            # The new pod template (its probes' resource) rolls the DaemonSet onto the new file.
            driver.apply()
        else:
            self.driver.stop()
            driver.start()
        self.driver = driver


def make_driver(
    cluster: ClusterUnderTest, uuids: list[str], mode: str, folder: Path, text: str, *, resource: str
) -> PluginDriver:
    """The plugin on the suite's fake GPUs with NVIDIA's file `text`, in the suite's mode."""
    if mode == "daemonset":
        rendered = DaemonSetPlugin.render(
            cluster.kubectl,
            e2e_support.fake_config(uuids),
            local_api_port=cluster.api_port_on_node,
            overlay=OVERLAY,
        )
        _use_file(rendered, text, probe_resource=resource)
        return cluster.daemonset(rendered, "gpu-device-plugin-pod")
    local = cluster.local
    assert local is not None, "a host-process plugin needs the local cluster"
    fake = folder / "fake.yaml"
    e2e_support.write_config(fake, e2e_support.fake_config(uuids))
    config = folder / f"nvidia-{secrets.token_hex(2)}.yaml"
    config.write_text(text)
    return HostProcessPlugin(
        e2e_support.PluginProcess(
            binary=e2e_support.plugin_binary(),
            config=fake,
            device_plugin_dir=local.device_plugin_dir,
            log=local.log_path("gpu-device-plugin"),
            # The later --resource-name wins over the suite's: the file shares nvidia.com/gpu.
            extra_args=["--resource-name", SHARED, "--config-file", str(config)],
        )
    )


def _use_file(rendered: list[dict[str, Any]], text: str, *, probe_resource: str) -> None:
    """Put `text` in the rendered ConfigMap of NVIDIA's file; point the probes at the resource."""
    (configmap,) = [
        o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(CONFIGMAP)
    ]
    configmap["data"]["config.yaml"] = text
    daemonset = next(o for o in rendered if o["kind"] == "DaemonSet")
    for container in daemonset["spec"]["template"]["spec"]["containers"]:
        for probe in PROBES:
            command = container[probe]["exec"]["command"]
            if probe_resource != SHARED and "--resource-name" not in command:
                command += ["--resource-name", probe_resource]


@pytest.fixture(scope="module")
def shared_plugin(
    cluster: ClusterUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedPlugin]:
    mode = plugin_mode()
    if mode is None:
        pytest.skip(reason="the plugin was deployed outside the suite (set E2E_PLUGIN)")
    uuids = e2e_support.fake_uuids(8)
    folder = tmp_path_factory.mktemp("time-slicing")
    driver = make_driver(cluster, uuids, mode, folder, nvidia_file(), resource=SHARED)
    plugin = SharedPlugin(cluster=cluster, uuids=uuids, mode=mode, folder=folder, driver=driver)
    if isinstance(driver, DaemonSetPlugin):
        # Over the session's DaemonSet, if it runs: start() alone would find its pod and stop there.
        driver.apply()
    driver.start()
    try:
        e2e_support.wait_node_resource(cluster.core, cluster.node_name, 32, resource=SHARED, timeout=90)
        yield plugin
    finally:
        plugin.driver.stop()


def test_eight_gpus_four_ways_are_32_allocatable(
    cluster: ClusterUnderTest, shared_plugin: SharedPlugin
) -> None:
    node = cluster.core.read_node(cluster.node_name)
    assert e2e_support.node_resource(node, "capacity", SHARED) == 32
    assert e2e_support.node_resource(node, "allocatable", SHARED) == 32


def test_32_one_replica_pods_all_run_each_gpu_in_four(
    core: client.CoreV1Api, namespace: str, pods: Pods, shared_plugin: SharedPlugin
) -> None:
    names = [pods.create(f"r{i:02d}", gpus=1, resource=SHARED) for i in range(32)]
    seen: Counter[str] = Counter()
    for name in names:
        pods.running(name, timeout=240)
        (device,) = pods.devices(name)
        seen[device] += 1
    # Each pod sees one physical GPU; the 32 replicas are each GPU's four.
    assert set(seen) == set(shared_plugin.uuids), seen
    assert set(seen.values()) == {REPLICAS}, seen
    # Every replica is in use: a 33rd pod waits.
    extra = pods.create("r32", gpus=1, resource=SHARED)
    pending = e2e_support.wait_pod(
        core, namespace, extra, lambda pod: e2e_support.unschedulable_reason(pod) is not None,
        timeout=60, what="unschedulable",
    )  # fmt: skip
    assert f"Insufficient {SHARED}" in (e2e_support.unschedulable_reason(pending) or "")


def test_two_replicas_fail_admission_with_an_event_naming_the_option(
    core: client.CoreV1Api, namespace: str, pods: Pods, shared_plugin: SharedPlugin
) -> None:
    name = pods.create("two", gpus=2, resource=SHARED)

    failed = e2e_support.wait_pod(
        core, namespace, name, lambda pod: pod is not None and pod.status.phase == "Failed",
        timeout=90, what="Failed",
    )  # fmt: skip

    assert failed.status.reason == "UnexpectedAdmissionError", failed.status
    assert OPTION in (failed.status.message or ""), failed.status.message
    event = e2e_support.wait_for(
        core.list_namespaced_event,
        lambda e: e is not None and OPTION in (e.message or ""),
        timeout=30,
        what=f"an Event on pod {name} naming {OPTION}",
        describe=lambda e: "none" if e is None else f"{e.reason}: {e.message}",
        namespace=namespace,
        field_selector=f"involvedObject.name={name},reason=UnexpectedAdmissionError",
    )
    assert event.type == "Warning"


def test_with_rename_the_replicas_move_to_the_new_name(
    cluster: ClusterUnderTest, pods: Pods, shared_plugin: SharedPlugin
) -> None:
    shared_plugin.restart_with(nvidia_file(rename=RENAMED), resource=RENAMED)
    started = time.monotonic()

    e2e_support.wait_node_resource(cluster.core, cluster.node_name, 32, resource=RENAMED, timeout=90)
    # Nothing serves the old name any more: the kubelet keeps it at zero allocatable.
    e2e_support.wait_node_resource(cluster.core, cluster.node_name, 0, resource=SHARED, timeout=30)
    assert time.monotonic() - started < 90
    name = pods.create("renamed", gpus=1, resource=RENAMED)
    pods.running(name, timeout=120)
    (device,) = pods.devices(name)
    assert device in shared_plugin.uuids
