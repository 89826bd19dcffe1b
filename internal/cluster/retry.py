"""Capped exponential backoff, a token bucket, and logging an outage once rather than per attempt.

Pure state over injected clocks and randomness, so tests assert delays exactly.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from gpu_device_plugin.cluster.nodeapi import ClusterApiError


@dataclass(frozen=True)
class Backoff:
    """Delay before retry `attempt` (0-based): initial * 2**attempt, at most `cap`, +/- jitter.

    The jitter spreads the retries of a thousand nodes that lost the API server
    at the same moment, so they do not all come back in the same second.
    """

    initial_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.2
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int) -> float:
        base = min(self.cap_s, self.initial_s * 2.0 ** min(attempt, 32))
        return base * (1 + self.jitter * (2 * self.rng() - 1))


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
