"""A stand-in for the kubelet's Registration service, for the demo.

It accepts Register on kubelet.sock in a folder and hands each request to the
caller; everything else the kubelet does is driven by the caller through
PluginClient. Never used by `serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.server.sockets import KUBELET_SOCKET


class _Registration(pb_grpc.RegistrationServicer):
    def __init__(self, requests: asyncio.Queue[pb.RegisterRequest]) -> None:
        self._requests = requests

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext[pb.RegisterRequest, pb.Empty]
    ) -> pb.Empty:
        await self._requests.put(request)
        return pb.Empty()


class StandinKubelet:
    def __init__(self, plugin_dir: Path) -> None:
        self.plugin_dir = plugin_dir
        self.requests: asyncio.Queue[pb.RegisterRequest] = asyncio.Queue()
        self._server = grpc.aio.server()
        pb_grpc.add_RegistrationServicer_to_server(_Registration(self.requests), self._server)
        self._server.add_insecure_port(f"unix://{plugin_dir / KUBELET_SOCKET}")

    async def __aenter__(self) -> StandinKubelet:
        await self._server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.stop(None)
        with contextlib.suppress(FileNotFoundError):
            (self.plugin_dir / KUBELET_SOCKET).unlink()
