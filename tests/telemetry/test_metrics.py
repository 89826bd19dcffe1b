"""Metrics as a scraper sees them: the running plugin's /metrics endpoint, over HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import FakeConfig, FakeDevice, fake_uuid, to_inventory
from gpu_device_plugin.cli.config import ServeConfig
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.health.publish import publish_snapshot
from gpu_device_plugin.health.xid import describe_xid
from gpu_device_plugin.inventory import Device, Health, Inventory, SnapshotCell
from gpu_device_plugin.inventory.reasons import HealthReason, ReasonCode
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.metrics import Metrics, NullMetrics, parse_address
from testsupport.fakegpus import write_fake_config
from testsupport.scrape import Samples, scrape, value
from testsupport.spans import SpanRecorder
from testsupport.waiting import eventually

P = "gpu_device_plugin_"


async def start_with_metrics(start_plugin: Callable[..., object], config: Path) -> Metrics:
    metrics = Metrics()
    start_plugin(config, metrics=metrics, metrics_address="127.0.0.1:0")
    await asyncio.wait_for(metrics.listening.wait(), 5)
    return metrics


async def scrape_after_rpcs(url: str, method: str, count: int, timeout: float = 5.0) -> Samples:
    """The scrape once `count` calls of `method` are timed: a refused call's status reaches the
    client from inside `context.abort`, before the servicer's `finally` records its duration,
    so a scrape right after the call can miss it (seen once in CI)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        samples = await scrape(url)
        timed = value(samples, P + "rpc_duration_seconds_count", method=method) or 0
        if timed >= count or loop.time() > deadline:
            return samples
        await asyncio.sleep(0.01)


def allocate(*ids: str) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=list(ids))])


