"""The kubelet's side of the device-plugin API, as a small async client.

Used by `gpu-device-plugin probe` (the DaemonSet's health check) and by the
demo; it speaks exactly what the kubelet sends, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.server.health_service import HEALTH_CHECKS_SERVICE
from gpu_device_plugin.server.sockets import answers, our_sockets

# What health_checks() answers.
CHECKS_OK = "ok"
CHECKS_DEGRADED = "degraded"
CHECKS_OFF = "off"
CHECKS_UNKNOWN = "unknown"


def find_plugin_socket(plugin_dir: Path, resource_name: str) -> Path | None:
    """The newest of our sockets in the folder that accepts connections."""
    return next((p for p in our_sockets(plugin_dir, resource_name) if answers(p)), None)


@dataclass(frozen=True)
class PluginView:
    options: pb.DevicePluginOptions
    devices: Sequence[pb.Device]

    @property
    def unhealthy(self) -> list[str]:
        return [d.ID for d in self.devices if d.health != "Healthy"]


class PluginClient:
    def __init__(self, socket_path: Path, *, timeout: float = 5.0) -> None:
        self._channel = grpc.aio.insecure_channel(f"unix://{socket_path}")
        self._stub = pb_grpc.DevicePluginStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout = timeout

    async def __aenter__(self) -> PluginClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def view(self) -> PluginView:
        options = await self._stub.GetDevicePluginOptions(pb.Empty(), timeout=self._timeout)
        stream = self._stub.ListAndWatch(pb.Empty(), timeout=self._timeout)
        try:
            first = await stream.read()
        finally:
            stream.cancel()
        if first is grpc.aio.EOF:
            raise ConnectionError("ListAndWatch ended before sending a device list")
        return PluginView(options, list(first.devices))

    async def health_checks(self) -> str:
        """Whether the plugin's health checking runs: ok, degraded, off, or unknown (an older plugin)."""
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=HEALTH_CHECKS_SERVICE), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return CHECKS_OFF
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                return CHECKS_UNKNOWN
            raise
        return CHECKS_OK if response.status == health_pb2.HealthCheckResponse.SERVING else CHECKS_DEGRADED

    async def preferred(self, available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
        response = await self._stub.GetPreferredAllocation(
            pb.PreferredAllocationRequest(
                container_requests=[
                    pb.ContainerPreferredAllocationRequest(
                        available_deviceIDs=available,
                        must_include_deviceIDs=must_include,
                        allocation_size=size,
                    )
                ]
            ),
            timeout=self._timeout,
        )
        return list(response.container_responses[0].deviceIDs)

    async def allocate(self, ids: Sequence[str]) -> pb.ContainerAllocateResponse:
        response: pb.AllocateResponse = await self._stub.Allocate(
            pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]),
            timeout=self._timeout,
        )
        return response.container_responses[0]
