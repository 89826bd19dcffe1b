"""The NVML health loop: critical events at once, probes for what events miss.

Two signals feed one HealthTracker:
- events: XID critical errors and double-bit ECC errors, registered on every GPU
  and waited for in one dedicated thread with a short timeout, so shutdown never
  waits on NVML;
- probes: every interval, each GPU's handle must answer and its memory info
  must read, each call bounded by a timeout on a small dedicated executor. A
  hung NVML call marks the device unhealthy instead of hanging the daemon, and
  a device whose earlier probe is still stuck is not probed again.
Recovery comes from the tracker's quiet period, seen through the probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace

from gpu_device_plugin.discovery.nvml import NvmlLibrary, NvmlSession
from gpu_device_plugin.health.publish import publish_snapshot
from gpu_device_plugin.health.tracker import HealthTracker
from gpu_device_plugin.health.xid import XidPolicy, describe_xid
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.inventory.reasons import HealthReason, ReasonCode
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink

log = logging.getLogger(__name__)

# NVML constants (nvml.h); named here so the fake NVML in tests needs no pynvml.
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID_CRITICAL = 0x8
WATCHED_EVENTS = EVENT_DOUBLE_BIT_ECC | EVENT_XID_CRITICAL
ERROR_NOT_SUPPORTED = 3
ERROR_TIMEOUT = 10
ERROR_GPU_IS_LOST = 15


class NvmlHealthLibrary(NvmlLibrary, Protocol):
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any: ...
    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int: ...
    def nvmlEventSetCreate(self) -> Any: ...
    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: Any) -> None: ...
    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any: ...
    def nvmlEventSetFree(self, event_set: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Xid:
    device_id: str
    xid: int


@dataclass(frozen=True, slots=True)
class Fault:
    device_id: str
    reason: HealthReason


Observation = Xid | Fault


def _error_code(err: Exception) -> int | None:
    value = getattr(err, "value", None)
    return value if isinstance(value, int) else None


@dataclass
class NvmlHealthSource:
    session: NvmlSession
    cell: SnapshotCell[Inventory]
    tracker: HealthTracker
    xids: XidPolicy = field(default_factory=XidPolicy)
    probe_interval_s: float = 10.0
    call_timeout_s: float = 5.0
    event_wait_ms: int = 500
    clock: Callable[[], float] = time.monotonic
    metrics: MetricsSink = NULL_METRICS
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)
    _probing: set[str] = field(default_factory=set, init=False)

    @property
    def lib(self) -> NvmlHealthLibrary:
        lib: Any = self.session.lib
        return lib  # type: ignore[no-any-return]

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Observation] = asyncio.Queue()
        stop = threading.Event()
        registered = threading.Event()
        device_ids = [d.id for d in self.cell.value.devices]

        def post(observation: Observation) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(queue.put_nowait, observation)

        events = threading.Thread(
            target=self._watch_events,
            args=(device_ids, post, stop, registered),
            name="nvml-events",
            daemon=True,
        )
        executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nvml-probe")
        events.start()
        try:
            await asyncio.to_thread(registered.wait, 10)
            if ready is not None:
                ready.set()
            await self._follow(queue, executor)
        finally:
            stop.set()
            # Never wait for a stuck NVML call at shutdown.
            executor.shutdown(wait=False, cancel_futures=True)

    async def _follow(self, queue: asyncio.Queue[Observation], executor: ThreadPoolExecutor) -> None:
        next_probe = self.clock()
        while True:
            now = self.clock()
            deadline = min(next_probe, self.tracker.next_recovery_check(now) or next_probe)
            try:
                observation = await asyncio.wait_for(queue.get(), max(0.0, deadline - now))
            except TimeoutError:
                pass
            else:
                self._observe(observation)
            if self.clock() >= next_probe:
                await self._probe_all(executor)
                next_probe = self.clock() + self.probe_interval_s
            self._publish()

    def _observe(self, observation: Observation) -> None:
        now = self.clock()
        if isinstance(observation, Xid):
            what = describe_xid(observation.xid)
            if not self.xids.is_critical(observation.xid):
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
                HealthReason("GPU is lost", ReasonCode.GPU_LOST)
                if _error_code(err) == ERROR_GPU_IS_LOST
                else HealthReason(f"probe failed: {err}", ReasonCode.PROBE)
            )
            self.tracker.probe(device_id, False, reason, self.clock())
        else:
            self.tracker.probe(device_id, True, "", self.clock())

    def _probe_call(self, device_id: str) -> None:
        handle = self.lib.nvmlDeviceGetHandleByUUID(device_id)
        self.lib.nvmlDeviceGetMemoryInfo(handle)

    def _watch_events(
        self,
        device_ids: list[str],
        post: Callable[[Observation], None],
        stop: threading.Event,
        registered: threading.Event,
    ) -> None:
        lib = self.lib
        try:
            event_set = lib.nvmlEventSetCreate()
        except lib.NVMLError as err:
            log.warning("NVML events unavailable, relying on probes alone: %s", err)
            registered.set()
            return
        try:
            by_handle = self._register(event_set, device_ids, post)
            registered.set()
            while not stop.is_set():
                self._wait_once(event_set, by_handle, post)
        finally:
            registered.set()
            with contextlib.suppress(lib.NVMLError):
                lib.nvmlEventSetFree(event_set)

    def _register(
        self, event_set: Any, device_ids: list[str], post: Callable[[Observation], None]
    ) -> dict[Any, str]:
        lib = self.lib
        by_handle: dict[Any, str] = {}
        for device_id in device_ids:
            try:
                handle = lib.nvmlDeviceGetHandleByUUID(device_id)
                wanted = lib.nvmlDeviceGetSupportedEventTypes(handle) & WATCHED_EVENTS
                if wanted:
                    lib.nvmlDeviceRegisterEvents(handle, wanted, event_set)
                else:
                    log.info("%s reports no critical events; probes alone watch it", device_id)
                by_handle[handle] = device_id
            except lib.NVMLError as err:
                if _error_code(err) == ERROR_NOT_SUPPORTED:
                    log.info("%s does not support events; probes alone watch it", device_id)
                    continue
                post(Fault(device_id, HealthReason(f"cannot register for events: {err}", ReasonCode.EVENTS)))
        return by_handle

    def _wait_once(
        self, event_set: Any, by_handle: dict[Any, str], post: Callable[[Observation], None]
    ) -> None:
        lib = self.lib
        try:
            data = lib.nvmlEventSetWait_v2(event_set, self.event_wait_ms)
        except lib.NVMLError as err:
            if _error_code(err) != ERROR_TIMEOUT:
                # The event does not say which GPU; the next probe will find it.
                log.warning("waiting for NVML events failed: %s", err)
                time.sleep(self.event_wait_ms / 1000)
            return
        device_id = by_handle.get(data.device)
        if device_id is None:
            try:
                device_id = lib.nvmlDeviceGetUUID(data.device)
            except lib.NVMLError:
                log.warning("NVML event %#x for an unknown device", data.eventType)
                return
        if data.eventType == EVENT_XID_CRITICAL:
            post(Xid(device_id, int(data.eventData)))
        elif data.eventType == EVENT_DOUBLE_BIT_ECC:
            post(Fault(device_id, HealthReason("double-bit ECC error", ReasonCode.ECC)))
