"""The Python fake NVML of the fast unit tests: the pynvml calls discovery, topology and health make.

It implements our own seam (`NvmlLibrary`: the module object `NvmlSession` is
handed), not pynvml's internals: tests hand it to `NvmlSession` the way
production hands it pynvml. The proof against the real binding is the C
library (hack/nvmlfake, `gdp_hack.nvmlfake`) loaded by the real pynvml; this
one is for what is quicker to say per call in Python: a call that fails with a
given NVML code, a probe that hangs until released, events fed one by one.

Handles and event sets are ctypes pointers as pynvml's are (`c_nvmlDevice_t`
and `c_nvmlEventSet_t` are ctypes POINTER instances): unhashable, equal only to
themselves, and a fresh object on every call (nvmlDeviceGetHandleByUUID twice
gives two objects pointing at one address; so does the `device` of every
event). Code that keys a dict by a handle, compares handles with `==` or `in`,
or expects the same object back fails here as it would on a node.

Faults, one mechanism for all of them:
- `FakeGpu.errors` / `FakeNvml.errors`: call name -> the NVML code that call
  answers (per GPU, or for the system-level calls); the message is
  "<call>: <NVML's text>", so what is logged names the call;
- `FakeGpu.lost`: every call but the handle and UUID reads answers GPU_IS_LOST;
- `FakeNvml.missing`: calls the bindings do not have at all (AttributeError on
  access, as an old pynvml module has no such attribute). A fake given no
  topology (`ancestors=None`, the default) lacks the topology calls too, as
  bindings older than them do: topology is then unknown, as discovery says.
"""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

# ---------------------------------------------------------------- handles


class _FakeDevice(ctypes.Structure):
    # Opaque to callers, like NVML's struct; the index lets the fake find its GPU.
    _fields_ = [("index", ctypes.c_uint)]


class _FakeEventSet(ctypes.Structure):
    _fields_ = [("serial", ctypes.c_uint)]


DeviceHandle = ctypes.POINTER(_FakeDevice)
EventSetHandle = ctypes.POINTER(_FakeEventSet)


class DeviceHandles:
    """One fixed address per GPU index; every lookup returns a new pointer object to it."""

    def __init__(self, count: int) -> None:
        self._devices = [_FakeDevice(i) for i in range(count)]

    def handle(self, index: int) -> ctypes._Pointer[_FakeDevice]:
        # A new pointer object each time, as pynvml builds one per call.
        return ctypes.pointer(self._devices[index])

    def index(self, handle: object) -> int:
        """The GPU a handle points at; TypeError for anything but one of our pointers, as ctypes would."""
        if not isinstance(handle, DeviceHandle):
            raise TypeError(f"expected a device handle (ctypes pointer), got {type(handle).__name__}")
        address = ctypes.addressof(handle.contents)
        for i, device in enumerate(self._devices):
            if ctypes.addressof(device) == address:
                return i
        raise ValueError("a device handle of another NVML session")


def event_set_handle(serial: int = 0) -> ctypes._Pointer[_FakeEventSet]:
    return ctypes.pointer(_FakeEventSet(serial))


def is_event_set(handle: object) -> bool:
    return isinstance(handle, EventSetHandle)


# ---------------------------------------------------------------- codes

# NVML's return codes, as nvml.h numbers them.
ERROR_UNINITIALIZED = 1
ERROR_INVALID_ARGUMENT = 2
ERROR_NOT_SUPPORTED = 3
ERROR_DRIVER_NOT_LOADED = 9
ERROR_TIMEOUT = 10
ERROR_LIBRARY_NOT_FOUND = 12
ERROR_GPU_IS_LOST = 15
ERROR_UNKNOWN = 999
# nvmlErrorString's text for them (pynvml's str() of its error).
_TEXT = {
    ERROR_UNINITIALIZED: "Uninitialized",
    ERROR_INVALID_ARGUMENT: "Invalid Argument",
    ERROR_NOT_SUPPORTED: "Not Supported",
    ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    ERROR_TIMEOUT: "Timeout",
    ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    ERROR_GPU_IS_LOST: "GPU is lost",
    ERROR_UNKNOWN: "Unknown Error",
}

EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID_CRITICAL = 0x8
TYPE_GPU, TYPE_IBMNPU, TYPE_SWITCH = 0, 1, 2
#: The topology calls; an older binding has none of them (`missing=TOPOLOGY_CALLS`).
TOPOLOGY_CALLS = frozenset(
    {
        "nvmlDeviceGetTopologyCommonAncestor",
        "nvmlDeviceGetNvLinkState",
        "nvmlDeviceGetNvLinkRemotePciInfo",
        "nvmlDeviceGetNvLinkRemoteDeviceType",
        "nvmlDeviceGetCpuAffinity",
    }
)
# A lost GPU still answers these (NVML keeps the UUID of a lost GPU).
_LOST_STILL_ANSWERS = frozenset(
    {"nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByUUID", "nvmlDeviceGetUUID"}
)


