"""Every client mistake gets a clear gRPC error naming the ids, and harms nothing.

(Unknown or unhealthy candidates of a GetPreferredAllocation are no mistake but
a health race: test_health_races.py.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from testsupport.fakegpus import write_fake_config

G = [fake_uuid(i) for i in range(8)]
UNHEALTHY = 5
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def allocate(*containers: list[str]) -> pb.AllocateRequest:
    return pb.AllocateRequest(
        container_requests=[pb.ContainerAllocateRequest(devices_ids=ids) for ids in containers]
    )


def preferred(available: list[str], must: list[str], size: int) -> pb.PreferredAllocationRequest:
    return pb.PreferredAllocationRequest(
        container_requests=[
            pb.ContainerPreferredAllocationRequest(
                available_deviceIDs=available, must_include_deviceIDs=must, allocation_size=size
            )
        ]
    )


CASES = [
    pytest.param("Allocate", allocate(["GPU-nope"]), INVALID, ["GPU-nope"], id="allocate-unknown-id"),
    pytest.param("Allocate", allocate([G[0], G[0]]), INVALID, [G[0]], id="allocate-duplicate-id"),
    pytest.param("Allocate", allocate([G[UNHEALTHY]]), PRECONDITION, [G[UNHEALTHY]], id="allocate-unhealthy"),
    pytest.param(
        "Allocate",
        allocate([G[0]], ["GPU-x", G[1]]),
        INVALID,
        ["GPU-x"],
        id="allocate-second-container-bad-no-partial-answer",
    ),
    pytest.param("Allocate", allocate([]), INVALID, [], id="allocate-empty-container"),
    pytest.param("Allocate", pb.AllocateRequest(), INVALID, [], id="allocate-no-container"),
    pytest.param(
        "GetPreferredAllocation",
        preferred([G[0], G[0]], [], 1),
        INVALID,
        [G[0]],
        id="preferred-duplicate-available",
    ),
    pytest.param(
        "GetPreferredAllocation",
        preferred([G[0], G[1]], [G[2]], 2),
        INVALID,
        [G[2]],
        id="preferred-must-include-outside-available",
    ),
    pytest.param(
        "GetPreferredAllocation",
        preferred([G[0], G[1], G[2]], [G[0], G[1]], 1),
        INVALID,
        [G[0], G[1]],
        id="preferred-size-below-must-include",
    ),
    pytest.param(
        "GetPreferredAllocation",
        preferred([G[0], G[1]], [], 3),
        INVALID,
        [G[0], G[1]],
        id="preferred-size-above-available",
    ),
    pytest.param(
        "GetPreferredAllocation",
        preferred([G[0], G[1]], [], 0),
        INVALID,
        [],
        id="preferred-size-zero",
    ),
]


@pytest.mark.parametrize(("rpc", "request_", "code", "named"), CASES)
async def test_bad_request_is_refused_and_daemon_keeps_serving(
    kubelet: StandinKubelet,
    fake_config: Path,
    start_plugin,
    caplog: pytest.LogCaptureFixture,
    rpc: str,
    request_: object,
    code: grpc.StatusCode,
    named: list[str],
) -> None:
    write_fake_config(fake_config, unhealthy=(UNHEALTHY,))
    start_plugin(fake_config)
    registration = await kubelet.wait_registered()
    stub = registration.stub()
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(stub, rpc)(request_, timeout=5)
    assert refused.value.code() == code
    for device_id in named:
        assert device_id in refused.value.details()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Still serving: a good request succeeds and the kubelet's stream is alive.
    good = await stub.Allocate(allocate([G[0], G[1]]), timeout=5)
    assert good.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == f"{G[0]},{G[1]}"
    assert not registration.stream_task.done()
