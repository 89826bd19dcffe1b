"""Logging an API server outage once when it starts and once when it ends, not per attempt.

(The retry delays themselves are gpu_device_plugin.backoff.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gpu_device_plugin.cluster.nodeapi import ClusterApiError


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
