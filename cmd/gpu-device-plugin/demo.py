"""`demo`: the plugin on fake GPUs against a stand-in kubelet, narrated step by step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
import yaml

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.backends.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.cli.serve import serve
from gpu_device_plugin.server.client import PluginClient
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.server.kubelet_view import ALLOCATE_GRACE_S
from gpu_device_plugin.server.sockets import our_sockets
from gpu_device_plugin.telemetry.tracing import noop_tracing

Echo = Callable[[str], None]


def _write_config(path: Path, count: int, unhealthy: int | None) -> None:
    devices = [
        {"uuid": fake_uuid(i), "numa": i * 2 // count, "health": "Unhealthy" if i == unhealthy else "Healthy"}
        for i in range(count)
    ]
    # Write-then-rename, the way editors and ConfigMap updates replace files.
    scratch = path.with_suffix(".tmp")
    scratch.write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    scratch.replace(path)


def _show_devices(echo: Echo, response: pb.ListAndWatchResponse) -> None:
    for d in response.devices:
        numa = ",".join(str(n.ID) for n in d.topology.nodes)
        echo(f"    {d.ID}  {d.health:<9}  numa {numa}")


async def run_demo(count: int, *, echo: Echo) -> None:
    logging.basicConfig(level=logging.INFO, format="    [plugin] %(message)s", stream=sys.stdout)
    logging.getLogger("grpc").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="gpu-dp-demo-") as scratch:
        folder = Path(scratch)
        config_path = folder / "fake-gpus.yaml"
        _write_config(config_path, count, unhealthy=None)
        echo(
            f"1. {count} fake GPUs described in {config_path}; a stand-in kubelet serves "
            f"{folder}/kubelet.sock"
        )
        stop = asyncio.Event()
        # The demo makes the kubelet's calls itself, to narrate them: the stand-in only registers.
        async with StandinKubelet(folder, follow=False) as kubelet:
            config = ServeConfig(
                discovery=DiscoveryConfig(kind=DiscoveryKind.FAKE, fake_config=config_path),
                device_plugin_dir=folder,
            )
            plugin = asyncio.create_task(serve(config, noop_tracing(), stop))
            request = (await kubelet.wait_registered(timeout=10)).request
            echo(
                f"2. the plugin registered: resource {request.resource_name}, version "
                f"{request.version}, endpoint {request.endpoint}, preferred allocation "
                f"{'offered' if request.options.get_preferred_allocation_available else 'not offered'}"
            )
            socket = folder / request.endpoint
            async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
                stream = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty())
                first = await stream.read()
                echo("3. the kubelet opens ListAndWatch and gets the full device list:")
                _show_devices(echo, first)
                async with PluginClient(socket) as client:
                    ids = [d.ID for d in first.devices]
                    chosen = await client.preferred(ids, [ids[-1]], 2)
                    echo(f"4. GetPreferredAllocation(size 2, must include {ids[-1]}) -> {chosen}")
                    allocated = await client.allocate(chosen)
                    echo(f"5. Allocate({len(chosen)} devices) -> envs {dict(allocated.envs)}")
                    echo(f"6. fault: marking {ids[1]} Unhealthy in the fake config")
                    _write_config(config_path, count, unhealthy=1)
                    update = await asyncio.wait_for(stream.read(), 5)
                    echo("   the stream delivers the new full list at once:")
                    _show_devices(echo, update)
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await client.allocate([ids[1]])
                        echo(
                            "   an Allocate of it at once is still granted: the kubelet may have "
                            "chosen it before it heard"
                        )
                    # The kubelet's lag the plugin forgives (server/kubelet_view.py), then no more.
                    await asyncio.sleep(ALLOCATE_GRACE_S)
                    try:
                        await client.allocate([ids[1]])
                    except grpc.aio.AioRpcError as err:
                        echo(
                            f"7. Allocate of the unhealthy device is refused: "
                            f"{err.code().name}: {err.details()}"
                        )
                    _write_config(config_path, count, unhealthy=None)
                    update = await asyncio.wait_for(stream.read(), 5)
                    healthy = sum(d.health == "Healthy" for d in update.devices)
                    echo(f"8. recovery: Healthy again in the file -> {healthy}/{len(update.devices)} healthy")
                stream.cancel()
            stop.set()
            await plugin
            left = [p.name for p in our_sockets(folder, config.resource_name)]
            echo(f"9. plugin stopped; plugin sockets left behind: {left or 'none'}")
