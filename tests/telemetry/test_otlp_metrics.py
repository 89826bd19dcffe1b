"""Metrics over OTLP: the same series as the Prometheus endpoint, pushed to a real OTLP/gRPC receiver."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from gpu_device_plugin import __version__
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.telemetry.metrics import RPC_BUCKETS, Metrics
from gpu_device_plugin.telemetry.otlp_metrics import (
    OtlpMetrics,
    configure_otlp_metrics,
    metrics_exporter_name,
)
from testsupport.fakegpus import write_fake_config
from testsupport.otlp import OtlpReceiver, ReceivedPoint
from testsupport.process import serve_argv
from testsupport.scrape import scrape, value

P = "gpu_device_plugin_"


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as started:
        yield started


def latest(points: list[ReceivedPoint], name: str, **attributes: str) -> ReceivedPoint | None:
    """The newest export of one series (exports are cumulative: the last is the value now)."""
    found = [p for p in points if p.name == name and p.attributes == attributes]
    return found[-1] if found else None


def latest_value(points: list[ReceivedPoint], name: str, **attributes: str) -> float | None:
    point = latest(points, name, **attributes)
    return None if point is None else point.value


def pushing_to(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> OtlpMetrics:
    # The exporter and the reader read these from the process environment, as every OTel SDK does.
    for name, setting in {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "100",
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.node.name=node-a",
    }.items():
        monkeypatch.setenv(name, setting)
    otlp = configure_otlp_metrics()
    assert otlp is not None
    return otlp


def allocate(*ids: str) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=list(ids))])


async def test_otlp_carries_the_same_numbers_as_the_prometheus_endpoint(
    kubelet: StandinKubelet,
    fake_config: Path,
    start_plugin: Callable[..., object],
    receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_fake_config(fake_config, count=4, unhealthy=(3,))
    otlp = pushing_to(receiver, monkeypatch)
    prometheus = Metrics()
    start_plugin(fake_config, metrics=prometheus, otlp_metrics=otlp, metrics_address="127.0.0.1:0")
    try:
        stub = (await kubelet.wait_registered()).stub()
        await stub.Allocate(allocate(fake_uuid(0)))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Allocate(allocate("GPU-nope"))

        def complete(points: list[ReceivedPoint]) -> bool:
            return (
                latest_value(points, P + "allocations", result="invalid_argument") == 1
                and latest_value(points, P + "devices", resource="example.com/gpu", health="Unhealthy") == 1
            )

        points = await receiver.wait_for_points(complete)
        await asyncio.wait_for(prometheus.listening.wait(), 5)
        assert prometheus.url is not None
        samples = await scrape(prometheus.url)
    finally:
        otlp.shutdown()

    for name, attributes in [
        ("allocations", {"result": "ok"}),
        ("allocations", {"result": "invalid_argument"}),
        ("registrations", {"result": "ok"}),
    ]:
        assert latest_value(points, P + name, **attributes) == value(
            samples, P + name + "_total", **attributes
        )
        assert latest(points, P + name, **attributes).monotonic  # type: ignore[union-attr]
    for health in ("Healthy", "Unhealthy"):
        labels = {"resource": "example.com/gpu", "health": health}
        assert latest_value(points, P + "devices", **labels) == value(samples, P + "devices", **labels)
    assert latest_value(points, P + "devices", resource="example.com/gpu", health="Healthy") == 3
    degraded = {"source": "fake-file"}
    assert latest_value(points, P + "health_checks_degraded", **degraded) == 0
    assert value(samples, P + "health_checks_degraded", **degraded) == 0

    duration = latest(points, P + "rpc_duration_seconds", method="Allocate")
    assert duration is not None
    assert (duration.kind, duration.unit) == ("histogram", "s")
    assert duration.value == value(samples, P + "rpc_duration_seconds_count", method="Allocate") == 2
    assert duration.bounds == RPC_BUCKETS

    build = latest(
        points,
        P + "build_info",
        version=__version__,
        python=platform.python_version(),
        grpcio=grpc.__version__,
    )
    assert build is not None
    assert build.value == 1
    assert duration.resource["service.name"] == "gpu-device-plugin"
    assert duration.resource["k8s.node.name"] == "node-a"
    assert duration.description == "Time to answer a unary device-plugin RPC, in the servicer, by method."


async def test_serve_pushes_metrics_when_the_environment_asks_and_flushes_on_exit(
    kubelet: StandinKubelet, fake_config: Path, receiver: OtlpReceiver
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_TRACES_EXPORTER": "none",  # metrics alone
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",  # only the push at exit
    }
    process = await asyncio.create_subprocess_exec(
        *serve_argv(fake_config, kubelet.plugin_dir), env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        stub = (await kubelet.wait_registered(timeout=15)).stub()
        await stub.Allocate(allocate(fake_uuid(0)))
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, stderr.decode()
    points = await receiver.wait_for_points(lambda points: bool(points), timeout=5)
    assert latest_value(points, P + "allocations", result="ok") == 1
    assert latest_value(points, P + "registrations", result="ok") == 1
    # With no Prometheus endpoint, the device gauges still follow the inventory.
    assert latest_value(points, P + "devices", resource="example.com/gpu", health="Healthy") == 8
    assert latest_value(points, P + "devices", resource="example.com/gpu", health="Unhealthy") == 0


@pytest.mark.parametrize(
    ("setting", "chosen"),
    [
        (None, None),
        ("none", None),
        ("otlp", "otlp"),
        ("OTLP", "otlp"),
        ("console", "console"),
        ("none,otlp", "otlp"),
    ],
)
def test_otlp_metrics_are_off_unless_asked_for(setting: str | None, chosen: str | None) -> None:
    env = {} if setting is None else {"OTEL_METRICS_EXPORTER": setting}
    assert metrics_exporter_name(env) == chosen
    assert metrics_exporter_name(env | {"OTEL_SDK_DISABLED": "true"}) is None


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("prometheus", "'prometheus' is not one of otlp, console, none"),
        ("otlp,console", "one exporter at a time"),
    ],
)
def test_an_exporter_we_do_not_offer_is_a_config_error_naming_the_variable(setting: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        metrics_exporter_name({"OTEL_METRICS_EXPORTER": setting})
    assert raised.value.field == "OTEL_METRICS_EXPORTER"
    assert reason in str(raised.value)
