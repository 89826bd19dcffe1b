"""A part of the health path that dies: logged, counted, traced, restarted; never silent."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opentelemetry.trace import StatusCode

from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.health.status import HealthCheckStatus
from gpu_device_plugin.health.supervise import keep_running
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.metrics import Metrics
from testsupport.spans import SpanRecorder

QUICK = Backoff(initial_s=0.01, cap_s=0.05, jitter=0)
GAUGE = "gpu_device_plugin_health_checks_degraded"


def gauge(metrics: Metrics, source: str) -> float | None:
    return metrics.registry.get_sample_value(GAUGE, {"source": source})


async def changes(status: HealthCheckStatus, count: int) -> list[dict[str, str]]:
    """The next `count` states the status passes through (after the current one)."""
    seen: list[dict[str, str]] = []
    watch = status.cell.watch()
    await anext(watch)
    while len(seen) < count:
        seen.append(dict(await asyncio.wait_for(anext(watch), 3)))
    return seen


async def test_a_part_that_crashes_is_degraded_then_restored_when_it_runs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    recorder = SpanRecorder()
    status = HealthCheckStatus(["probes"], metrics=metrics, tracer=recorder.provider.get_tracer("t"))
    assert gauge(metrics, "probes") == 0, "the series exists before anything fails"
    runs: list[int] = []
    second_up = asyncio.Event()

    async def part(ready: asyncio.Event) -> None:
        runs.append(len(runs))
        ready.set()
        if len(runs) == 1:
            await asyncio.sleep(0)  # up for a moment, then a bug
            raise KeyError("GPU-x")
        second_up.set()
        await asyncio.Event().wait()  # runs until cancelled

    caplog.set_level(logging.ERROR)
    watching = asyncio.create_task(changes(status, 2))
    task = asyncio.create_task(keep_running("probes", part, status, backoff=QUICK))
    try:
        assert await watching == [{"probes": "KeyError: 'GPU-x'"}, {}]
        await asyncio.wait_for(second_up.wait(), 3)
    finally:
        task.cancel()
    assert gauge(metrics, "probes") == 0
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == "health checking degraded: probes stopped: KeyError: 'GPU-x'"
    assert error.exc_info is not None
    spans = await recorder.wait_for(lambda s: len(s) == 2)
    degraded, restored = spans
    assert degraded.name == "HealthChecksDegraded"
    assert degraded.status.status_code is StatusCode.ERROR
    assert degraded.attributes is not None
    assert degraded.attributes[attrs.HEALTH_SOURCE] == "probes"
    assert [e.name for e in degraded.events] == ["exception"]
    assert restored.name == "HealthChecksRestored"


async def test_the_gauge_is_one_while_degraded() -> None:
    metrics = Metrics()
    status = HealthCheckStatus(["events"], metrics=metrics)
    status.degrade("events", RuntimeError("down"))
    assert gauge(metrics, "events") == 1
    assert not status.ok
    status.degrade("events", RuntimeError("down again"))
    assert status.degraded == {"events": "RuntimeError: down again"}
    status.restore("events")
    assert gauge(metrics, "events") == 0
    assert status.ok


async def test_a_part_that_returns_is_done_not_degraded() -> None:
    status = HealthCheckStatus(["events"])

    async def part(ready: asyncio.Event) -> None:
        return  # nothing to watch here

    await asyncio.wait_for(keep_running("events", part, status, backoff=QUICK), 3)
    assert status.ok


async def test_cancelling_stops_it_without_a_degraded_mark() -> None:
    status = HealthCheckStatus(["loop"])
    up = asyncio.Event()

    async def part(ready: asyncio.Event) -> None:
        ready.set()
        up.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(keep_running("loop", part, status, backoff=QUICK))
    await asyncio.wait_for(up.wait(), 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert status.ok
