"""A token bucket, and logging an outage once rather than per attempt (backoff: gpu_device_plugin.backoff).

Pure state over an injected clock, so tests assert timing exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gpu_device_plugin.cluster.nodeapi import ClusterApiError


@dataclass
class TokenBucket:
    """`burst` tokens, refilled at one per `refill_s` seconds; take() spends one if there is one."""

    burst: int
    refill_s: float
    clock: Callable[[], float]
    _tokens: float = field(init=False)
    _at: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._at = self.clock()

    def take(self) -> bool:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) / self.refill_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class OutageLog:
    """Logs when calls start failing (and when the failure changes kind), and when they work again.

    A loop that retries every few seconds for an hour writes two lines, not a thousand.
    """

    what: str
    logger: logging.Logger
    _failing: tuple[str, int | None] | None = field(default=None, init=False)

    @property
    def failing(self) -> bool:
        return self._failing is not None

    def failed(self, error: ClusterApiError, retry_in_s: float) -> None:
        state = (error.failure.value, error.status)
        if state != self._failing:
            self.logger.warning(
                "%s: API server call failed, %s; retrying with backoff (next in %.1f s), "
                "devices are still served",
                self.what,
                error,
                retry_in_s,
            )
        else:
            self.logger.debug("%s: still failing: %s (next try in %.1f s)", self.what, error, retry_in_s)
        self._failing = state

    def succeeded(self) -> None:
        if self._failing is not None:
            self.logger.info("%s: API server calls work again", self.what)
        self._failing = None
