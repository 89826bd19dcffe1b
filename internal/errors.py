"""The project's own exception hierarchy.

Library errors (NVML, YAML, pydantic, gRPC) are chained into these at the layer
that meets them, so callers decide by our types alone. The mapping to gRPC
status codes lives in server/status.py and to exit codes in cli/exitcodes.py:
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
        self.ids = tuple(ids)


class DeviceUnavailableError(RequestError):
    """A request names devices that exist but cannot be handed out (unhealthy)."""


def quote_ids(ids: Iterable[str]) -> str:
    """Render ids for an error message: sorted, quoted, comma-separated."""
    return ", ".join(repr(i) for i in sorted(set(ids)))
