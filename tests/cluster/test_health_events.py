"""Health Events on the Node, against a fake API server through the real kubernetes client.

What `kubectl describe node` would show: one Warning GPUUnhealthy per fault
(device, XID, reason), one Normal GPURecovered per recovery, repeats folded
into a count, and no flood when a GPU flaps.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cluster_support import EXACT_BACKOFF, NODE, Sleeps, fake_inventory, running, session_for

from gpu_device_plugin.cluster.events import (
    EVENT_BURST,
    EVENT_NAMESPACE,
    EVENT_REFILL_S,
    RECOVERED,
    UNHEALTHY,
    HealthEventRecorder,
    health_events,
)
from gpu_device_plugin.cluster.token_bucket import TokenBucket
from gpu_device_plugin.inventory import Health, Inventory, SnapshotCell
from testsupport.fakeapi import DROP, FakeApiServer, node
from testsupport.waiting import eventually

XID79 = "XID 79 (GPU has fallen off the bus)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class WallClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def api() -> FakeApiServer:
    with FakeApiServer() as server:
        server.nodes[NODE] = node(NODE, uid="6b3a9d0e-node-uid")
        yield server


def recorder(
    cell: SnapshotCell[Inventory], api: FakeApiServer, folder: Path, **kwargs: Any
) -> HealthEventRecorder:
    kwargs.setdefault("sleep", Sleeps())
    return HealthEventRecorder(
        cell=cell,
        session=session_for(api, folder),
        node_name=NODE,
        backoff=EXACT_BACKOFF,
        now=WallClock(),
        **kwargs,
    )


def set_health(cell: SnapshotCell[Inventory], index: int, healthy: bool, reason: str = XID79) -> str:
    device = cell.value.devices[index]
    cell.publish(
        cell.value.with_health({device.id: (Health.HEALTHY, "") if healthy else (Health.UNHEALTHY, reason)})
    )
    return device.id


def handled(api: FakeApiServer, worker: HealthEventRecorder) -> int:
    """Events sent (created or bumped) plus those dropped: one per transition the recorder saw."""
    return len(api.calls("POST")) + len(api.calls("PATCH", "/api/v1/namespaces")) + worker.dropped


async def test_a_fault_and_its_recovery_become_two_events_on_the_node(
    api: FakeApiServer, tmp_path: Path
) -> None:
    cell = SnapshotCell(fake_inventory(count=4))
    worker = recorder(cell, api, tmp_path)
    async with running(worker.run()):
        await worker.watching.wait()
        device = set_health(cell, 2, healthy=False)
        await api.until(lambda: len(api.events) == 1)
        set_health(cell, 2, healthy=True)
        await api.until(lambda: len(api.events) == 2)
    warning, normal = sorted(api.event_objects(), key=lambda e: e["metadata"]["name"])
    assert warning["type"] == "Warning"
    assert warning["reason"] == UNHEALTHY
    assert device in warning["message"]
    assert "XID 79" in warning["message"]
    assert "fallen off the bus" in warning["message"]
    assert warning["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": NODE,
        "uid": "6b3a9d0e-node-uid",
    }
    assert warning["source"] == {"component": "gpu-device-plugin", "host": NODE}
    assert warning["reportingComponent"] == "gpu-device-plugin"
    assert warning["count"] == 1
    assert warning["firstTimestamp"] == warning["lastTimestamp"]
    assert warning["metadata"]["namespace"] == EVENT_NAMESPACE == "default"
    assert warning["metadata"]["name"].startswith(NODE + ".")
    assert normal["type"] == "Normal"
    assert normal["reason"] == RECOVERED
    assert device in normal["message"]
    # The node's uid is read once, not per Event.
    assert len(api.calls("GET")) == 1


async def test_devices_unhealthy_at_start_are_no_transition(api: FakeApiServer, tmp_path: Path) -> None:
    cell = SnapshotCell(fake_inventory(devices=[{"health": "Unhealthy"}, {}]))
    worker = recorder(cell, api, tmp_path)
    async with running(worker.run()):
        await worker.watching.wait()
        set_health(cell, 1, healthy=False, reason="probe failed: GPU is lost")
        await api.until(lambda: len(api.events) == 1)
    (only,) = api.event_objects()
    assert cell.value.devices[1].id in only["message"]
    assert "GPU is lost" in only["message"]


async def test_the_same_fault_again_bumps_the_count(api: FakeApiServer, tmp_path: Path) -> None:
    cell = SnapshotCell(fake_inventory(count=2))
    worker = recorder(cell, api, tmp_path)
    async with running(worker.run()):
        await worker.watching.wait()
        for step in range(6):
            set_health(cell, 0, healthy=step % 2 == 1)
            await eventually(lambda: handled(api, worker) == step + 1)  # noqa: B023 - awaited at once
        # A different reason on the same device is a different Event.
        set_health(cell, 0, healthy=False, reason="XID 48 (double-bit ECC error)")
        await api.until(lambda: len(api.events) == 3)
    by_kind = {(e["reason"], "XID 48" in e["message"]): e for e in api.event_objects()}
    unhealthy, recovered = by_kind[(UNHEALTHY, False)], by_kind[(RECOVERED, False)]
    assert unhealthy["count"] == 3
    assert recovered["count"] == 3
    assert by_kind[(UNHEALTHY, True)]["count"] == 1
    assert unhealthy["lastTimestamp"] > unhealthy["firstTimestamp"]
    assert len(api.calls("POST")) == 3
    assert len(api.calls("PATCH")) == 4
    assert all(r.content_type == "application/merge-patch+json" for r in api.calls("PATCH"))


async def test_an_expired_event_is_created_anew(api: FakeApiServer, tmp_path: Path) -> None:
    cell = SnapshotCell(fake_inventory(count=1))
    worker = recorder(cell, api, tmp_path)
    async with running(worker.run()):
        await worker.watching.wait()
        set_health(cell, 0, healthy=False)
        await api.until(lambda: len(api.events) == 1)
        set_health(cell, 0, healthy=True)
        await api.until(lambda: len(api.events) == 2)
        api.expire_events()
        set_health(cell, 0, healthy=False)
        await api.until(lambda: len(api.events) == 1)
    (again,) = api.event_objects()
    assert again["count"] == 1
    assert [r.method for r in api.requests if "events" in r.path] == ["POST", "POST", "PATCH", "POST"]


async def test_a_flapping_gpu_is_rate_limited(
    api: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    cell = SnapshotCell(fake_inventory(count=1))
    worker = recorder(cell, api, tmp_path, bucket=TokenBucket(burst=3, refill_s=20.0, clock=clock))
    with caplog.at_level(logging.WARNING, logger="gpu_device_plugin.cluster"):
        async with running(worker.run()):
            await worker.watching.wait()
            for step in range(6):
                set_health(cell, 0, healthy=step % 2 == 1)
                await eventually(lambda: handled(api, worker) == step + 1)  # noqa: B023 - awaited at once
            assert worker.dropped == 3
            clock.now += 20.0  # one token back
            set_health(cell, 0, healthy=False)
            await eventually(lambda: handled(api, worker) == 7)
            set_health(cell, 0, healthy=True)
            await eventually(lambda: handled(api, worker) == 8)
    assert worker.dropped == 4
    assert len(api.calls("POST")) + len(api.calls("PATCH")) == 4
    limited = [r for r in caplog.records if "rate limit" in r.getMessage()]
    assert len(limited) == 2  # once per episode of limiting, not per dropped Event


def test_the_default_limit_lets_a_whole_node_fail_and_recover() -> None:
    clock = Clock()
    bucket = TokenBucket(burst=EVENT_BURST, refill_s=EVENT_REFILL_S, clock=clock)
    assert all(bucket.take() for _ in range(16))  # 8 GPUs down and back up
    assert sum(bucket.take() for _ in range(100)) == EVENT_BURST - 16
    clock.now += 3 * EVENT_REFILL_S
    assert sum(bucket.take() for _ in range(100)) == 3  # then one per refill period


@pytest.mark.parametrize(
    ("status", "logged"), [(403, "forbidden (403)"), (500, "server error (500)"), (DROP, "unreachable")]
)
async def test_failed_posts_are_retried_then_land(
    api: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int, logged: str
) -> None:
    api.fail("POST", f"/api/v1/namespaces/{EVENT_NAMESPACE}/events", status, times=3)
    sleeps = Sleeps()
    cell = SnapshotCell(fake_inventory(count=1))
    worker = recorder(cell, api, tmp_path, sleep=sleeps)
    with caplog.at_level(logging.WARNING, logger="gpu_device_plugin.cluster"):
        async with running(worker.run()):
            await worker.watching.wait()
            set_health(cell, 0, healthy=False)
            await api.until(lambda: len(api.events) == 1)
    assert sleeps.delays == [1.0, 2.0, 4.0]
    assert len(caplog.records) == 1
    assert logged in caplog.records[0].getMessage()
    # Every try named the same Event: a create that landed but timed out cannot duplicate it.
    assert len({r.body["metadata"]["name"] for r in api.calls("POST")}) == 1


async def test_an_event_that_cannot_be_sent_is_given_up_and_the_next_one_goes(
    api: FakeApiServer, tmp_path: Path
) -> None:
    api.fail("POST", f"/api/v1/namespaces/{EVENT_NAMESPACE}/events", 403, times=5)
    cell = SnapshotCell(fake_inventory(count=2))
    worker = recorder(cell, api, tmp_path)
    async with running(worker.run()):
        await worker.watching.wait()
        set_health(cell, 0, healthy=False)
        await eventually(lambda: worker.dropped == 1, what="the first Event given up")
        set_health(cell, 1, healthy=False)
        await api.until(lambda: len(api.events) == 1)
    (landed,) = api.event_objects()
    assert cell.value.devices[1].id in landed["message"]


async def test_a_create_whose_answer_was_lost_is_not_duplicated(api: FakeApiServer, tmp_path: Path) -> None:
    # The first POST is stored but its answer lost; the retry of the same name gets 409.
    api.fail("POST", f"/api/v1/namespaces/{EVENT_NAMESPACE}/events", 500, applied=True)
    cell = SnapshotCell(fake_inventory(count=1))
    worker = recorder(cell, api, tmp_path)
    async with running(worker.run()):
        await worker.watching.wait()
        set_health(cell, 0, healthy=False)
        await api.until(lambda: len(api.calls("POST")) == 2)
        set_health(cell, 0, healthy=True)
        await api.until(lambda: len(api.events) == 2)
        set_health(cell, 0, healthy=False)
        await api.until(lambda: len(api.calls("PATCH")) == 1)
    (unhealthy,) = [e for e in api.event_objects() if e["reason"] == UNHEALTHY]
    assert unhealthy["count"] == 2


def test_transitions_are_diffed_between_snapshots() -> None:
    older = fake_inventory(count=3)
    ids = [d.id for d in older.devices]
    newer = older.with_health({ids[0]: (Health.UNHEALTHY, XID79), ids[2]: (Health.UNHEALTHY, "")})
    found = health_events(older, newer)
    assert [(e.reason, e.device_id, e.type) for e in found] == [
        (UNHEALTHY, ids[0], "Warning"),
        (UNHEALTHY, ids[2], "Warning"),
    ]
    assert "no reason given" in found[1].message
    back = health_events(newer, older)
    assert [(e.reason, e.type) for e in back] == [(RECOVERED, "Normal"), (RECOVERED, "Normal")]
    assert health_events(older, older) == []
