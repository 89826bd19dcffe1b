"""Health races over real gRPC: the kubelet's view lags ours by one ListAndWatch message.

A device turns unhealthy after the kubelet chose its candidates. The preferred
allocation still answers (healthy devices first, the unhealthy one only to fill
the size) and says so in the log and the span; Allocate hands the device out
while the kubelet cannot yet know (a grace after the message that told it), and
refuses it after that.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.allocator import AllocateOptions, in_order_policy
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.discovery.fake_config import FakeConfig, fake_uuid, to_inventory
from gpu_device_plugin.health.publish import publish_snapshot
from gpu_device_plugin.inventory import Health, SnapshotCell
from gpu_device_plugin.server.kubelet_view import KubeletView
from gpu_device_plugin.server.plugin_server import PluginServer
from gpu_device_plugin.server.service import DevicePluginService
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.tracing import sdk_tracing
from testsupport.fakegpus import write_fake_config
from testsupport.kubelet import KubeletSim
from testsupport.spans import SpanRecorder
from testsupport.waiting import eventually

G = [fake_uuid(i) for i in range(8)]
PREFERRED = "/v1beta1.DevicePlugin/GetPreferredAllocation"
ALLOCATE = "/v1beta1.DevicePlugin/Allocate"


def preferred(
    available: list[str], size: int, must: list[str] | None = None
) -> pb.PreferredAllocationRequest:
    return pb.PreferredAllocationRequest(
        container_requests=[
            pb.ContainerPreferredAllocationRequest(
                available_deviceIDs=available, must_include_deviceIDs=must or [], allocation_size=size
            )
        ]
    )


def allocate(ids: list[str]) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)])


async def turned_unhealthy(kubelet: KubeletSim, fake_config: Path, index: int) -> list[str]:
    """What the kubelet saw before (all healthy), after the device went unhealthy on our side."""
    registration = kubelet.registrations[-1]
    seen = [d.ID for d in registration.latest.devices if d.health == "Healthy"]
    write_fake_config(fake_config, unhealthy=(index,))
    await kubelet.wait_for(lambda: registration.latest.devices[index].health == "Unhealthy")
    return seen


async def test_preferred_answers_a_race_with_healthy_devices_first(
    kubelet: KubeletSim,
    fake_config: Path,
    start_plugin,
    caplog: pytest.LogCaptureFixture,
    recorder: SpanRecorder,
) -> None:
    start_plugin(fake_config, tracing=sdk_tracing(recorder.provider))
    stub = (await kubelet.wait_registered()).stub()
    candidates = await turned_unhealthy(kubelet, fake_config, 0)
    assert G[0] in candidates
    caplog.set_level(logging.INFO)

    # Enough healthy devices: the unhealthy one is left out.
    answer = await stub.GetPreferredAllocation(preferred(candidates, 2), timeout=5)
    assert list(answer.container_responses[0].deviceIDs) == [G[1], G[2]]
    # Every candidate asked for: the unhealthy one fills the size (Allocate decides).
    answer = await stub.GetPreferredAllocation(preferred(candidates, 8), timeout=5)
    assert sorted(answer.container_responses[0].deviceIDs) == sorted(G)
    # A device the kubelet still lists but we no longer have, and the unhealthy one as must_include.
    answer = await stub.GetPreferredAllocation(
        preferred(["GPU-gone", *candidates[:3]], 3, must=[G[0]]), timeout=5
    )
    assert sorted(answer.container_responses[0].deviceIDs) == sorted([G[0], G[1], G[2]])

    worked_around = [r for r in caplog.records if "health race" in r.getMessage()]
    assert len(worked_around) == 3
    assert all(r.levelno == logging.INFO for r in worked_around)
    assert repr(G[0]) in worked_around[0].getMessage()
    assert "'GPU-gone'" in worked_around[2].getMessage()

    spans = await recorder.wait_for(lambda s: len([x for x in s if x.name == PREFERRED]) == 3)
    events = [e for s in spans if s.name == PREFERRED for e in s.events if e.name == attrs.HEALTH_RACE_EVENT]
    assert [list(e.attributes[attrs.RACE_USED_IDS]) for e in events] == [[], [G[0]], [G[0]]]
    assert list(events[2].attributes[attrs.RACE_UNKNOWN_IDS]) == ["GPU-gone"]


async def test_structural_mistakes_are_still_refused_during_a_race(
    kubelet: KubeletSim, fake_config: Path, start_plugin
) -> None:
    start_plugin(fake_config)
    stub = (await kubelet.wait_registered()).stub()
    candidates = await turned_unhealthy(kubelet, fake_config, 0)
    for bad in (
        preferred([*candidates, G[1]], 1),
        preferred(candidates[:2], 3),
        preferred(candidates[:2], 1, must=[G[5]]),
        preferred(candidates, 1, must=[G[1], G[2]]),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetPreferredAllocation(bad, timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


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
        "example.com/gpu",
        cell,
        AllocateOptions(),
        in_order_policy,
        view=KubeletView(grace_s=1.0, clock=clock),
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


async def test_allocate_of_a_device_unhealthy_from_the_start_is_refused(
    kubelet: KubeletSim, fake_config: Path, start_plugin
) -> None:
    # The kubelet never saw it healthy: no race to forgive.
    write_fake_config(fake_config, unhealthy=(3,))
    start_plugin(fake_config)
    stub = (await kubelet.wait_registered()).stub()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Allocate(allocate([G[3]]), timeout=5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_closed_stream_is_no_longer_a_kubelet_watching(plugin_dir: Path) -> None:
    """Without an open stream no kubelet is choosing, so no unhealthy device is forgiven."""
    inventory = to_inventory(FakeConfig(count=2))
    cell = SnapshotCell(inventory)
    service = DevicePluginService("example.com/gpu", cell, AllocateOptions(), in_order_policy)
    server = PluginServer(service, plugin_dir / "streams.sock")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix://{server.socket_path}") as channel:
            stub = pb_grpc.DevicePluginStub(channel)
            stream = stub.ListAndWatch(pb.Empty())
            await stream.read()
            assert service.view.streams == 1
            stream.cancel()
            await eventually(lambda: service.view.streams == 0, what="the stream's end seen by the service")
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
