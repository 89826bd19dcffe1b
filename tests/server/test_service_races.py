"""The service's health races, on its own server: the kubelet's view lags ours by one message.

Allocate hands out a device that just turned unhealthy while the kubelet cannot
yet know (a grace after the ListAndWatch message that told it, on a controlled
clock) and refuses it after that; without an open stream no kubelet is
choosing, so nothing is forgiven. The same races through `serve` and the
stand-in kubelet are in tests/integration/test_health_races.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.allocator import AllocateOptions, in_order_policy
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.backends.fake.spec import FakeConfig, fake_uuid, to_inventory
from gpu_device_plugin.health.publish import publish_snapshot
from gpu_device_plugin.inventory import Health, SnapshotCell
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager
from gpu_device_plugin.server.kubelet_view import KubeletView
from gpu_device_plugin.server.plugin_server import PluginServer
from gpu_device_plugin.server.service import DevicePluginService
from testsupport.waiting import eventually

G = [fake_uuid(i) for i in range(8)]


def allocate(ids: list[str]) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_allocate_of_a_device_that_just_went_unhealthy(
    plugin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Accepted while the kubelet cannot know; refused once the grace after telling it is over."""
    clock = Clock()
    inventory = to_inventory(FakeConfig(count=4))
    cell = SnapshotCell(inventory)
    service = DevicePluginService(
        WholeGpuManager("example.com/gpu", AllocateOptions(), in_order_policy),
        cell,
        kubelet_view=KubeletView(grace_s=1.0, clock=clock),
    )
    server = PluginServer(service, plugin_dir / "race.sock")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix://{server.socket_path}") as channel:
            stub = pb_grpc.DevicePluginStub(channel)
            stream = stub.ListAndWatch(pb.Empty())
            first = await stream.read()
            assert all(d.health == "Healthy" for d in first.devices)
            unhealthy = cell.value.with_health({inventory.devices[2].id: (Health.UNHEALTHY, "XID 79")})
            publish_snapshot(cell, unhealthy, source="test")
            update = await stream.read()
            assert update.devices[2].health == "Unhealthy"
            caplog.set_level(logging.INFO)

            clock.now += 0.9
            granted = await stub.Allocate(allocate([G[1], G[2]]), timeout=5)
            assert granted.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == f"{G[1]},{G[2]}"
            [note] = [r for r in caplog.records if "just turned unhealthy" in r.getMessage()]
            assert note.levelno == logging.INFO
            assert f"{G[2]!r} (told 0.90 s ago)" in note.getMessage()

            clock.now += 0.2
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Allocate(allocate([G[1], G[2]]), timeout=5)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert G[2] in refused.value.details()

            # Healthy again, then unhealthy again: a new race, a new grace.
            publish_snapshot(cell, inventory, source="test")
            await stream.read()
            publish_snapshot(cell, unhealthy, source="test")
            await stream.read()
            await stub.Allocate(allocate([G[2]]), timeout=5)
            stream.cancel()
    finally:
        await server.stop(None)


async def test_a_closed_stream_is_no_longer_a_kubelet_watching(plugin_dir: Path) -> None:
    """Without an open stream no kubelet is choosing, so no unhealthy device is forgiven."""
    inventory = to_inventory(FakeConfig(count=2))
    cell = SnapshotCell(inventory)
    service = DevicePluginService(
        WholeGpuManager("example.com/gpu", AllocateOptions(), in_order_policy), cell
    )
    server = PluginServer(service, plugin_dir / "streams.sock")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix://{server.socket_path}") as channel:
            stub = pb_grpc.DevicePluginStub(channel)
            stream = stub.ListAndWatch(pb.Empty())
            await stream.read()
            assert service.kubelet_view.streams == 1
            stream.cancel()
            await eventually(
                lambda: service.kubelet_view.streams == 0, what="the stream's end seen by the service"
            )
            # Published after the kubelet went: refused at once.
            publish_snapshot(
                cell,
                inventory.with_health({inventory.devices[1].id: (Health.UNHEALTHY, "XID 79")}),
                source="test",
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Allocate(allocate([inventory.devices[1].id]), timeout=5)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await server.stop(None)
