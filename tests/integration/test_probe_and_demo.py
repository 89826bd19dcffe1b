"""`probe` against a running plugin and `demo` as a user runs them."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from gpu_device_plugin.backends.fake import health as fake_health
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.client import CHECKS_DEGRADED, CHECKS_OK, PluginClient
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.telemetry.metrics import Metrics
from testsupport.fakegpus import write_fake_config
from testsupport.scrape import scrape, value
from testsupport.waiting import eventually

DEGRADED_GAUGE = "gpu_device_plugin_health_checks_degraded"


async def run_cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpu_device_plugin.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode()


async def test_probe_passes_when_healthy_and_fails_when_not(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    start_plugin(fake_config)
    registration = await kubelet.wait_registered()
    folder = str(kubelet.plugin_dir)
    code, out = await run_cli("probe", "--device-plugin-dir", folder, "--preferred", "2")
    assert code == 0, out
    assert f"device {fake_uuid(7)} Healthy numa=1" in out
    assert f"preferred allocation of 2: {fake_uuid(0)}, {fake_uuid(1)}" in out
    write_fake_config(fake_config, unhealthy=(2,))
    await kubelet.wait_for(lambda: registration.latest.devices[2].health == "Unhealthy", 2)
    code, out = await run_cli("probe", "--device-plugin-dir", folder)
    assert code == 1
    assert f"unhealthy: {fake_uuid(2)}" in out
    # A liveness probe: the plugin answers, so it is alive; a restart would not heal the GPU.
    code, out = await run_cli("probe", "--device-plugin-dir", folder, "--serving-only")
    assert code == 0, out
    assert f"unhealthy: {fake_uuid(2)}" in out


async def until_checks(socket: Path, wanted: str, timeout: float = 10.0) -> None:
    """Ask the plugin's grpc.health.v1 service until it answers `wanted` (a restart takes a backoff)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with PluginClient(socket) as client:
        while (said := await client.health_checks()) != wanted:
            assert loop.time() < deadline, f"health checks still {said!r}, not {wanted!r}"
            await asyncio.sleep(0.01)


async def test_probe_and_metrics_show_degraded_health_checks_until_they_run_again(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = [True]
    reread = fake_health.FakeFileReader.reread

    def failing_reread(self: fake_health.FakeFileReader) -> None:
        if broken[0]:
            raise RuntimeError("the fake file watch broke")
        reread(self)

    monkeypatch.setattr(fake_health.FakeFileReader, "reread", failing_reread)
    metrics = Metrics()
    start_plugin(fake_config, metrics=metrics, metrics_address="127.0.0.1:0")
    registration = await kubelet.wait_registered()
    socket = kubelet.plugin_dir / registration.request.endpoint
    folder = str(kubelet.plugin_dir)

    await until_checks(socket, CHECKS_DEGRADED)
    await asyncio.wait_for(metrics.listening.wait(), 5)
    assert metrics.url is not None
    assert value(await scrape(metrics.url), DEGRADED_GAUGE, source="fake-file") == 1
    code, out = await run_cli("probe", "--device-plugin-dir", folder)
    assert code == 1, out
    assert "health checks: DEGRADED" in out
    # Still serving: a liveness probe holds (restarting the plugin is the loop's own job).
    code, out = await run_cli("probe", "--device-plugin-dir", folder, "--serving-only")
    assert code == 0, out
    assert all(d.health == "Healthy" for d in registration.latest.devices), "last known health kept"

    broken[0] = False
    await until_checks(socket, CHECKS_OK)
    await eventually(
        lambda: metrics.registry.get_sample_value(DEGRADED_GAUGE, {"source": "fake-file"}) == 0,
        what="the gauge back at 0",
    )
    code, out = await run_cli("probe", "--device-plugin-dir", folder)
    assert code == 0, out
    assert "health checks: running" in out


async def test_serving_only_probe_still_fails_when_nothing_answers(plugin_dir: Path) -> None:
    code, out = await run_cli("probe", "--device-plugin-dir", str(plugin_dir), "--serving-only")
    assert code == 1
    assert "no answering socket" in out


async def test_probe_fails_when_no_plugin_answers(plugin_dir: Path) -> None:
    code, out = await run_cli("probe", "--device-plugin-dir", str(plugin_dir))
    assert code == 1
    assert "no answering socket for example.com/gpu" in out


async def test_demo_tells_the_whole_story() -> None:
    code, out = await run_cli("demo")
    assert code == 0, out
    for step in (
        "2. the plugin registered: resource example.com/gpu, version v1beta1",
        "3. the kubelet opens ListAndWatch",
        "4. GetPreferredAllocation(size 2",
        "5. Allocate(2 devices) -> envs {'NVIDIA_VISIBLE_DEVICES': 'GPU-",
        "Unhealthy",
        "7. Allocate of the unhealthy device is refused: FAILED_PRECONDITION",
        "8/8 healthy",
        "plugin sockets left behind: none",
    ):
        assert step in out, f"missing {step!r} in:\n{out}"
