"""Core benchmark (issue 2): start-up, Allocate latency, ListAndWatch, memory.

Runs the real `gpu-device-plugin serve` process with 8 fake GPUs against the
stand-in kubelet, over unix sockets, and prints one JSON document. A bare
grpcio aio server answering Allocate with a constant is measured the same way,
so the plugin's own cost per call can be read off as the difference.

Usage: python -m gdp_bench.core [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from gdp_bench.common import emit, percentiles, progress, scratch_folder, serve_argv
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet

DEVICES = 8


def allocate_request(ids: list[str]) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)])


async def time_allocate(socket: Path, ids: list[str], *, calls: int, clients: int) -> dict[str, float]:
    request = allocate_request(ids)
    samples: list[float] = []

    async def client() -> None:
        async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
            stub = pb_grpc.DevicePluginStub(channel)
            for _ in range(20):  # warm-up: connection, first-call paths
                await stub.Allocate(request)
            for _ in range(calls):
                started = time.perf_counter()
                await stub.Allocate(request)
                samples.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(clients)))
    return percentiles(samples)


async def time_first_list(socket: Path, *, trials: int) -> dict[str, float]:
    samples = []
    async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
        stub = pb_grpc.DevicePluginStub(channel)
        for _ in range(trials):
            started = time.perf_counter()
            stream = stub.ListAndWatch(pb.Empty())
            first = await stream.read()
            samples.append(time.perf_counter() - started)
            assert len(first.devices) == DEVICES
            stream.cancel()
    return percentiles(samples)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM")


async def start_to_registered(folder: Path, config: Path) -> tuple[float, asyncio.subprocess.Process, str]:
    async with StandinKubelet(folder, follow=False) as kubelet:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *serve_argv(config, folder), env={**os.environ, "OTEL_SDK_DISABLED": "true"}
        )
        request = (await kubelet.wait_registered(timeout=30)).request
        return time.perf_counter() - started, process, request.endpoint


class _Bare(pb_grpc.DevicePluginServicer):
    response = pb.AllocateResponse(
        container_responses=[pb.ContainerAllocateResponse(envs={"NVIDIA_VISIBLE_DEVICES": "x"})]
    )

    async def Allocate(self, request: pb.AllocateRequest, context: Any) -> pb.AllocateResponse:
        return self.response


async def serve_bare(socket: Path) -> None:
    server = grpc.aio.server()
    pb_grpc.add_DevicePluginServicer_to_server(_Bare(), server)
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def bare_grpc_baseline(folder: Path, ids: list[str], calls: int) -> dict[str, Any]:
    """The floor: a grpcio aio server with a constant answer, in its own process like the plugin."""
    socket = folder / "bare.sock"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gdp_bench.core", "--bare-server", str(socket), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        await asyncio.wait_for(process.stdout.readline(), 30)
        return {
            "allocate_1_sequential": await time_allocate(socket, ids[:1], calls=calls, clients=1),
            "allocate_8_sequential": await time_allocate(socket, ids, calls=calls, clients=1),
        }
    finally:
        process.terminate()
        await process.wait()


async def run(quick: bool) -> dict[str, Any]:
    calls = 300 if quick else 2000
    with scratch_folder("gdp-bench-") as scratch:
        folder = Path(scratch)
        config = folder / "gpus.yaml"
        config.write_text(yaml.safe_dump({"count": DEVICES}))
        ids = [fake_uuid(i) for i in range(DEVICES)]
        starts = []
        progress(f"start-up to registered, {2 if quick else 5} starts")
        for _ in range(2 if quick else 5):
            elapsed, process, endpoint = await start_to_registered(folder, config)
            starts.append(elapsed)
            if len(starts) < (2 if quick else 5):
                process.terminate()
                await process.wait()
        socket = folder / endpoint
        progress(f"ListAndWatch first response and Allocate, {calls} calls per case")
        try:
            result = {
                "devices": DEVICES,
                "start_to_registered_s": {
                    "median": round(statistics.median(starts), 3),
                    "max": round(max(starts), 3),
                    "n": len(starts),
                },
                "list_and_watch_first_response": await time_first_list(socket, trials=200),
                "allocate_1_sequential": await time_allocate(socket, ids[:1], calls=calls, clients=1),
                "allocate_8_sequential": await time_allocate(socket, ids, calls=calls, clients=1),
                "allocate_1_concurrent_8_clients": await time_allocate(
                    socket, ids[:1], calls=calls // 8, clients=8
                ),
                "allocate_8_concurrent_8_clients": await time_allocate(
                    socket, ids, calls=calls // 8, clients=8
                ),
                "peak_rss_mib": peak_rss_mib(process.pid),
            }
        finally:
            process.terminate()
            await process.wait()
        progress("the bare grpcio baseline")
        result["baseline_bare_grpcio"] = await bare_grpc_baseline(folder, ids, calls)
    result["targets"] = {"start_to_registered_s": 1.0, "allocate_p99_sequential_ms": 1.0, "peak_rss_mib": 60}
    result["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "grpcio": grpc.__version__,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--bare-server", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        asyncio.run(serve_bare(args.bare_server))
        return
    result = asyncio.run(run(args.quick))
    emit(result, args.out)


if __name__ == "__main__":
    main()
