"""How the suite runs the plugin on the node, and reaches into that node.

Two ways to run the plugin, one set of knobs (`PluginDriver`):
- `HostProcessPlugin`: `gpu-device-plugin serve` as a process on the node's
  host, its fake config a file the suite rewrites;
- `DaemonSetPlugin`: the DaemonSet of manifests/kustomize/overlays/kind, in
  its container image, its fake config the ConfigMap the overlay mounts.

The node itself (`NodeControl`): the local cluster's host processes, or a kind
node reached with `docker exec`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import e2e_support
import pytest
import yaml
from e2e_support import RESOURCE
from kubernetes import client
from kubernetes.client.rest import ApiException

REPO_ROOT = Path(__file__).resolve().parents[2]
KIND_OVERLAY = REPO_ROOT / "manifests" / "kustomize" / "overlays" / "kind"
#: What the kind overlay names things (manifests/kustomize/overlays/kind).
APP_LABEL = "app.kubernetes.io/name=gpu-device-plugin"
FAKE_CONFIGMAP = "gpu-device-plugin-fake"
FAKE_CONFIG_KEY = "fake.yaml"
#: Where the kubelet looks for plugins inside a node, and so inside the plugin's container.
NODE_DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"


class NodeControl(Protocol):
    """What the suite does to the node under the plugin."""

    def restart_kubelet(self) -> None: ...

    def kill_plugin_processes(self) -> int:
        """SIGKILL every `gpu-device-plugin serve` in the node's pods; return how many."""
        ...


class PluginDriver(Protocol):
    """The plugin under test, wherever it runs."""

    #: monotonic time of the last (re)start the suite caused or saw.
    started_at: float
    #: where the plugin reads its fake config and serves its socket, as its own CLI sees them.
    config_path: str
    device_plugin_dir: str

    def start(self) -> None:
        """Start it, or after a kill() wait until it runs again."""
        ...

    def stop(self) -> None: ...

    def kill(self) -> None:
        """SIGKILL: no chance to remove its socket or tell the kubelet."""
        ...

    def running(self) -> bool: ...

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the fake config the running plugin follows."""
        ...

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `gpu-device-plugin ARGS` where the plugin runs, output captured."""
        ...

    def run_with_config(self, text: str, *, timeout: float = 60) -> tuple[int, str]:
        """Start a second plugin with this fake config and wait for it to exit by itself."""
        ...


# ------------------------------------------------------------------------ nodes


@dataclass
class LocalNode:
    """The local cluster's node: its processes are ours."""

    restart: Callable[[], None]
    cgroup_root: str

    def restart_kubelet(self) -> None:
        self.restart()

    def kill_plugin_processes(self) -> int:
        killed = 0
        for pid in _pids_in_cgroup_tree(self.cgroup_root):
            if _is_plugin_serve(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
        return killed


def _pids_in_cgroup_tree(cgroup_root: str) -> set[int]:
    pids: set[int] = set()
    top = Path("/sys/fs/cgroup/pids") / cgroup_root.strip("/")
    if not top.is_dir():  # cgroup v2, or no pids controller: the unified tree
        top = Path("/sys/fs/cgroup") / cgroup_root.strip("/")
    for procs in top.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in procs.read_text().split())
    return pids


def _is_plugin_serve(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(b"gpu-device-plugin") for arg in argv) and b"serve" in argv


@dataclass
class KindNode:
    """A kind node: a Docker container running systemd, the kubelet and containerd."""

    container: str

    def _exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", self.container, *argv], capture_output=True, text=True, timeout=60, check=False
        )

    def restart_kubelet(self) -> None:
        result = self._exec("systemctl", "restart", "kubelet")
        assert result.returncode == 0, f"restarting the kubelet in {self.container}: {result.stderr}"

    def kill_plugin_processes(self) -> int:
        result = self._exec("pkill", "-KILL", "-e", "-f", "gpu-device-plugin serve")
        return len([line for line in result.stdout.splitlines() if line.strip()])


