"""Durations in configuration: a number of seconds, finite and within bounds.

Every layer's config checks its durations with this one rule: a NaN or an
infinity compares false with every bound and would disable a loop for ever
without a word.
"""

from __future__ import annotations

import math

from gpu_device_plugin.errors import ConfigError


def check_seconds(field: str, value: float, *, maximum: float, zero_ok: bool) -> float:
    """A duration in seconds: finite, within (0 or above 0) .. maximum."""
    lowest = "0" if zero_ok else "above 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) or value > maximum:
        raise ConfigError(field, f"must be a number of seconds from {lowest} to {maximum:g}, got {value:g}")
    return value
