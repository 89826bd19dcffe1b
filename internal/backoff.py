"""Capped exponential backoff, shared by everything that retries a peer.

The kubelet's registration and the API server calls (labels, Events) wait
the same way: doubling delays up to a cap, with optional jitter. Pure, with
injectable randomness, so tests assert delays exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Delay before retry `attempt` (0-based): initial * 2**attempt, at most `cap`, +/- jitter.

    Jitter spreads the retries of a thousand nodes that lost the API server at
    the same moment, so they do not all come back in the same second.
    """

    initial_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.2
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int) -> float:
        base = min(self.cap_s, self.initial_s * 2.0 ** min(attempt, 32))
        return base * (1 + self.jitter * (2 * self.rng() - 1))

    def delays(self) -> Iterator[float]:
        """delay(0), delay(1), ... without end."""
        attempt = 0
        while True:
            yield self.delay(attempt)
            attempt += 1