# --------------------------------------------------------------------- plugins


@dataclass
class HostProcessPlugin:
    """`gpu-device-plugin serve` as a host process of the node."""

    process: e2e_support.PluginProcess
    started_at: float = 0.0

    @property
    def config_path(self) -> str:
        return str(self.process.config)

    @property
    def device_plugin_dir(self) -> str:
        return str(self.process.device_plugin_dir)

    def start(self) -> None:
        self.process.start()
        self.started_at = self.process.started_at

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def running(self) -> bool:
        return self.process.running()

    def write_config(self, config: dict[str, Any]) -> None:
        e2e_support.write_config(self.process.config, config)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.process.binary), *args],
            capture_output=True,
            text=True,
            env=e2e_support.plugin_env(),
            timeout=timeout,
            check=False,
        )

    def run_with_config(self, text: str, *, timeout: float = 60) -> tuple[int, str]:
        broken = self.process.config.with_name(f"once-{secrets.token_hex(3)}.yaml")
        broken.write_text(text)
        try:
            return e2e_support.run_plugin_once(
                self.process.binary, broken, self.process.device_plugin_dir, timeout=timeout
            )
        finally:
            broken.unlink(missing_ok=True)


#: What a test's own DaemonSet makes of the overlay's objects, and deletes when it stops.
OWN_KINDS = frozenset({"DaemonSet", "ConfigMap"})


