"""Allocate latency with telemetry on vs off: the runner bench/metrics.py uses.

Runs the real `gpu-device-plugin serve` process (8 fake GPUs, stand-in kubelet,
unix sockets) in several variants and times Allocate through gRPC:
- off: OTEL_SDK_DISABLED=true, no --metrics-address (the null objects);
- tracing: every RPC a server span, batch-exported over OTLP/gRPC by the SDK
  in the serving process to a receiver in its own process (a stand-in for a
  collector on another machine: it keeps each export's bytes and answers at
  once, and decodes them only after the run to count the spans);
- metrics: --metrics-address set, nobody scraping;
- metrics_scraped: the same, with another process scraping /metrics every
  --scrape-interval seconds for the whole run;
- metrics_otlp: no endpoint, the metrics pushed over OTLP/gRPC to the receiver
  every second instead (OTEL_METRICS_EXPORTER=otlp).
Three load shapes per variant:
- allocate_1_paced: one caller, an Allocate every --pace seconds (10 ms: 100
  pods a second, far more than any kubelet admits); the latency a kubelet sees;
- allocate_1_sequential: one caller, back to back (saturated);
- allocate_1_concurrent_8_clients: eight callers, back to back.
Every variant gets its own process; the variants run in rotating order for
--rounds rounds and the medians over rounds are reported, with the overhead
of each variant's p50/p99 relative to `off`, and each round's p50/p99.
What tracing costs is measured as CPU time by bench/tracing.py: on a machine
shared with other work, latency percentiles mostly measure the neighbours.

Usage: python -m gdp_bench.latency [--out FILE] [--quick] [--rounds N] [--variants off,tracing]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service

from gdp_bench.common import emit, percentiles, progress, scratch_folder, serve_argv
from gdp_bench.core import DEVICES, allocate_request, time_allocate
from gpu_device_plugin.api.v1beta1 import api_pb2_grpc as pb_grpc
from gpu_device_plugin.backends.fake.spec import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet

VARIANTS = ("off", "tracing", "metrics", "metrics_scraped", "metrics_otlp")
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
CASES = ("allocate_1_paced", "allocate_1_sequential", "allocate_1_concurrent_8_clients")


async def time_allocate_paced(socket: Path, ids: list[str], *, calls: int, interval: float) -> dict[str, Any]:
    """One caller, one Allocate every `interval` seconds, as a kubelet admitting pods does
    (with far less time between pods than any real node): the latency each call sees when the
    plugin is not saturated and its exporter runs between calls."""
    request = allocate_request(ids)
    samples: list[float] = []
    async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
        stub = pb_grpc.DevicePluginStub(channel)
        for _ in range(20):
            await stub.Allocate(request)
        due = time.perf_counter()
        for _ in range(calls):
            due += interval
            # Pacing the load, not waiting for a condition: the next call is due then.
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            started = time.perf_counter()
            await stub.Allocate(request)
            samples.append(time.perf_counter() - started)
    return percentiles(samples) | {"interval_ms": round(interval * 1e3, 3)}


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory (VmHWM) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def free_port() -> int:
    # Bench only: the port is free when asked; nothing else on the machine races for it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_plugin(
    folder: Path, config: Path, env: dict[str, str], extra: list[str]
) -> tuple[asyncio.subprocess.Process, Path]:
    async with StandinKubelet(folder, follow=False) as kubelet:
        process = await asyncio.create_subprocess_exec(*serve_argv(config, folder, *extra), env=env)
        request = (await kubelet.wait_registered(timeout=30)).request
        return process, folder / request.endpoint


async def start_helper(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """This file in another role, in its own process; returns it and its first line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gdp_bench.latency", *args, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    return process, line.decode().strip()


async def stop(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), 10)
    return out.decode().strip() if out else ""


