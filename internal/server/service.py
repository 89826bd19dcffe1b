"""The DevicePlugin gRPC service (grpc.aio).

Every RPC reads one immutable snapshot from the cell, so a health change in the
middle of a request cannot produce a half-old, half-new answer. Client mistakes
become INVALID_ARGUMENT / FAILED_PRECONDITION, logged at INFO: they are the
kubelet's (or a user's) to fix, not ours, and must never crash the daemon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from opentelemetry import trace

from gpu_device_plugin.allocator import (
    AllocateOptions,
    PreferredPolicy,
    container_allocation,
    preferred_allocation,
)
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.errors import RequestError
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.server.convert import container_allocate_response, list_and_watch_response
from gpu_device_plugin.server.rpc_spans import (
    allocate_attributes,
    allocate_response_attributes,
    preferred_request_attributes,
    preferred_response_attributes,
    refusal_attributes,
)
from gpu_device_plugin.server.status import status_code
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink, result_label

log = logging.getLogger(__name__)


@dataclass
class DevicePluginService(pb_grpc.DevicePluginServicer):
    resource_name: str
    cell: SnapshotCell[Inventory]
    allocate_options: AllocateOptions
    # None means GetPreferredAllocation is not offered; the options say so.
    preferred_policy: PreferredPolicy | None
    # NULL_METRICS unless --metrics-address is set: recording then costs a no-op call.
    metrics: MetricsSink = NULL_METRICS
    # Every snapshot is rendered once and shared by all streams.
    _rendered: tuple[Inventory | None, pb.ListAndWatchResponse] = field(
        default=(None, pb.ListAndWatchResponse()), init=False, repr=False
    )

    @property
    def options(self) -> pb.DevicePluginOptions:
        # Derived from what is wired, so the options cannot promise what we do not do.
        return pb.DevicePluginOptions(
            pre_start_required=False,
            get_preferred_allocation_available=self.preferred_policy is not None,
        )

    async def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.aio.ServicerContext[pb.Empty, pb.DevicePluginOptions]
    ) -> pb.DevicePluginOptions:
        return self.options

    def _render(self, inventory: Inventory) -> pb.ListAndWatchResponse:
        cached, response = self._rendered
        if cached is not inventory:
            response = list_and_watch_response(inventory)
            self._rendered = (inventory, response)
        return response

    async def ListAndWatch(
        self,
        request: pb.Empty,
        context: grpc.aio.ServicerContext[pb.Empty, pb.ListAndWatchResponse],
    ) -> AsyncIterator[pb.ListAndWatchResponse]:
        span = trace.get_current_span()
        async for inventory in self.cell.watch():
            span.add_event(
                attrs.DEVICES_SENT_EVENT,
                {attrs.DEVICES: len(inventory.devices), attrs.HEALTHY: inventory.healthy_count},
            )
            yield self._render(inventory)

    async def GetPreferredAllocation(
        self,
        request: pb.PreferredAllocationRequest,
        context: grpc.aio.ServicerContext[pb.PreferredAllocationRequest, pb.PreferredAllocationResponse],
    ) -> pb.PreferredAllocationResponse:
        started = time.perf_counter()
        try:
            response = self._preferred(request)
        except RequestError as err:
            self.metrics.preferred_allocation(result_label(status_code(err)))
            await self._refuse(context, "GetPreferredAllocation", err)
        else:
            self.metrics.preferred_allocation(result_label(None))
            return response
        finally:
            self.metrics.rpc_latency("GetPreferredAllocation", time.perf_counter() - started)

    def _preferred(self, request: pb.PreferredAllocationRequest) -> pb.PreferredAllocationResponse:
        span = trace.get_current_span()
        recording = span.is_recording()
        if recording:
            span.set_attributes(
                preferred_request_attributes(self.resource_name, request, self.preferred_policy)
            )
        policy = self.preferred_policy
        if policy is None:
            raise RequestError("preferred allocation is not offered")
        inventory = self.cell.value
        response = pb.PreferredAllocationResponse()
        for req in request.container_requests:
            chosen = preferred_allocation(
                inventory,
                list(req.available_deviceIDs),
                list(req.must_include_deviceIDs),
                req.allocation_size,
                policy,
            )
            response.container_responses.add(deviceIDs=chosen)
        if recording:
            span.set_attributes(preferred_response_attributes(inventory, response))
        return response

    async def Allocate(
        self,
        request: pb.AllocateRequest,
        context: grpc.aio.ServicerContext[pb.AllocateRequest, pb.AllocateResponse],
    ) -> pb.AllocateResponse:
        started = time.perf_counter()
        try:
            response = self._allocate(request)
        except RequestError as err:
            self.metrics.allocation(result_label(status_code(err)))
            await self._refuse(context, "Allocate", err)
        else:
            self.metrics.allocation(result_label(None))
            return response
        finally:
            self.metrics.rpc_latency("Allocate", time.perf_counter() - started)

    def _allocate(self, request: pb.AllocateRequest) -> pb.AllocateResponse:
        span = trace.get_current_span()
        recording = span.is_recording()
        if recording:
            span.set_attributes(allocate_attributes(self.resource_name, self.allocate_options, request))
        inventory = self.cell.value
        # Build every container's answer before replying: all or nothing.
        allocations = [
            container_allocation(inventory, list(req.devices_ids), self.allocate_options)
            for req in request.container_requests
        ]
        if not allocations:
            raise RequestError("container_requests: the request names no container")
        if recording:
            span.set_attributes(allocate_response_attributes(allocations))
        return pb.AllocateResponse(container_responses=[container_allocate_response(a) for a in allocations])

    async def PreStartContainer(
        self,
        request: pb.PreStartContainerRequest,
        context: grpc.aio.ServicerContext[pb.PreStartContainerRequest, pb.PreStartContainerResponse],
    ) -> pb.PreStartContainerResponse:
        # Not requested in the options; answering keeps a stray call harmless.
        return pb.PreStartContainerResponse()

    async def _refuse(
        self, context: grpc.aio.ServicerContext[Any, Any], rpc: str, err: RequestError
    ) -> NoReturn:
        code = status_code(err)
        log.info("%s refused (%s): %s", rpc, code.name, err)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(refusal_attributes(code, err))
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{code.name}: {err}"))
        await context.abort(code, str(err))
        raise AssertionError("context.abort always raises")
