"""Finished spans collected in memory, with a way to wait for them (no sleeping).

The SDK's own TracerProvider, as the plugin uses it, with the SDK's in-memory
exporter behind a synchronous processor: a test sees each span as it ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class SpanRecorder(SimpleSpanProcessor):
    """Records every finished span; `wait_for` blocks until a condition on them holds."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        super().__init__(self.exporter)
        self._ended = threading.Condition()
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(self)

    def on_end(self, span: ReadableSpan) -> None:
        super().on_end(span)
        with self._ended:
            self._ended.notify_all()

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def _wait(self, condition: Callable[[tuple[ReadableSpan, ...]], bool], timeout: float) -> bool:
        with self._ended:
            return self._ended.wait_for(lambda: condition(self.spans), timeout)

    async def wait_for(
        self, condition: Callable[[tuple[ReadableSpan, ...]], bool], timeout: float = 5.0
    ) -> tuple[ReadableSpan, ...]:
        assert await asyncio.to_thread(self._wait, condition, timeout), "spans never arrived"
        return self.spans
