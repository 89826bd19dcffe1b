"""Keeps one plugin server registered with the kubelet, across kubelet restarts.

A generation is: a fresh socket name, a server on it, registration. A restarted
kubelet deletes our socket and recreates kubelet.sock (and never calls
ListAndWatch again on the old registration), so either event ends the
generation: the old server stops before the new one registers, and the old
socket is removed. The folder is watched with inotify (watchfiles).

A config change that alters the resource's DevicePluginOptions ends the
generation the same way (`reregister()`): the kubelet reads the options only at
registration. The old server stops before the new one registers, as after a
kubelet restart (KUBELET.md §5: an old endpoint's late disconnect can tear down
the new one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from watchfiles import Change

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.fswatch import FolderWatch
from gpu_device_plugin.server.plugin_server import PluginServer
from gpu_device_plugin.server.registration import API_VERSION, REGISTRATION_BACKOFF, register_until_accepted
from gpu_device_plugin.server.service import DevicePluginService
from gpu_device_plugin.server.sockets import (
    KUBELET_SOCKET,
    check_plugin_dir,
    fresh_socket_name,
    remove_stale_sockets,
)
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink

log = logging.getLogger(__name__)


@dataclass
class PluginSupervisor:
    service: DevicePluginService
    plugin_dir: Path
    tracer: trace.Tracer
    # The tracer of each RPC's server span (rpc_spans); None when tracing is off.
    server_spans: trace.Tracer | None = None
    backoff: Backoff = REGISTRATION_BACKOFF
    # Streams get this long to finish when a server stops.
    stop_grace: float = 0.5
    # Called with each generation's socket path once registered (tests, demo).
    on_registered: Callable[[Path], None] | None = None
    metrics: MetricsSink = NULL_METRICS
    # grpc.health.v1 servicer served on every generation's socket (health_service.py).
    health: Any = None
    generation: int = field(default=0, init=False)
    current_socket: Path | None = field(default=None, init=False)
    # Set by reregister(): ends the current generation (the reason is logged and traced).
    _reregister: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _reregister_reason: str = field(default="", init=False, repr=False)
    _changes: asyncio.Future[set[tuple[Change, Path]]] | None = field(default=None, init=False, repr=False)

    def reregister(self, reason: str) -> None:
        """Start a new generation (fresh socket, new registration) for `reason`."""
        self._reregister_reason = reason
        self._reregister.set()

    @property
    def kubelet_socket(self) -> Path:
        return self.plugin_dir / KUBELET_SOCKET

    async def run(self) -> None:
        # Never created here: a missing folder is a wrong path, not one to wait in.
        check_plugin_dir(self.plugin_dir, self.service.resource_name)
        remove_stale_sockets(self.plugin_dir, self.service.resource_name)
        # Armed before the first server starts, so no restart can slip past.
        with FolderWatch(self.plugin_dir) as watcher:
            try:
                await self._generations(watcher)
            finally:
                # The folder's wait ends before the watch is closed under it.
                await asyncio.shield(self._stop_waiting())

    async def _generations(self, watcher: FolderWatch) -> None:
        # The span that made the next registration necessary: its Register spans are its children.
        cause: otel_context.Context | None = None
        while True:
            reason, restart = await self._run_generation(watcher, cause)
            if restart:
                log.info("kubelet restart seen (%s): starting a new server and registering again", reason)
                self.metrics.kubelet_restart()
            else:
                log.info(
                    "%s: %s; starting a new server and registering again",
                    self.service.resource_name,
                    reason,
                )
            with self.tracer.start_as_current_span("KubeletRestart" if restart else "Reregister") as span:
                span.set_attributes(
                    {
                        attrs.RESOURCE_NAME: self.service.resource_name,
                        attrs.RESTART_REASON: reason,
                        attrs.GENERATION: self.generation,
                    }
                )
                cause = trace.set_span_in_context(span)

    async def _run_generation(
        self, watcher: FolderWatch, cause: otel_context.Context | None
    ) -> tuple[str, bool]:
        """Serve and register once; (why it ended, whether that was a kubelet restart)."""
        self.generation += 1
        path = self.plugin_dir / fresh_socket_name(self.service.resource_name, self.generation)
        server = PluginServer(self.service, path, self.server_spans, self.health)
        registering: asyncio.Task[None] | None = None
        try:
            await server.start()
            self.current_socket = path
            registering = asyncio.create_task(self._register(path, cause), name=f"register-{self.generation}")
            return await self._next_restart(watcher, path)
        finally:
            if registering is not None:
                registering.cancel()
                # wait(): a cancellation of this task arriving meanwhile must not be swallowed.
                await asyncio.wait([registering])
                if not registering.cancelled() and (error := registering.exception()) is not None:
                    raise error
            self.current_socket = None
            await asyncio.shield(server.stop(self.stop_grace))

    async def _register(self, path: Path, cause: otel_context.Context | None) -> None:
        request = pb.RegisterRequest(
            version=API_VERSION,
            endpoint=path.name,
            resource_name=self.service.resource_name,
            options=self.service.options,
        )
        await register_until_accepted(
            self.kubelet_socket,
            request,
            tracer=self.tracer,
            backoff=self.backoff,
            metrics=self.metrics,
            parent=cause,
        )
        if self.on_registered is not None:
            self.on_registered(path)

    async def _next_restart(self, watcher: FolderWatch, ours: Path) -> tuple[str, bool]:
        while True:
            if self._reregister.is_set():
                self._reregister.clear()
                return self._reregister_reason, False
            # One wait on the folder at a time, kept across generations: a reregister must
            # neither drop a batch of changes nor start a second watch on the same inotify.
            if self._changes is None:
                self._changes = asyncio.ensure_future(watcher.next_changes())
            asked = asyncio.ensure_future(self._reregister.wait())
            try:
                await asyncio.wait((self._changes, asked), return_when=asyncio.FIRST_COMPLETED)
            finally:
                asked.cancel()
                # wait(), not `await asked` under suppress(CancelledError): that would also
                # swallow this task's own cancellation arriving meanwhile, and it would go on.
                await asyncio.wait([asked])
            if not self._changes.done():
                continue  # asked to re-register: the top of the loop returns
            changes, self._changes = self._changes, None
            for change, changed in changes.result():
                if changed.name == KUBELET_SOCKET and change is not Change.deleted:
                    return "kubelet.sock recreated", True
                if changed == ours and change is Change.deleted:
                    return f"our socket {ours.name} was removed", True

    async def _stop_waiting(self) -> None:
        if self._changes is not None:
            self._changes.cancel()
            await asyncio.wait([self._changes])
            self._changes = None
