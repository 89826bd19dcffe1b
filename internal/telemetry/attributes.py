"""Span attribute and event names, in one place.

What an SRE filters on in the tracing backend: the names here are the query
language of our traces, so renaming one breaks saved searches. Attributes of
our own carry the `gpu.` prefix; standard ones use the OpenTelemetry semantic
conventions' names. Nothing here computes anything.
"""

from __future__ import annotations

# Every device-plugin span.
RESOURCE_NAME = "gpu.resource_name"

# Registration.
ENDPOINT = "gpu.endpoint"
ATTEMPT = "gpu.attempt"
RESTART_REASON = "gpu.restart_reason"
# Which server generation (1, then one more per kubelet restart).
GENERATION = "gpu.generation"

# Discovery.
DISCOVERY_BACKEND = "gpu.discovery_backend"
DEVICE_COUNT = "gpu.device_count"
HEALTHY_COUNT = "gpu.healthy_count"
DRIVER_VERSION = "gpu.driver_version"
CUDA_VERSION = "gpu.cuda_version"

# Allocate / GetPreferredAllocation. Lists of ids are flattened over all
# container requests of the RPC (the kubelet sends one container per call in
# practice); CONTAINERS says how many there were.
CONTAINERS = "gpu.containers"
REQUESTED_IDS = "gpu.requested_ids"
AVAILABLE_IDS = "gpu.available_ids"
MUST_INCLUDE_IDS = "gpu.must_include_ids"
ALLOCATION_SIZE = "gpu.allocation_size"
CHOSEN_IDS = "gpu.chosen_ids"
# The topology score of the chosen set (sum of its pairs' link weights).
SCORE = "gpu.score"
DEVICE_LIST_STRATEGY = "gpu.device_list_strategy"
DEVICE_ID_STRATEGY = "gpu.device_id_strategy"
# What the containers were told: NVIDIA_VISIBLE_DEVICES entries (uuids or indexes) or
# CDI device names, as the pod sees them.
CONTAINER_DEVICES = "gpu.container_devices"
# Which policy chose the preferred set (topology, in_order).
PREFERRED_POLICY = "gpu.preferred_policy"
REFUSED_IDS = "gpu.refused_ids"
# A health race worked around (an event on the RPC's span): devices the request
# named that are unhealthy or unknown in our snapshot, and those of them the
# answer still holds (GetPreferredAllocation filling its size, Allocate within
# the kubelet's lag).
HEALTH_RACE_EVENT = "health race worked around"
RACE_UNHEALTHY_IDS = "gpu.race.unhealthy_ids"
RACE_UNKNOWN_IDS = "gpu.race.unknown_ids"
RACE_USED_IDS = "gpu.race.used_ids"
# The gRPC status of a refused request: its name here, its number below.
ERROR_CODE = "gpu.error_code"
GRPC_STATUS_CODE = "rpc.grpc.status_code"

# Health-change span events, on a "HealthUpdate" span.
HEALTH_SOURCE = "gpu.health_source"
HEALTH_CHANGED_EVENT = "device health changed"
DEVICE_ID = "gpu.device_id"
HEALTH = "gpu.health"
HEALTH_BEFORE = "gpu.health_before"
REASON = "gpu.reason"
REASON_CLASS = "gpu.reason_class"
XID = "gpu.xid"

# ListAndWatch update events.
DEVICES_SENT_EVENT = "devices sent"
DEVICES = "devices"
HEALTHY = "healthy"
