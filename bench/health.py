"""Health propagation benchmark (issue 5).

1. detected -> delivered: a health change published into the plugin's cell
   (what every health source does on detection) until the new list arrives on a
   ListAndWatch stream over the unix socket; 200 trials, 1 and 8 streams.
2. file edit -> delivered: the real `serve` process on the fake backend; the
   file is rewritten and the time until the stream carries the change is taken.

Usage: python -m gdp_bench.health [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from gdp_bench.common import emit, percentiles, progress, scratch_folder
from gpu_device_plugin.allocator import AllocateOptions, in_order_policy
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.backends.fake.spec import FakeConfig, fake_uuid, to_inventory
from gpu_device_plugin.health.publish import publish_snapshot
from gpu_device_plugin.inventory import Health, SnapshotCell
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager
from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from gpu_device_plugin.server.plugin_server import PluginServer
from gpu_device_plugin.server.service import DevicePluginService


async def detected_to_delivered(folder: Path, *, trials: int, streams: int) -> dict[str, float]:
    inventory = to_inventory(FakeConfig(count=8))
    cell = SnapshotCell(inventory)
    service = DevicePluginService(
        WholeGpuManager("example.com/gpu", AllocateOptions(), in_order_policy), cell
    )
    server = PluginServer(service, folder / f"h{streams}.sock")
    await server.start()
    samples = []
    try:
        async with grpc.aio.insecure_channel(f"unix://{server.socket_path}") as channel:
            stub = pb_grpc.DevicePluginStub(channel)
            opened = [stub.ListAndWatch(pb.Empty()) for _ in range(streams)]
            for stream in opened:
                await stream.read()
            for trial in range(trials):
                health = Health.UNHEALTHY if trial % 2 == 0 else Health.HEALTHY
                newer = cell.value.with_health({inventory.devices[3].id: (health, "bench")})
                started = time.perf_counter()
                publish_snapshot(cell, newer, source="bench")
                # The last stream to hear it is what the slowest kubelet sees.
                for stream in opened:
                    update = await stream.read()
                    assert update.devices[3].health == health.value
                samples.append(time.perf_counter() - started)
            for stream in opened:
                stream.cancel()
    finally:
        await server.stop(None)
    return percentiles(samples)


def write_config(path: Path, unhealthy: int | None) -> None:
    devices = [
        {"uuid": fake_uuid(i), "health": "Unhealthy" if i == unhealthy else "Healthy"} for i in range(8)
    ]
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(yaml.safe_dump({"devices": devices}))
    scratch.replace(path)


async def file_edit_to_delivered(folder: Path, *, trials: int) -> dict[str, float]:
    config = folder / "conf" / "gpus.yaml"
    config.parent.mkdir()
    write_config(config, None)
    async with StandinKubelet(folder, follow=False) as kubelet:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gpu_device_plugin.cli", "serve", "--discovery", "fake",
            "--fake-config", str(config), "--device-plugin-dir", str(folder), "--log-level", "ERROR",
            env={**os.environ, "OTEL_SDK_DISABLED": "true"},
        )  # fmt: skip
        try:
            request = (await kubelet.wait_registered(timeout=30)).request
            async with grpc.aio.insecure_channel(f"unix://{folder / request.endpoint}") as channel:
                stream = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty())
                await stream.read()
                samples = []
                for trial in range(trials):
                    unhealthy = trial % 8 if trial % 2 == 0 else None
                    started = time.perf_counter()
                    write_config(config, unhealthy)
                    update = await asyncio.wait_for(stream.read(), 5)
                    samples.append(time.perf_counter() - started)
                    bad = [i for i, d in enumerate(update.devices) if d.health == "Unhealthy"]
                    assert bad == ([] if unhealthy is None else [unhealthy])
                stream.cancel()
        finally:
            process.terminate()
            await process.wait()
    return percentiles(samples)


async def run(quick: bool) -> dict[str, Any]:
    trials = 50 if quick else 200
    with scratch_folder("gdp-bench-") as scratch:
        folder = Path(scratch)
        progress(f"detected to delivered, {trials} trials with 1 and 8 streams, then fake-file edits")
        return {
            "detected_to_delivered_1_stream": await detected_to_delivered(folder, trials=trials, streams=1),
            "detected_to_delivered_8_streams": await detected_to_delivered(folder, trials=trials, streams=8),
            "fake_file_edit_to_delivered": await file_edit_to_delivered(folder, trials=20 if quick else 100),
            "targets": {"detected_to_delivered_p99_ms": 5.0, "fake_file_edit_to_delivered_p99_ms": 1000.0},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # one line per health change would drown the JSON
    emit(asyncio.run(run(args.quick)), args.out)


if __name__ == "__main__":
    main()
