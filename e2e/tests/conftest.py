"""Fixtures of the e2e suite: a cluster, a namespace, the plugin under test, pod bookkeeping.

Which cluster:
- default: a local one-node cluster of host processes (e2e/cluster), built
  and started for the session and torn down after it, logs kept;
- E2E_KUBECONFIG=<path>: an existing cluster (kind, say), its node named by
  E2E_NODE, else the only node.

How the plugin runs (E2E_PLUGIN):
- `process` (default on the local cluster): a host process of the node;
- `daemonset`: the DaemonSet of manifests/kustomize/overlays/kind, applied by
  the suite, running the image (locally: the OCI archive at E2E_PLUGIN_IMAGE,
  default build/image/gpu-device-plugin.oci.tar, made by `task image`);
- unset with E2E_KUBECONFIG: deployed by whoever made the cluster; the tests
  that must turn its knobs are skipped, saying so.
Tests that reach into the node (restart the kubelet, SIGKILL the plugin) need
the local cluster or a kind node (E2E_KIND_NODE, reached with docker exec).
On a cluster without Service routing (the local one; kind on our node image,
which has no kube-proxy: E2E_API_PORT_ON_NODE) the DaemonSet joins the node's
network and reaches the API server at 127.0.0.1 on that port.
The nvml tests need the C fake's driver root on the node: the local cluster's
host, or on kind a folder mounted into the node at the same path
(E2E_KIND_NVML_ROOT, what e2e/kind/run.sh mounts with extraMounts).

Nothing here skips on the local cluster: a missing prerequisite or plugin is
an error, so CI can never turn e2e into a pass by skipping it.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import e2e_support
import pytest
from drivers import DaemonSetPlugin, HostProcessPlugin, KindNode, LocalNode, NodeControl, PluginDriver
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from gdp_e2e.cluster import build
from gdp_e2e.cluster.jaeger import Jaeger, JaegerQuery, jaeger_binary
from gdp_e2e.cluster.local import LocalCluster

ENV_KUBECONFIG = "E2E_KUBECONFIG"
ENV_NODE = "E2E_NODE"
ENV_PLUGIN = "E2E_PLUGIN"
ENV_PLUGIN_IMAGE = "E2E_PLUGIN_IMAGE"
ENV_KIND_NODE = "E2E_KIND_NODE"
ENV_API_PORT_ON_NODE = "E2E_API_PORT_ON_NODE"
ENV_KIND_NVML_ROOT = "E2E_KIND_NVML_ROOT"
DEFAULT_PLUGIN_IMAGE = e2e_support.REPO_ROOT / "build" / "image" / "gpu-device-plugin.oci.tar"
#: The plugin must make the node advertise its GPUs within this long of starting (issue 3).
PLUGIN_START_SLO_S = 10.0

_log_folders: list[Path] = []


def plugin_mode() -> str | None:
    mode = os.environ.get(ENV_PLUGIN) or (None if os.environ.get(ENV_KUBECONFIG) else "process")
    if mode not in (None, "process", "daemonset"):
        raise pytest.UsageError(f"{ENV_PLUGIN}={mode!r}: expected 'process' or 'daemonset'")
    return mode


@dataclass
class ClusterUnderTest:
    api: client.ApiClient
    core: client.CoreV1Api
    node_name: str
    local: LocalCluster | None
    kubectl: list[str]
    node: NodeControl | None
    #: The API server's port at 127.0.0.1 on the node, where pods have no Service routing.
    api_port_on_node: int | None = None

    def require_node(self) -> NodeControl:
        if self.node is None:
            pytest.skip(reason=f"needs control of the node (the local cluster, or {ENV_KIND_NODE} on kind)")
        return self.node

    def kubelet_metrics(self) -> str:
        """The kubelet's /metrics: straight from its port locally (the API server's node proxy
        refuses loopback addresses), through that proxy elsewhere."""
        if self.local is not None:
            return self.local.kubelet_metrics()
        return str(self.core.connect_get_node_proxy_with_path(self.node_name, "metrics"))

    def daemonset(self, rendered: list[dict[str, Any]], log_name: str, **extra: Any) -> DaemonSetPlugin:
        """A DaemonSetPlugin applying `rendered` on this node; on the local cluster its pod's
        logs are kept under `log_name` when it stops."""
        return DaemonSetPlugin(
            core=self.core,
            kubectl=self.kubectl,
            node=self.node,
            node_name=self.node_name,
            log=self.local.log_path(log_name) if self.local else None,
            rendered=rendered,
            **extra,
        )

    def require_host_control(self) -> LocalCluster:
        if self.local is None:
            pytest.skip(reason="needs control of the node's host (local cluster only, not E2E_KUBECONFIG)")
        return self.local


@dataclass
class TracesUnderTest:
    """Where the plugin under test sends its spans (the session's Jaeger), and how to read them."""

    service: str
    query: JaegerQuery
    since: float  # epoch seconds, just before the plugin started


@dataclass
class PluginUnderTest:
    """The plugin serving fake GPUs on the node, and the knobs the tests turn."""

    uuids: list[str]
    driver: PluginDriver | None
    seconds_to_allocatable: float | None = None
    unhealthy: set[str] = field(default_factory=set)
    traces: TracesUnderTest | None = None

    def require_driver(self) -> PluginDriver:
        if self.driver is None:
            pytest.skip(reason=f"the plugin was deployed outside the suite (set {ENV_PLUGIN})")
        return self.driver

    def set_health(self, uuid: str, healthy: bool) -> None:
        driver = self.require_driver()
        (self.unhealthy.discard if healthy else self.unhealthy.add)(uuid)
        driver.write_config(e2e_support.fake_config(self.uuids, unhealthy=frozenset(self.unhealthy)))


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterUnderTest]:
    existing = os.environ.get(ENV_KUBECONFIG)
    local: LocalCluster | None = None
    node: NodeControl | None = None
    if existing:
        kubeconfig = existing
        kubectl = [os.environ.get("KUBECTL", "kubectl"), f"--kubeconfig={kubeconfig}"]
        if os.environ.get(ENV_KIND_NODE):
            node = KindNode(os.environ[ENV_KIND_NODE])
        api_port_on_node = _port_from_env(ENV_API_PORT_ON_NODE)
    else:
        tools = build.toolchain()
        extra_images = []
        if plugin_mode() == "daemonset":
            image = Path(os.environ.get(ENV_PLUGIN_IMAGE) or DEFAULT_PLUGIN_IMAGE)
            if not image.is_file():
                raise pytest.UsageError(
                    f"{ENV_PLUGIN}=daemonset needs the plugin image {image}: run `task image`"
                )
            extra_images.append(image)
        local = LocalCluster(tools, extra_images=extra_images)
        _log_folders.append(local.logs)
        try:
            local.start()
        except BaseException:
            local.close()
            raise
        kubeconfig = str(local.kubeconfig)
        kubectl = [str(tools.kubectl), f"--kubeconfig={kubeconfig}"]
        node = LocalNode(restart=local.restart_kubelet, cgroup_root=local.cgroup_root)
        api_port_on_node = local.ports["apiserver"]
    try:
        api = config.new_client_from_config(config_file=kubeconfig)
        core = client.CoreV1Api(api)
        node_name = local.node_name if local is not None else os.environ.get(ENV_NODE) or _only_node(core)
        yield ClusterUnderTest(
            api=api,
            core=core,
            node_name=node_name,
            local=local,
            kubectl=kubectl,
            node=node,
            api_port_on_node=api_port_on_node,
        )
    finally:
        if local is not None:
            local.close()


