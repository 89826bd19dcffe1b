"""Why a device is unhealthy: a code for metric labels and traces, plus the text people read.

Whoever marks a device unhealthy says why with a HealthReason; the code travels
with the text through the tracker and the snapshot to the publisher, which
uses it as the bounded `reason` label and span attribute, never parsing text.

A HealthReason is a str (its text): every reader of `Device.health_reason`
(logs, probes, Events, `discover`) keeps reading and comparing text, and only
the publisher looks at the code. Text from anywhere else (an empty string, a
plain str) has no code: `code_of` says recovered or other for it.
"""

from __future__ import annotations

import enum


class ReasonCode(enum.StrEnum):
    """The bounded set of reason classes; values are the metric label values."""

    XID = "xid"
    ECC = "ecc"
    GPU_LOST = "gpu_lost"
    PROBE = "probe"  # a probe failed or did not answer in time
    EVENTS = "events"  # the device could not be registered for NVML events
    FAKE = "fake"  # marked Unhealthy in the fake backend's file
    OTHER = "other"
    RECOVERED = "recovered"  # no reason: the device is healthy again


class HealthReason(str):
    """Text that knows its code (and the XID, for XID reasons)."""

    code: ReasonCode
    xid: int | None

    def __new__(cls, text: str, code: ReasonCode, *, xid: int | None = None) -> HealthReason:
        reason = super().__new__(cls, text)
        reason.code = code
        reason.xid = xid
        return reason

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled and copied with its code, not as a bare str.
        return (_rebuild, (str(self), self.code, self.xid))


def _rebuild(text: str, code: ReasonCode, xid: int | None) -> HealthReason:
    return HealthReason(text, code, xid=xid)


def code_of(reason: str) -> ReasonCode:
    if isinstance(reason, HealthReason):
        return reason.code
    return ReasonCode.RECOVERED if not reason else ReasonCode.OTHER


def xid_of(reason: str) -> int | None:
    return reason.xid if isinstance(reason, HealthReason) else None
