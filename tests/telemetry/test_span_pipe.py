"""The span pipe: spans reach a real OTLP receiver through the export process; flush,
shutdown and a broken child are bounded and never raise into the caller."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from gpu_device_plugin.telemetry import span_pipe
from gpu_device_plugin.telemetry.span_pipe import SpanPipe
from support.otlp import OtlpReceiver

RESOURCE = Resource({"service.name": "gpu-device-plugin", "k8s.node.name": "node-a"})
# A child that never reads its stdin and shrugs off SIGTERM: the worst a child can do.
HUNG_CHILD = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)",
]


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as started:
        yield started


def exporting_to(receiver: OtlpReceiver) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return env | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # only flush and shutdown export
    }


def provider_with(pipe: SpanPipe) -> TracerProvider:
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(pipe)
    return provider


def make_spans(provider: TracerProvider, *names: str) -> None:
    tracer = provider.get_tracer("gpu_device_plugin")
    for name in names:
        with tracer.start_as_current_span(name, attributes={"gpu.allocation_size": 1}):
            pass


async def test_shutdown_exports_what_is_buffered_then_the_child_exits(receiver: OtlpReceiver) -> None:
    # A flusher that would not run for a minute: only shutdown sends these.
    pipe = SpanPipe(RESOURCE, exporting_to(receiver), interval=60)
    provider = provider_with(pipe)
    make_spans(provider, "Discover", "Register", "Allocate")

    started = time.monotonic()
    await asyncio.to_thread(provider.shutdown)

    assert time.monotonic() - started < 5
    assert sorted(s.name for s in receiver.spans) == ["Allocate", "Discover", "Register"]
    assert all(s.resource["k8s.node.name"] == "node-a" for s in receiver.spans)
    assert all(s.attributes == {"gpu.allocation_size": 1} for s in receiver.spans)
    with pytest.raises(ProcessLookupError):
        os.kill(pipe.child_pid, 0)  # exited and reaped


async def test_force_flush_waits_until_the_child_has_exported(receiver: OtlpReceiver) -> None:
    pipe = SpanPipe(RESOURCE, exporting_to(receiver), interval=60)
    provider = provider_with(pipe)
    try:
        make_spans(provider, "Allocate")
        assert await asyncio.to_thread(provider.force_flush, 10_000)
        # Acked after the export returned: the receiver has it, no waiting needed.
        assert [s.name for s in receiver.spans] == ["Allocate"]
    finally:
        await asyncio.to_thread(provider.shutdown)


async def test_a_half_full_buffer_is_sent_before_the_next_tick(receiver: OtlpReceiver) -> None:
    # A flusher whose tick is a minute away, and a child that exports at once.
    env = exporting_to(receiver) | {"OTEL_BSP_SCHEDULE_DELAY": "20"}
    pipe = SpanPipe(RESOURCE, env, interval=60, max_buffered=8)
    provider = provider_with(pipe)
    try:
        make_spans(provider, *(f"Allocate {i}" for i in range(4)))
        spans = await receiver.wait_for(lambda spans: len(spans) == 4)
        assert sorted(s.name for s in spans) == [f"Allocate {i}" for i in range(4)]
        assert pipe.dropped == 0
    finally:
        await asyncio.to_thread(provider.shutdown)


def test_shutdown_is_bounded_when_the_child_hangs(caplog: pytest.LogCaptureFixture) -> None:
    pipe = SpanPipe(RESOURCE, argv=HUNG_CHILD, interval=60, shutdown_timeout=0.5)
    provider = provider_with(pipe)
    make_spans(provider, "Allocate")

    started = time.monotonic()
    provider.shutdown()

    assert time.monotonic() - started < 3
    assert "did not finish within 0.5 s; killed" in caplog.text
    with pytest.raises(ProcessLookupError):
        os.kill(pipe.child_pid, 0)


def test_a_full_buffer_drops_and_counts_instead_of_blocking() -> None:
    pipe = SpanPipe(
        RESOURCE, argv=HUNG_CHILD, max_buffered=2, interval=60, early_flush_at=100, shutdown_timeout=0.5
    )
    provider = provider_with(pipe)
    try:
        make_spans(provider, *(f"Allocate {i}" for i in range(5)))
        assert pipe.dropped == 3
    finally:
        provider.shutdown()


def test_a_child_that_is_behind_costs_whole_batches_not_the_child(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(span_pipe, "PIPE_SIZE", 4096)  # the smallest pipe Linux makes
    pipe = SpanPipe(RESOURCE, argv=HUNG_CHILD, interval=60, shutdown_timeout=0.5)
    provider = provider_with(pipe)
    try:
        # Two messages of span_pipe.BATCH spans, each ~6 KiB pickled: neither fits.
        make_spans(provider, *(f"Allocate {i}" for i in range(2 * span_pipe.BATCH)))
        with caplog.at_level(logging.WARNING):
            assert not provider.force_flush(200)  # no room: both dropped whole; no ack
        assert pipe.dropped == 2 * span_pipe.BATCH
        os.kill(pipe.child_pid, 0)  # still there: a slow child is not a broken one
        assert "span export process" not in caplog.text
    finally:
        provider.shutdown()


def test_a_killed_child_is_logged_once_then_spans_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    pipe = SpanPipe(RESOURCE, interval=60)
    provider = provider_with(pipe)
    try:
        os.kill(pipe.child_pid, signal.SIGKILL)
        with caplog.at_level(logging.WARNING):
            assert not provider.force_flush(5_000)  # notices: no ack, EOF or EPIPE
            make_spans(provider, "Allocate", "Allocate")
            assert not provider.force_flush(5_000)
        assert pipe.dropped == 2
        assert caplog.text.count("span export process") == 1
    finally:
        provider.shutdown()
