"""Hands finished spans to a separate export process: pipe_tracer's sink, and an SDK SpanProcessor.

Why: the OTLP exporters encode every span to protobuf in pure Python (~40 us
a span) on the BatchSpanProcessor's thread, holding the GIL, so the event loop
answering the kubelet stalls behind each batch (bench/tracing.py: Allocate p99
+27 % paced, +86 % back to back). Here the thread that ends a span only turns
it into a tuple of builtins (span_codec) and appends it to a bounded buffer;
a flusher thread pickles what has gathered every `interval` seconds (sooner
when half the buffer is used) and writes it, in messages of BATCH spans, to
span_export_child, which runs the SDK's own
BatchSpanProcessor and OTLP exporter from the same OTEL_* variables.

The child is started with subprocess (fork + exec at once, before any gRPC
server exists; a forked copy of a gRPC-using process is never run). Failure
modes, none of which blocks the daemon:
- buffer full (the flusher cannot keep up): the span is dropped and counted;
- no room in the pipe for a whole batch (the child is behind): the batch is
  dropped and counted, never written in part;
- the child exits, or takes more than WRITE_TIMEOUT_S to make room for the
  rest of a message: logged once, then every span is dropped and counted;
- shutdown: what is buffered is sent, the child's stdin is closed (it exports
  what it holds and exits), and after `shutdown_timeout` it is killed.
The child dies with us: our exit, however abrupt, closes its stdin. It runs
under SCHED_IDLE (span_export_child), so on a busy node it exports with the
CPU time our own threads leave; if that is too little, the cost is dropped
batches here, counted and logged at shutdown.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from gpu_device_plugin.telemetry.span_codec import SpanTuple, resource_to_tuple, span_to_tuple

log = logging.getLogger(__name__)

CHILD_MODULE = "gpu_device_plugin.telemetry.span_export_child"
#: How long one write to the child may take before the child counts as hung. It only
#: ever reads into its own queue, so a full pipe for this long means it is stuck.
WRITE_TIMEOUT_S = 2.0


#: Spans per message: pickling takes about 0.7 us a span, all of it with the GIL held
#: (a 64-span message: about 45 us).
BATCH = 64

#: The pipe to the child is widened to this (Linux's default limit for unprivileged
#: processes, /proc/sys/fs/pipe-max-size) so that it can lag thousands of spans behind.
PIPE_SIZE = 1 << 20


class ChildGone(Exception):
    """The export process exited or stopped reading."""


class Backlog(Exception):
    """The pipe has no room for a whole batch: the child is behind."""


def _widen(fd: int) -> int:
    """Widen the pipe as far as allowed; return its capacity in bytes."""
    with contextlib.suppress(OSError):  # EPERM: over the system's limit, keep the default
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def _queued(fd: int) -> int:
    """Bytes written to the pipe that the child has not read yet."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


