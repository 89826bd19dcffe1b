"""Absurd requests over real gRPC: a short INVALID_ARGUMENT naming what is wrong, a bounded
log line, and a plugin that serves on as before.

Before, 10,000 unknown ids (or one id of 1 MiB) produced an error text too big for the
status trailer (the caller saw RESOURCE_EXHAUSTED and never learned why) and a log line
of a megabyte.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet

G = [fake_uuid(i) for i in range(8)]
MIB_ID = "GPU-" + "x" * (1 << 20)
MANY = [f"GPU-unknown-{n:05}" for n in range(10_000)]
# What a message may take: a few ids of at most 63 characters and some words.
SHORT = 600


def allocate(*containers: list[str]) -> pb.AllocateRequest:
    return pb.AllocateRequest(
        container_requests=[pb.ContainerAllocateRequest(devices_ids=ids) for ids in containers]
    )


def preferred(available: list[str], size: int, containers: int = 1) -> pb.PreferredAllocationRequest:
    one = pb.ContainerPreferredAllocationRequest(available_deviceIDs=available, allocation_size=size)
    return pb.PreferredAllocationRequest(container_requests=[one] * containers)


CASES = [
    pytest.param(
        "Allocate", allocate(MANY), ["names 10,000 devices", "'GPU-unknown-00000'"], id="allocate-10k-unknown"
    ),
    pytest.param(
        "Allocate",
        allocate([MIB_ID]),
        ["unknown device ids", "(1,048,580 characters)"],
        id="allocate-1mib-id",
    ),
    pytest.param(
        "Allocate",
        allocate([G[0], "GPU-" + "y" * 60]),
        ["unknown device ids", "at most 63"],
        id="allocate-64-char-id",
    ),
    pytest.param(
        "Allocate",
        allocate(*[[G[0]]] * 10_000),
        ["10,000 containers, more than the 8"],
        id="allocate-10k-containers",
    ),
    pytest.param(
        "Allocate",
        allocate([f"GPU-nope-{n}" for n in range(8)]),
        ["unknown device ids", "and 3 more"],
        id="allocate-8-unknown",
    ),
    pytest.param(
        "GetPreferredAllocation",
        preferred(MANY, 1),
        ["available_deviceIDs: names 10,000 devices"],
        id="preferred-10k-available",
    ),
    pytest.param(
        "GetPreferredAllocation",
        preferred([G[0], MIB_ID], 1),
        ["available_deviceIDs: unknown device ids", "(1,048,580 characters)"],
        id="preferred-1mib-id",
    ),
    pytest.param(
        "GetPreferredAllocation",
        preferred(G, 1, containers=9),
        ["9 containers, more than the 8"],
        id="preferred-9-containers",
    ),
]


@pytest.mark.parametrize(("rpc", "request_", "phrases"), CASES)
async def test_absurd_request_gets_a_short_answer_and_a_short_log_line(
    kubelet: StandinKubelet,
    fake_config: Path,
    start_plugin,
    caplog: pytest.LogCaptureFixture,
    rpc: str,
    request_: object,
    phrases: list[str],
) -> None:
    start_plugin(fake_config)
    registration = await kubelet.wait_registered()
    stub = registration.stub()
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(stub, rpc)(request_, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details()
    assert len(details) < SHORT, details
    for phrase in phrases:
        assert phrase in details
    [logged] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(logged.getMessage()) < SHORT + 100
    assert all(len(r.getMessage()) < 2000 for r in caplog.records)
    # Still serving: a good request succeeds and the kubelet's stream is alive.
    good = await stub.Allocate(allocate([G[0], G[1]]), timeout=5)
    assert good.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == f"{G[0]},{G[1]}"
    answer = await stub.GetPreferredAllocation(preferred(G, 2), timeout=5)
    assert len(answer.container_responses[0].deviceIDs) == 2
    assert not registration.stream_task.done()
