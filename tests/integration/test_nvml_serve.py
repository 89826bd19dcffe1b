"""`serve --discovery nvml` and `discover` on the C NVML fake, through the real pynvml.

The plugin runs as its own process (pynvml holds one library per process) with
the fake driver root's environment, the way a container runtime would inject a
real driver: LD_LIBRARY_PATH reaches `libnvidia-ml.so.1` and nothing else is
special. It serves over a real unix socket to the test kubelet. Faults are
injected into the running library (`nvmlfake.FakeDriver`): what the kubelet's
stream shows, and what an Allocate gets, is what a user would notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gdp_hack.nvmlfake import FakeDriver, Profile
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.server.kubelet_standin import Registration, StandinKubelet

PLUGIN = [sys.executable, "-m", "gpu_device_plugin.cli"]
#: Fast health loop so recovery is seen in about a second, not a minute.
FAST_HEALTH = ("--health-probe-interval", "0.2", "--health-quiet-period", "1")
PCIE_KEY = {0: "BOARD", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}


def driver_env(driver: FakeDriver) -> dict[str, str]:
    return {**os.environ, **driver.env(), "OTEL_SDK_DISABLED": "true"}


def discover_json(driver: FakeDriver, *extra: str) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [*PLUGIN, "discover", "--discovery", "nvml", "--json", *extra],
        env=driver_env(driver),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


class NvmlServe:
    """One `serve --discovery nvml` process and the kubelet it registers with."""

    def __init__(self, process: asyncio.subprocess.Process, kubelet: StandinKubelet) -> None:
        self.process = process
        self.kubelet = kubelet
        self.registration: Registration | None = None

    async def registered(self) -> Registration:
        self.registration = await self.kubelet.wait_registered(timeout=30)
        return self.registration

    def health(self) -> dict[str, str]:
        assert self.registration is not None
        return {d.ID: d.health for d in self.registration.latest.devices}

    async def wait_health(self, uuid: str, health: str, timeout: float = 10) -> None:
        await self.kubelet.wait_for(lambda: self.health().get(uuid) == health, timeout)

    async def stop(self) -> tuple[int, str]:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(self.process.communicate(), 10)
        assert self.process.returncode is not None
        return self.process.returncode, stderr.decode()


@pytest.fixture
async def nvml_serve(kubelet: StandinKubelet) -> AsyncIterator:  # type: ignore[type-arg]
    started: list[NvmlServe] = []

    async def start(driver: FakeDriver, *extra: str) -> NvmlServe:
        process = await asyncio.create_subprocess_exec(
            *PLUGIN, "serve", "--discovery", "nvml", "--device-plugin-dir", str(kubelet.plugin_dir),
            *FAST_HEALTH, *extra,
            env=driver_env(driver),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        serve = NvmlServe(process, kubelet)
        started.append(serve)
        return serve

    yield start
    for serve in started:
        if serve.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, TimeoutError):
                await serve.stop()


def profile_of(driver: FakeDriver) -> Profile:
    return driver.profile


# ------------------------------------------------------------------ discovery


@pytest.mark.parametrize(
    "fake_driver", ["dgx-a100", "dgx-h100", "dgx1-v100", "pcie-4gpu", "mig-a100"], indirect=True
)
def test_discover_reports_every_field_of_the_profile(fake_driver: FakeDriver) -> None:
    profile = profile_of(fake_driver)
    data = discover_json(fake_driver)
    assert data["backend"] == "nvml"
    assert data["driver_version"] == profile.system.driver
    assert data["cuda_version"] == profile.system.cuda
    got = data["devices"]
    assert [d["index"] for d in got] == list(range(len(profile.devices)))
    for want, device in zip(profile.devices, got, strict=True):
        assert device["uuid"] == want.uuid
        assert device["id"] == want.uuid
        assert device["model"] == want.name
        assert device["memory_mib"] == want.memory_mib
        assert device["minor"] == want.minor
        # NVML says 00000000:17:00.0; the plugin names it as sysfs does, 0000:17:00.0.
        assert device["pci_bus_id"] == want.pci_bus_id.lower()[-len("0000:17:00.0") :]
        assert device["numa_node"] == want.numa_node
        assert device["compute_capability"] == want.compute_capability
        assert device["health"] == "Healthy"


@pytest.mark.parametrize("fake_driver", ["dgx1-v100", "dgx-a100", "dgx-h100", "pcie-4gpu"], indirect=True)
def test_discover_topology_matches_the_profile(fake_driver: FakeDriver) -> None:
    profile = profile_of(fake_driver)
    links = {
        (entry["a"], entry["b"]): entry
        for entry in discover_json(fake_driver, "--topology")["topology"]["links"]
    }
    per_gpu = profile.links()
    n = len(profile.devices)
    for a, b in itertools.combinations(range(n), 2):
        entry = links[(a, b)]
        assert entry["pcie"] == PCIE_KEY[int(profile.level(a, b))], (a, b)
        direct = sum(1 for link in per_gpu[a] if link.remote_gpu == b)
        switched = min(
            sum(1 for link in per_gpu[a] if link.remote_gpu is None),
            sum(1 for link in per_gpu[b] if link.remote_gpu is None),
        )
        assert entry["nvlinks"] == direct + switched, (a, b)
        assert entry["nvswitch"] == (switched > 0), (a, b)


# ------------------------------------------------------------------ serving


def _nvlinks(profile: Profile, gpus: list[int]) -> int:
    pair_links = {tuple(sorted(p.gpus)): p.links for p in profile.nvlink_pairs}
    return sum(pair_links.get((a, b), 0) for a, b in itertools.combinations(sorted(gpus), 2))


@pytest.mark.parametrize("fake_driver", ["dgx1-v100"], indirect=True)
async def test_serves_the_profile_and_prefers_the_best_nvlinked_sets(
    fake_driver: FakeDriver, nvml_serve
) -> None:
    profile = profile_of(fake_driver)
    serve = await nvml_serve(fake_driver)
    registration = await serve.registered()
    uuids = [d.uuid for d in profile.devices]
    assert [d.ID for d in registration.latest.devices] == uuids
    assert all(d.health == "Healthy" for d in registration.latest.devices)
    numa = {d.ID: [n.ID for n in d.topology.nodes] for d in registration.latest.devices}
    assert numa == {d.uuid: [d.numa_node] for d in profile.devices}
    assert registration.options.get_preferred_allocation_available
    index = {uuid: i for i, uuid in enumerate(uuids)}
    for size in (2, 4):
        answer = await registration.stub().GetPreferredAllocation(
            pb.PreferredAllocationRequest(
                container_requests=[
                    pb.ContainerPreferredAllocationRequest(available_deviceIDs=uuids, allocation_size=size)
                ]
            )
        )
        chosen = [index[i] for i in answer.container_responses[0].deviceIDs]
        best = max(_nvlinks(profile, list(c)) for c in itertools.combinations(range(len(uuids)), size))
        assert len(chosen) == size
        assert _nvlinks(profile, chosen) == best, (size, chosen)
    allocated = await registration.stub().Allocate(
        pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=uuids[:2])])
    )
    assert allocated.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == ",".join(uuids[:2])


@pytest.mark.parametrize("fake_driver", ["pcie-4gpu"], indirect=True)
async def test_prefers_a_pair_on_one_numa_node_without_nvlink(fake_driver: FakeDriver, nvml_serve) -> None:
    profile = profile_of(fake_driver)
    serve = await nvml_serve(fake_driver)
    registration = await serve.registered()
    uuids = [d.uuid for d in profile.devices]
    # Offer one GPU of NUMA 0 and every GPU of NUMA 1: the pair must come from NUMA 1.
    numa = {d.uuid: d.numa_node for d in profile.devices}
    offered = [u for u in uuids if numa[u] == 1] + [next(u for u in uuids if numa[u] == 0)]
    answer = await registration.stub().GetPreferredAllocation(
        pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(available_deviceIDs=offered, allocation_size=2)
            ]
        )
    )
    assert {numa[u] for u in answer.container_responses[0].deviceIDs} == {1}


# ------------------------------------------------------------------ health


@pytest.mark.parametrize("fake_driver", ["dgx-h100"], indirect=True)
async def test_critical_xid_marks_unhealthy_then_recovers_and_application_xid_does_not(
    fake_driver: FakeDriver, nvml_serve
) -> None:
    serve = await nvml_serve(fake_driver)
    registration = await serve.registered()
    uuids = [d.ID for d in registration.latest.devices]
    # The application XID first, on another GPU: events arrive in order, so once
    # the critical one shows, the application one has been judged too.
    fake_driver.inject_xid(1, 13)
    fake_driver.inject_xid(3, 79)
    await serve.wait_health(uuids[3], "Unhealthy")
    assert serve.health()[uuids[1]] == "Healthy"
    refused = await registration.stub().GetPreferredAllocation(
        pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(available_deviceIDs=uuids, allocation_size=8)
            ]
        )
    )
    assert len(refused.container_responses[0].deviceIDs) == 8  # advice still answers (issue 14)
    # One second of quiet (--health-quiet-period 1) and correct probes: healthy again.
    await serve.wait_health(uuids[3], "Healthy", timeout=15)
    code, log = await serve.stop()
    assert code == 0
    assert "Traceback" not in log
    assert "XID 13" in log or "xid 13" in log.lower()


@pytest.mark.parametrize("fake_driver", ["dgx-a100"], indirect=True)
async def test_double_bit_ecc_marks_unhealthy(fake_driver: FakeDriver, nvml_serve) -> None:
    serve = await nvml_serve(fake_driver)
    registration = await serve.registered()
    uuid = registration.latest.devices[5].ID
    fake_driver.inject_ecc(5)
    await serve.wait_health(uuid, "Unhealthy")
    await serve.wait_health(uuid, "Healthy", timeout=15)


@pytest.mark.parametrize("fake_driver", ["dgx-a100"], indirect=True)
async def test_lost_gpu_is_unhealthy_until_it_answers_again(fake_driver: FakeDriver, nvml_serve) -> None:
    serve = await nvml_serve(fake_driver)
    registration = await serve.registered()
    uuids = [d.ID for d in registration.latest.devices]
    fake_driver.lose(2)
    await serve.wait_health(uuids[2], "Unhealthy")
    assert [h for u, h in serve.health().items() if u != uuids[2]] == ["Healthy"] * 7
    fake_driver.heal(2)
    await serve.wait_health(uuids[2], "Healthy", timeout=15)


@pytest.mark.parametrize("fake_driver", ["pcie-4gpu"], indirect=True)
async def test_hung_nvml_call_marks_only_that_gpu_and_the_plugin_keeps_serving(
    fake_driver: FakeDriver, nvml_serve
) -> None:
    serve = await nvml_serve(fake_driver)
    registration = await serve.registered()
    uuids = [d.ID for d in registration.latest.devices]
    fake_driver.hang(1, 60, functions=("nvmlDeviceGetMemoryInfo",))
    # The probe's call bound (5 s) passes, then the GPU is unhealthy.
    await serve.wait_health(uuids[1], "Unhealthy", timeout=20)
    # The plugin still answers the kubelet while that call hangs.
    answer = await registration.stub().Allocate(
        pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[uuids[0]])])
    )
    assert answer.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == uuids[0]
    fake_driver.heal(1)
    await serve.wait_health(uuids[1], "Healthy", timeout=20)
    code, _ = await serve.stop()
    assert code == 0


@pytest.mark.parametrize("fake_driver", ["pcie-4gpu"], indirect=True)
async def test_gpus_without_events_are_still_watched_by_probes(fake_driver: FakeDriver, nvml_serve) -> None:
    for gpu in range(4):
        fake_driver.events_not_supported(gpu)
    serve = await nvml_serve(fake_driver)
    registration = await serve.registered()
    uuids = [d.ID for d in registration.latest.devices]
    assert all(d.health == "Healthy" for d in registration.latest.devices)
    fake_driver.lose(0)
    await serve.wait_health(uuids[0], "Unhealthy")
    code, log = await serve.stop()
    assert code == 0
    assert "Traceback" not in log


# ------------------------------------------------------------------ no usable NVML


def serve_without_nvml(env: dict[str, str], plugin_dir: Path) -> str:
    """`serve` where NVML cannot start: it must exit 1 with one clear line and leave nothing behind."""
    result = subprocess.run(
        [*PLUGIN, "serve", "--discovery", "nvml", "--device-plugin-dir", str(plugin_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert list(plugin_dir.iterdir()) == []
    return result.stderr


@pytest.mark.parametrize("fake_driver", ["pcie-4gpu"], indirect=True)
def test_init_failure_exits_1_with_the_reason(fake_driver: FakeDriver, plugin_dir: Path) -> None:
    fake_driver.fail_init()
    assert "NVML could not be initialised" in serve_without_nvml(driver_env(fake_driver), plugin_dir)


def test_missing_library_exits_1_naming_what_to_check(plugin_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "LD_LIBRARY_PATH": str(tmp_path), "OTEL_SDK_DISABLED": "true"}
    assert "libnvidia-ml.so.1" in serve_without_nvml(env, plugin_dir)


@pytest.mark.parametrize("fake_driver", ["pcie-4gpu"], indirect=True)
async def test_init_failure_without_fail_on_init_error_serves_zero_devices(
    fake_driver: FakeDriver, nvml_serve
) -> None:
    fake_driver.fail_init()
    serve = await nvml_serve(fake_driver, "--no-fail-on-init-error")
    registration = await serve.registered()
    assert list(registration.latest.devices) == []
    code, log = await serve.stop()
    assert code == 0
    assert "serving zero devices" in log
