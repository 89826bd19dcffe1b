"""SnapshotCell: the latest-value cell ListAndWatch streams from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gpu_device_plugin.inventory import SnapshotCell

WAIT = 1.0  # seconds; only ever reached when a test is about to fail


async def next_value(stream: AsyncIterator[str]) -> str:
    return await asyncio.wait_for(anext(stream), WAIT)


async def settle() -> None:
    # Let every ready task run to its next await; yields control, does not wait for time.
    for _ in range(5):
        await asyncio.sleep(0)


def waiters(cell: SnapshotCell[str]) -> int:
    return len(cell._changed._waiters)  # type: ignore[attr-defined]


async def test_watch_yields_the_current_value_at_once() -> None:
    cell = SnapshotCell("v0")
    stream = cell.watch()
    assert await next_value(stream) == "v0"
    await stream.aclose()


async def test_watch_yields_each_newer_value() -> None:
    cell = SnapshotCell("v0")
    stream = cell.watch()
    assert await next_value(stream) == "v0"

    pending = asyncio.ensure_future(anext(stream))
    await settle()
    assert not pending.done()
    assert cell.publish("v1") is True
    assert await asyncio.wait_for(pending, WAIT) == "v1"

    cell.publish("v2")
    assert await next_value(stream) == "v2"
    await stream.aclose()


async def test_publish_between_reads_is_not_lost() -> None:
    cell = SnapshotCell("v0")
    stream = cell.watch()
    assert await next_value(stream) == "v0"
    # The consumer is busy (not awaiting) while the value changes.
    cell.publish("v1")
    assert await next_value(stream) == "v1"
    await stream.aclose()


async def test_equal_publish_is_ignored() -> None:
    cell = SnapshotCell(("GPU-0", "Healthy"))
    stream = cell.watch()
    await next_value(stream)
    pending = asyncio.ensure_future(anext(stream))

    assert cell.publish(("GPU-0", "Healthy")) is False
    await settle()

    assert cell.version == 0
    assert not pending.done()
    cell.publish(("GPU-0", "Unhealthy"))
    assert await asyncio.wait_for(pending, WAIT) == ("GPU-0", "Unhealthy")
    assert cell.version == 1
    await stream.aclose()


async def test_slow_watcher_skips_to_the_latest_value() -> None:
    cell = SnapshotCell("v0")
    stream = cell.watch()
    assert await next_value(stream) == "v0"

    for value in ("v1", "v2", "v3"):
        cell.publish(value)

    assert await next_value(stream) == "v3"
    assert cell.version == 3
    pending = asyncio.ensure_future(anext(stream))
    await settle()
    assert not pending.done()  # nothing newer than v3 to deliver
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)


async def test_every_watcher_is_woken() -> None:
    cell = SnapshotCell("v0")
    streams = [cell.watch() for _ in range(3)]
    assert [await next_value(s) for s in streams] == ["v0"] * 3
    pending = [asyncio.ensure_future(anext(s)) for s in streams]
    await settle()
    assert waiters(cell) == 3

    cell.publish("v1")

    assert await asyncio.wait_for(asyncio.gather(*pending), WAIT) == ["v1"] * 3
    for stream in streams:
        await stream.aclose()


async def test_cancelled_watcher_leaves_no_waiter() -> None:
    cell = SnapshotCell("v0")
    stream = cell.watch()
    await next_value(stream)
    pending = asyncio.ensure_future(anext(stream))
    await settle()
    assert waiters(cell) == 1

    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending

    assert waiters(cell) == 0
    # The cell still works for everyone else.
    other = cell.watch()
    assert await next_value(other) == "v0"
    cell.publish("v1")
    assert await next_value(other) == "v1"
    await other.aclose()


async def test_many_cancelled_watchers_leave_no_waiters() -> None:
    cell = SnapshotCell(0)
    for _ in range(100):
        stream = cell.watch()
        await asyncio.wait_for(anext(stream), WAIT)
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
    assert waiters(cell) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("publishes", "version", "expected"),
    [
        pytest.param([], 0, "v0", id="already-there"),
        pytest.param(["v1"], 1, "v1", id="one-publish"),
        pytest.param(["v1", "v2"], 1, "v2", id="past-the-version"),
    ],
)
async def test_wait_for_version(publishes: list[str], version: int, expected: str) -> None:
    cell = SnapshotCell("v0")
    for value in publishes:
        cell.publish(value)
    assert await asyncio.wait_for(cell.wait_for_version(version), WAIT) == expected


async def test_wait_for_version_wakes_on_publish() -> None:
    cell = SnapshotCell("v0")
    waiting = asyncio.ensure_future(cell.wait_for_version(2))
    cell.publish("v1")
    await settle()
    assert not waiting.done()
    cell.publish("v2")
    assert await asyncio.wait_for(waiting, WAIT) == "v2"
