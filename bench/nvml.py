"""The nvml backend on the C NVML fake, through the real pynvml (issue 13).

1. discovery: `NvmlBackend.discover()` on 8 and 16 GPUs, in a fresh interpreter
   per profile (pynvml holds one library per process): the first discovery
   (nvmlInit included), the median of later ones, and the RSS that pynvml plus a
   discovery add to a process that has already imported the plugin;
2. XID to stream: the real `serve --discovery nvml` process; an XID 79 injected
   into the library it loaded, until the kubelet's ListAndWatch stream shows the
   GPU Unhealthy; 100 injections (each GPU recovers before the next one hits it);
3. recovery: a lost GPU healed, until the stream shows it Healthy again, with a
   short quiet period and with the default one (60 s; --quick skips it), one
   fault per GPU. It should take the quiet period plus at most one probe interval.

Usage: python -m gdp_bench.nvml [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from gdp_bench.common import emit, percentiles, progress, scratch_folder
from gdp_hack.nvmlfake import FakeDriver, build, load
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.server.kubelet_standin import StandinKubelet

DISCOVERY_CHILD = r"""
import json, resource, sys, time
from pathlib import Path

def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

from gpu_device_plugin.backends.config import DiscoveryConfig, DiscoveryKind
from gpu_device_plugin.backends.registry import make_backend
before = rss_mib()
backend = make_backend(DiscoveryConfig(kind=DiscoveryKind.NVML))
started = time.perf_counter()
inventory = backend.discover()
first = time.perf_counter() - started
assert len(inventory.devices) == int(sys.argv[1]), len(inventory.devices)
later = []
for _ in range(20):
    started = time.perf_counter()
    backend.discover()
    later.append(time.perf_counter() - started)
later.sort()
print(json.dumps({"first_ms": first * 1e3, "later_p50_ms": later[10] * 1e3,
                  "later_max_ms": later[-1] * 1e3, "rss_added_mib": rss_mib() - before}))
"""


def sixteen_gpu_profile(folder: Path) -> Path:
    """The 8-GPU H100 profile twice over: 16 GPUs on NVSwitch, two NUMA nodes."""
    base = load("dgx-h100")
    devices = []
    for index in range(16):
        device = base.devices[index % 8].model_dump(mode="json")
        device["uuid"] = f"GPU-16160000-0000-4000-8000-{index:012x}"
        device["minor"] = index
        device["pci_bus_id"] = f"0000:{0x10 + index * 8:02x}:00.0"
        device["numa_node"] = index // 8
        devices.append(device)
    raw: dict[str, Any] = {
        "description": "16x H100 on NVSwitch (bench)",
        "system": base.system.model_dump(mode="json"),
        "devices": devices,
        "nvswitches": [{"pci_bus_id": f"0000:{0xE0 + i:02x}:00.0", "links_per_gpu": 4} for i in range(4)],
    }
    path = folder / "h100x16.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def discovery(folder: Path, library: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for gpus, profile in ((8, "dgx-h100"), (16, str(sixteen_gpu_profile(folder)))):
        driver = FakeDriver(folder / f"root-{gpus}", profile, library=library)
        done = subprocess.run(
            [sys.executable, "-c", DISCOVERY_CHILD, str(gpus)],
            env={**os.environ, **driver.env()},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        results[f"gpus_{gpus}"] = json.loads(done.stdout)
        progress(f"discovery of {gpus} GPUs: {results[f'gpus_{gpus}']}")
    return results


class Stream:
    """The kubelet's side: register, then follow one ListAndWatch stream."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty())
        self.health: dict[str, str] = {}

    async def until(self, uuid: str, health: str, timeout: float) -> None:
        while self.health.get(uuid) != health:
            update = await asyncio.wait_for(self.call.read(), timeout)
            self.health = {d.ID: d.health for d in update.devices}


