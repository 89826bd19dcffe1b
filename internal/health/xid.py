"""XID classification: which driver-reported errors mean the GPU itself is bad.

XIDs are the NVIDIA driver's error codes. Some are caused by the application
running on the GPU (a bad kernel, a page fault in user code): the device is
fine and the next pod will be too, so they must not take it out of service.
The default list of such XIDs matches what NVIDIA's device plugin skips.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gpu_device_plugin.inventory.reasons import HealthReason, ReasonCode

# Ignored unless told otherwise: errors an application can cause on a healthy GPU.
DEFAULT_IGNORED_XIDS: frozenset[int] = frozenset({13, 31, 43, 45, 68, 109})

# Short meanings, for log lines and traces; from NVIDIA's XID catalogue.
XID_MEANINGS: dict[int, str] = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "preemptive cleanup after earlier errors",
    48: "double-bit ECC error",
    61: "internal micro-controller breakpoint/warning",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping recorded",
    64: "ECC page retirement or row remapping failure",
    68: "video processor exception",
    69: "graphics engine class error",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    109: "context switch timeout",
    119: "GSP RPC timeout",
    120: "GSP error",
    140: "unrecovered ECC error",
}


def describe_xid(xid: int) -> HealthReason:
    meaning = XID_MEANINGS.get(xid, "unlisted driver error")
    return HealthReason(f"XID {xid} ({meaning})", ReasonCode.XID, xid=xid)


@dataclass(frozen=True, slots=True)
class IgnoredXids:
    """The XIDs that leave a device healthy (--health-ignore-xids); every other XID marks it unhealthy."""

    xids: frozenset[int] = DEFAULT_IGNORED_XIDS

    def ignores(self, xid: int) -> bool:
        return xid in self.xids

    @classmethod
    def parse(cls, text: str) -> IgnoredXids:
        """`"13,31,43"` -> those XIDs are ignored; `""` -> none are."""
        return cls(frozenset(_ints(part for part in text.split(",") if part.strip())))


def _ints(parts: Iterable[str]) -> list[int]:
    values = []
    for part in parts:
        try:
            values.append(int(part))
        except ValueError as err:
            raise ValueError(f"{part.strip()!r} is not an XID number") from err
    return values
