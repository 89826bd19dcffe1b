"""Time-slicing through the real `serve` process, NVIDIA's config file and the stand-in kubelet.

8 fake GPUs shared 4 ways: what the kubelet is told (32 replica ids under the
resource the file names), what Allocate answers for replicas (each GPU once),
failRequestsGreaterThanOne refusing two replicas with a message naming the
option, and one GPU's fault taking its 4 replicas down and back. Every socket,
registration and RPC is real.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import Registration, StandinKubelet
from testsupport.fakegpus import write_fake_config
from testsupport.process import serve_argv

GPU = "nvidia.com/gpu"
REPLICAS = [f"{fake_uuid(g)}::{n}" for g in range(8) for n in range(4)]

Serve = Callable[..., Awaitable[Registration]]


def nvidia_file(folder: Path, **sharing: object) -> Path:
    """NVIDIA's time-slicing file: nvidia.com/gpu 4 ways, with the options given."""
    lines = ["version: v1", "sharing:", "  timeSlicing:"]
    lines += [f"    {key}: {str(value).lower()}" for key, value in sharing.items() if key != "rename"]
    lines += ["    resources:", "      - name: nvidia.com/gpu", "        replicas: 4"]
    if "rename" in sharing:
        lines.append(f"        rename: {sharing['rename']}")
    path = folder / "nvidia.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def serve_shared(kubelet: StandinKubelet, fake_config: Path, tmp_path: Path) -> AsyncIterator[Serve]:
    """Starts `serve` as a process with NVIDIA's file; answers its registration once listed."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(**sharing: object) -> Registration:
        process = await asyncio.create_subprocess_exec(
            *serve_argv(
                fake_config,
                kubelet.plugin_dir,
                "--resource-name",
                GPU,
                "--config-file",
                str(nvidia_file(tmp_path, **sharing)),
            ),
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "OTEL_SDK_DISABLED": "true"},
        )
        processes.append(process)
        # Registered and listed (the stand-in follows the stream).
        return await kubelet.wait_registered(timeout=20)

    yield start
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 10)


def listed(registration: Registration) -> list[str]:
    return [d.ID for d in registration.latest.devices]


def allocate(*ids: str) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=list(ids))])


async def test_eight_gpus_four_ways_register_32_devices_under_the_name(
    serve_shared: Serve,
) -> None:
    registration = await serve_shared()

    assert registration.request.resource_name == GPU
    assert listed(registration) == REPLICAS
    assert all(d.health == "Healthy" for d in registration.latest.devices)
    # NUMA of each replica is its GPU's (the fake file puts GPUs 0-3 on node 0, 4-7 on 1).
    numa = {d.ID: [n.ID for n in d.topology.nodes] for d in registration.latest.devices}
    assert numa[f"{fake_uuid(1)}::3"] == [0]
    assert numa[f"{fake_uuid(6)}::0"] == [1]
    assert registration.options is not None
    assert registration.options.get_preferred_allocation_available


async def test_two_replicas_of_one_gpu_name_it_once_and_the_preferred_set_spreads(
    serve_shared: Serve,
) -> None:
    registration = await serve_shared()
    stub = registration.stub()

    answer = await stub.Allocate(allocate(f"{fake_uuid(2)}::0", f"{fake_uuid(2)}::3", f"{fake_uuid(5)}::1"))

    assert answer.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == f"{fake_uuid(2)},{fake_uuid(5)}"
    preferred = await stub.GetPreferredAllocation(
        pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(available_deviceIDs=REPLICAS, allocation_size=4)
            ]
        )
    )
    chosen = list(preferred.container_responses[0].deviceIDs)
    assert len(chosen) == 4
    # distributed (the default): four GPUs, one replica each.
    assert len({i.rpartition("::")[0] for i in chosen}) == 4


@pytest.mark.parametrize(
    ("sharing", "name"),
    [
        pytest.param({"renameByDefault": True}, "nvidia.com/gpu.shared", id="rename-by-default"),
        pytest.param({"rename": "nvidia.com/gpu-quarter"}, "nvidia.com/gpu-quarter", id="rename"),
    ],
)
async def test_a_renamed_share_registers_under_the_new_name_only(
    serve_shared: Serve,
    kubelet: StandinKubelet,
    sharing: dict[str, object],
    name: str,
) -> None:
    registration = await serve_shared(**sharing)

    assert registration.request.resource_name == name
    assert listed(registration) == REPLICAS
    # Every GPU is shared: nothing is left to serve under nvidia.com/gpu.
    assert [r.request.resource_name for r in kubelet.registrations] == [name]


async def test_fail_requests_greater_than_one_refuses_two_replicas_naming_the_option(
    serve_shared: Serve,
) -> None:
    registration = await serve_shared(failRequestsGreaterThanOne=True)
    stub = registration.stub()

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Allocate(allocate(f"{fake_uuid(0)}::0", f"{fake_uuid(1)}::0"))

    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "sharing.timeSlicing.failRequestsGreaterThanOne" in (refused.value.details() or "")
    one = await stub.Allocate(allocate(f"{fake_uuid(1)}::2"))
    assert one.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == fake_uuid(1)


async def test_an_unhealthy_gpu_takes_its_four_replicas_down_and_back(
    serve_shared: Serve, kubelet: StandinKubelet, fake_config: Path
) -> None:
    registration = await serve_shared()

    write_fake_config(fake_config, unhealthy=(3,))
    await kubelet.wait_for(lambda: len(registration.updates) >= 2, timeout=10)
    down = [d.ID for d in registration.latest.devices if d.health == "Unhealthy"]
    assert down == [f"{fake_uuid(3)}::{n}" for n in range(4)]
    assert len(registration.latest.devices) == 32

    write_fake_config(fake_config)
    await kubelet.wait_for(lambda: len(registration.updates) >= 3, timeout=10)
    assert all(d.health == "Healthy" for d in registration.latest.devices)
