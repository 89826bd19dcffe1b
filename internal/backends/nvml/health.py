"""The NVML health loop: critical events at once, probes for what events miss.

Two signals feed one HealthTracker:
- events: XID critical errors and double-bit ECC errors, registered on every GPU
  and waited for in one dedicated thread with a short timeout, so shutdown never
  waits on NVML;
- probes: every interval, each GPU's handle must answer and its memory info
  must read, each call bounded by a timeout on a small dedicated executor. A
  hung NVML call marks the device unhealthy instead of hanging the daemon, and
  a device whose earlier probe is still stuck is not probed again. A round of
  probes runs as a task of its own beside the loop that judges events, so a
  hung call never delays an event on another GPU.
Recovery comes from the tracker's quiet period, seen through the probes.

pynvml's handles are ctypes pointers: unhashable, equal only to themselves, and
a new object on every call, the `device` of each event included. Nothing here
keys, compares or looks up a handle; an event is mapped back to its GPU by the
address the pointer holds (`handle_address`).

The events thread never dies in silence: an exception that escapes it ends the
run, which supervise.keep_running reports (health checking degraded, with
the error) and restarts with a backoff. Devices keep their last known health
meanwhile, and the probes go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace

from gpu_device_plugin.backends.nvml.library import (
    ERROR_GPU_IS_LOST,
    ERROR_NOT_SUPPORTED,
    ERROR_TIMEOUT,
    LOST_REASON,
    NvmlLibrary,
    NvmlSession,
    error_code,
    nvml_text,
)
from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.health.publish import publish_snapshot
from gpu_device_plugin.health.status import NVML_EVENTS, HealthCheckStatus
from gpu_device_plugin.health.supervise import RESTART_BACKOFF, keep_running
from gpu_device_plugin.health.tracker import HealthTracker
from gpu_device_plugin.health.xid import IgnoredXids, describe_xid
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.inventory.reasons import HealthReason, ReasonCode
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink

log = logging.getLogger(__name__)

# NVML constants (nvml.h); named here so the fake NVML in tests needs no pynvml.
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID_CRITICAL = 0x8
WATCHED_EVENTS = EVENT_DOUBLE_BIT_ECC | EVENT_XID_CRITICAL
# Non-timeout failures of the event wait in a row before the event set is rebuilt.
WAIT_FAILURES_BEFORE_RESTART = 3


class NvmlHealthLibrary(NvmlLibrary, Protocol):
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any: ...
    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int: ...
    def nvmlEventSetCreate(self) -> Any: ...
    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: Any) -> None: ...
    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any: ...
    def nvmlEventSetFree(self, event_set: Any) -> None: ...
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Xid:
    device_id: str
    xid: int


@dataclass(frozen=True, slots=True)
class Fault:
    device_id: str
    reason: HealthReason


Observation = Xid | Fault


@dataclass(frozen=True, slots=True)
class _RoundDone:
    """Queued by a probe round as it ends, so the loop that waits on the queue wakes for it."""


ROUND_DONE = _RoundDone()
# What the loop's one queue carries: the events thread's observations, the probe rounds' ends.
Queued = Observation | _RoundDone


class EventWaitFailing(Exception):
    """nvmlEventSetWait kept failing: the event set is rebuilt (and health checking degraded meanwhile)."""


def handle_address(handle: Any) -> int | None:
    """The address a device handle points at: the one identity NVML gives a GPU for a session.

    Chosen over asking NVML for the event's UUID: reading a pointer is no NVML
    call, so it also names a GPU that has just fallen off the bus and answers
    nothing (XID 79, the event that matters most). None for a NULL handle or
    one that is not a ctypes pointer.
    """
    try:
        address = ctypes.cast(handle, ctypes.c_void_p).value
    except (ctypes.ArgumentError, TypeError):
        return None
    return address or None


@dataclass
class NvmlHealthSource:
    session: NvmlSession
    cell: SnapshotCell[Inventory]
    tracker: HealthTracker
    xids: IgnoredXids = field(default_factory=IgnoredXids)
    probe_interval_s: float = 10.0
    call_timeout_s: float = 5.0
    event_wait_ms: int = 500
    clock: Callable[[], float] = time.monotonic
    metrics: MetricsSink = NULL_METRICS
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)
    # Where a dead events thread is reported; a private one when not wired.
    status: HealthCheckStatus | None = None
    restart_backoff: Backoff = RESTART_BACKOFF
    _probing: set[str] = field(default_factory=set, init=False)
    _seeded: bool = field(default=False, init=False)

    @property
    def lib(self) -> NvmlHealthLibrary:
        lib: Any = self.session.lib
        return lib  # type: ignore[no-any-return]

    async def run(self, ready: asyncio.Event | None = None) -> None:
        status = self.status or HealthCheckStatus((NVML_EVENTS,), metrics=self.metrics, tracer=self.tracer)
        queue: asyncio.Queue[Queued] = asyncio.Queue()
        self._seed()
        # Set once the first events thread has registered, or has ended: either way the probes start.
        first_try = asyncio.Event()
        events = asyncio.create_task(
            keep_running(
                NVML_EVENTS,
                lambda up: self._run_events_thread(queue, up, first_try),
                status,
                backoff=self.restart_backoff,
            ),
            name="nvml-events",
        )
        executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nvml-probe")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_try.wait(), 10)
            if ready is not None:
                ready.set()
            await self._follow(queue, executor)
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
            # Never wait for a stuck NVML call at shutdown.
            executor.shutdown(wait=False, cancel_futures=True)

    def _seed(self) -> None:
        # A GPU discovery found unhealthy (lost, say) starts as a fault, so it
        # earns its way back through the quiet period like any other.
        if self._seeded:
            return
        self._seeded = True
        now = self.clock()
        for device in self.cell.value.devices:
            if not device.healthy:
                reason = device.health_reason or HealthReason("unhealthy at discovery", ReasonCode.OTHER)
                self.tracker.fault(device.id, reason, now)

    async def _follow(self, queue: asyncio.Queue[Queued], executor: ThreadPoolExecutor) -> None:
        # A probe round runs beside this loop, never inside it: a hung NVML call holds its
        # round for up to call_timeout_s, and the events queued meanwhile (an XID 79 on
        # another GPU) must still be judged and published at once. One round at a time;
        # the next is due probe_interval_s after the last one ended.
        next_probe = self.clock()
        probing: asyncio.Task[None] | None = None
        try:
            while True:
                now = self.clock()
                deadline = self.tracker.next_recovery_check(now)
                if probing is None:
                    deadline = next_probe if deadline is None else min(deadline, next_probe)
                # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that
                # arrives just as an item does, and with a round ending every interval that
                # race is common enough to leave this loop unstoppable.
                try:
                    async with asyncio.timeout(None if deadline is None else max(0.0, deadline - now)):
                        item = await queue.get()
                except TimeoutError:
                    pass
                else:
                    if isinstance(item, _RoundDone):
                        finished, probing = probing, None
                        if finished is not None:
                            await finished  # a bug in a round ends the run (supervised), not in silence
                        next_probe = self.clock() + self.probe_interval_s
                    else:
                        self._observe(item)
                if probing is None and self.clock() >= next_probe:
                    probing = asyncio.create_task(self._probe_round(queue, executor), name="nvml-probes")
                self._publish()
        finally:
            if probing is not None:
                probing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probing

    async def _probe_round(self, queue: asyncio.Queue[Queued], executor: ThreadPoolExecutor) -> None:
        try:
            await self._probe_all(executor)
        finally:
            queue.put_nowait(ROUND_DONE)

    def _observe(self, observation: Observation) -> None:
        now = self.clock()
        if isinstance(observation, Xid):
            what = describe_xid(observation.xid)
            if self.xids.ignores(observation.xid):
                log.info(
                    "%s on %s: caused by an application, device stays healthy", what, observation.device_id
                )
                return
            self.tracker.fault(observation.device_id, what, now)
        else:
            self.tracker.fault(observation.device_id, observation.reason, now)

    def _publish(self) -> None:
        verdicts = self.tracker.verdicts(self.clock())
        publish_snapshot(
            self.cell,
            self.cell.value.with_health(verdicts),
            source="nvml",
            metrics=self.metrics,
            tracer=self.tracer,
        )

    async def _probe_all(self, executor: ThreadPoolExecutor) -> None:
        devices = [d.id for d in self.cell.value.devices if d.id not in self._probing]
        await asyncio.gather(*(self._probe(device_id, executor) for device_id in devices))

    async def _probe(self, device_id: str, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        self._probing.add(device_id)
        call = loop.run_in_executor(executor, self._probe_call, device_id)
        call.add_done_callback(lambda _: self._probing.discard(device_id))
        try:
            await asyncio.wait_for(asyncio.shield(call), self.call_timeout_s)
        except TimeoutError:
            hung = HealthReason(f"NVML did not answer within {self.call_timeout_s:g} s", ReasonCode.PROBE)
            self.tracker.probe(device_id, False, hung, self.clock())
        except self.lib.NVMLError as err:
            reason = (
                LOST_REASON
                if error_code(err) == ERROR_GPU_IS_LOST
                else HealthReason(f"probe failed: {err}", ReasonCode.PROBE)
            )
            self.tracker.probe(device_id, False, reason, self.clock())
        else:
            self.tracker.probe(device_id, True, "", self.clock())

    def _probe_call(self, device_id: str) -> None:
        handle = self.lib.nvmlDeviceGetHandleByUUID(device_id)
        self.lib.nvmlDeviceGetMemoryInfo(handle)

    async def _run_events_thread(
        self, queue: asyncio.Queue[Queued], up: asyncio.Event, tried: asyncio.Event
    ) -> None:
        """One life of the events thread: returns when it has nothing to watch, raises what killed it.

        `up` is set once it has registered every GPU; `tried` then too, or when it ends.
        """
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[BaseException | None] = loop.create_future()
        stop = threading.Event()
        device_ids = [d.id for d in self.cell.value.devices]

        def on_loop(callback: Callable[..., None], *args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(callback, *args)

        def end(error: BaseException | None) -> None:
            if not ended.done():
                ended.set_result(error)

        def registered() -> None:  # called in the thread: asyncio events are set on the loop
            on_loop(up.set)
            on_loop(tried.set)

        def body() -> None:
            try:
                self._watch_events(device_ids, lambda o: on_loop(queue.put_nowait, o), stop, registered)
            except BaseException as err:  # reported on the loop: nothing may end this thread unseen
                on_loop(end, err)
            else:
                on_loop(end, None)

        thread = threading.Thread(target=body, name="nvml-events", daemon=True)
        thread.start()
        try:
            error = await ended
        finally:
            # Cancelled or ended: the thread leaves its wait within event_wait_ms.
            stop.set()
            tried.set()
        if error is not None:
            raise error

    def _watch_events(
        self,
        device_ids: list[str],
        post: Callable[[Observation], None],
        stop: threading.Event,
        registered: Callable[[], None],
    ) -> None:
        lib = self.lib
        try:
            event_set = lib.nvmlEventSetCreate()
        except lib.NVMLError as err:
            if error_code(err) != ERROR_NOT_SUPPORTED:
                raise  # a failure, not a fact of this node: degraded, and tried again
            log.warning("NVML events are not supported here, relying on probes alone: %s", err)
            return
        try:
            by_address = self._register(event_set, device_ids, post)
            registered()
            failures = 0
            while not stop.is_set():
                failures = self._wait_once(event_set, device_ids, by_address, post, stop, failures)
        finally:
            with contextlib.suppress(lib.NVMLError):
                lib.nvmlEventSetFree(event_set)

    def _register(
        self, event_set: Any, device_ids: list[str], post: Callable[[Observation], None]
    ) -> dict[int, str]:
        """Registers every GPU on the set; returns our device id by handle address."""
        lib = self.lib
        by_address: dict[int, str] = {}
        for device_id in device_ids:
            try:
                handle = lib.nvmlDeviceGetHandleByUUID(device_id)
                wanted = lib.nvmlDeviceGetSupportedEventTypes(handle) & WATCHED_EVENTS
                if wanted:
                    lib.nvmlDeviceRegisterEvents(handle, wanted, event_set)
                else:
                    log.info("%s reports no critical events; probes alone watch it", device_id)
            except lib.NVMLError as err:
                if error_code(err) == ERROR_NOT_SUPPORTED:
                    log.info("%s does not support events; probes alone watch it", device_id)
                    continue
                post(Fault(device_id, HealthReason(f"cannot register for events: {err}", ReasonCode.EVENTS)))
                continue
            address = handle_address(handle)
            if address is not None:
                by_address[address] = device_id
        return by_address

    def _wait_once(
        self,
        event_set: Any,
        device_ids: list[str],
        by_address: dict[int, str],
        post: Callable[[Observation], None],
        stop: threading.Event,
        failures: int,
    ) -> int:
        """Waits for one event; returns the count of failed waits in a row."""
        lib = self.lib
        try:
            data = lib.nvmlEventSetWait_v2(event_set, self.event_wait_ms)
        except lib.NVMLError as err:
            if error_code(err) == ERROR_TIMEOUT:
                return 0  # nothing happened
            failures += 1
            if failures >= WAIT_FAILURES_BEFORE_RESTART:
                message = f"nvmlEventSetWait_v2 failed {failures} times in a row: {err}"
                raise EventWaitFailing(message) from err
            # The error does not say which GPU; the next probe will find it.
            log.warning("waiting for NVML events failed: %s", err)
            stop.wait(self.event_wait_ms / 1000)
            return failures
        device_id = self._event_device(data, device_ids, by_address)
        if device_id is None:
            log.warning("NVML event %#x for a device that is not ours", int(data.eventType))
        elif data.eventType == EVENT_XID_CRITICAL:
            post(Xid(device_id, int(data.eventData)))
        elif data.eventType == EVENT_DOUBLE_BIT_ECC:
            post(Fault(device_id, HealthReason("double-bit ECC error", ReasonCode.ECC)))
        return 0

    def _event_device(self, data: Any, device_ids: list[str], by_address: dict[int, str]) -> str | None:
        address = handle_address(data.device)
        if address is not None and address in by_address:
            return by_address[address]
        # A library that hands out another address per call: ask for the UUID instead.
        try:
            uuid = nvml_text(self.lib.nvmlDeviceGetUUID(data.device))
        except self.lib.NVMLError:
            return None
        if uuid in device_ids:
            return uuid
        # An event naming a MIG device (its GPU and compute instance ids set): a fault of
        # its GPU, whose health every MIG device on it shares (resources/mig.py).
        try:
            parent = self.lib.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(data.device)
        except (self.lib.NVMLError, AttributeError):
            return None
        address = handle_address(parent)
        return by_address.get(address) if address is not None else None
