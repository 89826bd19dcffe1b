"""The span-export process: reads span batches from the plugin on stdin, exports them over OTLP.

Started by span_pipe.SpanPipe as `python -m gpu_device_plugin.telemetry.span_export_child`.
The SDK's own BatchSpanProcessor and OTLP exporter (gRPC or HTTP, endpoints,
headers, timeouts: all from the OTEL_* variables this process inherits) do the
work here, so their protobuf encoding never holds the plugin's GIL.

Protocol on stdin: a stream of pickles, each `(kind, payload)`:
- ("resource", ResourceTuple): first, once;
- ("spans", [SpanTuple, ...]): a batch to export;
- ("flush", (token, timeout_ms)): export everything queued, then write
  "<token>\\n" on the ack pipe (our stdout).
End of input (the plugin exited, cleanly or not) means: export what is queued
and exit. Pickle is safe here: the only writer is the parent that started us,
through a pipe no one else holds.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
from typing import BinaryIO

from opentelemetry.sdk.trace.export import BatchSpanProcessor

from gpu_device_plugin.telemetry.span_codec import SpanDecoder, resource_from_tuple
from gpu_device_plugin.telemetry.tracing import otlp_exporter

log = logging.getLogger("gpu_device_plugin.telemetry.span_export")

#: Spans the batch processor may hold waiting for export (the SDK's default: 2048).
QUEUE_SIZE = 16384


def serve(source: BinaryIO, acks: BinaryIO) -> None:
    # The SDK's default queue (2048) overflows when a burst arrives while this process,
    # at the lowest priority, waits for CPU; the parent may have ~10000 in flight
    # (its buffer and the pipe). OTEL_BSP_MAX_QUEUE_SIZE still decides when set.
    queue = None if "OTEL_BSP_MAX_QUEUE_SIZE" in os.environ else QUEUE_SIZE
    processor = BatchSpanProcessor(otlp_exporter(os.environ), max_queue_size=queue)
    decoder: SpanDecoder | None = None
    try:
        while True:
            try:
                kind, payload = pickle.load(source)
            except EOFError:
                return
            if kind == "resource":
                decoder = SpanDecoder(resource_from_tuple(payload))
            elif kind == "spans" and decoder is not None:
                for plain in payload:
                    processor.on_end(decoder.span(plain))
            elif kind == "flush":
                token, timeout_ms = payload
                processor.force_flush(timeout_ms)
                acks.write(f"{token}\n".encode())
                acks.flush()
    finally:
        processor.shutdown()  # type: ignore[no-untyped-call]  # exports what is queued, within the exporter's timeout


def main() -> None:
    # The plugin decides when we stop (by closing our stdin) so that its last spans
    # get out: a Ctrl-C or a SIGTERM sent to the whole group must not kill us first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Exporting is never urgent; answering the kubelet is. SCHED_IDLE: run only on CPU
    # time nothing else in our cgroup (the plugin's own threads) wants.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:  # a sandbox that forbids it: the next best thing
        os.nice(19)
    # stdout is the ack pipe: keep anyone's prints (a console exporter, a library) off it.
    acks = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s span-export: %(message)s")
    serve(sys.stdin.buffer, acks)


if __name__ == "__main__":
    main()
