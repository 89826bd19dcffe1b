"""Finished spans collected in memory, with a way to wait for them (no sleeping).

Two tracers make the plugin's spans: the SDK's (inline export, the console)
and pipe_tracer's (export in the child process, the default). A recorder of
either kind gives the test the same ReadableSpans: the pipe kind's spans go
through pickle and span_codec's decoder, exactly as they reach the export
process, so a test of span content holds for both.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Callable

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gpu_device_plugin.telemetry.pipe_tracer import PipeTracerProvider
from gpu_device_plugin.telemetry.span_codec import SpanDecoder, SpanTuple

TRACER_KINDS = ("sdk", "pipe")


class DecodingSink:
    """What the export process does with a span tuple, done here: unpickle, rebuild, hand on."""

    def __init__(self, processor: SpanProcessor, resource: Resource | None = None) -> None:
        self.processor = processor
        self.decoder = SpanDecoder(resource or Resource.create({}))
        self.shut_down = False

    def send(self, plain: SpanTuple) -> None:
        self.processor.on_end(self.decoder.span(pickle.loads(pickle.dumps(plain))))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        self.shut_down = True


def pipe_provider(processor: SpanProcessor) -> PipeTracerProvider:
    """A PipeTracerProvider built as tracing.configure_tracing builds it, delivering to `processor`."""
    sdk = TracerProvider(shutdown_on_exit=False)
    return PipeTracerProvider(DecodingSink(processor), sampler=sdk.sampler, id_generator=sdk.id_generator)


class SpanRecorder(SimpleSpanProcessor):
    """Records every finished span; `wait_for` blocks until a condition on them holds."""

    def __init__(self, tracer_kind: str = "sdk") -> None:
        self.exporter = InMemorySpanExporter()
        super().__init__(self.exporter)
        self._ended = threading.Condition()
        self.provider: TracerProvider | PipeTracerProvider
        if tracer_kind == "pipe":
            self.provider = pipe_provider(self)
        else:
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