@dataclass
class DaemonSetPlugin:
    """The kind overlay's DaemonSet, applied with kubectl and driven through the API."""

    core: client.CoreV1Api
    kubectl: list[str]  # the kubectl command line, with --kubeconfig
    node: NodeControl | None
    node_name: str
    rendered: list[dict[str, Any]]
    #: where stop() keeps the plugin pod's logs (its own and the previous container's).
    log: Path | None = None
    #: the label selector of this DaemonSet's pods (a second DaemonSet beside the overlay's has its own).
    selector: str = APP_LABEL
    #: whether stop() deletes what every DaemonSet of the suite shares (the Namespace, the
    #: ServiceAccount, the RBAC): only the session's plugin, last to go. Another test's
    #: DaemonSet deletes only its DaemonSet and ConfigMaps, so the next one's pods are not
    #: refused for a missing account, nor its apply met by a Terminating Namespace.
    owns_shared: bool = False
    started_at: float = 0.0
    restarts_seen: int = field(default=0, init=False)
    #: the pod whose restarts restarts_seen counts: a new pod starts again from 0.
    restarts_pod: str | None = field(default=None, init=False)

    @classmethod
    def render(
        cls,
        kubectl: list[str],
        config: dict[str, Any],
        *,
        local_api_port: int | None = None,
        overlay: Path = KIND_OVERLAY,
    ) -> list[dict[str, Any]]:
        """The kind overlay (or one built on it) as kubectl renders it, with the suite's fake
        config in its ConfigMap.

        local_api_port (the local cluster only): pods there have only a loopback
        network and no Service routing, so the plugin joins the host's network,
        as every pod there does, and finds the API server at 127.0.0.1 on this
        port instead of the `kubernetes` Service. On kind the overlay is applied
        as it is.
        """
        result = subprocess.run(
            [*kubectl, "kustomize", str(overlay)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
        objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        kinds = {obj["kind"] for obj in objects}
        assert {"DaemonSet", "ConfigMap"} <= kinds, f"{overlay} renders only {sorted(kinds)}"
        for obj in objects:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith(FAKE_CONFIGMAP):
                obj["data"][FAKE_CONFIG_KEY] = yaml.safe_dump(config, sort_keys=False)
            if obj["kind"] == "DaemonSet" and local_api_port is not None:
                pod = obj["spec"]["template"]["spec"]
                pod["hostNetwork"] = True
                for container in pod["containers"]:
                    container.setdefault("env", []).extend(
                        [
                            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                            {"name": "KUBERNETES_SERVICE_PORT", "value": str(local_api_port)},
                        ]
                    )
        return objects

    @property
    def daemonset(self) -> dict[str, Any]:
        return next(obj for obj in self.rendered if obj["kind"] == "DaemonSet")

    @property
    def namespace(self) -> str:
        return str(self.daemonset["metadata"]["namespace"])

    @property
    def configmap_name(self) -> str:
        return next(
            obj["metadata"]["name"]
            for obj in self.rendered
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith(FAKE_CONFIGMAP)
        )

    @property
    def config_path(self) -> str:
        """The fake config file inside the container: the overlay's GPU_DP_FAKE_CONFIG."""
        for container in self.daemonset["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"] == "GPU_DP_FAKE_CONFIG":
                    return str(env["value"])
            for arg in container.get("args", []):
                if arg.startswith("--fake-config="):
                    return str(arg.split("=", 1)[1])
        raise AssertionError("the kind overlay does not say where the fake config is (GPU_DP_FAKE_CONFIG)")

    device_plugin_dir: str = NODE_DEVICE_PLUGIN_DIR

    def apply(self) -> None:
        manifest = yaml.safe_dump_all(self.rendered, sort_keys=False)
        result = subprocess.run(
            [*self.kubectl, "apply", "--server-side", "--force-conflicts", "-f", "-"],
            input=manifest,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"kubectl apply of the kind overlay failed:\n{result.stderr}"

    def delete(self) -> None:
        objects = [o for o in self.rendered if self.owns_shared or o["kind"] in OWN_KINDS]
        manifest = yaml.safe_dump_all(objects, sort_keys=False)
        subprocess.run(
            [*self.kubectl, "delete", "--ignore-not-found", "--wait=true", "--timeout=60s", "-f", "-"],
            input=manifest,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def pod(self) -> client.V1Pod | None:
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=self.selector, field_selector=f"spec.nodeName={self.node_name}"
        ).items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        return live[0] if live else None

    def _running_restarts(self) -> int | None:
        """The container's restart count while it runs, else None.

        Running, not Ready: readiness lags the start by up to a probe period,
        and the kubelet talks to the plugin's socket whatever the probes say.
        """
        pod = self.pod()
        if pod is None or not pod.status or not pod.status.container_statuses:
            return None
        if pod.metadata.uid != self.restarts_pod:
            # Another DaemonSet of the same name ran between (a test's own config): its
            # replacement's count starts at 0, not at what this driver saw before.
            self.restarts_pod = pod.metadata.uid
            self.restarts_seen = 0
        status = pod.status.container_statuses[0]
        return int(status.restart_count) if status.state and status.state.running else None

    def start(self) -> None:
        fresh = self.pod() is None
        if fresh:
            self.apply()
        deadline = time.monotonic() + 120
        while True:
            restarts = self._running_restarts()
            if restarts is not None and restarts >= self.restarts_seen:
                self.restarts_seen = restarts
                # The plugin's clock starts with its process, as a host process's does;
                # the kubelet's crash-loop back-off before a restart is not the plugin's.
                self.started_at = time.monotonic()
                return
            assert time.monotonic() < deadline, f"the plugin's container is not running: {self._describe()}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.log is not None:
            self._save_logs(self.log)
        self.delete()

    def _save_logs(self, target: Path) -> None:
        pod = self.pod()
        if pod is None:
            return
        with target.open("a") as out:
            for previous in (True, False):
                with contextlib.suppress(ApiException):
                    text = self.core.read_namespaced_pod_log(
                        pod.metadata.name, self.namespace, previous=previous
                    )
                    out.write(
                        f"===== pod {pod.metadata.name} ({'previous' if previous else 'current'} container)\n"
                    )
                    out.write(text)

    def kill(self) -> None:
        if self.node is None:
            pytest.skip(reason="needs control of the node (the local cluster, or E2E_KIND_NODE on kind)")
        before = self._running_restarts()
        killed = self.node.kill_plugin_processes()
        assert killed >= 1, "no `gpu-device-plugin serve` process found in the node's pods"
        # The kubelet restarts the container; start() waits for the next count.
        self.restarts_seen = (before if before is not None else self.restarts_seen) + 1

    def running(self) -> bool:
        return self._running_restarts() is not None

    def write_config(self, config: dict[str, Any]) -> None:
        self.core.patch_namespaced_config_map(
            self.configmap_name,
            self.namespace,
            {"data": {FAKE_CONFIG_KEY: yaml.safe_dump(config, sort_keys=False)}},
        )

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        pod = self.pod()
        assert pod is not None, "no plugin pod to exec into"
        return subprocess.run(
            [
                *self.kubectl,
                "exec",
                "-n",
                self.namespace,
                pod.metadata.name,
                "--",
                "gpu-device-plugin",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_with_config(self, text: str, *, timeout: float = 60) -> tuple[int, str]:
        """A one-off pod of the same image and serve flags, fed this config, never restarted."""
        name = f"gpu-dp-once-{secrets.token_hex(3)}"
        template = self.daemonset["spec"]["template"]["spec"]
        container = template["containers"][0]
        self.core.create_namespaced_config_map(
            self.namespace,
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"fake.yaml": text}),
        )
        env = [e for e in container.get("env", []) if e["name"] != "GPU_DP_FAKE_CONFIG"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "restartPolicy": "Never",
                "nodeName": self.node_name,
                "hostNetwork": bool(template.get("hostNetwork")),
                "tolerations": template.get("tolerations", []),
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "plugin",
                        "image": container["image"],
                        "imagePullPolicy": container.get("imagePullPolicy", "IfNotPresent"),
                        "command": container.get("command"),
                        "args": [
                            *container.get("args", []),
                            "--fake-config=/once/fake.yaml",
                            "--device-plugin-dir=/scratch",
                        ],
                        "env": env,
                        "securityContext": container.get("securityContext"),
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/once"},
                            {"name": "scratch", "mountPath": "/scratch"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "config", "configMap": {"name": name}},
                    {"name": "scratch", "emptyDir": {}},
                ],
            },
        }
        self.core.create_namespaced_pod(self.namespace, pod)
        try:
            deadline = time.monotonic() + timeout
            while (terminated := _terminated(self.core, self.namespace, name)) is None:
                assert time.monotonic() < deadline, f"pod {name} did not exit within {timeout:.0f} s"
                time.sleep(0.5)
            log = self.core.read_namespaced_pod_log(name, self.namespace)
            return int(terminated.exit_code), f"{terminated.message or ''}\n{log}"
        finally:
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_config_map(name, self.namespace)

    def _describe(self) -> str:
        pod = self.pod()
        if pod is None:
            # Why the DaemonSet made none (FailedCreate, a node it does not fit, ...).
            name = self.daemonset["metadata"]["name"]
            with contextlib.suppress(ApiException):
                apps = client.AppsV1Api(self.core.api_client)
                status = apps.read_namespaced_daemon_set(name, self.namespace)
                events = self.core.list_namespaced_event(self.namespace).items
                said = [f"{e.involved_object.name} {e.reason}: {e.message}" for e in events][-8:]
                return f"no pod; DaemonSet {name} status {status.status}; events: {said}"
            return f"no pod; DaemonSet {name} not found"
        return f"{pod.metadata.name}: phase {pod.status.phase}, containers {pod.status.container_statuses}"


def _terminated(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    pod = core.read_namespaced_pod(name, namespace)
    statuses = pod.status.container_statuses or []
    if statuses and statuses[0].state and statuses[0].state.terminated:
        return statuses[0].state.terminated
    return None


__all__ = [
    "RESOURCE",
    "DaemonSetPlugin",
    "HostProcessPlugin",
    "KindNode",
    "LocalNode",
    "NodeControl",
    "PluginDriver",
]