class NVMLError(Exception):
    """Stands in for pynvml.NVMLError: `.value` is NVML's code, str() its text (or the message given)."""

    def __init__(self, value: int, message: str | None = None) -> None:
        super().__init__(message or _TEXT.get(value, f"NVML error {value}"))
        self.value = value


class EventData(ctypes.Structure):
    """pynvml's c_nvmlEventData_t, as far as the health loop reads it."""

    _fields_ = [
        ("device", DeviceHandle),
        ("eventType", ctypes.c_ulonglong),
        ("eventData", ctypes.c_ulonglong),
    ]


@dataclass
class NvLink:
    remote_bus: str
    remote_type: int = TYPE_GPU
    active: bool = True


@dataclass
class FakeGpu:
    uuid: str | bytes
    name: str | bytes = "NVIDIA H100 80GB HBM3"
    minor: int | None = None  # None: its index
    memory_bytes: int = 81559 * 1024 * 1024
    # NVML spells the PCI domain with 8 hex digits.
    bus_id: str | bytes = "00000000:17:00.0"
    numa_node: int = 0
    compute_capability: tuple[int, int] = (9, 0)
    # nvmlDeviceGetMigMode's (current, pending); None: NOT_SUPPORTED (no MIG on this GPU).
    mig_mode: tuple[int, int] | None = None
    # None: no NVLink at all (NOT_SUPPORTED); links past the end: INVALID_ARGUMENT.
    nvlinks: list[NvLink] | None = None
    cpus: tuple[int, ...] = ()
    supported_events: int = EVENT_DOUBLE_BIT_ECC | EVENT_XID_CRITICAL
    # Call name -> the NVML code it answers for this GPU, e.g. {"nvmlDeviceGetMemoryInfo": 3}.
    errors: Mapping[str, int] = field(default_factory=dict)
    # Every call but the handle and UUID reads answers NVML_ERROR_GPU_IS_LOST.
    lost: bool = False
    # Set: the probe (nvmlDeviceGetMemoryInfo) blocks until the test sets it.
    hang: threading.Event | None = None