def _port_from_env(variable: str) -> int | None:
    value = os.environ.get(variable)
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise pytest.UsageError(f"{variable}={value!r}: expected a port number")
    return int(value)


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
        e2e_support.delete_pod(cluster.core, name, pod.metadata.name)
    cluster.core.delete_namespace(name)


@dataclass
class Pods:
    """Creates pods for one test and deletes them, waiting until they are gone, after it."""

    core: client.CoreV1Api
    namespace: str
    prefix: str
    created: list[str] = field(default_factory=list)

    def create(self, suffix: str, gpus: int, *, resource: str = e2e_support.RESOURCE) -> str:
        name = f"{self.prefix}-{suffix}"
        self.core.create_namespaced_pod(self.namespace, e2e_support.gpu_pod(name, gpus, resource=resource))
        self.created.append(name)
        return name

    def delete(self, name: str) -> None:
        e2e_support.delete_pod(self.core, self.namespace, name)
        if name in self.created:
            self.created.remove(name)

    def running(self, name: str, *, timeout: float = 60) -> client.V1Pod:
        return e2e_support.wait_running(self.core, self.namespace, name, timeout=timeout)

    def devices(self, name: str) -> list[str]:
        return e2e_support.visible_devices(self.core, self.namespace, name)


@pytest.fixture
def pods(core: client.CoreV1Api, namespace: str, request: pytest.FixtureRequest) -> Iterator[Pods]:
    prefix = request.node.name.replace("_", "-").lower()[:40].strip("-") + "-" + secrets.token_hex(2)
    tracker = Pods(core=core, namespace=namespace, prefix=prefix)
    yield tracker
    for name in list(tracker.created):
        tracker.delete(name)


