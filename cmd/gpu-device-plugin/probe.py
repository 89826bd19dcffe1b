"""`probe`: print what the kubelet would see from a running plugin."""

from __future__ import annotations

from pathlib import Path

import click
import grpc

from gpu_device_plugin.server.client import PluginClient, find_plugin_socket


async def run_probe(
    socket_path: Path | None,
    plugin_dir: Path,
    resource_name: str,
    preferred: int | None,
    timeout: float,
    *,
    serving_only: bool = False,
) -> bool:
    path = socket_path or find_plugin_socket(plugin_dir, resource_name)
    if path is None:
        click.echo(f"no answering socket for {resource_name} in {plugin_dir}", err=True)
        return False
    try:
        async with PluginClient(path, timeout=timeout) as client:
            view = await client.view()
            click.echo(f"socket: {path}")
            click.echo(
                f"options: pre_start_required={view.options.pre_start_required} "
                f"get_preferred_allocation_available={view.options.get_preferred_allocation_available}"
            )
            for device in view.devices:
                numa = ",".join(str(n.ID) for n in device.topology.nodes) or "-"
                click.echo(f"device {device.ID} {device.health} numa={numa}")
            if preferred is not None:
                healthy = [d.ID for d in view.devices if d.health == "Healthy"]
                chosen = await client.preferred(healthy, [], preferred)
                click.echo(f"preferred allocation of {preferred}: {', '.join(chosen)}")
    except (grpc.aio.AioRpcError, ConnectionError) as err:
        detail = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
        click.echo(f"plugin at {path} did not answer: {detail}", err=True)
        return False
    if view.unhealthy:
        click.echo(f"unhealthy: {', '.join(view.unhealthy)}", err=True)
        return serving_only
    click.echo(f"ok: {len(view.devices)} device(s), all healthy")
    return True
