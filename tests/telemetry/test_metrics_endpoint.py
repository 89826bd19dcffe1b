"""The metrics endpoint binds when made: a taken port is bad configuration, and nothing is left running."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.error
import urllib.request

import pytest

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.telemetry.metrics import Metrics, MetricsEndpoint


def test_a_taken_port_is_a_config_error_naming_the_address() -> None:
    threads = set(threading.enumerate())
    metrics = Metrics()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"

        with pytest.raises(ConfigError) as caught:
            MetricsEndpoint(metrics, address)

    assert caught.value.field == "metrics-address"
    assert caught.value.reason == f"cannot listen on {address}: Address already in use"
    assert metrics.url is None
    assert not metrics.listening.is_set()
    assert set(threading.enumerate()) <= threads


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


async def test_it_serves_from_construction_until_closed_and_closing_twice_is_harmless() -> None:
    metrics = Metrics()
    endpoint = MetricsEndpoint(metrics, "127.0.0.1:0")
    assert metrics.listening.is_set()
    assert metrics.url == endpoint.url

    assert b"gpu_device_plugin_build_info" in await asyncio.to_thread(scrape, endpoint.url)

    await endpoint.close()
    await endpoint.close()
    assert metrics.url is None
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        await asyncio.to_thread(scrape, endpoint.url)
