"""`serve --mig-strategy mixed|single` on the C NVML fake's MIG profile, over real sockets.

The plugin is its own process on the fake driver root (`mig-a100`: GPU 0 split
into seven 1g.10gb, GPU 1 into 3g.40gb + 2g.20gb + 1g.10gb, GPU 2 whole with MIG
off), registering with the test kubelet. What is asserted is what a cluster
would see: which resources register with how many devices, what a container
gets from Allocate, how an XID on a parent GPU shows on its MIG devices, and
the one line `single` says about a layout it cannot serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gdp_hack.nvmlfake import FakeDriver
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.server.kubelet_standin import Registration, StandinKubelet
from gpu_device_plugin.server.sockets import our_sockets

PLUGIN = [sys.executable, "-m", "gpu_device_plugin.cli"]
FAST_HEALTH = ("--health-probe-interval", "0.2", "--health-quiet-period", "1")
GPU = "nvidia.com/gpu"
# mig-a100's MIG devices (hack/nvmlfake/profiles/mig-a100.yaml).
GPU0_1G = [f"MIG-e1000000-0000-4000-8000-00000000{gi:02d}00" for gi in range(7, 14)]
GPU1_3G, GPU1_2G, GPU1_1G = (
    "MIG-e1000000-0000-4000-8000-000000010100",
    "MIG-e1000000-0000-4000-8000-000000010500",
    "MIG-e1000000-0000-4000-8000-000000011300",
)
GPU2 = "GPU-e1000000-0000-4000-8000-000000000002"

pytestmark = pytest.mark.parametrize("fake_driver", ["mig-a100"], indirect=True)

Start = Callable[..., Awaitable["MigServe"]]


def driver_env(driver: FakeDriver) -> dict[str, str]:
    return {**os.environ, **driver.env(), "OTEL_SDK_DISABLED": "true"}


class MigServe:
    def __init__(self, process: asyncio.subprocess.Process, kubelet: StandinKubelet) -> None:
        self.process = process
        self.kubelet = kubelet

    async def resources(self, count: int) -> dict[str, Registration]:
        """The first `count` registrations (each with its first device list), by resource name."""
        # Every one of them listed: they register concurrently, so the count-th may be first.
        await self.kubelet.wait_for(
            lambda: (
                len(self.kubelet.registrations) >= count
                and all(r.updates for r in self.kubelet.registrations[:count])
            ),
            timeout=30,
        )
        return {r.request.resource_name: r for r in self.kubelet.registrations[:count]}

    async def wait_health(
        self, registration: Registration, want: dict[str, str], timeout: float = 15
    ) -> None:
        def seen() -> bool:
            health = {d.ID: d.health for d in registration.latest.devices}
            return all(health.get(i) == h for i, h in want.items())

        await self.kubelet.wait_for(seen, timeout)

    async def stop(self) -> tuple[int, str]:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(self.process.communicate(), 15)
        assert self.process.returncode is not None
        return self.process.returncode, stderr.decode()


@pytest.fixture
async def mig_serve(kubelet: StandinKubelet) -> AsyncIterator[Start]:
    started: list[MigServe] = []

    async def start(driver: FakeDriver, *extra: str) -> MigServe:
        process = await asyncio.create_subprocess_exec(
            *PLUGIN, "serve", "--discovery", "nvml", "--device-plugin-dir", str(kubelet.plugin_dir),
            "--resource-name", GPU, "--driver-root", str(driver.root), *FAST_HEALTH, *extra,
            env=driver_env(driver),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        serve = MigServe(process, kubelet)
        started.append(serve)
        return serve

    yield start
    for serve in started:
        if serve.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, TimeoutError):
                await serve.stop()


def ids(registration: Registration) -> list[str]:
    return [d.ID for d in registration.latest.devices]


async def allocate(registration: Registration, *devices: str) -> pb.ContainerAllocateResponse:
    answer = await registration.stub().Allocate(
        pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=list(devices))])
    )
    return answer.container_responses[0]


async def test_mixed_registers_one_resource_per_profile_and_the_whole_gpus(
    fake_driver: FakeDriver, mig_serve: Start
) -> None:
    serve = await mig_serve(fake_driver, "--mig-strategy", "mixed")
    resources = await serve.resources(4)

    counts = {name: len(ids(r)) for name, r in resources.items()}
    assert counts == {
        GPU: 1,
        "nvidia.com/mig-1g.10gb": 8,
        "nvidia.com/mig-2g.20gb": 1,
        "nvidia.com/mig-3g.40gb": 1,
    }
    assert ids(resources[GPU]) == [GPU2]
    assert ids(resources["nvidia.com/mig-1g.10gb"]) == [*GPU0_1G, GPU1_1G]
    assert ids(resources["nvidia.com/mig-3g.40gb"]) == [GPU1_3G]
    # The parent's NUMA node, for the kubelet's topology manager.
    assert {d.topology.nodes[0].ID for d in resources["nvidia.com/mig-1g.10gb"].latest.devices} == {0}
    code, log = await serve.stop()
    assert code == 0
    assert "Traceback" not in log
    # mixed serves MIG GPUs as their MIG devices: nothing is served whole against the strategy.
    assert "served as a whole GPU" not in log


async def test_mixed_allocate_names_mig_uuids_and_hands_the_caps_nodes(
    fake_driver: FakeDriver, mig_serve: Start
) -> None:
    serve = await mig_serve(fake_driver, "--mig-strategy", "mixed", "--pass-device-specs")
    resources = await serve.resources(4)
    small = resources["nvidia.com/mig-1g.10gb"]

    # distributed (the default): one 1g.10gb on each parent before two on one.
    preferred = await small.stub().GetPreferredAllocation(
        pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(available_deviceIDs=ids(small), allocation_size=2)
            ]
        )
    )
    chosen = list(preferred.container_responses[0].deviceIDs)
    assert chosen == [GPU0_1G[0], GPU1_1G]

    response = await allocate(small, *chosen)

    assert response.envs["NVIDIA_VISIBLE_DEVICES"] == f"{GPU0_1G[0]},{GPU1_1G}"
    root = fake_driver.root
    specs = {(s.container_path, s.host_path) for s in response.devices}
    # The parents' GPU nodes, each instance's GI and CI caps nodes (gpu<m>/gi<g>: 3 + 135 m + 9 g,
    # its ci<c>: that + 1 + c), and nvidiactl: host paths under the driver root.
    want = ["/dev/nvidia0", "/dev/nvidia1", *(f"/dev/nvidia-caps/nvidia-cap{n}" for n in (66, 67, 255, 256))]
    for path in [*want, "/dev/nvidiactl"]:
        assert (path, f"{root}{path}") in specs, path
    assert len(response.devices) == len(specs)  # each node once
    code, _ = await serve.stop()
    assert code == 0


async def test_index_strategy_names_mig_devices_gpu_colon_mig(
    fake_driver: FakeDriver, mig_serve: Start
) -> None:
    serve = await mig_serve(fake_driver, "--mig-strategy", "mixed", "--device-id-strategy", "index")
    resources = await serve.resources(4)

    response = await allocate(resources["nvidia.com/mig-1g.10gb"], GPU0_1G[3], GPU1_1G)
    assert response.envs["NVIDIA_VISIBLE_DEVICES"] == "0:3,1:2"
    response = await allocate(resources[GPU], GPU2)
    assert response.envs["NVIDIA_VISIBLE_DEVICES"] == "2"
    await serve.stop()


async def test_an_xid_on_a_parent_takes_only_its_mig_devices_down_and_back(
    fake_driver: FakeDriver, mig_serve: Start
) -> None:
    serve = await mig_serve(fake_driver, "--mig-strategy", "mixed")
    resources = await serve.resources(4)
    small = resources["nvidia.com/mig-1g.10gb"]

    fake_driver.inject_xid(0, 79)

    await serve.wait_health(small, {**dict.fromkeys(GPU0_1G, "Unhealthy"), GPU1_1G: "Healthy"})
    assert {d.health for d in resources["nvidia.com/mig-3g.40gb"].latest.devices} == {"Healthy"}
    assert {d.health for d in resources[GPU].latest.devices} == {"Healthy"}
    # --health-quiet-period 1 of correct probes: every instance of GPU 0 back.
    await serve.wait_health(small, dict.fromkeys([*GPU0_1G, GPU1_1G], "Healthy"))
    code, log = await serve.stop()
    assert code == 0
    assert "Traceback" not in log


async def test_an_xid_naming_a_mig_device_is_its_parents(fake_driver: FakeDriver, mig_serve: Start) -> None:
    serve = await mig_serve(fake_driver, "--mig-strategy", "mixed")
    resources = await serve.resources(4)

    fake_driver.inject_xid(1, 48, mig=0)  # the event names GPU 1's 3g.40gb (its GI and CI ids)

    await serve.wait_health(resources["nvidia.com/mig-3g.40gb"], {GPU1_3G: "Unhealthy"})
    await serve.wait_health(resources["nvidia.com/mig-2g.20gb"], {GPU1_2G: "Unhealthy"})
    await serve.wait_health(
        resources["nvidia.com/mig-1g.10gb"], {GPU1_1G: "Unhealthy", GPU0_1G[0]: "Healthy"}
    )
    _, log = await serve.stop()
    assert "not ours" not in log


def serve_once(driver: FakeDriver, plugin_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [*PLUGIN, "serve", "--discovery", "nvml", "--device-plugin-dir", str(plugin_dir)]
    return subprocess.run(
        [*command, "--driver-root", str(driver.root), *extra],
        env=driver_env(driver),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_single_on_a_mixed_layout_exits_2_naming_the_gpu(fake_driver: FakeDriver, tmp_path: Path) -> None:
    plugin_dir = tmp_path / "dp"
    plugin_dir.mkdir()

    result = serve_once(fake_driver, plugin_dir, "--mig-strategy", "single")

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(
        "gpu-device-plugin: bad configuration: mig-strategy: single needs MIG on every GPU"
    )
    assert "GPU 2 (GPU-e1000000-0000-4000-8000-000000000002) has MIG mode disabled" in lines[-1]
    assert "Traceback" not in result.stderr
    assert list(plugin_dir.iterdir()) == []  # no socket was ever made


def test_single_with_one_gpu_of_another_profile_names_it(fake_driver: FakeDriver, tmp_path: Path) -> None:
    plugin_dir = tmp_path / "dp"
    plugin_dir.mkdir()
    fake_driver.set_mig_layout(2, [{"profile": "1g.10gb", "gi": 7 + k} for k in range(7)])

    result = serve_once(fake_driver, plugin_dir, "--mig-strategy", "single")

    assert result.returncode == 2
    assert (
        "mig-strategy: single needs one MIG profile on every GPU: GPU 1 "
        "(GPU-e1000000-0000-4000-8000-000000000001) has 2g.20gb, 3g.40gb where "
        "GPU 0 (GPU-e1000000-0000-4000-8000-000000000000) has 1g.10gb"
    ) in result.stderr


async def test_single_without_fail_on_init_error_serves_zero_devices_and_says_why(
    fake_driver: FakeDriver, mig_serve: Start
) -> None:
    serve = await mig_serve(fake_driver, "--mig-strategy", "single", "--no-fail-on-init-error")
    resources = await serve.resources(1)

    assert list(resources) == [GPU]
    assert ids(resources[GPU]) == []
    code, log = await serve.stop()
    assert code == 0
    errors = [line for line in log.splitlines() if "ERROR" in line and "mig-strategy" in line]
    assert len(errors) == 1
    assert "single needs MIG on every GPU" in errors[0]
    assert f"serving no devices under {GPU}" in errors[0]


async def test_single_on_a_uniform_layout_serves_every_mig_device_under_the_gpu_name(
    fake_driver: FakeDriver, mig_serve: Start
) -> None:
    for gpu in (1, 2):
        fake_driver.set_mig_layout(gpu, [{"profile": "1g.10gb", "gi": 7 + k} for k in range(7)])
    serve = await mig_serve(fake_driver, "--mig-strategy", "single")
    resources = await serve.resources(1)

    assert list(resources) == [GPU]
    served = ids(resources[GPU])
    assert len(served) == 21
    assert all(i.startswith("MIG-") for i in served)
    response = await allocate(resources[GPU], served[0])
    assert response.envs["NVIDIA_VISIBLE_DEVICES"] == served[0]
    await serve.stop()


async def test_none_serves_whole_gpus_with_one_warning_per_mig_gpu(
    fake_driver: FakeDriver, mig_serve: Start
) -> None:
    serve = await mig_serve(fake_driver)
    resources = await serve.resources(1)

    assert len(ids(resources[GPU])) == 3
    _, log = await serve.stop()
    warnings = [line for line in log.splitlines() if "served as a whole GPU" in line]
    assert len(warnings) == 2
    assert all("WARNING" in w for w in warnings)
    assert any("GPU 0 (GPU-e1000000-0000-4000-8000-000000000000) has MIG mode enabled" in w for w in warnings)


def latest_of(kubelet: StandinKubelet, name: str) -> Registration | None:
    found = [r for r in kubelet.registrations if r.request.resource_name == name and r.updates]
    return found[-1] if found else None


async def test_a_mig_layout_changed_under_the_plugin_is_followed_without_a_restart(
    fake_driver: FakeDriver, mig_serve: Start, kubelet: StandinKubelet
) -> None:
    """Issue 17: an operator re-partitions GPU 1 (mig-parted); re-discovery republishes the mig-*."""
    serve = await mig_serve(fake_driver, "--mig-strategy", "mixed", "--rediscovery-interval", "0.5")
    resources = await serve.resources(4)
    small = resources["nvidia.com/mig-1g.10gb"]
    untouched = {GPU: resources[GPU], "nvidia.com/mig-1g.10gb": small}

    # GPU 1's 3g.40gb and 2g.20gb are destroyed and six 1g.10gb made (GI 7..12); its
    # 1g.10gb of GI 13 is left alone, so it keeps its UUID, as on a real driver.
    fake_driver.set_mig_layout(
        1,
        [
            *({"profile": "1g.10gb", "gi": gi} for gi in range(7, 13)),
            {"profile": "1g.10gb", "gi": 13, "uuid": GPU1_1G},
        ],
    )

    await kubelet.wait_for(lambda: len(small.latest.devices) == 14, timeout=15)
    spec = fake_driver.profile.devices[1].mig
    assert spec is not None
    gpu1_1g = [fake_driver.profile.mig_uuid(1, instance) for instance in spec.instances]
    # The instances that were there keep their ids (GPU 0's seven and GPU 1's GI 13), on
    # the same stream: the kubelet's checkpoint of a running pod still names a device.
    assert set(ids(small)) == {*GPU0_1G, *gpu1_1g}
    assert GPU1_1G in gpu1_1g
    # The profiles GPU 1 no longer has stop serving; the rest keep their registration.
    for gone in ("nvidia.com/mig-2g.20gb", "nvidia.com/mig-3g.40gb"):
        await kubelet.wait_for(lambda gone=gone: not our_sockets(kubelet.plugin_dir, gone), timeout=15)
    for name, registration in untouched.items():
        assert [r for r in kubelet.registrations if r.request.resource_name == name] == [registration]
    response = await allocate(small, gpu1_1g[0])
    assert response.envs["NVIDIA_VISIBLE_DEVICES"] == gpu1_1g[0]

    # Back to the first layout: the profiles return under their old ids, a new registration each.
    fake_driver.set_mig_layout(
        1,
        [
            {"profile": "3g.40gb", "gi": 1, "uuid": GPU1_3G},
            {"profile": "2g.20gb", "gi": 5, "uuid": GPU1_2G},
            {"profile": "1g.10gb", "gi": 13, "uuid": GPU1_1G},
        ],
    )
    await kubelet.wait_for(lambda: len(small.latest.devices) == 8, timeout=15)
    first_large = resources["nvidia.com/mig-3g.40gb"]

    def large_again() -> Registration | None:
        found = latest_of(kubelet, "nvidia.com/mig-3g.40gb")
        return found if found is not first_large else None

    large = await kubelet.wait_for(large_again, timeout=15)
    assert ids(large) == [GPU1_3G]
    assert serve.process.returncode is None
    code, log = await serve.stop()
    assert code == 0
    assert "Traceback" not in log
    assert "re-discovery: the devices changed" in log


async def test_a_layout_single_cannot_serve_keeps_the_last_plan_and_says_why(
    fake_driver: FakeDriver, mig_serve: Start, kubelet: StandinKubelet
) -> None:
    for gpu in (1, 2):
        fake_driver.set_mig_layout(gpu, [{"profile": "1g.10gb", "gi": 7 + k} for k in range(7)])
    serve = await mig_serve(fake_driver, "--mig-strategy", "single", "--rediscovery-interval", "0.3")
    resources = await serve.resources(1)
    served = ids(resources[GPU])
    assert len(served) == 21

    # GPU 2 re-partitioned into another profile: `single` cannot serve the node as it is now.
    fake_driver.set_mig_layout(2, [{"profile": "3g.40gb", "gi": 1}, {"profile": "3g.40gb", "gi": 2}])

    # Two profiles under one name would hand a pod either: none is served, on the same stream.
    await kubelet.wait_for(lambda: not resources[GPU].latest.devices, timeout=15)
    assert serve.process.returncode is None
    assert len(kubelet.registrations) == 1

    # Uniform again (the same instances made again: the fake gives them the same UUIDs).
    fake_driver.set_mig_layout(2, [{"profile": "1g.10gb", "gi": 7 + k} for k in range(7)])
    await kubelet.wait_for(lambda: len(resources[GPU].latest.devices) == 21, timeout=15)
    assert sorted(ids(resources[GPU])) == sorted(served)
    code, log = await serve.stop()
    assert code == 0
    refusals = [line for line in log.splitlines() if "cannot be served so" in line]
    assert len(refusals) == 1, log
    assert "WARNING" in refusals[0]
    assert "single needs one MIG profile on every GPU" in refusals[0]
    assert "keeping the last plan" in refusals[0]
