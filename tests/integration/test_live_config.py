"""The per-node config, changed live: label switch, file edit, ConfigMap swap, bad config, fallbacks.

The real `serve` with --config-dir, the stand-in kubelet over real sockets and
the fake API server spoken to by the real kubernetes client: the Node's label
is changed as `kubectl label` would, and what a user notices is asserted (the
kubelet's registrations and device lists, the Node's Events, the metrics).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gpu_device_plugin.allocator import DeviceIdStrategy, in_order_policy
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.cluster.events import CONFIG_APPLIED, CONFIG_REJECTED
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.settings import ResourceSettings
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager
from gpu_device_plugin.server.kubelet_standin import Registration, StandinKubelet
from gpu_device_plugin.server.sockets import our_sockets
from gpu_device_plugin.telemetry.metrics import Metrics
from testsupport.fakeapi import FakeApiServer, node
from testsupport.fakegpus import write_fake_config
from testsupport.live import (
    BAD_KEY,
    BY_INDEX,
    LABEL,
    NODE,
    RENAMED,
    TIMESLICE_4,
    WHOLE,
    WHOLE_NVIDIA,
    handled,
    live_plugin,
    write_configmap,
    write_configs,
)
from testsupport.parity import EVEN, ParityManager, even_and_odd

GPU = "example.com/gpu"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.nodes[NODE] = node(NODE, labels={LABEL: "whole"})
        yield server


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "configs"
    write_configs(
        folder,
        {"whole": WHOLE, "renamed": RENAMED, "index": BY_INDEX, "bad": BAD_KEY},
    )
    return folder


def latest_of(kubelet: StandinKubelet, name: str) -> Registration | None:
    found = [r for r in kubelet.registrations if r.request.resource_name == name and r.updates]
    return found[-1] if found else None


def events(api: FakeApiServer, reason: str) -> list[dict[str, object]]:
    return [e for e in api.event_objects() if e["reason"] == reason]


async def allocate(registration: Registration, device: str) -> str:
    answer = await registration.stub().Allocate(
        pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[device])])
    )
    return answer.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"]


async def test_the_node_label_picks_the_config_at_start(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, config_dir: Path, fake_config: Path
) -> None:
    api.set_labels(NODE, {LABEL: "renamed"})
    async with live_plugin(api=api, plugin_dir=plugin_dir, config_dir=config_dir, fake_config=fake_config):
        first = await kubelet.wait_registered()
        assert first.request.resource_name == "example.com/renamed"
        assert len(first.latest.devices) == 8
        # Nothing registered under the flags' own name first: the label was read before serving.
        assert [r.request.resource_name for r in kubelet.registrations] == ["example.com/renamed"]


async def test_a_label_switch_to_a_renamed_resource_registers_it_and_stops_the_old(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, config_dir: Path, fake_config: Path
) -> None:
    async with live_plugin(
        api=api, plugin_dir=plugin_dir, config_dir=config_dir, fake_config=fake_config
    ) as running:
        old = await kubelet.wait_registered()
        assert old.request.resource_name == GPU

        api.set_labels(NODE, {LABEL: "renamed"})

        new = await kubelet.wait_for(lambda: latest_of(kubelet, "example.com/renamed"))
        assert len(new.latest.devices) == 8
        # The old resource's server is gone with its socket: the kubelet marks its devices gone.
        await kubelet.wait_for(lambda: not our_sockets(plugin_dir, GPU))
        assert set(running.fleet.managers) == {"example.com/renamed"}
        assert running.applied.value.resource_name == "example.com/renamed"
        await api.until(lambda: bool(events(api, CONFIG_APPLIED)), what="a ConfigApplied Event")
        applied = events(api, CONFIG_APPLIED)[0]
        assert applied["type"] == "Normal"
        assert "config renamed applied" in str(applied["message"])
        assert "added example.com/renamed" in str(applied["message"])
        assert f"removed {GPU}" in str(applied["message"])


async def test_an_edit_of_the_selected_file_swaps_the_answers_on_the_same_registration(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, config_dir: Path, fake_config: Path
) -> None:
    async with live_plugin(
        api=api, plugin_dir=plugin_dir, config_dir=config_dir, fake_config=fake_config
    ) as running:
        first = await kubelet.wait_registered()
        assert await allocate(first, fake_uuid(3)) == fake_uuid(3)
        socket = plugin_dir / first.request.endpoint
        inode = socket.stat().st_ino

        write_configs(config_dir, {"whole": BY_INDEX})
        await handled(running, 1)

        # Same name and options: swapped in place, the kubelet notices nothing but the answer.
        assert await allocate(first, fake_uuid(3)) == "3"
        assert len(kubelet.registrations) == 1
        assert socket.stat().st_ino == inode
        assert len(first.updates) == 1  # the same devices: nothing new sent on the stream
        await api.until(lambda: bool(events(api, CONFIG_APPLIED)), what="a ConfigApplied Event")
        assert f"updated {GPU}" in str(events(api, CONFIG_APPLIED)[-1]["message"])


async def test_a_configmap_data_swap_is_seen_and_applied(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, tmp_path: Path, fake_config: Path
) -> None:
    folder = tmp_path / "configmap"
    write_configmap(folder, {"whole": WHOLE, "renamed": RENAMED})
    async with live_plugin(api=api, plugin_dir=plugin_dir, config_dir=folder, fake_config=fake_config):
        first = await kubelet.wait_registered()
        assert first.request.resource_name == GPU

        # The kubelet's update of the ConfigMap: `whole` now names another resource.
        write_configmap(folder, {"whole": RENAMED, "renamed": RENAMED})

        new = await kubelet.wait_for(lambda: latest_of(kubelet, "example.com/renamed"))
        assert len(new.latest.devices) == 8


@pytest.mark.parametrize(
    ("label", "named"),
    [
        pytest.param("bad", ["bad", "flags.migStrateg"], id="unknown-key"),
        pytest.param("missing", ["missing", "not in the folder"], id="no-such-config"),
    ],
)
async def test_a_bad_config_changes_nothing_and_says_why(
    api: FakeApiServer,
    kubelet: StandinKubelet,
    plugin_dir: Path,
    config_dir: Path,
    fake_config: Path,
    label: str,
    named: list[str],
) -> None:
    metrics = Metrics()
    async with live_plugin(
        api=api, plugin_dir=plugin_dir, config_dir=config_dir, fake_config=fake_config, metrics=metrics
    ) as running:
        first = await kubelet.wait_registered()

        api.set_labels(NODE, {LABEL: label})
        await handled(running, 1)

        await api.until(lambda: bool(events(api, CONFIG_REJECTED)), what="a ConfigRejected Event")
        rejected = events(api, CONFIG_REJECTED)[0]
        assert rejected["type"] == "Warning"
        message = str(rejected["message"])
        for part in named:
            assert part in message
        assert "still serving config whole" in message
        rejected_count = metrics.registry.get_sample_value(
            "gpu_device_plugin_config_changes_total", {"result": "rejected"}
        )
        assert rejected_count == 1
        # Nothing changed for the kubelet: one registration, one device list, all 8 there.
        assert kubelet.registrations == [first]
        assert len(first.updates) == 1
        assert len(first.latest.devices) == 8
        assert set(running.fleet.managers) == {GPU}

        # A good config after it applies as usual.
        api.set_labels(NODE, {LABEL: "renamed"})
        await kubelet.wait_for(lambda: latest_of(kubelet, "example.com/renamed"))


@pytest.mark.parametrize(
    ("configs", "args", "expected"),
    [
        pytest.param({"default": RENAMED, "whole": WHOLE}, (), "example.com/renamed", id="named-default"),
        pytest.param({"only": RENAMED}, (), "example.com/renamed", id="the-only-one"),
        pytest.param({"a": RENAMED, "b": RENAMED}, (), "example.com/gpu", id="flags-alone"),
        pytest.param(
            {"a": WHOLE, "b": RENAMED}, ("--default-config", "b"), "example.com/renamed", id="default-config"
        ),
    ],
)
async def test_without_a_label_the_fallback_config_is_served(
    api: FakeApiServer,
    kubelet: StandinKubelet,
    plugin_dir: Path,
    tmp_path: Path,
    fake_config: Path,
    configs: dict[str, str],
    args: tuple[str, ...],
    expected: str,
) -> None:
    api.set_labels(NODE, {LABEL: None})
    folder = tmp_path / "configs"
    write_configs(folder, configs)
    async with live_plugin(
        api=api, plugin_dir=plugin_dir, config_dir=folder, fake_config=fake_config, args=args
    ):
        first = await kubelet.wait_registered()
        assert first.request.resource_name == expected


async def test_removing_the_label_goes_back_to_the_fallback(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, tmp_path: Path, fake_config: Path
) -> None:
    folder = tmp_path / "configs"
    write_configs(folder, {"default": WHOLE, "renamed": RENAMED})
    api.set_labels(NODE, {LABEL: "renamed"})
    async with live_plugin(api=api, plugin_dir=plugin_dir, config_dir=folder, fake_config=fake_config):
        first = await kubelet.wait_registered()
        assert first.request.resource_name == "example.com/renamed"
        api.set_labels(NODE, {LABEL: None})
        back = await kubelet.wait_for(lambda: latest_of(kubelet, GPU))
        assert len(back.latest.devices) == 8


async def test_a_watch_the_server_ends_is_resumed_and_sees_later_changes(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, config_dir: Path, fake_config: Path
) -> None:
    async with live_plugin(api=api, plugin_dir=plugin_dir, config_dir=config_dir, fake_config=fake_config):
        await kubelet.wait_registered()
        await api.until(lambda: len(api.watches()) >= 1, what="a watch of the Node")
        watch = api.watches()[0]
        assert watch.query["fieldSelector"] == f"metadata.name={NODE}"
        # The history is forgotten: the next resume is a 410, then a fresh get and watch.
        api.compact()
        api.stop_watches()
        await api.until(lambda: len(api.watches()) >= 2, what="the watch resumed")
        api.set_labels(NODE, {LABEL: "renamed"})
        await kubelet.wait_for(lambda: latest_of(kubelet, "example.com/renamed"))


@pytest.mark.parametrize(
    ("label", "odd_after"),
    [
        pytest.param("renamed", "example.com/renamed", id="other-renamed"),
        pytest.param("index", GPU, id="other-swapped"),
    ],
)
async def test_an_unchanged_resource_keeps_its_server_socket_and_stream_while_another_changes(
    api: FakeApiServer,
    kubelet: StandinKubelet,
    plugin_dir: Path,
    config_dir: Path,
    fake_config: Path,
    label: str,
    odd_after: str,
) -> None:
    async with live_plugin(
        api=api, plugin_dir=plugin_dir, config_dir=config_dir, fake_config=fake_config, plan=even_and_odd
    ) as running:
        await kubelet.wait_for(lambda: latest_of(kubelet, EVEN) and latest_of(kubelet, GPU))
        even = latest_of(kubelet, EVEN)
        assert even is not None
        socket = plugin_dir / even.request.endpoint
        inode = socket.stat().st_ino
        service = running.fleet.service(EVEN)

        api.set_labels(NODE, {LABEL: label})
        await handled(running, 1)
        odd = await kubelet.wait_for(lambda: latest_of(kubelet, odd_after))
        assert [d.ID for d in odd.latest.devices] == [fake_uuid(i) for i in (1, 3, 5, 7)]

        # The even resource: one registration, the same socket file, the same server object,
        # its stream still open, and never told anything but its 4 healthy GPUs.
        assert [r for r in kubelet.registrations if r.request.resource_name == EVEN] == [even]
        assert socket.stat().st_ino == inode
        assert running.fleet.service(EVEN) is service
        assert even.stream_task is not None
        assert not even.stream_task.done()
        assert [[(d.ID, d.health) for d in u.devices] for u in even.updates] == [
            [(fake_uuid(i), "Healthy") for i in (0, 2, 4, 6)]
        ]
        if label == "index":
            assert await allocate(odd, fake_uuid(1)) == "1"


async def test_device_gauges_follow_resources_that_come_and_go(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, config_dir: Path, fake_config: Path
) -> None:
    metrics = Metrics()

    def devices(resource: str) -> float | None:
        return metrics.registry.get_sample_value(
            "gpu_device_plugin_devices", {"resource": resource, "health": "Healthy"}
        )

    async with live_plugin(
        api=api,
        plugin_dir=plugin_dir,
        config_dir=config_dir,
        fake_config=fake_config,
        plan=even_and_odd,
        metrics=metrics,
    ) as running:
        await kubelet.wait_for(lambda: latest_of(kubelet, EVEN) and latest_of(kubelet, GPU))
        # Every resource's gauge, the first as any other.
        assert (devices(EVEN), devices(GPU)) == (4, 4)

        api.set_labels(NODE, {LABEL: "renamed"})
        await handled(running, 1)
        await kubelet.wait_for(lambda: latest_of(kubelet, "example.com/renamed"))
        await kubelet.wait_for(lambda: devices("example.com/renamed") == 4)
        assert devices(EVEN) == 4
        assert devices(GPU) == 0  # no longer served: it advertises nothing


def extra_when_ten(settings: ResourceSettings, inventory: Inventory) -> tuple[ResourceManager, ...]:
    """A planner whose resources depend on the layout, as MIG's do: a second resource only
    while the node has 10 GPUs."""
    whole = WholeGpuManager(settings.resource_name, settings.allocate)
    if len(inventory.devices) < 10:
        return (whole,)
    return (whole, ParityManager("example.com/extra", 1))


async def test_a_layout_change_replans_under_the_same_config(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, config_dir: Path, fake_config: Path
) -> None:
    async with live_plugin(
        api=api, plugin_dir=plugin_dir, config_dir=config_dir, fake_config=fake_config, plan=extra_when_ten
    ) as running:
        first = await kubelet.wait_registered()
        assert first.request.resource_name == GPU
        write_fake_config(fake_config, count=10, unhealthy=(2,))

        extra = await kubelet.wait_for(lambda: latest_of(kubelet, "example.com/extra"))
        assert [d.ID for d in extra.latest.devices] == [fake_uuid(i) for i in (1, 3, 5, 7, 9)]
        # The whole-GPU resource is unchanged as a resource: same registration, new devices.
        await kubelet.wait_for(lambda: len(first.latest.devices) == 10)
        assert [r for r in kubelet.registrations if r.request.resource_name == GPU] == [first]
        unhealthy = [d.ID for d in first.latest.devices if d.health == "Unhealthy"]
        assert unhealthy == [fake_uuid(2)]
        assert set(running.fleet.managers) == {GPU, "example.com/extra"}

        write_fake_config(fake_config, count=8)
        await kubelet.wait_for(lambda: set(running.fleet.managers) == {GPU})
        await kubelet.wait_for(lambda: not our_sockets(plugin_dir, "example.com/extra"))


async def test_an_api_server_out_of_reach_at_start_serves_the_fallback_then_follows(
    kubelet: StandinKubelet, plugin_dir: Path, tmp_path: Path, fake_config: Path
) -> None:
    folder = tmp_path / "configs"
    write_configs(folder, {"default": WHOLE, "renamed": RENAMED})
    api = FakeApiServer()
    api.nodes[NODE] = node(NODE, labels={LABEL: "renamed"})
    # The API server comes up only after the plugin has started serving the fallback.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api.port = port
    async with live_plugin(api=api, plugin_dir=plugin_dir, config_dir=folder, fake_config=fake_config):
        first = await kubelet.wait_registered()
        assert first.request.resource_name == GPU  # `default`: the label could not be read
        api.start()
        try:
            renamed = await kubelet.wait_for(lambda: latest_of(kubelet, "example.com/renamed"), timeout=30)
            assert len(renamed.latest.devices) == 8
        finally:
            api.stop()


def options_follow_the_ids(settings: ResourceSettings, inventory: Inventory) -> tuple[ResourceManager, ...]:
    """A planner whose one resource offers a preferred allocation only with UUID ids: a config
    that changes the id strategy changes its DevicePluginOptions."""
    by_index = settings.allocate.id_strategy is DeviceIdStrategy.INDEX
    policy = None if by_index else in_order_policy
    return (WholeGpuManager(settings.resource_name, settings.allocate, policy),)


async def test_other_options_reregister_the_resource_on_a_fresh_socket(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, config_dir: Path, fake_config: Path
) -> None:
    async with live_plugin(
        api=api,
        plugin_dir=plugin_dir,
        config_dir=config_dir,
        fake_config=fake_config,
        plan=options_follow_the_ids,
    ):
        first = await kubelet.wait_registered()
        assert first.options is not None
        assert first.options.get_preferred_allocation_available

        api.set_labels(NODE, {LABEL: "index"})

        second = await kubelet.wait_registered(2)
        assert second.request.resource_name == GPU
        assert second.request.endpoint != first.request.endpoint
        assert second.options is not None
        assert not second.options.get_preferred_allocation_available
        assert await allocate(second, fake_uuid(5)) == "5"
        # The old server stopped before the new one registered (KUBELET.md section 5).
        assert first.stream_task is not None
        assert first.stream_task.done()
        await kubelet.wait_for(
            lambda: [p.name for p in our_sockets(plugin_dir, GPU)] == [second.request.endpoint]
        )


async def test_a_config_whose_plan_cannot_be_served_is_rejected(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, config_dir: Path, fake_config: Path
) -> None:
    # Names the odd GPUs' resource as the even one's: two resources with one name.
    write_configs(config_dir, {"clash": f"version: v1\ngpuDevicePlugin:\n  resourceName: {EVEN}\n"})
    async with live_plugin(
        api=api, plugin_dir=plugin_dir, config_dir=config_dir, fake_config=fake_config, plan=even_and_odd
    ) as running:
        await kubelet.wait_for(lambda: latest_of(kubelet, EVEN) and latest_of(kubelet, GPU))
        before = list(kubelet.registrations)
        api.set_labels(NODE, {LABEL: "clash"})
        await handled(running, 1)
        await api.until(lambda: bool(events(api, CONFIG_REJECTED)), what="a ConfigRejected Event")
        assert "each resource needs one name of its own" in str(events(api, CONFIG_REJECTED)[0]["message"])
        assert kubelet.registrations == before
        assert set(running.fleet.managers) == {EVEN, GPU}


MIXED = "version: v1\nflags:\n  migStrategy: mixed\ngpuDevicePlugin:\n  resourceName: example.com/gpu\n"


def mig_layout(path: Path, first: list[str]) -> None:
    """8 fake GPUs (H100 80GB), GPU 0 split into `first`'s MIG profiles."""
    devices = [{"uuid": fake_uuid(i), **({"mig": first} if i == 0 else {})} for i in range(8)]
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(yaml.safe_dump({"devices": devices}))
    scratch.replace(path)


