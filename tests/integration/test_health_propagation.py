"""Health changes reach every live stream; cancelled streams leave nothing behind."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import grpc
import yaml

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from testsupport.fakegpus import write_fake_config
from testsupport.waiting import eventually


def write_with_xid(path: Path, device: int, xid: int) -> None:
    config = yaml.safe_load(path.read_text())
    config["devices"][device]["xid"] = xid
    path.write_text(yaml.safe_dump(config))


async def test_injected_critical_xid_is_a_fault_and_application_xid_is_not(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    start_plugin(fake_config)
    registration = await kubelet.wait_registered()
    write_with_xid(fake_config, 0, 13)
    write_with_xid(fake_config, 1, 79)
    await kubelet.wait_for(lambda: registration.latest.devices[1].health == "Unhealthy", 2)
    assert registration.latest.devices[0].health == "Healthy"
    # The application's XID leaves its device allocatable. (The critical one's device is
    # still handed out for a moment, the kubelet's lag, then refused: test_health_races.py.)
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[fake_uuid(0)])])
    answer = await registration.stub().Allocate(request, timeout=5)
    assert answer.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == fake_uuid(0)
    write_fake_config(fake_config)  # the XID is gone from the file: healthy again
    await kubelet.wait_for(lambda: registration.latest.devices[1].health == "Healthy", 2)


#: What of the daemon itself waits on the inventory cell: the kubelet's one ListAndWatch
#: stream, and the task that replans when the devices change (live/replan.py).
DAEMON_WAITERS = 2


async def test_after_200_cancelled_streams_every_live_stream_hears_every_change(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    plugin = start_plugin(fake_config)
    registration = await kubelet.wait_registered()
    socket = f"unix://{kubelet.plugin_dir / registration.request.endpoint}"
    tasks_before = len(asyncio.all_tasks())
    async with grpc.aio.insecure_channel(socket) as channel:
        stub = pb_grpc.DevicePluginStub(channel)
        for _ in range(200):
            stream = stub.ListAndWatch(pb.Empty())
            await stream.read()
            stream.cancel()
        live = [stub.ListAndWatch(pb.Empty()) for _ in range(3)]
        for stream in live:
            await stream.read()
        for round_ in range(5):
            unhealthy = (round_ % 8,) if round_ % 2 == 0 else ()
            write_fake_config(fake_config, unhealthy=unhealthy)
            expected = ["Unhealthy" if i in unhealthy else "Healthy" for i in range(8)]
            for stream in live:
                update = await asyncio.wait_for(stream.read(), 2)
                assert [d.health for d in update.devices] == expected
            await kubelet.wait_for(
                lambda expected=expected: [d.health for d in registration.latest.devices] == expected, 2
            )
        for stream in live:
            stream.cancel()
    gc.collect()
    # Nothing left of the 203 streams: no task and no waiter beyond the daemon's own.
    await eventually(lambda: len(asyncio.all_tasks()) <= tasks_before, what="stream tasks ended")
    cell = (await plugin.started).cell
    await eventually(lambda: len(cell._changed._waiters or ()) == DAEMON_WAITERS, what="waiters released")
