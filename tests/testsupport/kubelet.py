"""A kubelet for tests: the real protocol over real unix sockets.

Serves Registration on kubelet.sock; on Register it does what the kubelet does:
dials the plugin's endpoint, asks GetDevicePluginOptions and holds one
ListAndWatch stream for the registration's life. `restart()` mimics a kubelet
restart: stop serving, delete every file in the folder but the checkpoint,
serve kubelet.sock again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc

CHECKPOINT = "kubelet_internal_checkpoint"
T = TypeVar("T")


@dataclass
class Registration:
    request: pb.RegisterRequest
    options: pb.DevicePluginOptions
    updates: list[pb.ListAndWatchResponse] = field(default_factory=list)
    channel: grpc.aio.Channel | None = None
    stream_task: asyncio.Task[None] | None = None

    @property
    def latest(self) -> pb.ListAndWatchResponse:
        return self.updates[-1]

    def stub(self) -> pb_grpc.DevicePluginStub:
        assert self.channel is not None
        return pb_grpc.DevicePluginStub(self.channel)


class KubeletSim(pb_grpc.RegistrationServicer):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.registrations: list[Registration] = []
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None
        self.refuse_with: grpc.StatusCode | None = None

    @property
    def socket(self) -> Path:
        return self.folder / "kubelet.sock"

    async def start(self) -> None:
        self._server = grpc.aio.server()
        pb_grpc.add_RegistrationServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{self.socket}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None
        for registration in self.registrations:
            await self._drop(registration)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    async def restart(self) -> None:
        await self.stop()
        for path in self.folder.iterdir():
            if path.name != CHECKPOINT:
                path.unlink()
        await self.start()

    async def _drop(self, registration: Registration) -> None:
        if registration.stream_task is not None:
            registration.stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await registration.stream_task
        if registration.channel is not None:
            await registration.channel.close()

    async def Register(self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext) -> pb.Empty:
        if self.refuse_with is not None:
            await context.abort(self.refuse_with, "refused by the test")
        channel = grpc.aio.insecure_channel(f"unix://{self.folder / request.endpoint}")
        stub = pb_grpc.DevicePluginStub(channel)
        options = await stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
        registration = Registration(request, options, channel=channel)
        registration.stream_task = asyncio.create_task(self._follow(registration, stub))
        async with self._changed:
            self.registrations.append(registration)
            self._changed.notify_all()
        return pb.Empty()

    async def _follow(self, registration: Registration, stub: pb_grpc.DevicePluginStub) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for update in stub.ListAndWatch(pb.Empty()):
                async with self._changed:
                    registration.updates.append(update)
                    self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Wait until predicate() returns something truthy; return it."""

        async def until() -> T:
            async with self._changed:
                while True:
                    result = predicate()
                    if result:
                        return result
                    await self._changed.wait()

        return await asyncio.wait_for(until(), timeout)

    async def wait_registered(self, count: int = 1, timeout: float = 5.0) -> Registration:
        """Wait for the count-th registration and its first device list."""
        return await self.wait_for(
            lambda: (
                len(self.registrations) >= count
                and self.registrations[count - 1].updates
                and self.registrations[count - 1]
            ),
            timeout,
        )
