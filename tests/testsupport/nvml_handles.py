"""Handles for the Python NVML fakes, shaped like pynvml's: ctypes pointers.

pynvml hands out `c_nvmlDevice_t` and `c_nvmlEventSet_t`, which are ctypes
POINTER instances: unhashable, equal only to themselves, and a fresh object on
every call (nvmlDeviceGetHandleByUUID twice gives two objects pointing at the
same address; so does the `device` of every event). The fakes hand out exactly
that, so code that keys a dict by a handle, compares handles with `==` or
`in`, or expects the same object back fails here as it would on a real node.
"""

from __future__ import annotations

import ctypes


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
