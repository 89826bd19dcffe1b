"""`probe`: print what the kubelet would see from a running plugin."""

from __future__ import annotations

from pathlib import Path

import click
import grpc

from gpu_device_plugin.cli.oneline import one_line
from gpu_device_plugin.server.client import CHECKS_DEGRADED, PluginClient, find_plugin_socket
from gpu_device_plugin.server.sockets import answers, our_sockets, socket_prefix


def not_serving(path: Path) -> str | None:
    """Why nothing can answer at `path`, or None when something accepts connections there."""
    if not path.exists():
        return "no such file (the plugin is not running, or serves under another name: leave out --socket)"
    if not path.is_socket():
        return "it is not a socket"
    if not answers(path):
        return "the socket exists but nothing accepts connections (left by a plugin that was killed?)"
    return None


def not_found(plugin_dir: Path, resource_name: str) -> str:
    """The one line for a folder in which no socket of ours answers: what was searched, what was found."""
    head = f"nothing is serving at {plugin_dir}: no answering socket for {resource_name}"
    if not plugin_dir.exists():
        return f"{head}: the folder does not exist (check --device-plugin-dir)"
    if not plugin_dir.is_dir():
        return f"{head}: it is not a folder (check --device-plugin-dir)"
    pattern = f"{socket_prefix(resource_name)}-*.sock"
    found = len(our_sockets(plugin_dir, resource_name))
    if found == 0:
        return f"{head} (looked for {pattern}: none there; is the plugin running, with this --resource-name?)"
    return f"{head} ({found} match {pattern}, none accepting connections: left by a plugin that was killed?)"


_CHECKS_SAID = {
    "ok": "health checks: running",
    "degraded": "health checks: DEGRADED: a part has stopped and is being restarted; devices keep their "
    "last known health (the plugin's log says why; metric gpu_device_plugin_health_checks_degraded)",
    "off": "health checks: off",
    "unknown": "health checks: unknown (the plugin does not serve grpc.health.v1)",
}


async def run_probe(
    socket_path: Path | None,
    plugin_dir: Path,
    resource_name: str,
    preferred: int | None,
    timeout: float,
    *,
    serving_only: bool = False,
) -> bool:
    if socket_path is not None:
        problem = not_serving(socket_path)
        if problem is not None:
            click.echo(f"gpu-device-plugin: nothing is serving at {socket_path}: {problem}", err=True)
            return False
    path = socket_path or find_plugin_socket(plugin_dir, resource_name)
    if path is None:
        click.echo(f"gpu-device-plugin: {not_found(plugin_dir, resource_name)}", err=True)
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
            checks = await client.health_checks()
            click.echo(_CHECKS_SAID[checks], err=checks == CHECKS_DEGRADED)
            if preferred is not None:
                healthy = [d.ID for d in view.devices if d.health == "Healthy"]
                chosen = await client.preferred(healthy, [], preferred)
                click.echo(f"preferred allocation of {preferred}: {', '.join(chosen)}")
    except (grpc.aio.AioRpcError, ConnectionError) as err:
        detail = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
        click.echo(f"gpu-device-plugin: plugin at {path} did not answer: {one_line(detail)}", err=True)
        return False
    if view.unhealthy:
        click.echo(f"unhealthy: {', '.join(view.unhealthy)}", err=True)
        return serving_only
    if checks == CHECKS_DEGRADED:
        # Serving (liveness holds), but not everything is well: a plain probe says so.
        return serving_only
    click.echo(f"ok: {len(view.devices)} device(s), all healthy")
    return True
