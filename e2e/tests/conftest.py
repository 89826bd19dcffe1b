"""Fixtures of the e2e suite: a cluster, a namespace, the plugin under test, pod bookkeeping.

Which cluster:
- default: a local one-node cluster of host processes (e2e/cluster), built
  and started for the session and torn down after it, logs kept;
- E2E_KUBECONFIG=<path>: an existing cluster (kind, say) with the plugin
  already deployed (its node named by E2E_NODE, else the only node). Tests that
  must reach into the node (edit the fake config, restart the kubelet, kill
  the plugin) need the local cluster and are skipped there, saying so.

Nothing here skips on the local cluster: a missing prerequisite or plugin is
an error, so CI can never turn e2e into a pass by skipping it.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # e2e/, for the `cluster` package

from cluster import build
from cluster.local import LocalCluster

import support

ENV_KUBECONFIG = "E2E_KUBECONFIG"
ENV_NODE = "E2E_NODE"
#: The plugin must make the node advertise its GPUs within this long of starting (issue 3).
PLUGIN_START_SLO_S = 10.0

_log_folders: list[Path] = []


@dataclass
class ClusterUnderTest:
    api: client.ApiClient
    core: client.CoreV1Api
    node_name: str
    local: LocalCluster | None

    def kubelet_metrics(self) -> str:
        """The kubelet's /metrics: straight from its port locally (the API server's node proxy
        refuses loopback addresses), through that proxy elsewhere."""
        if self.local is not None:
            return self.local.kubelet_metrics()
        return str(self.core.connect_get_node_proxy_with_path(self.node_name, "metrics"))

    def require_host_control(self) -> LocalCluster:
        if self.local is None:
            pytest.skip(reason="needs control of the node's host (local cluster only, not E2E_KUBECONFIG)")
        return self.local


@dataclass
class PluginUnderTest:
    """The plugin serving fake GPUs on the node, and the knobs the tests turn."""

    uuids: list[str]
    process: support.PluginProcess | None
    config: Path | None
    seconds_to_allocatable: float | None = None
    unhealthy: set[str] = field(default_factory=set)

    def set_health(self, uuid: str, healthy: bool) -> None:
        assert self.config is not None
        (self.unhealthy.discard if healthy else self.unhealthy.add)(uuid)
        support.write_config(
            self.config, support.fake_config(self.uuids, unhealthy=frozenset(self.unhealthy))
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterUnderTest]:
    existing = os.environ.get(ENV_KUBECONFIG)
    local: LocalCluster | None = None
    if existing:
        kubeconfig = existing
    else:
        local = LocalCluster(build.toolchain())
        _log_folders.append(local.logs)
        try:
            local.start()
        except BaseException:
            local.close()
            raise
        kubeconfig = str(local.kubeconfig)
    try:
        api = config.new_client_from_config(config_file=kubeconfig)
        core = client.CoreV1Api(api)
        node_name = local.node_name if local is not None else os.environ.get(ENV_NODE) or _only_node(core)
        yield ClusterUnderTest(api=api, core=core, node_name=node_name, local=local)
    finally:
        if local is not None:
            local.close()


def _only_node(core: client.CoreV1Api) -> str:
    nodes = [node.metadata.name for node in core.list_node().items]
    if len(nodes) != 1:
        raise pytest.UsageError(f"set {ENV_NODE}: the cluster has {len(nodes)} nodes ({nodes})")
    return nodes[0]


@pytest.fixture(scope="session")
def core(cluster: ClusterUnderTest) -> client.CoreV1Api:
    return cluster.core


@pytest.fixture(scope="session")
def namespace(cluster: ClusterUnderTest) -> Iterator[str]:
    name = f"gpu-dp-e2e-{secrets.token_hex(3)}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Without a controller manager nobody makes the default ServiceAccount.
    try:
        cluster.core.create_namespaced_service_account(
            name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
        )
    except ApiException as error:
        if error.status != 409:
            raise
    yield name
    for pod in cluster.core.list_namespaced_pod(name).items:
        support.delete_pod(cluster.core, name, pod.metadata.name)
    cluster.core.delete_namespace(name)


@dataclass
class Pods:
    """Creates pods for one test and deletes them, waiting until they are gone, after it."""

    core: client.CoreV1Api
    namespace: str
    prefix: str
    created: list[str] = field(default_factory=list)

    def create(self, suffix: str, gpus: int) -> str:
        name = f"{self.prefix}-{suffix}"
        self.core.create_namespaced_pod(self.namespace, support.gpu_pod(name, gpus))
        self.created.append(name)
        return name

    def delete(self, name: str) -> None:
        support.delete_pod(self.core, self.namespace, name)
        if name in self.created:
            self.created.remove(name)

    def running(self, name: str, *, timeout: float = 60) -> client.V1Pod:
        return support.wait_running(self.core, self.namespace, name, timeout=timeout)

    def devices(self, name: str) -> list[str]:
        return support.visible_devices(self.core, self.namespace, name)


@pytest.fixture
def pods(core: client.CoreV1Api, namespace: str, request: pytest.FixtureRequest) -> Iterator[Pods]:
    prefix = request.node.name.replace("_", "-").lower()[:40].strip("-") + "-" + secrets.token_hex(2)
    tracker = Pods(core=core, namespace=namespace, prefix=prefix)
    yield tracker
    for name in list(tracker.created):
        tracker.delete(name)


@pytest.fixture(scope="session")
def plugin(cluster: ClusterUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginUnderTest]:
    uuids = support.fake_uuids(8)
    if cluster.local is None:
        # Deployed by whoever made the cluster; its devices are whatever it advertises.
        yield PluginUnderTest(uuids=[], process=None, config=None)
        return
    folder = tmp_path_factory.mktemp("plugin")
    config_file = folder / "fake.yaml"
    support.write_config(config_file, support.fake_config(uuids))
    process = support.PluginProcess(
        binary=support.plugin_binary(),
        config=config_file,
        device_plugin_dir=cluster.local.device_plugin_dir,
        log=cluster.local.log_path("gpu-device-plugin"),
    )
    under_test = PluginUnderTest(uuids=uuids, process=process, config=config_file)
    process.start()
    try:
        support.wait_node_resource(cluster.core, cluster.node_name, 8, timeout=60)
        under_test.seconds_to_allocatable = time.monotonic() - process.started_at
        yield under_test
    finally:
        process.stop()


@pytest.fixture
def healthy_plugin(cluster: ClusterUnderTest, plugin: PluginUnderTest) -> PluginUnderTest:
    """The plugin running with all eight devices healthy, whatever the previous test did."""
    if plugin.process is not None:
        if plugin.unhealthy:
            plugin.unhealthy.clear()
            support.write_config(plugin.config, support.fake_config(plugin.uuids))  # type: ignore[arg-type]
        if not plugin.process.running():
            plugin.process.start()
    support.wait_node_resource(cluster.core, cluster.node_name, 8, timeout=60)
    return plugin


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    failed = terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")
    for folder in _log_folders:
        note = "component logs (kept)" if not failed else "FAILED: component logs for diagnosis"
        terminalreporter.write_line(f"e2e {note}: {folder}")
