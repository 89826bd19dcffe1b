"""The stand-in kubelet (server/kubelet_standin.py) that the demo, the tests and the benches share.

What the rest of the suite relies on: a registration is dialed back and
followed, a restart wipes the folder but the checkpoint and serves again, a
refusal reaches the plugin as the code it was given, and with `follow=False`
only the requests are recorded.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.allocator import AllocateOptions, in_order_policy
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.backends.fake.spec import FakeConfig, to_inventory
from gpu_device_plugin.inventory import SnapshotCell
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager
from gpu_device_plugin.server.kubelet_standin import CHECKPOINT, StandinKubelet
from gpu_device_plugin.server.plugin_server import PluginServer
from gpu_device_plugin.server.service import DevicePluginService

RESOURCE = "example.com/gpu"


async def register(folder: Path, endpoint: str) -> None:
    async with grpc.aio.insecure_channel(f"unix://{folder / 'kubelet.sock'}") as channel:
        request = pb.RegisterRequest(version="v1beta1", endpoint=endpoint, resource_name=RESOURCE)
        await pb_grpc.RegistrationStub(channel).Register(request, timeout=5)


async def test_a_registration_is_dialed_back_and_its_device_lists_recorded(plugin_dir: Path) -> None:
    cell = SnapshotCell(to_inventory(FakeConfig(count=3)))
    server = PluginServer(
        DevicePluginService(WholeGpuManager(RESOURCE, AllocateOptions(), in_order_policy), cell),
        plugin_dir / "p.sock",
    )
    await server.start()
    try:
        async with StandinKubelet(plugin_dir) as kubelet:
            await register(plugin_dir, "p.sock")
            registration = await kubelet.wait_registered()
            assert registration.options is not None
            assert registration.options.get_preferred_allocation_available
            assert [d.ID for d in registration.latest.devices] == [d.id for d in cell.value.devices]
            assert registration.generation == 1
    finally:
        await server.stop(None)


async def test_a_restart_wipes_the_folder_but_the_checkpoint_and_serves_again(plugin_dir: Path) -> None:
    (plugin_dir / CHECKPOINT).write_text("{}")
    (plugin_dir / "plugin.sock").write_text("")
    async with StandinKubelet(plugin_dir, follow=False) as kubelet:
        await register(plugin_dir, "plugin.sock")
        await kubelet.restart()
        assert sorted(p.name for p in plugin_dir.iterdir()) == sorted([CHECKPOINT, "kubelet.sock"])
        await register(plugin_dir, "plugin.sock")
        second = await kubelet.wait_registered(2)
    assert second.generation == 2
    assert not (plugin_dir / "kubelet.sock").exists(), "stopping removes its socket"


async def test_without_follow_only_the_request_is_recorded(plugin_dir: Path) -> None:
    async with StandinKubelet(plugin_dir, follow=False) as kubelet:
        await register(plugin_dir, "nobody-listens.sock")  # no dial-back, so no failure
        registration = await kubelet.wait_registered()
    assert registration.request.endpoint == "nobody-listens.sock"
    assert (registration.options, registration.updates, registration.channel) == (None, [], None)


async def test_a_refusal_reaches_the_plugin_with_its_code(plugin_dir: Path) -> None:
    async with StandinKubelet(plugin_dir, follow=False) as kubelet:
        kubelet.refuse_with = grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await register(plugin_dir, "plugin.sock")
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert kubelet.registrations == []
