"""Tracing benchmark (issue 15): what a traced Allocate costs the serving process, and whether
every span arrives, and serve exits in time, with the CPUs busy.

The real `gpu-device-plugin serve` process (8 fake GPUs, stand-in kubelet, unix
sockets) exports over OTLP/gRPC, with the SDK's default batching, to the real
OTLP receiver of tests/testsupport/otlp.py, running in this process.
- cpu: the serving process's own CPU time (utime + stime of all its threads,
  /proc/<pid>/stat) over --calls sequential Allocates, per call. One process
  per variant, all running at once and called in turn (one call to each, then
  the next round of calls), so a busy neighbour weighs on every variant alike,
  and the difference of two is the variant's own cost. Traced, the
  window closes only once the receiver holds every one of their spans, so the
  export (encoding, the gRPC call) is inside it. Reported traced minus
  untraced (`off`: OTEL_SDK_DISABLED=true). Variants: `sdk`, our interceptor
  (server/rpc_spans.py); `unsampled`, the same with OTEL_TRACES_SAMPLER=always_off
  (the interceptor and a non-recording span, nothing to export); with
  --instrumentation DIR, also `instrumentation`:
  opentelemetry-instrumentation-grpc's aio server interceptor in its place (not
  a dependency: install it into DIR with `pip install --no-deps --target DIR
  opentelemetry-instrumentation-grpc opentelemetry-instrumentation wrapt`).
  Target: at most 60 µs per traced Allocate.
- load: two busy-loop processes (normal priority, one per core of the CI
  machine) run while serve starts, answers --load-calls Allocates (each bounded
  by 30 s) and gets SIGTERM: the share of those Allocate spans the receiver
  got (target 100 %), and the seconds from SIGTERM to exit (target at most 2 s;
  the SDK's shutdown flush is bounded by the exporter's timeout,
  OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default).
Each measure runs --rounds times (variants in rotating order) and every
round's figure is kept: the machine is shared, and the spread is the honest
error bar.

Usage: python -m gdp_bench.tracing [--out FILE] [--quick] [--rounds N] [--instrumentation DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml

from gdp_bench.common import emit, progress, scratch_folder, serve_argv
from gdp_bench.core import DEVICES, allocate_request
from gdp_bench.latency import peak_rss_mib
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet

# The tests' OTLP receiver: the collector's own service definition, in process.
from testsupport.otlp import OtlpReceiver, ReceivedSpan

ALLOCATE = "/v1beta1.DevicePlugin/Allocate"
TICKS = os.sysconf("SC_CLK_TCK")
WARM_CALLS = 200
# Variants whose spans never reach the receiver.
UNEXPORTED = {"off", "unsampled"}
TARGETS = {"cpu_us_per_traced_allocate_max": 60, "spans_delivered_under_load_pct": 100, "exit_s_max": 2.0}


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of proc(5)


def allocates(spans: list[ReceivedSpan]) -> int:
    return sum(s.name == ALLOCATE for s in spans)


def plugin_env(variant: str, endpoint: str, instrumentation: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if variant == "off":
        return env | {"OTEL_SDK_DISABLED": "true"}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    if variant == "unsampled":
        env["OTEL_TRACES_SAMPLER"] = "always_off"
    if variant == "instrumentation":
        assert instrumentation is not None
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(instrumentation), env.get("PYTHONPATH")]))
    return env


def plugin_argv(variant: str, config: Path, folder: Path) -> list[str]:
    argv = serve_argv(config, folder)
    if variant != "instrumentation":
        return argv
    # This file, patching the instrumentation's interceptor in, then the same CLI.
    return [sys.executable, "-m", "gdp_bench.tracing", "--serve-instrumented", "--", *argv[3:]]


async def calls_on(socket: Path, count: int, *, timeout: float) -> None:
    request = allocate_request([fake_uuid(0)])
    async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
        stub = pb_grpc.DevicePluginStub(channel)
        for _ in range(count):
            await asyncio.wait_for(stub.Allocate(request), timeout)


async def stop(process: asyncio.subprocess.Process, timeout: float = 60) -> float:
    """SIGTERM; seconds until it exited."""
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), timeout)
    return time.perf_counter() - started


async def measure_cpu(
    variants: tuple[str, ...], folder: Path, config: Path, calls: int, instrumentation: Path | None
) -> dict[str, dict[str, Any]]:
    """One round: every variant's serve process at once, called in turn, so that whatever
    else the machine is doing weighs on all of them alike."""
    async with contextlib.AsyncExitStack() as stack:
        plugins: dict[str, tuple[asyncio.subprocess.Process, pb_grpc.DevicePluginStub, OtlpReceiver]] = {}
        try:
            for variant in variants:
                receiver = await stack.enter_async_context(OtlpReceiver())
                env = plugin_env(variant, receiver.endpoint, instrumentation)
                home = folder / variant
                home.mkdir(exist_ok=True)
                process, socket = await start_plugin_argv(home, plugin_argv(variant, config, home), env)
                channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"unix://{socket}"))
                plugins[variant] = (process, pb_grpc.DevicePluginStub(channel), receiver)
            request = allocate_request([fake_uuid(0)])

            async def call_all(count: int) -> None:
                for _ in range(count):
                    for _, stub, _ in plugins.values():
                        await stub.Allocate(request)

            async def exported(count: int) -> None:
                for variant, (_, _, receiver) in plugins.items():
                    if variant not in UNEXPORTED:
                        await receiver.wait_for(lambda spans: allocates(spans) >= count, timeout=120)

            await call_all(WARM_CALLS)
            await exported(WARM_CALLS)  # the warm-up's spans out of the way before the window opens
            before = {v: cpu_seconds(p.pid) for v, (p, _, _) in plugins.items()}
            await call_all(calls)
            # The window closes once every span of these calls has reached its receiver.
            await exported(WARM_CALLS + calls)
            spent = {v: cpu_seconds(p.pid) - before[v] for v, (p, _, _) in plugins.items()}
            rss = {v: peak_rss_mib(p.pid) for v, (p, _, _) in plugins.items()}
        finally:
            exits = {v: await stop(p) for v, (p, _, _) in plugins.items()}
    return {
        v: {
            "cpu_us_per_call": round(spent[v] / calls * 1e6, 1),
            "allocate_spans_received": allocates(plugins[v][2].spans),
            "peak_rss_mib": rss[v],
            "exit_s": round(exits[v], 3),
            "exit_code": plugins[v][0].returncode,
        }
        for v in variants
    }


async def start_plugin_argv(
    folder: Path, argv: list[str], env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, Path]:
    """The plugin started by `argv`; returns it and its socket once it has registered."""
    async with StandinKubelet(folder, follow=False) as kubelet:
        process = await asyncio.create_subprocess_exec(*argv, env=env)
        request = (await kubelet.wait_registered(timeout=60)).request
        return process, folder / request.endpoint


@contextlib.contextmanager
def busy_cpus(count: int) -> Iterator[None]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


async def measure_load(folder: Path, config: Path, calls: int) -> dict[str, Any]:
    async with OtlpReceiver() as receiver:
        env = plugin_env("sdk", receiver.endpoint, None)
        with busy_cpus(2):
            process, socket = await start_plugin_argv(folder, serve_argv(config, folder), env)
            try:
                await calls_on(socket, calls, timeout=30)
            finally:
                exit_s = await stop(process)
        # Exit came after the last export was answered: nothing more is on its way.
        received = allocates(receiver.spans)
    return {
        "allocate_calls": calls,
        "allocate_spans_received": received,
        "delivered_pct": round(100 * received / calls, 1),
        "exit_s": round(exit_s, 3),
        "exit_code": process.returncode,
        "spans_received": len(receiver.spans),
    }


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3),
        "min": min(values),
        "max": max(values),
        "per_round": values,
    }


async def run(quick: bool, rounds: int, instrumentation: Path | None) -> dict[str, Any]:
    calls = 1000 if quick else 5000
    load_calls = 100 if quick else 200
    variants = ("off", "unsampled", "sdk") + (("instrumentation",) if instrumentation else ())
    cpu: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    load: list[dict[str, Any]] = []
    with scratch_folder("gdp-bench-") as scratch:
        folder = Path(scratch)
        config = folder / "gpus.yaml"
        config.write_text(yaml.safe_dump({"count": DEVICES}))
        for index in range(rounds):
            # Rotate the calling order so that no variant is always first.
            order = variants[index % len(variants) :] + variants[: index % len(variants)]
            progress(f"round {index + 1}/{rounds}: {', '.join(order)} at once, {calls} calls each")
            measured = await measure_cpu(order, folder, config, calls, instrumentation)
            for variant in variants:
                cpu[variant].append(measured[variant])
            progress(f"round {index + 1}/{rounds}: {load_calls} calls with two busy processes, then SIGTERM")
            load.append(await measure_load(folder, config, load_calls))
    per_call = {v: [r["cpu_us_per_call"] for r in cpu[v]] for v in variants}
    overhead = {
        v: spread([round(t - o, 1) for t, o in zip(per_call[v], per_call["off"], strict=True)])
        for v in variants[1:]
    }
    return {
        "devices": DEVICES,
        "cpu": {
            "calls_per_round": calls,
            "us_per_call": {v: spread(per_call[v]) for v in variants},
            # Per round, traced minus the same round's untraced run.
            "traced_minus_off_us": overhead,
            "rounds": {v: cpu[v] for v in variants},
        },
        "under_load": {
            "busy_processes": 2,
            "delivered_pct": spread([r["delivered_pct"] for r in load]),
            "exit_s": spread([r["exit_s"] for r in load]),
            "rounds": load,
        },
        "targets": TARGETS,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "grpcio": grpc.__version__},
    }


def serve_instrumented(argv: list[str]) -> None:
    """`serve` with opentelemetry-instrumentation-grpc's aio interceptor instead of ours."""
    from opentelemetry.instrumentation.grpc._aio_server import OpenTelemetryAioServerInterceptor

    from gpu_device_plugin.cli.main import main as cli
    from gpu_device_plugin.server import plugin_server

    plugin_server.RpcSpans = OpenTelemetryAioServerInterceptor  # type: ignore[misc,assignment]
    sys.argv = ["gpu-device-plugin", *argv]
    cli()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="fewer calls (smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds of every measure (default 5; 1 with --quick)")
    parser.add_argument(
        "--instrumentation", type=Path, help="a folder holding opentelemetry-instrumentation-grpc"
    )
    parser.add_argument("--serve-instrumented", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("serve_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_instrumented:
        serve_instrumented(args.serve_args)
        return
    rounds = args.rounds or (1 if args.quick else 5)
    emit(asyncio.run(run(args.quick, rounds, args.instrumentation)), args.out)


if __name__ == "__main__":
    main()
