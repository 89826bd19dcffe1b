"""MPS end to end on one machine: the real `serve` and `mps-control` processes, NVIDIA's config
file, the fake nvidia-cuda-mps-control (hack/mpsfake) and the stand-in kubelet.

What a cluster would see: the replicas registered Unhealthy until the sidecar's daemon
is ready, then Healthy; Allocate handing a replica's container its GPU, the daemon's
pipe folder (env and mount) and shm; a killed daemon taking the replicas down until it
is started again and told its limits again; SIGTERM to the sidecar quitting the daemon
(and the replicas going Unhealthy), exit 0.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from gdp_hack.mpsfake import BINARY, Record
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import Registration, StandinKubelet
from testsupport.process import serve_argv

GPU = "nvidia.com/gpu"
REPLICAS = [f"{fake_uuid(g)}::{n}" for g in range(8) for n in range(4)]
TIMEOUT = 30.0

Start = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
def mps_root() -> Iterator[Path]:
    # Short: the fake's control socket lives under it (unix socket paths are at most 107 bytes).
    folder = Path(tempfile.mkdtemp(prefix="mps-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def nvidia_file(tmp_path: Path, mps_root: Path) -> Path:
    path = tmp_path / "nvidia.yaml"
    path.write_text(
        "version: v1\n"
        f"flags:\n  mpsRoot: {mps_root}\n"
        "sharing:\n  mps:\n    resources:\n      - name: nvidia.com/gpu\n        replicas: 4\n"
    )
    return path


@pytest.fixture
async def start(kubelet: StandinKubelet, fake_config: Path, nvidia_file: Path) -> AsyncIterator[Start]:
    """Starts `serve` or `mps-control` with the same file and fake GPUs; stops what is left."""
    processes: list[asyncio.subprocess.Process] = []
    common = ("--resource-name", GPU, "--config-file", str(nvidia_file))

    async def run(command: str) -> asyncio.subprocess.Process:
        if command == "serve":
            argv = serve_argv(fake_config, kubelet.plugin_dir, *common)
        else:
            argv = [
                sys.executable, "-m", "gpu_device_plugin.cli", "mps-control",
                "--fake-config", str(fake_config), *common, "--mps-control-bin", str(BINARY),
            ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *argv, stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "OTEL_SDK_DISABLED": "true"}
        )
        processes.append(process)
        return process

    yield run
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), TIMEOUT)


def healths(registration: Registration) -> set[str]:
    return {d.health for d in registration.latest.devices}


async def until_health(kubelet: StandinKubelet, registration: Registration, health: str) -> None:
    await kubelet.wait_for(lambda: healths(registration) == {health}, timeout=TIMEOUT)


def allocate(*ids: str) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=list(ids))])


async def test_replicas_wait_for_the_daemon_then_containers_get_its_pipe_and_shm(
    start: Start, kubelet: StandinKubelet, mps_root: Path
) -> None:
    await start("serve")
    registration = await kubelet.wait_registered(timeout=TIMEOUT)
    assert [d.ID for d in registration.latest.devices] == REPLICAS
    assert healths(registration) == {"Unhealthy"}
    stub = registration.stub()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Allocate(allocate(f"{fake_uuid(0)}::0"))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    sidecar = await start("mps-control")
    await until_health(kubelet, registration, "Healthy")

    answer = (await stub.Allocate(allocate(f"{fake_uuid(5)}::2"))).container_responses[0]
    assert dict(answer.envs) == {
        "NVIDIA_VISIBLE_DEVICES": fake_uuid(5),
        "CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu/pipe",
    }
    assert [(m.container_path, m.host_path, m.read_only) for m in answer.mounts] == [
        ("/mps/nvidia.com/gpu/pipe", f"{mps_root}/nvidia.com/gpu/pipe", False),
        ("/dev/shm", f"{mps_root}/shm", False),
    ]
    # The daemon the container's pipe leads to runs on the node's 8 GPUs with a quarter each.
    record = Record(mps_root / "nvidia.com" / "gpu" / "log")
    (daemon,) = record.starts()
    assert daemon["env"]["CUDA_VISIBLE_DEVICES"] == ",".join(fake_uuid(g) for g in range(8))
    assert daemon["env"]["CUDA_MPS_PIPE_DIRECTORY"] == f"{mps_root}/nvidia.com/gpu/pipe"
    assert "set_default_active_thread_percentage 25" in record.commands()
    # failRequestsGreaterThanOne: true by default for MPS.
    with pytest.raises(grpc.aio.AioRpcError) as two:
        await stub.Allocate(allocate(f"{fake_uuid(0)}::0", f"{fake_uuid(1)}::0"))
    assert "sharing.mps.failRequestsGreaterThanOne" in (two.value.details() or "")

    sidecar.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(sidecar.wait(), TIMEOUT) == 0
    assert record.commands()[-1] == "quit"
    await until_health(kubelet, registration, "Unhealthy")


async def test_a_killed_daemon_takes_the_replicas_down_until_it_runs_again(
    start: Start, kubelet: StandinKubelet, mps_root: Path
) -> None:
    await start("serve")
    registration = await kubelet.wait_registered(timeout=TIMEOUT)
    await start("mps-control")
    await until_health(kubelet, registration, "Healthy")
    record = Record(mps_root / "nvidia.com" / "gpu" / "log")
    (first,) = record.starts()
    updates = len(registration.updates)

    os.kill(first["pid"], signal.SIGKILL)

    await kubelet.wait_for(
        lambda: any({d.health for d in u.devices} == {"Unhealthy"} for u in registration.updates[updates:]),
        timeout=TIMEOUT,
    )
    await until_health(kubelet, registration, "Healthy")
    second = record.starts()[-1]
    assert second["pid"] != first["pid"]
    assert record.since_last_start()[-1] == "get_default_active_thread_percentage"
    assert f"set_default_device_pinned_mem_limit {fake_uuid(7)} 20389M" in record.since_last_start()


async def test_an_mps_root_that_cannot_hold_the_folders_exits_2_before_registering(
    kubelet: StandinKubelet, fake_config: Path, nvidia_file: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    argv = serve_argv(
        fake_config, kubelet.plugin_dir, "--resource-name", GPU, "--config-file", str(nvidia_file),
        "--mps-root", str(blocked / "mps"),
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *argv,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "OTEL_SDK_DISABLED": "true"},
    )
    _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)

    assert process.returncode == 2
    # One line of refusal, after discovery's log line (the plan needs the GPUs).
    (line,) = [x for x in err.decode().splitlines() if x.startswith("gpu-device-plugin:")]
    assert line.startswith("gpu-device-plugin: bad configuration: ")
    assert f"mps-root: cannot make {blocked}/mps/nvidia.com/gpu" in line
    assert kubelet.registrations == []
