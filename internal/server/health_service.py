"""The standard gRPC health service (grpc.health.v1) on the plugin's own socket.

The kubelet never asks it; `gpu-device-plugin probe` does, and so can any gRPC
tool (grpc_health_probe, grpcurl). It answers for two names:
- "" (the server itself): SERVING while the server runs;
- HEALTH_CHECKS_SERVICE: SERVING while every part of health checking runs,
  NOT_SERVING while one is degraded (health/status.py); unknown (NOT_FOUND)
  when health checks are off.
The protocol carries no reason: that is in the log line, the
health_checks_degraded gauge and the HealthChecksDegraded span.

The servicer is one object for the life of the process, added to every plugin
server generation, so a kubelet restart does not reset what it says.
"""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health, health_pb2

from gpu_device_plugin.health.status import HealthCheckStatus

HEALTH_CHECKS_SERVICE = "gpu_device_plugin.HealthChecks"


class HealthService:
    def __init__(self) -> None:
        self.servicer: Any = health.aio.HealthServicer()

    async def follow(self, status: HealthCheckStatus) -> None:
        """Root task (only with health checks on): the named service's status kept equal to theirs."""
        async for degraded in status.cell.watch():
            serving = (
                health_pb2.HealthCheckResponse.NOT_SERVING
                if degraded
                else health_pb2.HealthCheckResponse.SERVING
            )
            await self.servicer.set(HEALTH_CHECKS_SERVICE, serving)
