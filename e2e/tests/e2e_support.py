"""Helpers of the e2e suite: pods that print their devices, waits driven by watches, the plugin process.

Waits never sleep-and-poll the API: they list once, then follow a watch from
that resourceVersion until the condition holds or the deadline passes, so a
change is seen the moment the API server has it. Only the plugin, a host
process, is waited on by polling its exit status.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

RESOURCE = os.environ.get("E2E_RESOURCE_NAME", "example.com/gpu")
DEFAULT_WORKLOAD_IMAGE = "localhost/gpu-dp-e2e/busybox:1"
WORKLOAD_IMAGE = os.environ.get("E2E_WORKLOAD_IMAGE", DEFAULT_WORKLOAD_IMAGE)
ENV_LINE = re.compile(r"^NVIDIA_VISIBLE_DEVICES=(.*)$", re.MULTILINE)
REPO_ROOT = Path(__file__).resolve().parents[2]


class WaitTimeout(AssertionError):
    """A waited-for state was not reached in time; the message says what was last seen."""


# ----------------------------------------------------------------------- waits


def wait_for(
    list_call: Callable[..., Any],
    predicate: Callable[[Any], bool],
    *,
    timeout: float,
    what: str,
    describe: Callable[[Any], str] = repr,
    **list_kwargs: Any,
) -> Any:
    """Return the first object of `list_call` (a one-object list) for which `predicate` holds.

    A `None` object stands for "no such object", so waiting for a deletion is
    `wait_for(..., lambda obj: obj is None)`.
    """
    deadline = time.monotonic() + timeout
    listed = list_call(**list_kwargs)
    current = listed.items[0] if listed.items else None
    if predicate(current):
        return current
    resource_version = listed.metadata.resource_version
    while (left := deadline - time.monotonic()) > 0:
        stream = watch.Watch()
        try:
            for event in stream.stream(
                list_call,
                resource_version=resource_version,
                timeout_seconds=max(1, int(left + 0.999)),
                _request_timeout=left + 5,
                allow_watch_bookmarks=False,
                **list_kwargs,
            ):
                obj = event["object"]
                resource_version = obj.metadata.resource_version
                current = None if event["type"] == "DELETED" else obj
                if predicate(current):
                    return current
                if time.monotonic() > deadline:
                    break
        except ApiException as error:
            if error.status != 410:  # expired resourceVersion: list again
                raise
            listed = list_call(**list_kwargs)
            current = listed.items[0] if listed.items else None
            if predicate(current):
                return current
            resource_version = listed.metadata.resource_version
        finally:
            stream.stop()
    raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {describe(current)}")


def node_resource(
    node: client.V1Node | None, kind: str = "allocatable", resource: str = RESOURCE
) -> int | None:
    if node is None or node.status is None:
        return None
    values = getattr(node.status, kind) or {}
    return int(values[resource]) if resource in values else None


def wait_node_resource(
    core: client.CoreV1Api,
    node_name: str,
    expected: int,
    *,
    timeout: float,
    kind: str = "allocatable",
    resource: str = RESOURCE,
) -> client.V1Node:
    return wait_for(
        core.list_node,
        lambda node: node_resource(node, kind, resource) == expected,
        timeout=timeout,
        what=f"{kind}[{resource}] == {expected} on node {node_name}",
        describe=lambda node: (
            f"capacity={node_resource(node, 'capacity', resource)} "
            f"allocatable={node_resource(node, resource=resource)}"
        ),
        field_selector=f"metadata.name={node_name}",
    )


REGISTRATION_METRIC = "kubelet_device_plugin_registration_total"


def registrations(metrics_text: str, resource: str = RESOURCE) -> int:
    """How often the running kubelet has accepted a registration for `resource`, from its metrics."""
    pattern = re.compile(
        rf'^{REGISTRATION_METRIC}\{{[^}}]*resource_name="{re.escape(resource)}"[^}}]*\}} (\S+)$', re.MULTILINE
    )
    return sum(int(float(value)) for value in pattern.findall(metrics_text))


def wait_registered(
    metrics: Callable[[], str], *, more_than: int, timeout: float, resource: str = RESOURCE
) -> int:
    """Wait for the kubelet to count a new registration (a metric: there is nothing to watch)."""
    deadline = time.monotonic() + timeout
    seen: int | str = "unknown"
    while time.monotonic() < deadline:
        try:
            count = registrations(metrics(), resource)
        except (ApiException, OSError) as error:  # the kubelet may still be starting
            seen = repr(error)
        else:
            if count > more_than:
                return count
            seen = count
        time.sleep(0.2)
    raise WaitTimeout(
        f"the kubelet counted no new registration of {resource} in {timeout:.0f} s (last: {seen})"
    )


def _pod_state(pod: client.V1Pod | None) -> str:
    if pod is None:
        return "gone"
    conditions = {c.type: f"{c.status}/{c.reason}: {c.message}" for c in pod.status.conditions or []}
    status = pod.status
    return f"phase={status.phase} reason={status.reason} message={status.message} conditions={conditions}"


def wait_pod(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    predicate: Callable[[Any], bool],
    *,
    timeout: float,
    what: str,
) -> Any:
    return wait_for(
        core.list_namespaced_pod,
        predicate,
        timeout=timeout,
        what=f"pod {namespace}/{name} {what}",
        describe=_pod_state,
        namespace=namespace,
        field_selector=f"metadata.name={name}",
    )


def wait_running(core: client.CoreV1Api, namespace: str, name: str, *, timeout: float = 60) -> client.V1Pod:
    def running(pod: client.V1Pod | None) -> bool:
        if pod is not None and pod.status.phase in ("Failed", "Succeeded"):
            raise AssertionError(f"pod {name} ended instead of running: {_pod_state(pod)}")
        return pod is not None and pod.status.phase == "Running"

    return wait_pod(core, namespace, name, running, timeout=timeout, what="Running")


def unschedulable_reason(pod: client.V1Pod | None) -> str | None:
    for condition in (pod.status.conditions or []) if pod is not None else []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return f"{condition.reason}: {condition.message}"
    return None


def delete_pod(core: client.CoreV1Api, namespace: str, name: str, *, timeout: float = 60) -> None:
    """Delete gracefully and wait until the kubelet has stopped the containers and released the pod."""
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=1)
    except ApiException as error:
        if error.status != 404:
            raise
    wait_pod(core, namespace, name, lambda pod: pod is None, timeout=timeout, what="deleted")


# ------------------------------------------------------------------------ pods


def gpu_pod(name: str, gpus: int, *, image: str = WORKLOAD_IMAGE, resource: str = RESOURCE) -> client.V1Pod:
    """A hostNetwork pod that prints its NVIDIA_VISIBLE_DEVICES, then idles until told to stop."""
    limits = {resource: str(gpus)} if gpus else {}
    script = "echo NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES; trap 'exit 0' TERM; sleep 3600 & wait"
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app.kubernetes.io/part-of": "gpu-dp-e2e"}),
        spec=client.V1PodSpec(
            host_network=True,
            dns_policy="Default",
            restart_policy="Never",
            automount_service_account_token=False,
            termination_grace_period_seconds=1,
            tolerations=[client.V1Toleration(operator="Exists")],
            containers=[
                client.V1Container(
                    name="main",
                    image=image,
                    image_pull_policy="IfNotPresent",
                    command=["/bin/sh", "-c", script],
                    resources=client.V1ResourceRequirements(limits=limits),
                )
            ],
        ),
    )


def visible_devices(core: client.CoreV1Api, namespace: str, name: str, *, timeout: float = 30) -> list[str]:
    """Follow the pod's log until it printed its NVIDIA_VISIBLE_DEVICES line; return the IDs."""
    stream = watch.Watch()
    seen: list[str] = []
    try:
        for line in stream.stream(
            core.read_namespaced_pod_log, name, namespace, container="main", _request_timeout=timeout
        ):
            seen.append(line)
            match = ENV_LINE.match(line)
            if match:
                return [item for item in match.group(1).split(",") if item]
    finally:
        stream.stop()
    raise AssertionError(f"pod {name} never printed NVIDIA_VISIBLE_DEVICES; log was: {seen!r}")


