"""Span attributes for the device-plugin RPCs: what the SRE reads when a pod got no GPU.

Pure functions from a request, a response or an error to a dict of attributes;
the servicer calls them only when the current span is recording, so with
tracing off none of this runs. Attribute names come from telemetry.attributes.
Ids are flattened over all container requests of one RPC.
"""

from __future__ import annotations

import grpc
from opentelemetry.util.types import AttributeValue

from gpu_device_plugin.allocator import AllocateOptions, ContainerAllocation, PreferredPolicy, set_score
from gpu_device_plugin.allocator.response import VISIBLE_DEVICES_ENV
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.errors import RequestError
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.telemetry import attributes as attrs

Attributes = dict[str, AttributeValue]


def allocate_attributes(
    resource_name: str, options: AllocateOptions, request: pb.AllocateRequest
) -> Attributes:
    requested = [i for req in request.container_requests for i in req.devices_ids]
    return {
        attrs.RESOURCE_NAME: resource_name,
        attrs.CONTAINERS: len(request.container_requests),
        attrs.REQUESTED_IDS: requested,
        attrs.ALLOCATION_SIZE: len(requested),
        attrs.DEVICE_LIST_STRATEGY: options.list_strategy.value,
        attrs.DEVICE_ID_STRATEGY: options.id_strategy.value,
    }


def allocate_response_attributes(allocations: list[ContainerAllocation]) -> Attributes:
    """What the containers were handed, in the words the pod sees (its env or CDI names)."""
    devices: list[str] = []
    for allocation in allocations:
        visible = allocation.envs.get(VISIBLE_DEVICES_ENV)
        devices.extend(visible.split(",") if visible else allocation.cdi_devices)
    return {attrs.CONTAINER_DEVICES: devices}


def policy_name(policy: PreferredPolicy | None) -> str:
    """`topology` for topology_policy: the function's name without the suffix."""
    name = getattr(policy, "__name__", type(policy).__name__)
    return str(name).removesuffix("_policy")


def preferred_request_attributes(
    resource_name: str, request: pb.PreferredAllocationRequest, policy: PreferredPolicy | None
) -> Attributes:
    reqs = request.container_requests
    return {
        attrs.RESOURCE_NAME: resource_name,
        attrs.PREFERRED_POLICY: policy_name(policy),
        attrs.CONTAINERS: len(reqs),
        attrs.AVAILABLE_IDS: [i for req in reqs for i in req.available_deviceIDs],
        attrs.MUST_INCLUDE_IDS: [i for req in reqs for i in req.must_include_deviceIDs],
        attrs.ALLOCATION_SIZE: sum(req.allocation_size for req in reqs),
    }


def preferred_response_attributes(
    inventory: Inventory, response: pb.PreferredAllocationResponse
) -> Attributes:
    chosen = [list(resp.deviceIDs) for resp in response.container_responses]
    return {
        attrs.CHOSEN_IDS: [i for ids in chosen for i in ids],
        # Per container, summed: each container's set is scored on its own.
        attrs.SCORE: sum(set_score(inventory, ids) for ids in chosen),
    }


def refusal_attributes(code: grpc.StatusCode, err: RequestError) -> Attributes:
    return {
        attrs.REFUSED_IDS: list(err.ids),
        attrs.ERROR_CODE: str(code.name),
        attrs.GRPC_STATUS_CODE: int(code.value[0]),
    }