async def test_a_mig_layout_change_republishes_the_mig_resources_and_keeps_the_rest(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, config_dir: Path, fake_config: Path
) -> None:
    write_configs(config_dir, {"mixed": MIXED})
    api.set_labels(NODE, {LABEL: "mixed"})
    mig_layout(fake_config, ["1g.10gb", "1g.10gb", "3g.40gb"])
    async with live_plugin(
        api=api, plugin_dir=plugin_dir, config_dir=config_dir, fake_config=fake_config
    ) as running:
        small, big = "example.com/mig-1g.10gb", "example.com/mig-3g.40gb"
        await kubelet.wait_for(
            lambda: latest_of(kubelet, small) and latest_of(kubelet, big) and latest_of(kubelet, GPU)
        )
        before = {name: latest_of(kubelet, name) for name in (small, GPU)}
        small_before = before[small]
        assert small_before is not None
        small_ids = [d.ID for d in small_before.latest.devices]
        assert len(small_ids) == 2

        # An operator re-partitions GPU 0's third instance (mig-parted): 3g.40gb becomes 2g.20gb.
        mig_layout(fake_config, ["1g.10gb", "1g.10gb", "2g.20gb"])

        medium = await kubelet.wait_for(lambda: latest_of(kubelet, "example.com/mig-2g.20gb"))
        assert len(medium.latest.devices) == 1
        await kubelet.wait_for(lambda: not our_sockets(plugin_dir, big))
        assert set(running.fleet.managers) == {GPU, small, "example.com/mig-2g.20gb"}
        # The instances that still exist keep their ids, and their resource its registration.
        for name in (small, GPU):
            assert [r for r in kubelet.registrations if r.request.resource_name == name] == [before[name]]
        assert [d.ID for d in small_before.latest.devices] == small_ids


