"""MPS on the real kubelet (issue 16 part 4): `serve` and the `mps-control` sidecar as host
processes of the node, with NVIDIA's config file and the fake nvidia-cuda-mps-control.

What the node shows: the MPS resource's replicas in capacity but not allocatable until
the sidecar's daemon is ready; then allocatable; a pod given a replica has the daemon's
pipe folder mounted where CUDA_MPS_PIPE_DIRECTORY says (the daemon's control socket is
in it: the kubelet honoured the Allocate mounts) and /dev/shm from the MPS root; with
the sidecar stopped, allocatable goes back to 0. Both are host processes in either
E2E_PLUGIN mode: the mps component is for GPU nodes (prod), and this is about the
kubelet's side of MPS.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import e2e_support
import pytest
from kubernetes import client, watch

from conftest import ClusterUnderTest, Pods
from gdp_hack.mpsfake import BINARY, Record

RESOURCE = "nvidia.com/mps-gpu"
GPUS = 2
REPLICAS = 4


@pytest.fixture(scope="module")
def mps_root() -> Iterator[Path]:
    # Short (the fake's control socket lives under it), and readable by the pods' root.
    folder = Path(tempfile.mkdtemp(prefix="mps-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def setup(
    cluster: ClusterUnderTest, mps_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[e2e_support.HostCommand, e2e_support.HostCommand]]:
    local = cluster.require_host_control()
    config = tmp_path_factory.mktemp("mps-config") / "config.yaml"
    config.write_text(
        f"version: v1\nflags:\n  mpsRoot: {mps_root}\n"
        f"sharing:\n  mps:\n    resources:\n      - name: {RESOURCE}\n        replicas: {REPLICAS}\n"
    )
    common = ["--fake-devices", str(GPUS), "--resource-name", RESOURCE, "--config-file", str(config)]
    serve = e2e_support.HostCommand(
        ["serve", *common, "--device-plugin-dir", str(local.device_plugin_dir)],
        local.log_path("gpu-device-plugin-mps"),
    )
    sidecar = e2e_support.HostCommand(
        ["mps-control", *common, "--mps-control-bin", str(BINARY)], local.log_path("mps-control")
    )
    try:
        yield serve, sidecar
    finally:
        sidecar.stop()
        serve.stop()


def mps_pod(name: str) -> client.V1Pod:
    """Prints what an MPS client container has, then idles until told to stop."""
    script = (
        'echo "PIPE=$CUDA_MPS_PIPE_DIRECTORY";'
        ' echo "IN_PIPE=$(ls "$CUDA_MPS_PIPE_DIRECTORY" | tr "\\n" " ")";'
        ' echo "SHM=$(ls -d /dev/shm)"; echo "NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES";'
        " trap 'exit 0' TERM; sleep 3600 & wait"
    )
    pod = e2e_support.gpu_pod(name, 1, resource=RESOURCE)
    pod.spec.containers[0].command = ["/bin/sh", "-c", script]
    return pod


def printed(core: client.CoreV1Api, namespace: str, name: str, *, timeout: float = 30) -> dict[str, str]:
    """The pod's KEY=value lines, read from its log until the last one appears."""
    stream = watch.Watch()
    seen: dict[str, str] = {}
    try:
        for line in stream.stream(
            core.read_namespaced_pod_log, name, namespace, container="main", _request_timeout=timeout
        ):
            key, _, value = line.partition("=")
            seen[key] = value
            if key == "NVIDIA_VISIBLE_DEVICES":
                return seen
    finally:
        stream.stop()
    raise AssertionError(f"pod {name} did not print its environment; it printed {seen!r}")


def test_replicas_are_allocatable_only_while_the_daemon_is_ready_and_pods_get_its_pipe(
    cluster: ClusterUnderTest,
    setup: tuple[e2e_support.HostCommand, e2e_support.HostCommand],
    pods: Pods,
    namespace: str,
    mps_root: Path,
) -> None:
    serve, sidecar = setup
    total = GPUS * REPLICAS
    serve.start()
    e2e_support.wait_node_resource(
        cluster.core, cluster.node_name, total, timeout=60, kind="capacity", resource=RESOURCE
    )
    node = cluster.core.read_node(cluster.node_name)
    assert e2e_support.node_resource(node, "allocatable", RESOURCE) == 0

    sidecar.start()
    e2e_support.wait_node_resource(cluster.core, cluster.node_name, total, timeout=60, resource=RESOURCE)

    name = f"{pods.prefix}-client"
    cluster.core.create_namespaced_pod(namespace, mps_pod(name))
    pods.created.append(name)
    pods.running(name)
    seen = printed(cluster.core, namespace, name)
    assert seen["PIPE"] == f"/mps/{RESOURCE}/pipe"
    # The daemon's control socket, through the mount the plugin asked the kubelet for.
    assert "control" in seen["IN_PIPE"].split()
    assert seen["SHM"] == "/dev/shm"
    assert len(seen["NVIDIA_VISIBLE_DEVICES"].split(",")) == 1
    commands = Record(mps_root / RESOURCE / "log").commands()
    assert f"set_default_active_thread_percentage {100 // REPLICAS}" in commands

    assert sidecar.stop() == 0
    assert Record(mps_root / RESOURCE / "log").commands()[-1] == "quit"
    e2e_support.wait_node_resource(cluster.core, cluster.node_name, 0, timeout=30, resource=RESOURCE)
