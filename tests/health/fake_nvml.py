"""A fake NVML for the health loop: events fed by the test, handles that fail or hang."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from gpu_device_plugin.health.nvml import (
    ERROR_GPU_IS_LOST,
    ERROR_NOT_SUPPORTED,
    ERROR_TIMEOUT,
    EVENT_DOUBLE_BIT_ECC,
    EVENT_XID_CRITICAL,
)


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeGpu:
    uuid: str
    supported_events: int = EVENT_DOUBLE_BIT_ECC | EVENT_XID_CRITICAL
    register_error: int | None = None
    probe_error: int | None = None
    # Set: the probe call blocks until the test releases it.
    hang: threading.Event | None = None


@dataclass
class FakeNvml:
    gpus: list[FakeGpu]
    NVMLError: type[Exception] = NVMLError
    registered: dict[str, int] = field(default_factory=dict)
    freed: bool = False
    _events: deque[Any] = field(default_factory=deque)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def _gpu(self, handle: Any) -> FakeGpu:
        return next(g for g in self.gpus if g.uuid == handle)

    # What the test does
    def emit_xid(self, uuid: str, xid: int) -> None:
        self._emit(SimpleNamespace(device=uuid, eventType=EVENT_XID_CRITICAL, eventData=xid))

    def emit_double_bit_ecc(self, uuid: str) -> None:
        self._emit(SimpleNamespace(device=uuid, eventType=EVENT_DOUBLE_BIT_ECC, eventData=0))

    def _emit(self, event: Any) -> None:
        with self._arrived:
            self._events.append(event)
            self._arrived.notify_all()

    # The NVML calls the health loop makes
    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        return self._gpu(uuid).uuid

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return str(handle)

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        return self._gpu(handle).supported_events

    def nvmlEventSetCreate(self) -> Any:
        return "event-set"

    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: Any) -> None:
        gpu = self._gpu(handle)
        if gpu.register_error is not None:
            raise NVMLError(gpu.register_error)
        self.registered[gpu.uuid] = event_types

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        with self._arrived:
            if not self._arrived.wait_for(lambda: bool(self._events), timeout_ms / 1000):
                raise NVMLError(ERROR_TIMEOUT)
            return self._events.popleft()

    def nvmlEventSetFree(self, event_set: Any) -> None:
        self.freed = True

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        gpu = self._gpu(handle)
        if gpu.hang is not None:
            gpu.hang.wait()
        if gpu.probe_error is not None:
            raise NVMLError(gpu.probe_error)
        return SimpleNamespace(total=80 << 30)


__all__ = ["ERROR_GPU_IS_LOST", "ERROR_NOT_SUPPORTED", "FakeGpu", "FakeNvml", "NVMLError"]
