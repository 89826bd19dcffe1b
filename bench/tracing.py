"""Telemetry overhead benchmark (issue 6): Allocate latency with tracing / metrics on vs off.

Runs the real `gpu-device-plugin serve` process (8 fake GPUs, stand-in kubelet,
unix sockets) in four variants and times Allocate through gRPC with bench/core.py's
client:
- off: OTEL_SDK_DISABLED=true, no --metrics-address (the null objects);
- tracing: every RPC a server span, batch-exported over OTLP/gRPC to a real
  receiver (tests/support/otlp.py) in its own process;
- metrics: --metrics-address set, nobody scraping;
- metrics_scraped: the same, with another process scraping /metrics every
  --scrape-interval seconds for the whole run.
Every variant gets its own process; the variants run in rotating order for
--rounds rounds and the medians over rounds are reported, with the overhead
of each variant's p50/p99 relative to `off`.

Usage: python bench/tracing.py [--out FILE] [--quick]
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
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import yaml
from common import emit, serve_argv
from core import DEVICES, time_allocate  # bench/ is sys.path[0] when run as a script

from gpu_device_plugin.discovery.fake_config import fake_uuid
from gpu_device_plugin.server.kubelet_standin import StandinKubelet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.otlp import OtlpReceiver

VARIANTS = ("off", "tracing", "metrics", "metrics_scraped")


def free_port() -> int:
    # Bench only: the port is free when asked; nothing else on the machine races for it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_plugin(
    folder: Path, config: Path, env: dict[str, str], extra: list[str]
) -> tuple[asyncio.subprocess.Process, Path]:
    async with StandinKubelet(folder) as kubelet:
        process = await asyncio.create_subprocess_exec(*serve_argv(config, folder, *extra), env=env)
        request = await asyncio.wait_for(kubelet.requests.get(), 30)
        return process, folder / request.endpoint


async def start_helper(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """This file in another role, in its own process; returns it and its first line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    return process, line.decode().strip()


async def stop(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), 10)
    return out.decode().strip() if out else ""


async def measure(
    variant: str, folder: Path, config: Path, calls: int, scrape_interval: float
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    extra: list[str] = []
    helpers: list[asyncio.subprocess.Process] = []
    receiver: asyncio.subprocess.Process | None = None
    if variant == "tracing":
        receiver, endpoint = await start_helper("--receiver")
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    else:
        env["OTEL_SDK_DISABLED"] = "true"
    port = free_port()
    if variant.startswith("metrics"):
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
        result["allocate_1_sequential"] = await time_allocate(sock, ids[:1], calls=calls, clients=1)
        result["allocate_1_concurrent_8_clients"] = await time_allocate(
            sock, ids[:1], calls=calls // 8, clients=8
        )
        for helper in helpers:
            result["scrapes"] = int(await stop(helper) or 0)
    finally:
        await stop(plugin)
        if receiver is not None:
            # Stopping the plugin flushed its last batch: every span is in by now.
            result["spans_received"] = int(await stop(receiver) or 0)
    return result


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        out[variant] = {}
        for case in ("allocate_1_sequential", "allocate_1_concurrent_8_clients"):
            out[variant][case] = {
                key: round(statistics.median(r[variant][case][key] for r in rounds), 4)
                for key in ("p50_ms", "p99_ms")
            } | {"n_per_round": rounds[0][variant][case]["n"], "rounds": len(rounds)}
        for extra in ("spans_received", "scrapes"):
            if extra in rounds[0][variant]:
                out[variant][extra] = [r[variant][extra] for r in rounds]
    for variant in VARIANTS[1:]:
        for case, stats in out[variant].items():
            if not isinstance(stats, dict):
                continue
            base = out["off"][case]
            stats["overhead_vs_off_pct"] = {
                key: round(100 * (stats[key] - base[key]) / base[key], 1) for key in ("p50_ms", "p99_ms")
            }
    return out


async def run(quick: bool, rounds: int, scrape_interval: float) -> dict[str, Any]:
    calls = 400 if quick else 2000
    results: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="gdp-bench-", dir="/tmp") as scratch:
        folder = Path(scratch)
        config = folder / "gpus.yaml"
        config.write_text(yaml.safe_dump({"count": DEVICES}))
        for index in range(rounds):
            # Rotate the order so that no variant always runs first (cold caches, CPU boost).
            order = VARIANTS[index % len(VARIANTS) :] + VARIANTS[: index % len(VARIANTS)]
            results.append({v: await measure(v, folder, config, calls, scrape_interval) for v in order})
    return {
        "devices": DEVICES,
        "variants": summarize(results),
        "scrape_interval_s": scrape_interval,
        "targets": {"tracing_p99_overhead_pct": 10},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "grpcio": grpc.__version__},
    }


async def serve_receiver() -> None:
    async with OtlpReceiver() as receiver:
        print(receiver.endpoint, flush=True)
        stopped = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
        await stopped.wait()
        print(len(receiver.spans), flush=True)


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
    result = asyncio.run(run(args.quick, rounds, args.scrape_interval))
    emit(result, args.out)


if __name__ == "__main__":
    main()