class SpanPipe(SpanProcessor):
    def __init__(
        self,
        resource: Resource,
        env: Mapping[str, str] | None = None,
        *,
        max_buffered: int = 2048,
        interval: float = 1.0,
        early_flush_at: int | None = None,
        shutdown_timeout: float = 5.0,
        argv: list[str] | None = None,
    ) -> None:
        # Counted without a lock: almost every span ends on the event loop's thread,
        # and a count a little short under a race is good enough for a warning.
        self.dropped = 0
        self._max = max_buffered
        self._interval = interval
        self._shutdown_timeout = shutdown_timeout
        # deque.append and popleft are atomic: the threads ending spans and the
        # flusher share the buffer without a lock.
        self._buffer: deque[SpanTuple] = deque()
        self._write_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flush_token = 0
        self._acks = b""
        self._failed = False
        self._closed = False
        self._stop = threading.Event()
        # Set when the buffer is half full: the flusher sends then rather than at its next
        # tick, so a burst is not dropped for want of room while an idle plugin still wakes
        # only once every `interval`.
        self._wake = threading.Event()
        self._wake_at = early_flush_at if early_flush_at is not None else max(1, max_buffered // 2)
        self._child = subprocess.Popen(
            argv or [sys.executable, "-m", CHILD_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
        assert self._child.stdin is not None
        assert self._child.stdout is not None
        self._stdin = self._child.stdin.fileno()
        self._stdout = self._child.stdout.fileno()
        os.set_blocking(self._stdin, False)
        self._capacity = _widen(self._stdin)
        # A child gone already is logged in _send; every span is dropped and counted then.
        with contextlib.suppress(ChildGone):
            self._send(("resource", resource_to_tuple(resource)), time.monotonic() + WRITE_TIMEOUT_S)
        self._flusher = threading.Thread(target=self._run, name="span-pipe", daemon=True)
        self._flusher.start()

    @property
    def child_pid(self) -> int:
        return self._child.pid

    # -- the calling threads -------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return  # recorded but not sampled: not exported
        self.send(span_to_tuple(span))

    def send(self, plain: SpanTuple) -> None:
        """A finished, sampled span in tuple form (pipe_tracer's spans come this way)."""
        buffered = len(self._buffer)
        if self._failed or self._closed or buffered >= self._max:
            self.dropped += 1
            return
        self._buffer.append(plain)
        if buffered + 1 >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    # -- the flusher thread --------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set() or self._failed:
                return
            if self._child.poll() is not None:
                self._fail(f"exited with status {self._child.returncode}")
                return
            self._send_buffered(time.monotonic() + WRITE_TIMEOUT_S)

    def _send_buffered(self, deadline: float) -> None:
        # In batches of at most BATCH spans: pickling holds the GIL, so a flush of
        # a busy second's spans must not stall the event loop for all of it at once.
        while self._buffer:
            batch: list[SpanTuple] = []
            # Popped one by one until empty: force_flush may drain from another thread.
            with contextlib.suppress(IndexError):
                while len(batch) < BATCH:
                    batch.append(self._buffer.popleft())
            if not batch:
                return
            try:
                self._send(("spans", batch), deadline, droppable=True)
            except (ChildGone, Backlog):
                self.dropped += len(batch)

    def _send(self, message: tuple[str, Any], deadline: float, *, droppable: bool = False) -> None:
        data = memoryview(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        with self._write_lock:
            if self._failed:
                raise ChildGone
            if droppable and len(data) > self._capacity - _queued(self._stdin):
                # The child is behind (starved of CPU, or its exporter's queue is full
                # and it reads slowly): drop this batch whole rather than wait on it.
                raise Backlog
            try:
                while data:
                    try:
                        data = data[os.write(self._stdin, data) :]
                        continue
                    except BlockingIOError:
                        pass  # the pipe is full: wait until the child reads
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not select.select([], [self._stdin], [], remaining)[1]:
                        # Part of a message may be in the pipe: the stream cannot be resumed.
                        self._child.kill()
                        self._fail("stopped reading")
                        raise ChildGone
            except OSError as error:  # EPIPE: it exited
                self._fail(f"is gone ({error.strerror})")
                raise ChildGone from error

    def _fail(self, why: str) -> None:
        if not self._failed:
            self._failed = True
            log.warning(
                "span export process %s; spans are dropped from now on (tracing degraded)",
                why,
                extra={"pid": self._child.pid},
            )

    # -- flush and shutdown --------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send what is buffered and wait until the child has exported it (or the timeout)."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._flush_lock:
            if self._failed or self._closed:
                return False
            self._flush_token += 1
            token = str(self._flush_token).encode()
            try:
                self._send_buffered(deadline)
                remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
                self._send(("flush", (self._flush_token, remaining_ms)), deadline)
            except ChildGone:
                return False
            return self._wait_ack(token, deadline)

    def _wait_ack(self, token: bytes, deadline: float) -> bool:
        while True:
            lines = self._acks.split(b"\n")
            if token in lines[:-1]:
                self._acks = lines[-1]
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._stdout], [], [], remaining)[0]:
                return False
            chunk = os.read(self._stdout, 4096)
            if not chunk:  # it closes its end of the ack pipe only by exiting
                self._fail("exited")
                return False
            self._acks += chunk

    def shutdown(self) -> None:
        """Send what is buffered and let the child export it and exit, within shutdown_timeout."""
        if self._closed:
            return
        deadline = time.monotonic() + self._shutdown_timeout
        self._stop.set()
        self._wake.set()
        self._flusher.join(max(0.0, deadline - time.monotonic()))
        if not self._failed:
            self._send_buffered(deadline)
        self._closed = True
        self.dropped += len(self._buffer)  # left behind by a child that is gone
        with self._write_lock:
            self._child.stdin.close()  # type: ignore[union-attr]  # EOF: export and exit
        try:
            if self._child.wait(max(0.0, deadline - time.monotonic())) != 0:
                self._fail(f"exited with status {self._child.returncode}")
        except subprocess.TimeoutExpired:
            log.warning(
                "span export process did not finish within %.1f s; killed, its queued spans are lost",
                self._shutdown_timeout,
            )
            self._child.kill()
            self._child.wait()
        self._child.stdout.close()  # type: ignore[union-attr]
        if self.dropped:
            log.warning(
                "%d spans were dropped (span export buffer full or export process gone)", self.dropped
            )
