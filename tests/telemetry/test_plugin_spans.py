"""The plugin's own spans, in the SDK's in-memory exporter: discovery, registration after a
kubelet restart, ListAndWatch updates, what a container was given, which policy chose."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from gpu_device_plugin.allocator import AllocateOptions, DeviceIdStrategy, DeviceListStrategy
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.discovery.initial import initial_inventory
from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.telemetry import attributes as attrs
from gpu_device_plugin.telemetry.tracing import sdk_tracing
from testsupport.fakegpus import write_fake_config
from testsupport.spans import SpanRecorder

ALLOCATE = "/v1beta1.DevicePlugin/Allocate"
PREFERRED = "/v1beta1.DevicePlugin/GetPreferredAllocation"
LIST_AND_WATCH = "/v1beta1.DevicePlugin/ListAndWatch"


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


class BrokenBackend:
    """A DiscoveryBackend whose driver cannot start."""

    name = "nvml"

    def discover(self) -> Inventory:
        raise DiscoveryError("NVML could not be initialised: Driver Not Loaded")


async def test_discovery_is_a_span_with_backend_and_counts(
    kubelet: StandinKubelet, plugin_dir: Path, tmp_path: Path, start_plugin, recorder: SpanRecorder
) -> None:
    config = tmp_path / "gpus.yaml"
    write_fake_config(config, count=4, unhealthy=(2,))
    start_plugin(config, tracing=sdk_tracing(recorder.provider))
    await kubelet.wait_registered()

    [discover] = named(await recorder.wait_for(lambda s: bool(named(s, "Discover"))), "Discover")
    assert dict(discover.attributes or {}) == {
        attrs.DISCOVERY_BACKEND: "fake",
        attrs.DEVICE_COUNT: 4,
        attrs.HEALTHY_COUNT: 3,
        attrs.DRIVER_VERSION: "fake-550.0",
        attrs.CUDA_VERSION: "12.4",
    }
    assert discover.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("fail_on_init_error", [True, False], ids=["fail-on", "fail-off"])
def test_failed_discovery_is_an_error_span_saying_why(
    fail_on_init_error: bool, recorder: SpanRecorder
) -> None:
    tracer = recorder.provider.get_tracer("test")
    if fail_on_init_error:
        with pytest.raises(DiscoveryError):
            initial_inventory(BrokenBackend(), fail_on_init_error=True, tracer=tracer)
    else:
        assert initial_inventory(BrokenBackend(), fail_on_init_error=False, tracer=tracer).devices == ()

    [discover] = recorder.spans
    assert discover.name == "Discover"
    assert discover.attributes == {attrs.DISCOVERY_BACKEND: "nvml", attrs.DEVICE_COUNT: 0}
    assert discover.status.status_code is StatusCode.ERROR
    assert discover.status.description == "NVML could not be initialised: Driver Not Loaded"


async def test_registration_after_a_kubelet_restart_is_a_child_of_the_restart(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, recorder: SpanRecorder
) -> None:
    start_plugin(fake_config, tracing=sdk_tracing(recorder.provider))
    await kubelet.wait_registered()
    await kubelet.restart()
    await kubelet.wait_registered(count=2)

    spans = await recorder.wait_for(
        lambda spans: len(named(spans, "Register")) == 2 and bool(named(spans, "KubeletRestart"))
    )
    first, second = named(spans, "Register")
    [restart] = named(spans, "KubeletRestart")
    assert first.parent is None
    assert restart.attributes[attrs.GENERATION] == 1
    assert second.parent is not None
    assert second.parent.span_id == restart.context.span_id
    assert second.context.trace_id == restart.context.trace_id
    assert second.attributes[attrs.ENDPOINT] != first.attributes[attrs.ENDPOINT]


async def test_list_and_watch_is_one_span_per_stream_with_an_event_per_update(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, recorder: SpanRecorder
) -> None:
    start_plugin(fake_config, tracing=sdk_tracing(recorder.provider))
    registration = await kubelet.wait_registered()
    write_fake_config(fake_config, unhealthy=(3, 5))
    await kubelet.wait_for(lambda: any(d.health == "Unhealthy" for d in registration.latest.devices))
    await kubelet.stop()  # ends the stream, and with it the span

    [stream] = named(await recorder.wait_for(lambda s: bool(named(s, LIST_AND_WATCH))), LIST_AND_WATCH)
    assert [(e.name, dict(e.attributes or {})) for e in stream.events] == [
        (attrs.DEVICES_SENT_EVENT, {attrs.DEVICES: 8, attrs.HEALTHY: 8}),
        (attrs.DEVICES_SENT_EVENT, {attrs.DEVICES: 8, attrs.HEALTHY: 6}),
    ]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(AllocateOptions(), [fake_uuid(1), fake_uuid(4)], id="uuid"),
        pytest.param(AllocateOptions(id_strategy=DeviceIdStrategy.INDEX), ["1", "4"], id="index"),
        pytest.param(
            AllocateOptions(list_strategy=DeviceListStrategy.CDI_CRI),
            [f"nvidia.com/gpu={fake_uuid(1)}", f"nvidia.com/gpu={fake_uuid(4)}"],
            id="cdi",
        ),
    ],
)
async def test_allocate_span_says_what_the_container_was_given(
    kubelet: StandinKubelet,
    fake_config: Path,
    start_plugin,
    options: AllocateOptions,
    expected: list[str],
    recorder: SpanRecorder,
) -> None:
    start_plugin(fake_config, tracing=sdk_tracing(recorder.provider), allocate=options)
    stub = (await kubelet.wait_registered()).stub()
    ids = [fake_uuid(1), fake_uuid(4)]
    await stub.Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]))

    [span] = named(await recorder.wait_for(lambda s: bool(named(s, ALLOCATE))), ALLOCATE)
    assert list(span.attributes[attrs.REQUESTED_IDS]) == ids
    assert list(span.attributes[attrs.CONTAINER_DEVICES]) == expected


async def test_preferred_allocation_span_names_the_policy(
    kubelet: StandinKubelet, fake_config: Path, start_plugin, recorder: SpanRecorder
) -> None:
    start_plugin(fake_config, tracing=sdk_tracing(recorder.provider))
    stub = (await kubelet.wait_registered()).stub()
    await stub.GetPreferredAllocation(
        pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=[fake_uuid(i) for i in range(8)], allocation_size=2
                )
            ]
        )
    )
    [span] = named(await recorder.wait_for(lambda s: bool(named(s, PREFERRED))), PREFERRED)
    assert span.attributes[attrs.PREFERRED_POLICY] == "topology"
