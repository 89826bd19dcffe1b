"""The plugin in-process against the test kubelet, over real unix sockets."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.server.sockets import our_sockets
from testsupport.fakegpus import write_fake_config

RESOURCE = "example.com/gpu"


def plugin_sockets(folder: Path) -> list[str]:
    return sorted(p.name for p in our_sockets(folder, RESOURCE))


async def test_registers_and_lists_devices(kubelet: StandinKubelet, fake_config: Path, start_plugin) -> None:
    start_plugin(fake_config)
    registration = await kubelet.wait_registered()
    request = registration.request
    assert request.version == "v1beta1"
    assert request.resource_name == RESOURCE
    assert (kubelet.plugin_dir / request.endpoint).exists()
    assert "/" not in request.endpoint
    assert request.options.get_preferred_allocation_available
    assert registration.options == request.options
    devices = registration.latest.devices
    assert [d.ID for d in devices] == [fake_uuid(i) for i in range(8)]
    assert all(d.health == "Healthy" for d in devices)
    assert [d.topology.nodes[0].ID for d in devices] == [0, 0, 0, 0, 1, 1, 1, 1]


async def test_waits_for_a_late_kubelet_then_registers(
    plugin_dir: Path, fake_config: Path, start_plugin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    start_plugin(fake_config)
    sim = StandinKubelet(plugin_dir)
    # Let the plugin fail a few attempts against a missing kubelet.sock.
    await asyncio.sleep(0.4)
    waiting = [r for r in caplog.records if "waiting for the kubelet" in r.getMessage()]
    assert len(waiting) == 1, "one line saying where it waits, not one per attempt"
    assert str(plugin_dir / "kubelet.sock") in waiting[0].getMessage()
    await sim.start()
    try:
        registration = await sim.wait_registered(timeout=10)
        assert len(registration.latest.devices) == 8
    finally:
        await sim.stop()


async def test_reregisters_after_each_of_three_kubelet_restarts(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    start_plugin(fake_config)
    first = await kubelet.wait_registered(1)
    endpoints = [first.request.endpoint]
    for restart in range(2, 5):
        await kubelet.restart()
        registration = await kubelet.wait_registered(restart, timeout=3)
        endpoints.append(registration.request.endpoint)
        assert len(registration.latest.devices) == 8
        # Exactly one plugin socket: the new one; the old server is gone.
        current = [registration.request.endpoint]
        await kubelet.wait_for(lambda current=current: plugin_sockets(kubelet.plugin_dir) == current)
    assert len(set(endpoints)) == 4, f"every start needs a fresh socket name: {endpoints}"
    # Device ids are stable across kubelet restarts (the kubelet checkpoints by id).
    assert [d.ID for d in kubelet.registrations[-1].latest.devices] == [
        d.ID for d in first.updates[0].devices
    ]


async def test_health_edit_reaches_two_concurrent_streams(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    start_plugin(fake_config)
    registration = await kubelet.wait_registered()
    async with grpc.aio.insecure_channel(
        f"unix://{kubelet.plugin_dir / registration.request.endpoint}"
    ) as ch:
        stub = pb_grpc.DevicePluginStub(ch)
        streams = [stub.ListAndWatch(pb.Empty()) for _ in range(2)]
        for stream in streams:
            assert len((await stream.read()).devices) == 8
        write_fake_config(fake_config, unhealthy=(3,))
        for stream in streams:
            update = await asyncio.wait_for(stream.read(), 2)
            bad = [d.ID for d in update.devices if d.health == "Unhealthy"]
            assert bad == [fake_uuid(3)]
            assert len(update.devices) == 8, "every update is the full list"
        # The kubelet's own stream heard it too.
        await kubelet.wait_for(lambda: any(d.health == "Unhealthy" for d in registration.latest.devices), 2)
        write_fake_config(fake_config)
        for stream in streams:
            update = await asyncio.wait_for(stream.read(), 2)
            assert all(d.health == "Healthy" for d in update.devices)
            stream.cancel()


async def test_broken_edit_keeps_last_good_list(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    start_plugin(fake_config)
    registration = await kubelet.wait_registered()
    fake_config.write_text("devices: [ {health: Sick} ]\n")
    write_fake_config(fake_config, unhealthy=(0,))
    await kubelet.wait_for(lambda: registration.latest.devices[0].health == "Unhealthy", 2)
    assert len(registration.latest.devices) == 8


async def test_shutdown_removes_socket(kubelet: StandinKubelet, fake_config: Path, start_plugin) -> None:
    plugin = start_plugin(fake_config)
    registration = await kubelet.wait_registered()
    assert plugin_sockets(kubelet.plugin_dir) == [registration.request.endpoint]
    await plugin.shutdown()
    assert plugin_sockets(kubelet.plugin_dir) == []
    # The kubelet's stream ended with the server.
    await asyncio.wait_for(registration.stream_task, 2)


async def test_stale_socket_of_a_killed_run_is_removed(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    stale = kubelet.plugin_dir / "example.com-gpu-18c0a7f1e2b-1.sock"
    import socket as pysocket

    with pysocket.socket(pysocket.AF_UNIX) as s:
        s.bind(str(stale))  # a socket file nobody listens on, as SIGKILL leaves it
    start_plugin(fake_config)
    registration = await kubelet.wait_registered()
    assert plugin_sockets(kubelet.plugin_dir) == [registration.request.endpoint]
