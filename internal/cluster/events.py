"""Kubernetes Events on the Node for device health transitions: a consumer of the SnapshotCell.

Consecutive snapshots are diffed; each device that turns Unhealthy gives a
Warning `GPUUnhealthy` (device, XID when there is one, reason), each that
turns Healthy again a Normal `GPURecovered`. Like the kubelet's recorder:
- the same device, reason and cause again bumps the existing Event's count and
  lastTimestamp (a merge patch) instead of adding an Event; an Event the API
  server has already expired (404) is created anew;
- a token bucket limits how many Events (new or bumped) one node sends, so a
  flapping GPU cannot flood the API server; what is dropped is still in the log
  line and metric every health change gets (health/publish.py);
- Events live in namespace `default`, as the kubelet's Node Events do (the API
  server requires it for an object without a namespace).
The same recorder sends the per-node config's Events (Warning `ConfigRejected`,
Normal `ConfigApplied`, issue 17) through `offer()`, with the same
deduplication, rate limit and retries; `watch_health=False` makes a recorder
that sends only what it is offered.
Diffing and queueing never wait on the API server: a sender drains a bounded
queue, retrying each Event a few times with backoff before giving it up.
Transitions published faster than this task runs are seen as their net
result (the cell keeps the latest value), which is all a reader can act on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.cluster.nodeapi import ClusterApiError, Failure
from gpu_device_plugin.cluster.offloop import off_loop
from gpu_device_plugin.cluster.outage_log import OutageLog
from gpu_device_plugin.cluster.session import ClusterSession
from gpu_device_plugin.cluster.token_bucket import TokenBucket
from gpu_device_plugin.inventory import Health, Inventory, SnapshotCell

log = logging.getLogger(__name__)

COMPONENT = "gpu-device-plugin"
EVENT_NAMESPACE = "default"
UNHEALTHY = "GPUUnhealthy"
RECOVERED = "GPURecovered"
CONFIG_REJECTED = "ConfigRejected"
CONFIG_APPLIED = "ConfigApplied"
# 25 at once covers every GPU of a node failing and recovering together; after
# that one Event per 20 s (the kubelet allows 25, then one per 5 minutes, per
# object, but it speaks for many objects, we for one).
EVENT_BURST = 25
EVENT_REFILL_S = 20.0
# An Event's message is bounded by the API server (1 KiB is what the kubelet keeps to).
MAX_MESSAGE = 1024
# Tries per Event (the first and retries) before it is given up.
EVENT_ATTEMPTS = 5
# Events waiting to be sent while the API server is slow; the oldest go first.
QUEUE_SIZE = 64
# How many distinct (device, reason, cause) the deduplication remembers.
DEDUP_CACHE = 256


@dataclass(frozen=True)
class HealthEvent:
    type: str  # Warning or Normal
    reason: str  # GPUUnhealthy or GPURecovered (or a config Event's reason)
    device_id: str  # what the Event is about: the device, or the config's name
    message: str
    cause: str  # the health reason; part of what makes two Events "the same"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.reason, self.device_id, self.cause)


def config_event(*, applied: bool, config: str, message: str) -> HealthEvent:
    """A ConfigApplied (Normal) or ConfigRejected (Warning) Event about config `config`."""
    message = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
    if applied:
        return HealthEvent("Normal", CONFIG_APPLIED, config, message, "")
    # The message is the cause: the same refusal again bumps the count, another is its own Event.
    return HealthEvent("Warning", CONFIG_REJECTED, config, message, message)


def health_events(older: Inventory, newer: Inventory) -> list[HealthEvent]:
    """The Events for the health transitions from `older` to `newer` (devices in both)."""
    events = []
    for change in older.health_changes(newer):
        device = newer.by_id[change.device_id]
        who = f"{device.id} (GPU {device.index}, {device.model})"
        if change.after is Health.UNHEALTHY:
            cause = change.reason or "no reason given"
            events.append(HealthEvent("Warning", UNHEALTHY, device.id, f"{who} is unhealthy: {cause}", cause))
        else:
            events.append(HealthEvent("Normal", RECOVERED, device.id, f"{who} is healthy again", ""))
    return events


@dataclass
class _Recorded:
    name: str
    count: int


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HealthEventRecorder:
    def __init__(
        self,
        *,
        cell: SnapshotCell[Inventory],
        session: ClusterSession,
        node_name: str,
        bucket: TokenBucket | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        attempts: int = EVENT_ATTEMPTS,
        watch_health: bool = True,
    ) -> None:
        self._cell = cell
        self._watch_health = watch_health
        self._session = session
        self._node = node_name
        self._bucket = bucket or TokenBucket(EVENT_BURST, EVENT_REFILL_S, time.monotonic)
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._now = now
        self._attempts = attempts
        self._queue: collections.deque[HealthEvent] = collections.deque(maxlen=QUEUE_SIZE)
        self._queued = asyncio.Event()
        self._recorded: collections.OrderedDict[tuple[str, str, str], _Recorded] = collections.OrderedDict()
        self._node_uid: str | None = None
        self._last_name_ns = 0
        self._limiting = False
        self._outage = OutageLog(f"events on node {node_name}", log)
        self.dropped = 0
        """Events not sent: rate-limited, pushed out of a full queue, or given up after retries."""
        self.watching = asyncio.Event()
        """Set once the first snapshot is taken: transitions after it are reported."""
        self.idle = asyncio.Event()
        """Set whenever nothing is queued or being sent (tests, benchmarks)."""
        self.idle.set()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                if self._watch_health:
                    group.create_task(self._watch(), name="node-events-watch")
                group.create_task(self._send(), name="node-events-send")
        except BaseExceptionGroup as failed:
            # One failing ends both; callers decide by the error itself (a ConfigError is exit 2).
            raise failed.exceptions[0]  # noqa: B904 - the group adds nothing

    async def _watch(self) -> None:
        older: Inventory | None = None
        async for newer in self._cell.watch():
            if older is not None:
                for event in health_events(older, newer):
                    self._offer(event)
            older = newer
            self.watching.set()

    def offer(self, event: HealthEvent) -> None:
        """Send `event` (rate-limited, deduplicated, retried like the health Events)."""
        self._offer(event)

    def _offer(self, event: HealthEvent) -> None:
        if not self._bucket.take():
            self.dropped += 1
            if not self._limiting:
                log.warning(
                    "node events: rate limit reached, dropping Events until it refills (%s)", event.message
                )
            self._limiting = True
            return
        self._limiting = False
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            log.warning("node events: queue full, dropping: %s", self._queue[0].message)
        self._queue.append(event)
        self.idle.clear()
        self._queued.set()

    async def _send(self) -> None:
        # Connect now rather than at the first fault: a kubeconfig that cannot be
        # loaded is reported at start (exit 2), not hours later.
        await self._session.api()
        while True:
            if not self._queue:
                self.idle.set()
                self._queued.clear()
                await self._queued.wait()
                continue
            await self._deliver(self._queue.popleft())

    async def _deliver(self, event: HealthEvent) -> None:
        name = self._new_name()  # fixed across retries: a create that landed but timed out is a 409
        for attempt in range(self._attempts):
            try:
                await self._record(event, name)
            except ClusterApiError as err:
                if attempt + 1 == self._attempts:
                    self.dropped += 1
                    log.warning(
                        "node events: giving up on %s %s after %d tries: %s",
                        event.reason,
                        event.device_id,
                        self._attempts,
                        err,
                    )
                    return
                delay = self._backoff.delay(attempt)
                self._outage.failed(err, delay)
                await self._sleep(delay)
            else:
                self._outage.succeeded()
                return

    def _new_name(self) -> str:
        # The kubelet's scheme: <object name>.<hex nanoseconds>, kept strictly increasing.
        self._last_name_ns = max(time.time_ns(), self._last_name_ns + 1)
        return f"{self._node[:230]}.{self._last_name_ns:x}"

    async def _record(self, event: HealthEvent, name: str) -> None:
        api = await self._session.api()
        if self._node_uid is None:
            node = await off_loop(lambda: api.get_node(self._node))
            self._node_uid = node.uid
        stamp = _timestamp(self._now())
        seen = self._recorded.get(event.key)
        if seen is not None:
            bump = {"count": seen.count + 1, "lastTimestamp": stamp, "message": event.message}
            try:
                await off_loop(lambda: api.patch_event(EVENT_NAMESPACE, seen.name, bump))
            except ClusterApiError as err:
                if err.failure is not Failure.NOT_FOUND:
                    raise
                del self._recorded[event.key]  # expired on the server: record it afresh
            else:
                seen.count += 1
                self._recorded.move_to_end(event.key)
                return
        body = self._event_body(event, name, stamp)
        try:
            await off_loop(lambda: api.create_event(EVENT_NAMESPACE, body))
        except ClusterApiError as err:
            if err.status != 409:  # 409: an earlier try of this very Event landed
                raise
        self._recorded[event.key] = _Recorded(name=name, count=1)
        while len(self._recorded) > DEDUP_CACHE:
            self._recorded.popitem(last=False)

    def _event_body(self, event: HealthEvent, name: str, stamp: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": EVENT_NAMESPACE},
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": self._node, "uid": self._node_uid},
            "type": event.type,
            "reason": event.reason,
            "message": event.message,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": COMPONENT, "host": self._node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._node[:128],
        }


class ConfigEventReporter:
    """The per-node config's Events (live/reconciler.py's ConfigReporter) through a recorder."""

    def __init__(self, recorder: HealthEventRecorder) -> None:
        self._recorder = recorder

    def applied(self, config: str, message: str) -> None:
        self._recorder.offer(config_event(applied=True, config=config, message=message))

    def rejected(self, config: str, message: str) -> None:
        self._recorder.offer(config_event(applied=False, config=config, message=message))
