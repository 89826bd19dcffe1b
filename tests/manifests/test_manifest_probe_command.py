"""The DaemonSet's probe commands, exactly as rendered, against a real plugin and the test kubelet.

A probe that failed on an unhealthy GPU would make the kubelet restart the
plugin (liveness) or stall rolling updates (readiness); one that passed with
nothing serving would hide a dead plugin. Both are checked with the command
lines and the environment the overlays give the container.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from testsupport.fakegpus import write_fake_config
from testsupport.manifests import OVERLAYS, env_of, only, render_overlay

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def _probe_commands() -> list[tuple[tuple[str, ...], dict[str, str]]]:
    """Every distinct probe command of every overlay, with its container's literal GPU_DP_* env."""
    commands: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], dict[str, str]] = {}
    for overlay in OVERLAYS:
        (container,) = only(render_overlay(overlay), "DaemonSet")["spec"]["template"]["spec"]["containers"]
        env = {
            name: entry["value"]
            for name, entry in env_of(container).items()
            if name.startswith("GPU_DP_") and "value" in entry
        }
        for probe in PROBES:
            command = tuple(container[probe]["exec"]["command"])
            commands[(command, tuple(sorted(env.items())))] = env
    return [(command, env) for (command, _), env in commands.items()]


async def _run(command: tuple[str, ...], env: dict[str, str], plugin_dir: Path) -> tuple[int, str]:
    assert command[0] == "gpu-device-plugin"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GPU_DP_")}
    # The container's environment, but the test kubelet's folder for the node's.
    full_env = {**clean, **env, "GPU_DP_DEVICE_PLUGIN_DIR": str(plugin_dir)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpu_device_plugin.cli",
        *command[1:],
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode()


async def test_probes_pass_while_serving_even_with_an_unhealthy_gpu(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    commands = _probe_commands()
    assert commands
    # One plugin per resource the overlays advertise (prod's nvidia.com/gpu, the others'
    # example.com/gpu), each probed with its overlay's environment.
    resources = sorted({env["GPU_DP_RESOURCE_NAME"] for _, env in commands})
    for resource in resources:
        start_plugin(fake_config, resource_name=resource)
    await kubelet.wait_registered(count=len(resources))
    write_fake_config(fake_config, unhealthy=(3,))
    for registration in kubelet.registrations:
        await kubelet.wait_for(lambda r=registration: r.latest.devices[3].health == "Unhealthy", 2)
    for command, env in commands:
        code, out = await _run(command, env, kubelet.plugin_dir)
        assert code == 0, f"{' '.join(command)} failed with an unhealthy GPU:\n{out}"


async def test_probes_fail_when_nothing_serves(plugin_dir: Path) -> None:
    for command, env in _probe_commands():
        code, out = await _run(command, env, plugin_dir)
        assert code == 1, f"{' '.join(command)} passed with no plugin:\n{out}"
        assert "no answering socket" in out