async def test_allocations_are_counted_by_result_with_latency(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    write_fake_config(fake_config, unhealthy=(7,))
    metrics = await start_with_metrics(start_plugin, fake_config)
    stub = (await kubelet.wait_registered()).stub()
    await stub.Allocate(allocate(fake_uuid(0)))
    await stub.Allocate(allocate(fake_uuid(1), fake_uuid(2)))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Allocate(allocate("GPU-nope"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Allocate(allocate(fake_uuid(7)))
    assert metrics.url is not None
    samples = await scrape_after_rpcs(metrics.url, "Allocate", 4)

    assert value(samples, P + "allocations_total", result="ok") == 2
    assert value(samples, P + "allocations_total", result="invalid_argument") == 1
    assert value(samples, P + "allocations_total", result="failed_precondition") == 1
    assert value(samples, P + "rpc_duration_seconds_count", method="Allocate") == 4
    assert value(samples, P + "rpc_duration_seconds_bucket", method="Allocate", le="+Inf") == 4
    assert value(samples, P + "registrations_total", result="ok") == 1
    assert value(samples, P + "devices", resource="example.com/gpu", health="Healthy") == 7
    assert value(samples, P + "devices", resource="example.com/gpu", health="Unhealthy") == 1
    build = next(labels for (name, labels) in samples if name == P + "build_info")
    assert ("version", "0.1.0") in build


async def test_preferred_allocations_are_counted_by_result(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    metrics = await start_with_metrics(start_plugin, fake_config)
    stub = (await kubelet.wait_registered()).stub()
    ids = [fake_uuid(i) for i in range(4)]
    request = pb.PreferredAllocationRequest(
        container_requests=[
            pb.ContainerPreferredAllocationRequest(available_deviceIDs=ids, allocation_size=2)
        ]
    )
    await stub.GetPreferredAllocation(request)
    request.container_requests[0].allocation_size = 0
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetPreferredAllocation(request)
    assert metrics.url is not None
    samples = await scrape_after_rpcs(metrics.url, "GetPreferredAllocation", 2)
    assert value(samples, P + "preferred_allocations_total", result="ok") == 1
    assert value(samples, P + "preferred_allocations_total", result="invalid_argument") == 1
    assert value(samples, P + "rpc_duration_seconds_count", method="GetPreferredAllocation") == 2


async def test_health_change_is_counted_and_the_device_gauge_follows(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    metrics = await start_with_metrics(start_plugin, fake_config)
    await kubelet.wait_registered()
    devices = [{"uuid": fake_uuid(i)} for i in range(8)]
    devices[3]["xid"] = 79  # type: ignore[assignment]
    fake_config.write_text(yaml.safe_dump({"devices": devices}))
    await kubelet.wait_for(
        lambda: any(d.health == "Unhealthy" for d in kubelet.registrations[0].latest.devices)
    )

    def unhealthy_gauge() -> float | None:
        return metrics.registry.get_sample_value(
            P + "devices", {"resource": "example.com/gpu", "health": "Unhealthy"}
        )

    # The gauge's watcher wakes on the same publish as the stream: no event to wait on.
    await eventually(lambda: unhealthy_gauge() == 1, what="the Unhealthy gauge to reach 1")
    assert metrics.url is not None
    samples = await scrape(metrics.url)
    assert value(samples, P + "health_transitions_total", to="Unhealthy", reason="xid") == 1
    assert value(samples, P + "devices", resource="example.com/gpu", health="Healthy") == 7


async def test_refused_registrations_and_kubelet_restarts_are_counted(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    kubelet.refuse_with = grpc.StatusCode.PERMISSION_DENIED
    metrics = await start_with_metrics(start_plugin, fake_config)

    def refused() -> float:
        got = metrics.registry.get_sample_value(P + "registrations_total", {"result": "permission_denied"})
        return got or 0.0

    await eventually(lambda: refused() >= 1, timeout=5, what="a refused registration")
    kubelet.refuse_with = None
    await kubelet.wait_registered()
    await kubelet.restart()
    await kubelet.wait_registered(count=2)
    assert metrics.url is not None
    samples = await scrape(metrics.url)
    assert value(samples, P + "kubelet_restarts_total") == 1
    assert value(samples, P + "registrations_total", result="ok") == 2
    assert (value(samples, P + "registrations_total", result="permission_denied") or 0) >= 1


async def test_endpoint_closes_when_the_plugin_stops(
    kubelet: StandinKubelet, fake_config: Path, start_plugin
) -> None:
    metrics = Metrics()
    plugin = start_plugin(fake_config, metrics=metrics, metrics_address="127.0.0.1:0")
    await asyncio.wait_for(metrics.listening.wait(), 5)
    assert metrics.url is not None
    port = int(metrics.url.rsplit(":", 1)[1].split("/")[0])
    await plugin.shutdown()
    assert metrics.url is None
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_null_metrics_has_the_same_interface() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in vars(cls) if not n.startswith("_") and callable(getattr(cls, n))}

    assert public(NullMetrics) == public(Metrics)


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.allocation("ok")
    assert first.registry.get_sample_value(P + "allocations_total", {"result": "ok"}) == 1
    assert second.registry.get_sample_value(P + "allocations_total", {"result": "ok"}) is None


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        pytest.param("127.0.0.1:9400", ("127.0.0.1", 9400), id="ipv4"),
        pytest.param("0.0.0.0:0", ("0.0.0.0", 0), id="any-port"),
        pytest.param("[::1]:9400", ("::1", 9400), id="ipv6"),
        pytest.param("localhost:80", ("localhost", 80), id="name"),
        pytest.param("9400", None, id="no-host"),
        pytest.param(":9400", None, id="empty-host"),
        pytest.param("host:port", None, id="port-not-a-number"),
        pytest.param("host:70000", None, id="port-too-big"),
    ],
)
def test_metrics_address(address: str, parsed: tuple[str, int] | None) -> None:
    if parsed is None:
        with pytest.raises(ConfigError, match="metrics-address"):
            ServeConfig(metrics_address=address)
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(address)
    else:
        assert parse_address(address) == parsed


def published(reason: str) -> tuple[Metrics, SpanRecorder]:
    """One device going Unhealthy (or, for an empty reason, back to Healthy) through publish_snapshot."""
    before, after = (Health.UNHEALTHY, Health.HEALTHY) if not reason else (Health.HEALTHY, Health.UNHEALTHY)
    cell = SnapshotCell(
        Inventory(devices=(Device(id="GPU-0", index=0, uuid="GPU-0", health=before),), backend="x")
    )
    metrics, recorder = Metrics(), SpanRecorder()
    newer = cell.value.with_health({"GPU-0": (after, reason)})
    publish_snapshot(cell, newer, source="test", metrics=metrics, tracer=recorder.provider.get_tracer("test"))
    return metrics, recorder


@pytest.mark.parametrize(
    ("reason", "kind", "xid"),
    [
        pytest.param(describe_xid(79), "xid", 79, id="xid"),
        pytest.param(HealthReason("double-bit ECC error", ReasonCode.ECC), "ecc", None, id="ecc"),
        pytest.param(HealthReason("GPU is lost", ReasonCode.GPU_LOST), "gpu_lost", None, id="lost"),
        pytest.param(HealthReason("probe failed: x", ReasonCode.PROBE), "probe", None, id="probe"),
        pytest.param(HealthReason("cannot register: x", ReasonCode.EVENTS), "events", None, id="events"),
        pytest.param(
            to_inventory(FakeConfig(devices=(FakeDevice(health="Unhealthy"),))).devices[0].health_reason,
            "fake",
            None,
            id="fake",
        ),
        pytest.param("", "recovered", None, id="recovered"),
        pytest.param("something new", "other", None, id="uncoded-text"),
    ],
)
def test_a_health_reasons_code_is_its_metric_label_and_span_class(
    reason: str, kind: str, xid: int | None
) -> None:
    metrics, recorder = published(reason)

    to = "Healthy" if not reason else "Unhealthy"
    assert metrics.registry.get_sample_value(P + "health_transitions_total", {"to": to, "reason": kind}) == 1
    [update] = recorder.spans
    [event] = update.events
    assert event.attributes is not None
    assert event.attributes[attrs.REASON] == reason
    assert event.attributes[attrs.REASON_CLASS] == kind
    assert event.attributes.get(attrs.XID) == xid
