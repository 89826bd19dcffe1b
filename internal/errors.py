"""The project's own exception hierarchy.

Library errors (NVML, YAML, pydantic, gRPC) are chained into these at the layer
that meets them, so callers decide by our types alone. The mapping to gRPC
status codes lives in server/status_codes.py and to exit codes in cli/exitcodes.py:
one place each.
"""

from __future__ import annotations

from collections.abc import Iterable


class PluginError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(PluginError):
    """A flag, environment variable or config file holds a bad value."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class DiscoveryError(PluginError):
    """Devices could not be discovered (NVML missing, init failed, ...)."""


class RequestError(PluginError):
    """A client's request is malformed: unknown or duplicate ids, bad sizes."""

    def __init__(self, message: str, ids: Iterable[str] = ()) -> None:
        super().__init__(message)
        # Bounded like the message: a request of 10,000 ids must not become a span of 10,000.
        self.ids = tuple(cut_id(i) for i in sorted(set(ids))[:MAX_NAMED_IDS])


class DeviceUnavailableError(RequestError):
    """A request names devices that exist but cannot be handed out (unhealthy)."""


# What a message names of a request's ids: enough for the operator to find the
# problem, never so much that the status trailer (8 KiB) or a log line overflows.
MAX_NAMED_IDS = 5
# The kubelet's limit for a device id; longer ones are cut when quoted.
MAX_ID_LENGTH = 63
_CUT_TO = 24


def cut_id(device_id: str) -> str:
    """An id as short as a message can afford: itself, or its start and its length."""
    if len(device_id) <= MAX_ID_LENGTH:
        return device_id
    return f"{device_id[:_CUT_TO]}... ({len(device_id):,} characters)"


def quote_ids(ids: Iterable[str]) -> str:
    """Render ids for a message: sorted, quoted, the first few only, then how many more."""
    unique = sorted(set(ids))
    shown = ", ".join(repr(cut_id(i)) for i in unique[:MAX_NAMED_IDS])
    more = len(unique) - MAX_NAMED_IDS
    return f"{shown} and {more:,} more" if more > 0 else shown