async def measure(
    variant: str,
    folder: Path,
    config: Path,
    calls: int,
    scrape_interval: float,
    pace: float,
    otel: dict[str, str] | None = None,
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    extra: list[str] = []
    helpers: list[asyncio.subprocess.Process] = []
    receiver: asyncio.subprocess.Process | None = None
    if variant.startswith("tracing"):
        receiver, endpoint = await start_helper("--receiver")
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        } | (otel or {})
    elif variant == "metrics_otlp":
        receiver, endpoint = await start_helper("--receiver")
        env |= {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            # A push every second: sixty times the SDK's default, to make its cost show.
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        }
    else:
        env["OTEL_SDK_DISABLED"] = "true"
    port = free_port()
    if variant in ("metrics", "metrics_scraped"):
        extra = ["--metrics-address", f"127.0.0.1:{port}"]
    ids = [fake_uuid(i) for i in range(DEVICES)]
    plugin, sock = await start_plugin(folder, config, env, extra)
    result: dict[str, Any] = {}
    try:
        if variant == "metrics_scraped":
            scraper, _ = await start_helper(
                "--scraper", f"http://127.0.0.1:{port}/metrics", "--scrape-interval", str(scrape_interval)
            )
            helpers.append(scraper)
        result["allocate_1_paced"] = await time_allocate_paced(
            sock, ids[:1], calls=max(200, calls // 2), interval=pace
        )
        result["allocate_1_sequential"] = await time_allocate(sock, ids[:1], calls=calls, clients=1)
        result["allocate_1_concurrent_8_clients"] = await time_allocate(
            sock, ids[:1], calls=calls // 8, clients=8
        )
        for helper in helpers:
            result["scrapes"] = int(await stop(helper) or 0)
        result["peak_rss_mib"] = {"serve": peak_rss_mib(plugin.pid)}
    finally:
        await stop(plugin)
        if receiver is not None:
            # Stopping the plugin flushed its last batch: every span is in by now.
            spans, metric_exports = (await stop(receiver)).split()
            key = "metric_exports_received" if variant == "metrics_otlp" else "spans_received"
            result[key] = int(metric_exports if variant == "metrics_otlp" else spans)
    return result


def summarize(rounds: list[dict[str, dict[str, Any]]], variants: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in variants:
        out[variant] = {}
        for case in CASES:
            out[variant][case] = {
                key: round(statistics.median(r[variant][case][key] for r in rounds), 4)
                for key in ("p50_ms", "p99_ms")
            } | {
                "n_per_round": rounds[0][variant][case]["n"],
                "rounds": len(rounds),
                # The spread over rounds: on a shared machine one round can be far off.
                "p50_ms_per_round": [r[variant][case]["p50_ms"] for r in rounds],
                "p99_ms_per_round": [r[variant][case]["p99_ms"] for r in rounds],
            }
        for extra in ("spans_received", "metric_exports_received", "scrapes", "peak_rss_mib"):
            if extra in rounds[0][variant]:
                out[variant][extra] = [r[variant][extra] for r in rounds]
    for variant in variants[1:]:
        for case, stats in out[variant].items():
            if not isinstance(stats, dict):
                continue
            base = out["off"][case]
            stats["overhead_vs_off_pct"] = {
                key: round(100 * (stats[key] - base[key]) / base[key], 1) for key in ("p50_ms", "p99_ms")
            }
    return out


async def run(
    quick: bool,
    rounds: int,
    scrape_interval: float,
    variants: tuple[str, ...],
    pace: float,
    otel: dict[str, str] | None = None,
) -> dict[str, Any]:
    calls = 400 if quick else 2000
    results: list[dict[str, dict[str, Any]]] = []
    with scratch_folder("gdp-bench-") as scratch:
        folder = Path(scratch)
        config = folder / "gpus.yaml"
        config.write_text(yaml.safe_dump({"count": DEVICES}))
        for index in range(rounds):
            # Rotate the order so that no variant always runs first (cold caches, CPU boost).
            order = variants[index % len(variants) :] + variants[: index % len(variants)]
            progress(f"round {index + 1}/{rounds}: {', '.join(order)}, {calls} calls each")
            results.append(
                {v: await measure(v, folder, config, calls, scrape_interval, pace, otel) for v in order}
            )
    return {
        "devices": DEVICES,
        "variants": summarize(results, variants),
        "scrape_interval_s": scrape_interval,
        "paced_interval_s": pace,
        # OTEL_* settings of the tracing variant beyond the endpoint (none: the SDK's defaults).
        "tracing_env": otel or {},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "grpcio": grpc.__version__},
    }


async def serve_receiver() -> None:
    """An OTLP/gRPC trace receiver that only keeps the bytes; prints the span count when stopped."""
    exports: list[bytes] = []

    metric_exports = 0

    async def export(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        exports.append(request)
        return b""  # an empty ExportTraceServiceResponse

    async def export_metrics(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        nonlocal metric_exports
        metric_exports += 1
        return b""  # an empty ExportMetricsServiceResponse

    server = grpc.aio.server()
    # No (de)serializers: requests stay bytes until the run is over.
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
            ),
            grpc.method_handlers_generic_handler(
                METRICS_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export_metrics)}
            ),
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"http://127.0.0.1:{port}", flush=True)
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    await server.stop(None)
    spans = 0
    for raw in exports:
        request = trace_service.ExportTraceServiceRequest.FromString(raw)
        spans += sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
    print(spans, metric_exports, flush=True)


def scrape_forever(url: str, interval: float) -> None:
    stopped = False

    def on_term(*_: object) -> None:
        nonlocal stopped
        stopped = True

    def get() -> None:
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()

    signal.signal(signal.SIGTERM, on_term)
    get()  # the plugin registered only after its endpoint started: this one answers
    print("ready", flush=True)
    count = 1
    while not stopped:
        time.sleep(interval)  # pacing the scrape load, not waiting for anything
        get()
        count += 1
    print(count, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds of all variants (default 3; 1 with --quick)")
    parser.add_argument("--scrape-interval", type=float, default=0.05, help="seconds between scrapes")
    parser.add_argument("--pace", type=float, default=0.01, help="seconds between paced Allocate calls")
    parser.add_argument(
        "--otel",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an OTEL_* setting for the tracing variant, e.g. OTEL_BSP_SCHEDULE_DELAY=100 (repeatable)",
    )
    parser.add_argument(
        "--variants", default="off,tracing", help=f"comma-separated, off first (the baseline); of {VARIANTS}"
    )
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scraper", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        asyncio.run(serve_receiver())
        return
    if args.scraper:
        scrape_forever(args.scraper, args.scrape_interval)
        return
    rounds = args.rounds or (1 if args.quick else 3)
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(variants) - set(VARIANTS)
    if unknown or not variants or variants[0] != "off":
        parser.error(f"--variants: 'off' first, then any of {', '.join(VARIANTS[1:])}")
    otel = dict(setting.split("=", 1) for setting in args.otel)
    result = asyncio.run(run(args.quick, rounds, args.scrape_interval, variants, args.pace, otel))
    emit(result, args.out)


if __name__ == "__main__":
    main()