@pytest.fixture(scope="session")
def jaeger(cluster: ClusterUnderTest) -> Iterator[Jaeger]:
    """Jaeger v2 on 127.0.0.1 for the session (built on first use), its log beside the cluster's."""
    local = cluster.require_host_control()
    with Jaeger(jaeger_binary(), local.logs) as backend:
        yield backend


@pytest.fixture(scope="session")
def plugin(
    cluster: ClusterUnderTest, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[PluginUnderTest]:
    uuids = e2e_support.fake_uuids(8)
    traces: TracesUnderTest | None = None
    mode = plugin_mode()
    driver: PluginDriver
    if mode is None:
        # Deployed by whoever made the cluster; its devices are whatever it advertises.
        yield PluginUnderTest(uuids=[], driver=None)
        return
    if mode == "daemonset":
        driver = cluster.daemonset(
            DaemonSetPlugin.render(
                cluster.kubectl, e2e_support.fake_config(uuids), local_api_port=cluster.api_port_on_node
            ),
            "gpu-device-plugin-pod",
            owns_shared=True,
        )
    else:
        if cluster.local is None:
            raise pytest.UsageError(f"{ENV_PLUGIN}=process needs the local cluster, not {ENV_KUBECONFIG}")
        folder = tmp_path_factory.mktemp("plugin")
        config_file = folder / "fake.yaml"
        e2e_support.write_config(config_file, e2e_support.fake_config(uuids))
        backend: Jaeger = request.getfixturevalue("jaeger")
        traces = TracesUnderTest(
            service=f"gpu-device-plugin-e2e-{cluster.local.run_id}", query=backend.query(), since=time.time()
        )
        driver = HostProcessPlugin(
            e2e_support.PluginProcess(
                binary=e2e_support.plugin_binary(),
                config=config_file,
                device_plugin_dir=cluster.local.device_plugin_dir,
                log=cluster.local.log_path("gpu-device-plugin"),
                # What the prod overlay switches on (issue 8), with the admin kubeconfig.
                extra_args=[
                    "--node-labels",
                    "--node-events",
                    "--kubeconfig",
                    str(cluster.local.kubeconfig),
                    "--node-name",
                    cluster.node_name,
                ],
                # Its spans go to the session's Jaeger, batched for at most 0.2 s.
                env={
                    "OTEL_EXPORTER_OTLP_ENDPOINT": backend.otlp_grpc_endpoint,
                    "OTEL_SERVICE_NAME": traces.service,
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                    "NODE_NAME": cluster.node_name,
                },
            )
        )
    under_test = PluginUnderTest(uuids=uuids, driver=driver, traces=traces)
    driver.start()
    try:
        e2e_support.wait_node_resource(cluster.core, cluster.node_name, 8, timeout=60)
        # From the process's start (a DaemonSet: when its container was seen running).
        under_test.seconds_to_allocatable = time.monotonic() - driver.started_at
        yield under_test
    finally:
        driver.stop()


@pytest.fixture
def healthy_plugin(cluster: ClusterUnderTest, plugin: PluginUnderTest) -> PluginUnderTest:
    """The plugin running with all eight devices healthy, whatever the previous test did."""
    if plugin.driver is not None:
        if plugin.unhealthy:
            plugin.unhealthy.clear()
            plugin.driver.write_config(e2e_support.fake_config(plugin.uuids))
        if not plugin.driver.running():
            plugin.driver.start()
    e2e_support.wait_node_resource(cluster.core, cluster.node_name, 8, timeout=60)
    return plugin


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    failed = terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")
    for folder in _log_folders:
        note = "component logs (kept)" if not failed else "FAILED: component logs for diagnosis"
        terminalreporter.write_line(f"e2e {note}: {folder}")
