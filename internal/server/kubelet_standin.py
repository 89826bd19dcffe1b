"""A stand-in for the kubelet's side of the device-plugin protocol, over real unix sockets.

One stand-in for the demo, the tests and the benchmarks. It serves the
kubelet's Registration service on kubelet.sock in a folder and, on Register,
does what the kubelet does: dials the plugin's endpoint back, asks
GetDevicePluginOptions and holds one ListAndWatch stream for the
registration's life, recording every device list it is sent. `restart()` is a
kubelet restart: stop serving, delete every file in the folder but the
checkpoint, serve kubelet.sock again. With `follow=False` it only records the
requests, for a caller that plays the kubelet's calls itself (the demo, the
benchmarks that time their own stream).

Never used by `serve`: it is the other end of the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.server.sockets import KUBELET_SOCKET

#: The kubelet's own file in the device-plugin folder: a restart leaves it.
CHECKPOINT = "kubelet_internal_checkpoint"
#: How long the dial-back's GetDevicePluginOptions may take, as the kubelet bounds it.
DIAL_BACK_TIMEOUT_S = 10.0
T = TypeVar("T")


@dataclass(eq=False)
class Registration:
    """One accepted Register, and what the stand-in has heard on its stream since."""

    request: pb.RegisterRequest
    #: 1 for the first registration this stand-in accepted, then 2, ...
    generation: int
    #: The plugin's answer to the dial-back; None without `follow`.
    options: pb.DevicePluginOptions | None = None
    updates: list[pb.ListAndWatchResponse] = field(default_factory=list)
    channel: grpc.aio.Channel | None = None
    stream_task: asyncio.Task[None] | None = None

    @property
    def latest(self) -> pb.ListAndWatchResponse:
        return self.updates[-1]

    def stub(self) -> pb_grpc.DevicePluginStub:
        assert self.channel is not None, "a registration the stand-in did not follow has no channel"
        return pb_grpc.DevicePluginStub(self.channel)


#: Called with each device list as it arrives (under the stand-in's lock: keep it short).
UpdateHook = Callable[[Registration, pb.ListAndWatchResponse], None]


class StandinKubelet(pb_grpc.RegistrationServicer):
    def __init__(self, plugin_dir: Path, *, follow: bool = True, on_update: UpdateHook | None = None) -> None:
        self.plugin_dir = plugin_dir
        self.follow = follow
        self.registrations: list[Registration] = []
        #: Set: Register is refused with this code (a kubelet that rejects the plugin).
        self.refuse_with: grpc.StatusCode | None = None
        self._on_update = on_update
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None
        self._generations = itertools.count(1)

    @property
    def socket(self) -> Path:
        return self.plugin_dir / KUBELET_SOCKET

    async def __aenter__(self) -> StandinKubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = grpc.aio.server()
        pb_grpc.add_RegistrationServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{self.socket}")
        await self._server.start()

    async def stop(self) -> None:
        """Stop serving and hang up on every registration, as a stopping kubelet does."""
        if self._server is not None:
            await self._server.stop(None)
            self._server = None
        for registration in self.registrations:
            await _hang_up(registration)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    async def restart(self) -> None:
        """A kubelet restart: it wipes the folder (all but its checkpoint) and serves anew."""
        await self.stop()
        for path in self.plugin_dir.iterdir():
            if path.name != CHECKPOINT:
                path.unlink()
        await self.start()

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext[pb.RegisterRequest, pb.Empty]
    ) -> pb.Empty:
        if self.refuse_with is not None:
            await context.abort(self.refuse_with, "refused by the stand-in kubelet")
        registration = Registration(request, next(self._generations))
        if self.follow:
            channel = grpc.aio.insecure_channel(f"unix://{self.plugin_dir / request.endpoint}")
            stub = pb_grpc.DevicePluginStub(channel)
            registration.channel = channel
            registration.options = await stub.GetDevicePluginOptions(pb.Empty(), timeout=DIAL_BACK_TIMEOUT_S)
            registration.stream_task = asyncio.create_task(self._follow(registration, stub))
        async with self._changed:
            self.registrations.append(registration)
            self._changed.notify_all()
        return pb.Empty()

    async def _follow(self, registration: Registration, stub: pb_grpc.DevicePluginStub) -> None:
        # The stream ends when the plugin stops or the stand-in hangs up: either is the end of it.
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for update in stub.ListAndWatch(pb.Empty()):
                async with self._changed:
                    registration.updates.append(update)
                    if self._on_update is not None:
                        self._on_update(registration, update)
                    self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float | None = 5.0) -> T:
        """Wait until predicate() returns something truthy (checked at every change); return it."""

        async def until() -> T:
            async with self._changed:
                while True:
                    result = predicate()
                    if result:
                        return result
                    await self._changed.wait()

        return await asyncio.wait_for(until(), timeout)

    async def wait_registered(self, count: int = 1, timeout: float | None = 5.0) -> Registration:
        """Wait for the count-th registration (and, when following, its first device list)."""

        def registered() -> Registration | None:
            if len(self.registrations) < count:
                return None
            registration = self.registrations[count - 1]
            return registration if registration.updates or not self.follow else None

        return await self.wait_for(registered, timeout)


async def _hang_up(registration: Registration) -> None:
    if registration.stream_task is not None:
        registration.stream_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await registration.stream_task
    if registration.channel is not None:
        await registration.channel.close()
