"""One gRPC server on one socket file: start, prove it answers, stop and clean up."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2_grpc
from opentelemetry import trace

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.server.rpc_spans import RpcSpans

log = logging.getLogger(__name__)


class PluginServer:
    def __init__(
        self,
        service: pb_grpc.DevicePluginServicer,
        socket_path: Path,
        server_spans: trace.Tracer | None = None,
        health: health_pb2_grpc.HealthServicer | None = None,
    ) -> None:
        self.socket_path = socket_path
        # No interceptor at all when tracing is off: every call would go through it.
        interceptors = [] if server_spans is None else [RpcSpans(server_spans)]
        self._server = grpc.aio.server(interceptors=interceptors)
        pb_grpc.add_DevicePluginServicer_to_server(service, self._server)
        if health is not None:
            # grpc.health.v1 beside the device-plugin API (server/health_service.py).
            health_pb2_grpc.add_HealthServicer_to_server(health, self._server)
        self._server.add_insecure_port(f"unix://{socket_path}")

    async def start(self, *, self_check_timeout: float = 2.0) -> None:
        await self._server.start()
        # The kubelet dials back during Register and gives up after 10 s; make
        # sure we really answer before telling it where we are.
        async with grpc.aio.insecure_channel(f"unix://{self.socket_path}") as channel:
            await pb_grpc.DevicePluginStub(channel).GetDevicePluginOptions(
                pb.Empty(), timeout=self_check_timeout
            )
        log.info("serving at %s", self.socket_path)

    async def stop(self, grace: float | None) -> None:
        """Stop accepting, cancel open streams after `grace`, remove the socket file."""
        await self._server.stop(grace)
        # The kubelet may have removed it already; never leave it behind.
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
