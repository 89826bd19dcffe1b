"""The real `gpu-device-plugin serve` process: signals, exit codes, logs, sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from gpu_device_plugin.server.sockets import our_sockets
from support.kubelet import KubeletSim
from support.process import serve_argv


async def start_serve(plugin_dir: Path, config: Path, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *serve_argv(config, plugin_dir, *extra),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "OTEL_SDK_DISABLED": "true"},
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_within_two_seconds_and_removes_socket(
    kubelet: KubeletSim, fake_config: Path, signum: signal.Signals
) -> None:
    process = await start_serve(kubelet.folder, fake_config)
    registration = await kubelet.wait_registered(timeout=15)
    assert (kubelet.folder / registration.request.endpoint).exists()
    started = time.monotonic()
    process.send_signal(signum)
    code = await asyncio.wait_for(process.wait(), 5)
    assert code == 0
    assert time.monotonic() - started < 2.0
    assert our_sockets(kubelet.folder, "example.com/gpu") == []
    await asyncio.wait_for(registration.stream_task, 2)


async def test_json_logs_one_line_per_lifecycle_event(kubelet: KubeletSim, fake_config: Path) -> None:
    process = await start_serve(kubelet.folder, fake_config, "--log-format", "json")
    await kubelet.wait_registered(timeout=15)
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 5)
    entries = [json.loads(line) for line in stderr.decode().splitlines()]
    messages = [e["msg"] for e in entries]
    assert any(m.startswith("discovered 8 device(s)") for m in messages)
    assert any(m.startswith("serving at ") for m in messages)
    assert any(m.startswith("registered as example.com/gpu") for m in messages)
    assert all({"time", "level", "logger", "msg"} <= e.keys() for e in entries)
