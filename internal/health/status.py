"""Whether health checking itself works: which of its parts are down, and why.

A health check that stops without a word (a thread that died, a loop that
crashed) leaves every device as it last was, forever: a GPU that falls off the
bus afterwards stays Healthy and keeps getting pods. So every part of the
health path that can die reports here; each report is logged at ERROR with the
exception, sets the `health_checks_degraded{source}` gauge, and ends in a short
span with ERROR status. The current state is a latest-value cell, which the
plugin server follows to answer the standard gRPC health service that `probe`
asks (server/health_service.py).

What happens to the devices while a part is down is the health source's call:
ours keep the last known health (NVIDIA's plugin does the same when its health
goroutine fails) and restart the part with a backoff.

Nothing here performs I/O or blocks; it must only be used on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from opentelemetry import trace

from gpu_device_plugin.inventory import SnapshotCell
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink

log = logging.getLogger(__name__)
_NO_TRACER: trace.Tracer = trace.NoOpTracer()

# The parts that report (metric label values: a bounded set).
NVML_EVENTS = "nvml-events"  # the thread that waits for XID / ECC events
NVML_LOOP = "nvml"  # the loop that probes devices and publishes their health
FAKE_FILE = "fake-file"  # the fake backend's file watch

# (source, reason) pairs, sorted: an immutable value the cell can compare.
Degraded = tuple[tuple[str, str], ...]


class HealthCheckStatus:
    """Which health-check parts are down; every change is logged, counted and traced."""

    def __init__(
        self,
        sources: Iterable[str] = (),
        *,
        metrics: MetricsSink = NULL_METRICS,
        tracer: trace.Tracer = _NO_TRACER,
    ) -> None:
        self.sources: tuple[str, ...] = ()
        self.cell: SnapshotCell[Degraded] = SnapshotCell(())
        self._metrics = metrics
        self._tracer = tracer
        self.register(*sources)

    def register(self, *sources: str) -> None:
        """Parts that will report here: each shows 0 from the start, so "== 1" alerts see a series."""
        for source in sources:
            if source not in self.sources:
                self.sources += (source,)
                self._metrics.health_checks_degraded(source, False)

    @property
    def degraded(self) -> Mapping[str, str]:
        return dict(self.cell.value)

    @property
    def ok(self) -> bool:
        return not self.cell.value

    def degrade(self, source: str, error: BaseException) -> None:
        """`source` stopped because of `error`; it stays degraded until `restore`."""
        reason = f"{type(error).__name__}: {error}"
        log.error("health checking degraded: %s stopped: %s", source, reason, exc_info=error)
        was = self.degraded
        self._publish({**was, source: reason})
        if source in was:
            return  # already counted and traced; the log line says it failed again
        self._metrics.health_checks_degraded(source, True)
        with self._tracer.start_as_current_span(
            "HealthChecksDegraded",
            attributes={attrs.HEALTH_SOURCE: source, attrs.REASON: reason},
        ) as span:
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, reason))

    def restore(self, source: str) -> None:
        """`source` runs again."""
        was = self.degraded
        if source not in was:
            return
        self._publish({k: v for k, v in was.items() if k != source})
        log.info("health checking restored: %s runs again", source)
        self._metrics.health_checks_degraded(source, False)
        with self._tracer.start_as_current_span(
            "HealthChecksRestored", attributes={attrs.HEALTH_SOURCE: source}
        ):
            pass

    def _publish(self, degraded: Mapping[str, str]) -> None:
        self.cell.publish(tuple(sorted(degraded.items())))
