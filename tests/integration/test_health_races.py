"""Health races over real gRPC: the kubelet's view lags ours by one ListAndWatch message.

A device turns unhealthy after the kubelet chose its candidates. The preferred
allocation still answers (healthy devices first, the unhealthy one only to fill
the size) and says so in the log and the span; a device the kubelet never saw
healthy is refused. The grace Allocate gives a device that just turned unhealthy
is timed on a controlled clock against the service alone:
tests/server/test_service_races.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.tracing import sdk_tracing
from testsupport.fakegpus import write_fake_config
from testsupport.spans import SpanRecorder

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


async def turned_unhealthy(kubelet: StandinKubelet, fake_config: Path, index: int) -> list[str]:
    """What the kubelet saw before (all healthy), after the device went unhealthy on our side."""
    registration = kubelet.registrations[-1]
    seen = [d.ID for d in registration.latest.devices if d.health == "Healthy"]
    write_fake_config(fake_config, unhealthy=(index,))
    await kubelet.wait_for(lambda: registration.latest.devices[index].health == "Unhealthy")
    return seen


async def test_preferred_answers_a_race_with_healthy_devices_first(
    kubelet: StandinKubelet,
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
    kubelet: StandinKubelet, fake_config: Path, start_plugin
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


async def test_allocate_of_a_device_unhealthy_from_the_start_is_refused(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    # The kubelet never saw it healthy: no race to forgive.
    write_fake_config(fake_config, unhealthy=(3,))
    start_plugin(fake_config)
    stub = (await kubelet.wait_registered()).stub()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Allocate(allocate([G[3]]), timeout=5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