# The feature labels' keys under the default prefix (GFD's names, in our domain).
REPLICAS_LABEL = "example.com/gpu.replicas"
SHARING_LABEL = "example.com/gpu.sharing-strategy"


def sharing_labels(api: FakeApiServer) -> dict[str, str | None]:
    labels = api.labels(NODE)
    return {key: labels.get(key) for key in (REPLICAS_LABEL, SHARING_LABEL)}


async def test_the_node_labels_follow_the_applied_config_and_not_a_rejected_one(
    api: FakeApiServer, kubelet: StandinKubelet, plugin_dir: Path, config_dir: Path, fake_config: Path
) -> None:
    write_configs(config_dir, {"whole": WHOLE_NVIDIA, "timeslice-4": TIMESLICE_4})
    async with live_plugin(
        api=api,
        plugin_dir=plugin_dir,
        config_dir=config_dir,
        fake_config=fake_config,
        args=["--node-labels"],
    ) as running:
        first = await kubelet.wait_registered()
        assert len(first.latest.devices) == 8
        whole = {REPLICAS_LABEL: "1", SHARING_LABEL: "none"}
        await api.until(lambda: sharing_labels(api) == whole, what="the whole GPUs' labels")

        api.set_labels(NODE, {LABEL: "timeslice-4"})
        await handled(running, 1)
        # Same name and options: the same stream lists 32 replicas, and the labels say so.
        await kubelet.wait_for(lambda: len(first.latest.devices) == 32)
        await api.until(
            lambda: sharing_labels(api) == {REPLICAS_LABEL: "4", SHARING_LABEL: "time-slicing"},
            what="the time-sliced labels",
        )
        assert api.labels(NODE)["example.com/gpu.product"].endswith("-SHARED")
        assert api.labels(NODE)[LABEL] == "timeslice-4"  # the selecting label is not ours to touch

        patches = len(api.calls("PATCH", "/api/v1/nodes"))
        api.set_labels(NODE, {LABEL: "bad"})
        await handled(running, 2)
        await api.until(lambda: bool(events(api, CONFIG_REJECTED)), what="a ConfigRejected Event")
        # A rejected config publishes no settings: no label changes, no patch is even tried.
        assert sharing_labels(api) == {REPLICAS_LABEL: "4", SHARING_LABEL: "time-slicing"}
        assert len(api.calls("PATCH", "/api/v1/nodes")) == patches
        assert running.applied.value.sharing.strategy.value == "time-slicing"

        # Back to whole GPUs: the labels go back with the config.
        api.set_labels(NODE, {LABEL: "whole"})
        await api.until(lambda: sharing_labels(api) == whole, what="the whole GPUs' labels again")
        await kubelet.wait_for(lambda: len(first.latest.devices) == 8)