@dataclass
class FakeNvml:
    gpus: list[FakeGpu] = field(default_factory=list)
    driver_version: str | bytes = "550.54.15"
    cuda_driver_version: int = 12040
    # Raised by nvmlInit (e.g. NVMLError(ERROR_LIBRARY_NOT_FOUND), or an OSError).
    init_error: Exception | None = None
    # System-level call name -> the NVML code it answers, e.g. {"nvmlDeviceGetCount": 999}.
    errors: dict[str, int] = field(default_factory=dict)
    # Calls the bindings lack altogether.
    missing: frozenset[str] = frozenset()
    # NVML topology level per pair of GPU indexes (nvmlDeviceGetTopologyCommonAncestor);
    # None: no topology described, and no topology calls (TOPOLOGY_CALLS) at all.
    ancestors: dict[frozenset[int], int] | None = None
    # Raised (once each) by nvmlEventSetWait_v2: a failure the health loop does not expect.
    wait_crashes: deque[BaseException] = field(default_factory=deque)
    # NVML error codes nvmlEventSetWait_v2 answers (once each) before waiting normally.
    wait_errors: deque[int] = field(default_factory=deque)
    # What the code under test did.
    init_calls: int = 0
    shutdown_calls: int = 0
    registered: dict[str, int] = field(default_factory=dict)
    created: int = 0
    freed: int = 0
    _events: deque[EventData] = field(default_factory=deque)
    _arrived: threading.Condition = field(default_factory=threading.Condition)
    _handles: DeviceHandles = field(init=False)

    NVMLError = NVMLError
    NVML_NVLINK_MAX_LINKS = 18

    def __post_init__(self) -> None:
        self._handles = DeviceHandles(len(self.gpus))

    def __getattribute__(self, name: str) -> Any:
        # Old bindings: the call is not there at all.
        if name.startswith("nvml") and (
            name in object.__getattribute__(self, "missing")
            or (name in TOPOLOGY_CALLS and object.__getattribute__(self, "ancestors") is None)
        ):
            raise AttributeError(f"module 'pynvml' has no attribute '{name}'")
        return object.__getattribute__(self, name)

    # ------------------------------------------------------------ what the test does

    @property
    def freed_all(self) -> bool:
        return self.created > 0 and self.freed == self.created

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

    # ------------------------------------------------------------ faults

    def _system(self, call: str) -> None:
        if call in self.errors:
            code = self.errors[call]
            raise NVMLError(code, f"{call}: {_TEXT.get(code, code)}")

    def _i(self, handle: object) -> int:
        return self._handles.index(handle)

    def _device(self, handle: object, call: str) -> FakeGpu:
        gpu = self.gpus[self._i(handle)]
        if call in gpu.errors:
            code = gpu.errors[call]
            raise NVMLError(code, f"{call}: {_TEXT.get(code, code)}")
        if gpu.lost and call not in _LOST_STILL_ANSWERS:
            raise NVMLError(ERROR_GPU_IS_LOST)
        return gpu

    def _index(self, uuid: str) -> int:
        return next(i for i, g in enumerate(self.gpus) if g.uuid == uuid)

    # ------------------------------------------------------------ system

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._system("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion")
        return self.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._system("nvmlDeviceGetCount")
        return len(self.gpus)

    # ------------------------------------------------------------ per GPU (discovery)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        handle = self._handles.handle(index)
        self._device(handle, "nvmlDeviceGetHandleByIndex")
        return handle

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        handle = self._handles.handle(self._index(uuid))
        self._device(handle, "nvmlDeviceGetHandleByUUID")
        return handle

    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes:
        return self._device(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:
        return self._device(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        gpu = self._device(handle, "nvmlDeviceGetMinorNumber")
        return self._i(handle) if gpu.minor is None else gpu.minor

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        # Also the health loop's probe: it may hang, as a wedged driver call does.
        hang = self.gpus[self._i(handle)].hang
        if hang is not None:
            hang.wait()
        total = self._device(handle, "nvmlDeviceGetMemoryInfo").memory_bytes
        return SimpleNamespace(total=total, free=total, used=0)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        return SimpleNamespace(busId=self._device(handle, "nvmlDeviceGetPciInfo").bus_id)

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        return self._device(handle, "nvmlDeviceGetCudaComputeCapability").compute_capability

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        mode = self._device(handle, "nvmlDeviceGetMigMode").mig_mode
        if mode is None:
            raise NVMLError(ERROR_NOT_SUPPORTED)
        return list(mode)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        # No MIG devices here: the C fake (hack/nvmlfake) is where MIG layouts live.
        self._device(handle, "nvmlDeviceGetMaxMigDeviceCount")
        return 0

    def nvmlDeviceGetNumaNodeId(self, handle: Any) -> int:
        return self._device(handle, "nvmlDeviceGetNumaNodeId").numa_node

    # ------------------------------------------------------------ topology

    def _link(self, handle: object, link: int, call: str) -> NvLink:
        links = self._device(handle, call).nvlinks
        if links is None:
            raise NVMLError(ERROR_NOT_SUPPORTED)
        if link >= len(links):
            raise NVMLError(ERROR_INVALID_ARGUMENT)
        return links[link]

    def nvmlDeviceGetTopologyCommonAncestor(self, device1: object, device2: object) -> int:
        self._device(device1, "nvmlDeviceGetTopologyCommonAncestor")
        self._device(device2, "nvmlDeviceGetTopologyCommonAncestor")
        assert self.ancestors is not None  # else the call is missing altogether
        return self.ancestors[frozenset((self._i(device1), self._i(device2)))]

    def nvmlDeviceGetNvLinkState(self, device: object, link: int) -> int:
        return int(self._link(device, link, "nvmlDeviceGetNvLinkState").active)

    def nvmlDeviceGetNvLinkRemotePciInfo(self, device: object, link: int) -> SimpleNamespace:
        return SimpleNamespace(busId=self._link(device, link, "nvmlDeviceGetNvLinkRemotePciInfo").remote_bus)

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, handle: object, link: int) -> int:
        return self._link(handle, link, "nvmlDeviceGetNvLinkRemoteDeviceType").remote_type

    def nvmlDeviceGetCpuAffinity(self, handle: object, cpuSetSize: int) -> ctypes.Array[ctypes.c_ulonglong]:
        # pynvml answers a ctypes array of 64-bit words, not a list.
        words = (ctypes.c_ulonglong * cpuSetSize)()
        for cpu in self._device(handle, "nvmlDeviceGetCpuAffinity").cpus:
            words[cpu // 64] |= 1 << (cpu % 64)
        return words

    # ------------------------------------------------------------ health events

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        return self._device(handle, "nvmlDeviceGetSupportedEventTypes").supported_events

    def nvmlEventSetCreate(self) -> Any:
        self._system("nvmlEventSetCreate")
        self.created += 1
        return event_set_handle(self.created)

    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: Any) -> None:
        if not is_event_set(event_set):
            raise TypeError("expected an event set handle")
        gpu = self._device(handle, "nvmlDeviceRegisterEvents")
        self.registered[str(gpu.uuid)] = event_types

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
