"""The DevicePlugin gRPC service (grpc.aio).

One service per resource (its ResourceManager). Every RPC reads one immutable
snapshot of the resource's manager and devices (resources/view.py), so a health
change or a manager swapped by a config change in the middle of a request
cannot produce a half-old, half-new answer. Client mistakes
become INVALID_ARGUMENT / FAILED_PRECONDITION, logged at INFO: they are the
kubelet's (or a user's) to fix, not ours, and must never crash the daemon.
Requests no kubelet could send (more ids than devices, ids longer than 63
characters) are refused before any other work, and every message names only
the first few ids, so neither the status trailer nor a log line can overflow.

Health races are the kubelet's view lagging ours (KUBELET.md §6):
GetPreferredAllocation answers every structurally valid request (see
allocator.preferred), and Allocate hands out a device that turned unhealthy
while the kubelet could not yet know (see kubelet_view). Both say so at INFO
and as a span event.
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
    PreferredPlan,
    check_bounds,
    check_containers,
    plan_preferred,
)
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.errors import MAX_NAMED_IDS, RequestError, cut_id, quote_ids
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.view import ResourceView
from gpu_device_plugin.server.convert import container_allocate_response, list_and_watch_response
from gpu_device_plugin.server.kubelet_view import KubeletView
from gpu_device_plugin.server.rpc_spans import (
    allocate_attributes,
    allocate_response_attributes,
    health_race_attributes,
    preferred_request_attributes,
    preferred_response_attributes,
    refusal_attributes,
)
from gpu_device_plugin.server.status_codes import status_code
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.metrics import NULL_METRICS, MetricsSink, result_label

log = logging.getLogger(__name__)


@dataclass
class DevicePluginService(pb_grpc.DevicePluginServicer):
    # What this server's resource is at start: its devices, Allocate answer and preferred
    # policy. A config change swaps it (swap()); the view holds the one being served.
    manager: ResourceManager
    cell: SnapshotCell[Inventory]
    # NULL_METRICS unless --metrics-address is set: recording then costs a no-op call.
    metrics: MetricsSink = NULL_METRICS
    # What the streams have told the kubelet: Allocate's health-race rule reads it.
    kubelet_view: KubeletView = field(default_factory=KubeletView)
    # Every snapshot is rendered once and shared by all streams.
    _rendered: tuple[Inventory | None, pb.ListAndWatchResponse] = field(
        default=(None, pb.ListAndWatchResponse()), init=False, repr=False
    )
    # The manager's devices in the cell: every RPC reads it, every stream follows it.
    devices: ResourceView = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.devices = ResourceView(self.cell, self.manager)

    @property
    def resource_name(self) -> str:
        return self.devices.manager.resource_name

    @property
    def options(self) -> pb.DevicePluginOptions:
        return plugin_options(self.devices.manager)

    def swap(self, manager: ResourceManager, *, reregistering: bool = False) -> None:
        """Serve `manager` from the next RPC on, on the same streams. The name stays; other
        options need a new registration, which the caller starts (`reregistering`)."""
        if manager.resource_name != self.resource_name:
            raise ValueError(f"{self.resource_name}: a swap keeps the name, not {manager.resource_name}")
        if not reregistering and plugin_options(manager) != self.options:
            raise ValueError(f"{self.resource_name}: other options need a new registration")
        self.manager = manager
        self.devices.swap(manager)

    async def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.aio.ServicerContext[pb.Empty, pb.DevicePluginOptions]
    ) -> pb.DevicePluginOptions:
        return self.options

    def _render(self, inventory: Inventory) -> pb.ListAndWatchResponse:
        cached, response = self._rendered
        if cached is not inventory:
            response = list_and_watch_response(inventory)
            self._rendered = (inventory, response)
            self.kubelet_view.sent(inventory)
        return response

    async def ListAndWatch(
        self,
        request: pb.Empty,
        context: grpc.aio.ServicerContext[pb.Empty, pb.ListAndWatchResponse],
    ) -> AsyncIterator[pb.ListAndWatchResponse]:
        span = trace.get_current_span()
        self.kubelet_view.streams += 1
        try:
            async for inventory in self.devices.watch():
                span.add_event(
                    attrs.DEVICES_SENT_EVENT,
                    {attrs.DEVICES: len(inventory.devices), attrs.HEALTHY: inventory.healthy_count},
                )
                yield self._render(inventory)
        finally:
            self.kubelet_view.streams -= 1

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
        manager, inventory = self.devices.current()
        # The kubelet's candidates may name devices we have since lost, never more than we showed it.
        limit = max(len(inventory.devices), self.kubelet_view.most_devices)
        check_containers(len(request.container_requests), limit=limit)
        for req in request.container_requests:
            check_bounds(req.available_deviceIDs, what="available_deviceIDs", limit=limit)
            check_bounds(req.must_include_deviceIDs, what="must_include_deviceIDs", limit=limit)
        if recording:
            span.set_attributes(
                preferred_request_attributes(manager.resource_name, request, manager.preferred_policy)
            )
        policy = manager.preferred_policy
        if policy is None:
            raise RequestError("preferred allocation is not offered")
        response = pb.PreferredAllocationResponse()
        plans: list[PreferredPlan] = []
        for req in request.container_requests:
            plan = plan_preferred(
                inventory,
                list(req.available_deviceIDs),
                list(req.must_include_deviceIDs),
                req.allocation_size,
                policy,
            )
            plans.append(plan)
            response.container_responses.add(deviceIDs=plan.ids)
        if any(p.worked_around for p in plans):
            self._worked_around_preferred(plans, span)
        if recording:
            span.set_attributes(preferred_response_attributes(inventory, response))
        return response

    def _worked_around_preferred(self, plans: list[PreferredPlan], span: trace.Span) -> None:
        unhealthy = [i for p in plans for i in p.unhealthy]
        unknown = [i for p in plans for i in p.unknown]
        used = [i for p in plans for i in p.used]
        log.info(
            "GetPreferredAllocation answered around a health race (the kubelet's view lags ours): "
            "candidates unhealthy here [%s], unknown here [%s]; %s",
            quote_ids(unhealthy),
            quote_ids(unknown),
            f"the answer holds [{quote_ids(used)}] only to fill the size (Allocate decides)"
            if used
            else "the answer leaves them out",
        )
        span.add_event(attrs.HEALTH_RACE_EVENT, health_race_attributes(unhealthy, unknown, used))

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
        manager, inventory = self.devices.current()
        # Each container needs its own devices, so none of these can exceed the device count.
        limit = len(inventory.devices)
        check_containers(len(request.container_requests), limit=limit)
        for req in request.container_requests:
            check_bounds(req.devices_ids, what="devices_ids", limit=limit)
        if recording:
            span.set_attributes(allocate_attributes(manager.resource_name, manager.allocate_options, request))
        racing = self.kubelet_view.racing(inventory)
        # Build every container's answer before replying: all or nothing.
        allocations = [
            manager.allocate(inventory, list(req.devices_ids), tolerate=racing)
            for req in request.container_requests
        ]
        if not allocations:
            raise RequestError("container_requests: the request names no container")
        if racing:
            used = [i for req in request.container_requests for i in req.devices_ids if i in racing]
            if used:
                self._worked_around_allocate(used, racing, span)
        if recording:
            span.set_attributes(allocate_response_attributes(allocations))
        return pb.AllocateResponse(container_responses=[container_allocate_response(a) for a in allocations])

    def _worked_around_allocate(
        self, used: list[str], racing: dict[str, float | None], span: trace.Span
    ) -> None:
        def when(device_id: str) -> str:
            age = racing[device_id]
            told = "not yet told" if age is None else f"told {age:.2f} s ago"
            return f"{cut_id(device_id)!r} ({told})"

        # As quote_ids bounds ids, with when each was told beside it.
        unique = sorted(set(used))
        more = len(unique) - MAX_NAMED_IDS
        log.info(
            "Allocate hands out devices that just turned unhealthy: %s%s; the kubelet chose "
            "them while they were healthy in its view",
            ", ".join(when(i) for i in unique[:MAX_NAMED_IDS]),
            f" and {more:,} more" if more > 0 else "",
        )
        span.add_event(attrs.HEALTH_RACE_EVENT, health_race_attributes(used, [], used))

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


def plugin_options(manager: ResourceManager) -> pb.DevicePluginOptions:
    """The options a manager's server offers: derived from what is wired, so they cannot
    promise what we do not do; a change of them needs a new registration."""
    return pb.DevicePluginOptions(
        pre_start_required=False,
        get_preferred_allocation_available=manager.preferred_policy is not None,
    )