async def test_a_config_that_makes_the_resource_mps_gates_it_on_its_daemon(
    api: FakeApiServer,
    kubelet: StandinKubelet,
    plugin_dir: Path,
    config_dir: Path,
    fake_config: Path,
    tmp_path: Path,
) -> None:
    mps_root = tmp_path / "mps"
    mps = (
        f"{WHOLE_NVIDIA}flags:\n  mpsRoot: {mps_root}\n"
        "sharing:\n  mps:\n    resources:\n      - name: nvidia.com/gpu\n        replicas: 4\n"
    )
    write_configs(config_dir, {"whole": WHOLE_NVIDIA, "mps-4": mps})
    async with live_plugin(
        api=api, plugin_dir=plugin_dir, config_dir=config_dir, fake_config=fake_config
    ) as running:
        first = await kubelet.wait_registered()
        assert len(first.latest.devices) == 8

        api.set_labels(NODE, {LABEL: "mps-4"})
        await handled(running, 1)

        # Served from now on through its daemon's gate, as one served so from the start is:
        # no control daemon has said it is ready, so all 32 replicas are Unhealthy.
        def gated() -> Registration | None:
            latest = latest_of(kubelet, "nvidia.com/gpu")
            return latest if latest is not None and len(latest.latest.devices) == 32 else None

        shared = await kubelet.wait_for(gated)
        assert {d.health for d in shared.latest.devices} == {"Unhealthy"}
        # Its folder under the MPS root was made when the config was planned.
        assert (mps_root / "nvidia.com" / "gpu").is_dir()
