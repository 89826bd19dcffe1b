"""A fake NVML for the health loop: events fed by the test, handles that fail or hang.

Handles and event sets are ctypes pointers, as pynvml's are (testsupport/nvml_handles.py):
unhashable, equal only to themselves, a new object per call. An event's `device`
is a new pointer too, to the same address as the GPU's handle.
"""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gpu_device_plugin.health.nvml import (
    ERROR_GPU_IS_LOST,
    ERROR_NOT_SUPPORTED,
    ERROR_TIMEOUT,
    EVENT_DOUBLE_BIT_ECC,
    EVENT_XID_CRITICAL,
)
from testsupport.nvml_handles import DeviceHandle, DeviceHandles, event_set_handle, is_event_set


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class EventData(ctypes.Structure):
    """pynvml's c_nvmlEventData_t, as far as the health loop reads it."""

    _fields_ = [
        ("device", DeviceHandle),
        ("eventType", ctypes.c_ulonglong),
        ("eventData", ctypes.c_ulonglong),
    ]


@dataclass
class FakeGpu:
    uuid: str
    supported_events: int = EVENT_DOUBLE_BIT_ECC | EVENT_XID_CRITICAL
    register_error: int | None = None
    probe_error: int | None = None
    # nvmlDeviceGetUUID on this GPU's handle fails with this code (a lost GPU).
    uuid_error: int | None = None
    # Set: the probe call blocks until the test releases it.
    hang: threading.Event | None = None


@dataclass
class FakeNvml:
    gpus: list[FakeGpu]
    NVMLError: type[Exception] = NVMLError
    registered: dict[str, int] = field(default_factory=dict)
    freed: int = 0
    created: int = 0
    # Raised (once each) by nvmlEventSetWait_v2: a failure the loop does not expect.
    wait_crashes: deque[BaseException] = field(default_factory=deque)
    # NVML error codes nvmlEventSetWait_v2 answers (once each) before waiting normally.
    wait_errors: deque[int] = field(default_factory=deque)
    # Raised by nvmlEventSetCreate while set.
    create_error: int | None = None
    _events: deque[EventData] = field(default_factory=deque)
    _arrived: threading.Condition = field(default_factory=threading.Condition)
    _handles: DeviceHandles = field(init=False)

    def __post_init__(self) -> None:
        self._handles = DeviceHandles(len(self.gpus))

    @property
    def freed_all(self) -> bool:
        return self.created > 0 and self.freed == self.created

    def _gpu(self, handle: Any) -> FakeGpu:
        return self.gpus[self._handles.index(handle)]

    def _index(self, uuid: str) -> int:
        return next(i for i, g in enumerate(self.gpus) if g.uuid == uuid)

    # What the test does
    def emit_xid(self, uuid: str, xid: int) -> None:
        self._emit(self._index(uuid), EVENT_XID_CRITICAL, xid)

    def emit_double_bit_ecc(self, uuid: str) -> None:
        self._emit(self._index(uuid), EVENT_DOUBLE_BIT_ECC, 0)

    def crash_next_wait(self, error: BaseException) -> None:
        with self._arrived:
            self.wait_crashes.append(error)
            self._arrived.notify_all()

    def _emit(self, index: int, event_type: int, data: int) -> None:
        with self._arrived:
            self._events.append(EventData(self._handles.handle(index), event_type, data))
            self._arrived.notify_all()

    # The NVML calls the health loop makes
    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        return self._handles.handle(self._index(uuid))

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        gpu = self._gpu(handle)
        if gpu.uuid_error is not None:
            raise NVMLError(gpu.uuid_error)
        return gpu.uuid

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        return self._gpu(handle).supported_events

    def nvmlEventSetCreate(self) -> Any:
        if self.create_error is not None:
            raise NVMLError(self.create_error)
        self.created += 1
        return event_set_handle(self.created)

    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: Any) -> None:
        gpu = self._gpu(handle)
        if not is_event_set(event_set):
            raise TypeError("expected an event set handle")
        if gpu.register_error is not None:
            raise NVMLError(gpu.register_error)
        self.registered[gpu.uuid] = event_types

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        if not is_event_set(event_set):
            raise TypeError("expected an event set handle")
        with self._arrived:
            if self.wait_crashes:
                raise self.wait_crashes.popleft()
            if self.wait_errors:
                raise NVMLError(self.wait_errors.popleft())
            ready = self._arrived.wait_for(lambda: bool(self._events or self.wait_crashes), timeout_ms / 1000)
            if self.wait_crashes:
                raise self.wait_crashes.popleft()
            if not ready:
                raise NVMLError(ERROR_TIMEOUT)
            return self._events.popleft()

    def nvmlEventSetFree(self, event_set: Any) -> None:
        self.freed += 1

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        gpu = self._gpu(handle)
        if gpu.hang is not None:
            gpu.hang.wait()
        if gpu.probe_error is not None:
            raise NVMLError(gpu.probe_error)
        return None


__all__ = ["ERROR_GPU_IS_LOST", "ERROR_NOT_SUPPORTED", "FakeGpu", "FakeNvml", "NVMLError"]