# ---------------------------------------------------------------------- plugin


def fake_uuids(count: int = 8) -> list[str]:
    """Deterministic GPU UUIDs of our own, so a test can name the device it breaks."""
    return [f"GPU-e2e{index:05x}-0000-4000-8000-{index:012x}" for index in range(count)]


#: The fake backend's topology preset (the plugin's discovery/presets.py): eight
#: H100s with NVLink and two NUMA nodes. E2E_TOPOLOGY_PRESET="" leaves it out.
TOPOLOGY_PRESET = os.environ.get("E2E_TOPOLOGY_PRESET", "dgx-h100")


def fake_config(uuids: list[str], *, unhealthy: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Eight GPUs with our own UUIDs, laid out by the topology preset (else two NUMA nodes of four)."""
    devices: list[dict[str, Any]] = []
    for index, uuid in enumerate(uuids):
        device: dict[str, Any] = {"uuid": uuid, "index": index}
        if not TOPOLOGY_PRESET:
            device["numa"] = index * 2 // len(uuids)
        device["health"] = "Unhealthy" if uuid in unhealthy else "Healthy"
        devices.append(device)
    config: dict[str, Any] = {"topology": {"preset": TOPOLOGY_PRESET}} if TOPOLOGY_PRESET else {}
    return config | {"devices": devices}


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Replace the file in one rename, as editors and ConfigMap updates do."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(partial, path)


def plugin_binary() -> Path:
    """The plugin under test: $E2E_PLUGIN_BIN, else on PATH, else the repo's .venv."""
    configured = os.environ.get("E2E_PLUGIN_BIN")
    if configured:
        return Path(configured)
    found = shutil.which("gpu-device-plugin")
    if found:
        return Path(found)
    return REPO_ROOT / ".venv" / "bin" / "gpu-device-plugin"


def plugin_env() -> dict[str, str]:
    """The environment without any GPU_DP_* setting of the caller's, so flags alone decide."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GPU_DP_")}


class HostCommand:
    """One of our commands (`serve`, `mps-control`) as a host process of the node, its output
    appended to `log`; `env` (default: plugin_env() without OTLP export) is the whole environment."""

    def __init__(self, args: list[str], log: Path, *, env: dict[str, str] | None = None) -> None:
        self.command = [str(plugin_binary()), *args]
        self.log = log
        self.env = env if env is not None else plugin_env() | {"OTEL_SDK_DISABLED": "true"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(self.command)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; its exit code, None if it never ran or was killed."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            return None


@dataclass
class PluginProcess:
    """The device plugin as a host process on the node, serving the fake backend."""

    binary: Path
    config: Path
    device_plugin_dir: Path
    log: Path
    #: more `serve` flags, e.g. the node labels and events with the cluster's kubeconfig.
    extra_args: list[str] = field(default_factory=list)
    #: more environment, e.g. the OTEL_* variables that send its spans to the session's Jaeger.
    env: dict[str, str] = field(default_factory=dict)
    #: --resource-name; None: not given (a per-node config's files name the resources).
    resource_name: str | None = RESOURCE
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    started_at: float = field(default=0.0, init=False)

    def command(self) -> list[str]:
        return [
            str(self.binary), "serve",
            "--discovery", "fake",
            "--fake-config", str(self.config),
            "--device-plugin-dir", str(self.device_plugin_dir),
            *(["--resource-name", self.resource_name] if self.resource_name else []),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        if not self.binary.is_file():
            raise AssertionError(
                f"plugin binary {self.binary} not found (set E2E_PLUGIN_BIN or install the project)"
            )
        assert self.process is None or self.process.poll() is not None, "plugin already running"
        with self.log.open("ab") as out:
            out.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(self.command())}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=plugin_env() | self.env,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean its socket up or say goodbye to the kubelet."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def run_plugin_once(
    binary: Path, config: Path, device_plugin_dir: Path, *, timeout: float = 30
) -> tuple[int, str]:
    """Start the plugin and wait for it to exit by itself (it must, on a broken config)."""
    command = [
        str(binary), "serve", "--discovery", "fake", "--fake-config", str(config),
        "--device-plugin-dir", str(device_plugin_dir), "--resource-name", RESOURCE,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, env=plugin_env(), timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"plugin did not exit within {timeout:.0f} s on a broken config") from error
    return result.returncode, result.stdout + result.stderr