async def with_serve(
    folder: Path, driver: FakeDriver, quiet_s: float, probe_s: float
) -> tuple[asyncio.subprocess.Process, StandinKubelet, grpc.aio.Channel, Stream]:
    plugin_dir = folder / f"plugins-{quiet_s:g}"
    plugin_dir.mkdir()
    kubelet = StandinKubelet(plugin_dir, follow=False)  # the bench follows its own stream
    await kubelet.__aenter__()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpu_device_plugin.cli", "serve", "--discovery", "nvml",
        "--device-plugin-dir", str(plugin_dir),
        "--health-quiet-period", str(quiet_s), "--health-probe-interval", str(probe_s),
        env={**os.environ, **driver.env(), "OTEL_SDK_DISABLED": "true"},
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    request = (await kubelet.wait_registered(timeout=60)).request
    channel = grpc.aio.insecure_channel(f"unix://{plugin_dir / request.endpoint}")
    stream = Stream(channel)
    await stream.until(driver.profile.devices[0].uuid, "Healthy", 30)
    return process, kubelet, channel, stream


async def stop(
    process: asyncio.subprocess.Process, kubelet: StandinKubelet, channel: grpc.aio.Channel
) -> None:
    process.terminate()
    await asyncio.wait_for(process.wait(), 10)
    await channel.close()
    await kubelet.__aexit__()


async def xid_to_stream(folder: Path, library: Path, trials: int) -> dict[str, Any]:
    driver = FakeDriver(folder / "root-xid", "dgx-h100", library=library)
    uuids = [d.uuid for d in driver.profile.devices]
    process, kubelet, channel, stream = await with_serve(folder, driver, quiet_s=0.2, probe_s=0.1)
    samples = []
    try:
        for trial in range(trials):
            gpu = trial % len(uuids)
            await stream.until(uuids[gpu], "Healthy", 30)  # recovered from its last XID
            started = time.perf_counter()
            driver.inject_xid(gpu, 79)
            await stream.until(uuids[gpu], "Unhealthy", 10)
            samples.append(time.perf_counter() - started)
            if trial % 20 == 19:
                progress(f"XID to stream: {trial + 1}/{trials}")
    finally:
        await stop(process, kubelet, channel)
    return {"trials": trials, "ms": percentiles(samples)}


async def recovery(
    folder: Path, library: Path, quiet_s: float, probe_s: float, trials: int
) -> dict[str, Any]:
    driver = FakeDriver(folder / f"root-heal-{quiet_s:g}", "pcie-4gpu", library=library)
    uuids = [d.uuid for d in driver.profile.devices]
    # One fault per GPU: a GPU that fails again within 10 min of recovering waits
    # twice as long (the tracker's flap back-off), which is not what this measures.
    assert trials <= len(uuids)
    process, kubelet, channel, stream = await with_serve(folder, driver, quiet_s=quiet_s, probe_s=probe_s)
    samples = []
    try:
        for gpu in range(trials):
            uuid = uuids[gpu]
            driver.lose(gpu)
            await stream.until(uuid, "Unhealthy", probe_s + 10)
            started = time.perf_counter()
            driver.heal(gpu)
            await stream.until(uuid, "Healthy", quiet_s + probe_s + 30)
            samples.append(time.perf_counter() - started)
            progress(f"recovery, quiet {quiet_s:g} s: {gpu + 1}/{trials}: {samples[-1]:.2f} s")
    finally:
        await stop(process, kubelet, channel)
    return {
        "quiet_period_s": quiet_s,
        "probe_interval_s": probe_s,
        "expected_s": f"{quiet_s:g} to {quiet_s + probe_s:g}",
        "seconds": [round(s, 3) for s in samples],
    }


async def main_async(quick: bool) -> dict[str, Any]:
    library = build()
    with scratch_folder() as scratch:
        folder = Path(scratch)
        result: dict[str, Any] = {"discovery": discovery(folder, library)}
        result["xid_to_stream"] = await xid_to_stream(folder, library, 20 if quick else 100)
        progress(f"XID to stream: {result['xid_to_stream']}")
        result["recovery_short"] = await recovery(folder, library, 2.0, 1.0, 2 if quick else 4)
        if not quick:
            result["recovery_default"] = await recovery(folder, library, 60.0, 10.0, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    emit(asyncio.run(main_async(args.quick)), args.out)


if __name__ == "__main__":
    main()
