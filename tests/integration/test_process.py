"""The real `gpu-device-plugin serve` process: signals, exit codes, logs, sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.server.sockets import our_sockets
from testsupport.process import serve_argv


async def start_serve(plugin_dir: Path, config: Path, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *serve_argv(config, plugin_dir, *extra),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "OTEL_SDK_DISABLED": "true"},
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_within_two_seconds_and_removes_socket(
    kubelet: StandinKubelet, fake_config: Path, signum: signal.Signals
) -> None:
    process = await start_serve(kubelet.plugin_dir, fake_config)
    registration = await kubelet.wait_registered(timeout=15)
    assert (kubelet.plugin_dir / registration.request.endpoint).exists()
    started = time.monotonic()
    process.send_signal(signum)
    code = await asyncio.wait_for(process.wait(), 5)
    assert code == 0
    assert time.monotonic() - started < 2.0
    assert our_sockets(kubelet.plugin_dir, "example.com/gpu") == []
    await asyncio.wait_for(registration.stream_task, 2)


async def test_json_logs_one_line_per_lifecycle_event(kubelet: StandinKubelet, fake_config: Path) -> None:
    process = await start_serve(kubelet.plugin_dir, fake_config, "--log-format", "json")
    await kubelet.wait_registered(timeout=15)
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 5)
    entries = [json.loads(line) for line in stderr.decode().splitlines()]
    messages = [e["msg"] for e in entries]
    assert any(m.startswith("discovered 8 device(s)") for m in messages)
    assert any(m.startswith("serving at ") for m in messages)
    assert any(m.startswith("registered as example.com/gpu") for m in messages)
    assert all({"time", "level", "logger", "msg"} <= e.keys() for e in entries)


async def read_until(stream: asyncio.StreamReader, phrase: str, timeout: float = 5.0) -> list[str]:
    """Lines of stderr up to and including the first that holds `phrase`."""

    async def lines() -> list[str]:
        seen = []
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"stderr ended before {phrase!r}: {seen}")
            seen.append(line)
            if phrase in line:
                return seen

    return await asyncio.wait_for(lines(), timeout)


SECOND_SIGNAL_CASES = [
    pytest.param((signal.SIGTERM, signal.SIGTERM), False, id="SIGTERM-SIGTERM-back-to-back"),
    pytest.param((signal.SIGTERM, signal.SIGTERM), True, id="SIGTERM-then-SIGTERM-during-clean-up"),
    pytest.param((signal.SIGINT, signal.SIGTERM), True, id="SIGINT-then-SIGTERM-during-clean-up"),
    pytest.param((signal.SIGTERM, signal.SIGINT), False, id="SIGTERM-SIGINT-back-to-back"),
]


@pytest.mark.parametrize(("signals", "wait_for_shutdown"), SECOND_SIGNAL_CASES)
@pytest.mark.parametrize("attempt", range(3))
async def test_a_second_signal_never_skips_clean_up(
    kubelet: StandinKubelet,
    fake_config: Path,
    signals: tuple[signal.Signals, signal.Signals],
    wait_for_shutdown: bool,
    attempt: int,
) -> None:
    process = await start_serve(kubelet.plugin_dir, fake_config)
    assert process.stderr is not None
    registration = await kubelet.wait_registered(timeout=15)
    first, second = signals
    started = time.monotonic()
    process.send_signal(first)
    if wait_for_shutdown:
        # The kubelet holds its stream open, so the clean-up waits out the stream grace:
        # the second signal lands in the middle of it.
        await read_until(process.stderr, f"{first.name} received: shutting down")
    process.send_signal(second)
    _, rest = await asyncio.wait_for(process.communicate(), 5)
    assert process.returncode == 0, rest.decode()
    assert time.monotonic() - started < 2.0
    assert our_sockets(kubelet.plugin_dir, "example.com/gpu") == []
    assert "Traceback" not in rest.decode()
    await asyncio.wait_for(registration.stream_task, 2)
