"""Several resources in one process: one plugin server per ResourceManager, over real sockets.

The fake backend's 8 GPUs are split by a test-only manager into two resources by
index parity (even: GPUs 0, 2, 4, 6; odd: 1, 3, 5, 7), served by the real `serve`
against the stand-in kubelet. Each registers on its own socket, lists only its
devices, wakes only on its own devices' changes, re-registers after a kubelet
restart, and refuses the other's device ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.cli.serve import serve
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.server.kubelet_standin import Registration, StandinKubelet
from gpu_device_plugin.server.sockets import our_sockets
from gpu_device_plugin.telemetry.tracing import noop_tracing
from testsupport.fakegpus import write_fake_config
from testsupport.parity import ParityManager

EVEN = "example.com/even"
ODD = "example.com/odd"


@pytest.fixture
async def two_resources(plugin_dir: Path, fake_config: Path) -> AsyncIterator[None]:
    config = ServeConfig(
        discovery=DiscoveryConfig(kind=DiscoveryKind.FAKE, fake_config=fake_config),
        device_plugin_dir=plugin_dir,
    )
    stop = asyncio.Event()
    managers = [ParityManager(EVEN, 0), ParityManager(ODD, 1)]
    task = asyncio.create_task(serve(config, noop_tracing(), stop, managers=managers))
    yield
    stop.set()
    await asyncio.wait_for(task, 5)


def by_resource(registrations: list[Registration]) -> dict[str, Registration]:
    """The latest registration of each resource that has listed its devices."""
    return {r.request.resource_name: r for r in registrations if r.updates}


async def both_registered(kubelet: StandinKubelet, count: int = 2) -> dict[str, Registration]:
    await kubelet.wait_for(
        lambda: len(kubelet.registrations) >= count and all(r.updates for r in kubelet.registrations)
    )
    return by_resource(kubelet.registrations)


def ids(update: pb.ListAndWatchResponse) -> list[str]:
    return [d.ID for d in update.devices]


def unhealthy(update: pb.ListAndWatchResponse) -> list[str]:
    return [d.ID for d in update.devices if d.health == "Unhealthy"]


EVEN_IDS = [fake_uuid(i) for i in (0, 2, 4, 6)]
ODD_IDS = [fake_uuid(i) for i in (1, 3, 5, 7)]


@pytest.mark.usefixtures("two_resources")
async def test_each_resource_registers_on_its_own_socket_and_lists_only_its_devices(
    kubelet: StandinKubelet,
) -> None:
    found = await both_registered(kubelet)
    assert set(found) == {EVEN, ODD}
    assert found[EVEN].request.endpoint != found[ODD].request.endpoint
    assert ids(found[EVEN].latest) == EVEN_IDS
    assert ids(found[ODD].latest) == ODD_IDS
    # Options are each manager's own: both offer a preferred policy here.
    for name in (EVEN, ODD):
        options = found[name].options
        assert options is not None
        assert options.get_preferred_allocation_available


@pytest.mark.usefixtures("two_resources")
async def test_a_health_change_wakes_only_the_resource_whose_device_changed(
    kubelet: StandinKubelet, fake_config: Path
) -> None:
    found = await both_registered(kubelet)
    even, odd = found[EVEN], found[ODD]
    # GPU 2 (even) goes bad: the even stream gets a new list.
    write_fake_config(fake_config, unhealthy=(2,))
    await kubelet.wait_for(lambda: len(even.updates) >= 2)
    assert unhealthy(even.updates[1]) == [fake_uuid(2)]
    # GPU 3 (odd) goes bad too: the odd stream's next list is that change, so the
    # change of GPU 2 sent it nothing (a stream's messages arrive in order).
    write_fake_config(fake_config, unhealthy=(2, 3))
    await kubelet.wait_for(lambda: len(odd.updates) >= 2)
    assert [unhealthy(u) for u in odd.updates] == [[], [fake_uuid(3)]]
    # GPU 2 recovers: the even stream's third list, with nothing from GPU 3's change between.
    write_fake_config(fake_config, unhealthy=(3,))
    await kubelet.wait_for(lambda: len(even.updates) >= 3)
    assert [unhealthy(u) for u in even.updates] == [[], [fake_uuid(2)], []]
    assert len(odd.updates) == 2


@pytest.mark.usefixtures("two_resources")
async def test_a_kubelet_restart_reregisters_every_resource_on_fresh_sockets(kubelet: StandinKubelet) -> None:
    before = await both_registered(kubelet)
    await kubelet.restart()
    await kubelet.wait_for(
        lambda: len(kubelet.registrations) >= 4 and all(r.updates for r in kubelet.registrations[2:])
    )
    after = by_resource(kubelet.registrations[2:])
    assert set(after) == {EVEN, ODD}
    for name, listed in ((EVEN, EVEN_IDS), (ODD, ODD_IDS)):
        assert after[name].request.endpoint != before[name].request.endpoint
        assert ids(after[name].latest) == listed
        # Only the new socket of each resource is left: each old server is gone.
        await kubelet.wait_for(
            lambda name=name: (
                [p.name for p in our_sockets(kubelet.plugin_dir, name)] == [after[name].request.endpoint]
            )
        )


@pytest.mark.usefixtures("two_resources")
async def test_allocate_on_one_resource_refuses_the_other_resources_devices(kubelet: StandinKubelet) -> None:
    found = await both_registered(kubelet)
    even = found[EVEN].stub()
    answer = await even.Allocate(
        pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[fake_uuid(0)])])
    )
    assert answer.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == fake_uuid(0)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await even.Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[fake_uuid(1)])])
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown device ids" in (refused.value.details() or "")
    odd = found[ODD].stub()
    preferred = await odd.GetPreferredAllocation(
        pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(available_deviceIDs=ODD_IDS, allocation_size=2)
            ]
        )
    )
    assert list(preferred.container_responses[0].deviceIDs) == ODD_IDS[:2]


async def test_two_resources_with_one_name_are_refused(plugin_dir: Path, fake_config: Path) -> None:
    config = ServeConfig(
        discovery=DiscoveryConfig(kind=DiscoveryKind.FAKE, fake_config=fake_config),
        device_plugin_dir=plugin_dir,
    )
    with pytest.raises(ConfigError, match="each resource needs one name of its own"):
        await serve(config, noop_tracing(), managers=[ParityManager(EVEN, 0), ParityManager(EVEN, 1)])
