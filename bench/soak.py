"""Soak: the real `serve` under a restarting kubelet, a flapping device and non-stop allocation.

The plugin runs as its own process on a fake config (its log written into the
config's folder, where a log once fed the file watcher). Against it:

- a test kubelet that speaks the real protocol (Registration on kubelet.sock;
  on Register it dials back, asks the options and holds one ListAndWatch
  stream) and restarts every `--restart-every` seconds as the kubelet does:
  stop, delete every file of the folder but its checkpoint, serve kubelet.sock
  again; the plugin must notice and register again;
- one device whose health flips every `--flip-every` seconds, in turn by
  `health: Unhealthy`, back, by an injected `xid: 79` (critical), and back by an
  `xid: 13` (an application's error: healthy);
- allocation without pause, as the kubelet admits pods: candidates from the
  stream's view (now and then the view before the last update, an admission
  that started before the kubelet read it), GetPreferredAllocation, then
  Allocate of its answer; plus an Allocate of the flapping device alone each
  round (a client that does not look: the gate itself).

Judged against the file (the truth, by write time): an Allocate is wrong when
refused although every device in it was healthy for more than 2 s, or accepted
although one was unhealthy for more than 2 s. Calls cut off by a kubelet
restart are counted apart (the kubelet admits nothing while it restarts).

Usage: python -m gdp_bench.soak [--duration S] [--out FILE]   (Ctrl-C stops early, cleanly)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
FLAPPING = 3
JUDGE_AFTER_S = 2.0
# (what the file says about the flapping device, whether that leaves it healthy)
FLIPS = (
    ({"health": "Unhealthy"}, False),
    ({}, True),
    ({"xid": 79}, False),
    ({"xid": 13}, True),
)


@dataclass
class Truth:
    """The flapping device's health as the file says it, by write time (monotonic)."""

    changes: list[tuple[float, bool]] = field(default_factory=lambda: [(time.monotonic(), True)])

    def record(self, healthy: bool) -> None:
        self.changes.append((time.monotonic(), healthy))

    def state(self, at: float) -> tuple[bool, float]:
        """(healthy, since when) at time `at`."""
        for when, healthy in reversed(self.changes):
            if when <= at:
                return healthy, when
        return self.changes[0][1], self.changes[0][0]

    def changed_between(self, start: float, end: float) -> bool:
        return any(start < when <= end for when, _ in self.changes)


def write_config(path: Path, flapping: dict[str, object]) -> None:
    devices = [{"uuid": fake_uuid(i), "numa": i * 2 // DEVICES} for i in range(DEVICES)]
    devices[FLAPPING].update(flapping)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(yaml.safe_dump({"devices": devices}))
    scratch.replace(path)


@dataclass
class Registration:
    generation: int
    channel: grpc.aio.Channel
    stub: pb_grpc.DevicePluginStub
    view: dict[str, str] = field(default_factory=dict)
    previous_view: dict[str, str] = field(default_factory=dict)
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    stream_task: asyncio.Task[None] | None = None


@dataclass
class Stats:
    allocations: int = 0
    kubelet_allocations: int = 0
    gate_allocations: int = 0
    accepted: int = 0
    refused: int = 0
    accepted_within_2s_of_unhealthy: int = 0
    refused_within_2s_of_healthy: int = 0
    wrong_refused_although_healthy: int = 0
    wrong_accepted_although_unhealthy: int = 0
    preferred_calls: int = 0
    preferred_refusals: int = 0
    preferred_bad_answers: int = 0
    preferred_with_unhealthy_candidates: int = 0
    interrupted_by_restart: int = 0
    kubelet_restarts: int = 0
    registrations: int = 0
    register_after_restart_s: list[float] = field(default_factory=list)
    first_list_after_restart_s: list[float] = field(default_factory=list)
    view_lag_s: list[float] = field(default_factory=list)
    view_lag_across_restart_s: list[float] = field(default_factory=list)
    view_wrong_messages: int = 0
    wrong_examples: list[str] = field(default_factory=list)

    def wrong(self, what: str) -> None:
        if len(self.wrong_examples) < 10:
            self.wrong_examples.append(what)


class SoakKubelet:
    """The kubelet's side: Registration, the dial-back, one stream per registration, restarts."""

    def __init__(self, folder: Path, stats: Stats, truth: Truth) -> None:
        self.folder = folder
        self.stats = stats
        self.truth = truth
        self.current: Registration | None = None
        self.changed = asyncio.Event()
        self.restarted_at: float | None = None
        self._standin: StandinKubelet | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._generations = itertools.count(1)

    async def start(self) -> None:
        # The stand-in only registers: this class dials back itself, to time and judge each view.
        self._standin = StandinKubelet(self.folder, follow=False)
        await self._standin.start()
        self._accepting = asyncio.create_task(self._accept(self._standin))

    async def _stop_accepting(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None

    async def stop(self) -> None:
        await self._stop_accepting()
        if self._standin is not None:
            await self._standin.stop()
            self._standin = None
        await self._drop()

    async def restart(self) -> None:
        assert self._standin is not None
        await self._stop_accepting()
        await self._drop()
        self.restarted_at = time.monotonic()
        self.stats.kubelet_restarts += 1
        await self._standin.restart()  # the folder wiped but the checkpoint, as the kubelet does
        self._accepting = asyncio.create_task(self._accept(self._standin))

    async def _drop(self) -> None:
        registration, self.current = self.current, None
        self._notify()
        if registration is None:
            return
        if registration.stream_task is not None:
            registration.stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await registration.stream_task
        await registration.channel.close()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def _accept(self, standin: StandinKubelet) -> None:
        seen = len(standin.registrations)
        while True:
            seen += 1
            request = (await standin.wait_registered(seen, timeout=None)).request
            registered_at = time.monotonic()
            # A newer registration replaces the old endpoint, as in the kubelet.
            await self._drop()
            channel = grpc.aio.insecure_channel(f"unix://{self.folder / request.endpoint}")
            stub = pb_grpc.DevicePluginStub(channel)
            try:
                await stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
            except grpc.aio.AioRpcError as err:
                # The kubelet would fail this registration; a newer one follows if the plugin lives.
                progress(f"dial-back to {request.endpoint} failed: {err.code().name}")
                await channel.close()
                continue
            registration = Registration(next(self._generations), channel, stub)
            registration.stream_task = asyncio.create_task(self._follow(registration))
            self.stats.registrations += 1
            try:
                await asyncio.wait_for(registration.listed.wait(), 10)
            except TimeoutError:
                progress("a registration sent no device list within 10 s")
                continue
            if self.restarted_at is not None:
                self.stats.register_after_restart_s.append(registered_at - self.restarted_at)
                self.stats.first_list_after_restart_s.append(time.monotonic() - self.restarted_at)
                self.restarted_at = None
            self.current = registration
            self._notify()

    async def _follow(self, registration: Registration) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for update in registration.stub.ListAndWatch(pb.Empty()):
                now = time.monotonic()
                registration.previous_view = registration.view or {d.ID: d.health for d in update.devices}
                registration.view = {d.ID: d.health for d in update.devices}
                registration.listed.set()
                self._judge_view(registration.view, now)
                self._notify()
        # The stream ended: as the kubelet, nothing is allocatable until the plugin registers again.
        if self.current is registration:
            self.current = None
            self._notify()

    def _judge_view(self, view: dict[str, str], now: float) -> None:
        flapping = fake_uuid(FLAPPING)
        healthy, since = self.truth.state(now)
        shown = view.get(flapping) == "Healthy"
        others_ok = all(view.get(fake_uuid(i)) == "Healthy" for i in range(DEVICES) if i != FLAPPING)
        if (shown != healthy and now - since > JUDGE_AFTER_S) or not others_ok:
            self.stats.view_wrong_messages += 1
            self.stats.wrong(f"stream showed {view} at +{now - since:.2f} s after the file said {healthy}")

    async def registered(self) -> Registration:
        while self.current is None:
            await self.changed.wait()
        return self.current


async def flipper(config: Path, truth: Truth, kubelet: SoakKubelet, every: float, stats: Stats) -> None:
    """Flip the device's health every `every` s; time how long the stream takes to agree."""
    flapping = fake_uuid(FLAPPING)
    for step in itertools.count():
        await asyncio.sleep(every)
        change, healthy = FLIPS[step % len(FLIPS)]
        written_on = kubelet.current.generation if kubelet.current is not None else None
        write_config(config, change)
        written = time.monotonic()
        truth.record(healthy)
        want = "Healthy" if healthy else "Unhealthy"
        deadline = written + every * 0.9
        while True:
            # Taken before the check: a message that arrives meanwhile still wakes the wait.
            changed = kubelet.changed
            current = kubelet.current
            if current is not None and current.view.get(flapping) == want:
                lag = time.monotonic() - written
                same = current.generation == written_on
                (stats.view_lag_s if same else stats.view_lag_across_restart_s).append(lag)
                break
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                stats.view_lag_s.append(float("inf"))
                stats.wrong(f"the stream never showed {want} within {every * 0.9:.1f} s of the write")
                break


async def restarter(kubelet: SoakKubelet, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await kubelet.restart()


def judge(
    stats: Stats, truth: Truth, ids: Sequence[str], sent: float, answered: float, accepted: bool
) -> None:
    """Wrong only when the file had held still for more than 2 s over the whole call."""
    flapping = fake_uuid(FLAPPING)
    if flapping in ids:
        if truth.changed_between(sent, answered):
            return
        healthy, since = truth.state(sent)
        settled = sent - since > JUDGE_AFTER_S
    else:
        healthy, settled = True, True
    if accepted:
        stats.accepted += 1
        if not healthy:
            if settled:
                stats.wrong_accepted_although_unhealthy += 1
                stats.wrong(f"accepted {ids} {sent - since:.2f} s after the device went unhealthy")
            else:
                stats.accepted_within_2s_of_unhealthy += 1
    else:
        stats.refused += 1
        if healthy:
            if settled:
                stats.wrong_refused_although_healthy += 1
                stats.wrong(f"refused {ids} although healthy")
            else:
                stats.refused_within_2s_of_healthy += 1


class EndpointGone(Exception):
    """A call cut off because the endpoint went (a kubelet restart, a newer registration)."""


GONE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


async def call(method: Any, request: Any) -> Any:
    """One RPC; a channel closed under it (the kubelet dropping the endpoint) is EndpointGone."""
    try:
        return await method(request, timeout=10)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the soak itself is stopping
        raise EndpointGone("CANCELLED by the channel's close") from None
    except grpc.aio.UsageError:
        raise EndpointGone("the channel was closed") from None
    except grpc.aio.AioRpcError as err:
        if err.code() in GONE:
            raise EndpointGone(err.code().name) from err
        raise


async def endpoint_gone(stats: Stats, kubelet: SoakKubelet, registration: Registration, why: str) -> None:
    stats.interrupted_by_restart += 1

    # The kubelet drops a registration whose stream ended; wait until ours has been.
    async def replaced() -> None:
        while kubelet.current is registration:
            await kubelet.changed.wait()

    try:
        await asyncio.wait_for(replaced(), 15)
    except TimeoutError:
        raise RuntimeError(f"endpoint {registration.generation} stopped answering ({why})") from None


async def allocate(
    stats: Stats, truth: Truth, kubelet: SoakKubelet, registration: Registration, ids: list[str]
) -> None:
    stats.allocations += 1
    sent = time.monotonic()
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)])
    try:
        await call(registration.stub.Allocate, request)
    except EndpointGone as gone:
        await endpoint_gone(stats, kubelet, registration, str(gone))
    except grpc.aio.AioRpcError as err:
        if err.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            raise
        judge(stats, truth, ids, sent, time.monotonic(), accepted=False)
    else:
        judge(stats, truth, ids, sent, time.monotonic(), accepted=True)


async def allocator(stats: Stats, truth: Truth, kubelet: SoakKubelet, rng: random.Random) -> None:
    flapping = fake_uuid(FLAPPING)
    while True:
        registration = await kubelet.registered()
        # Now and then an admission that chose before the kubelet read the last update.
        view = registration.previous_view if rng.random() < 0.25 else registration.view
        candidates = [i for i, health in view.items() if health == "Healthy"] or list(view)
        size = rng.randint(1, min(4, len(candidates)))
        must = [rng.choice(candidates)] if rng.random() < 0.3 else []
        if any(registration.view.get(i) != "Healthy" for i in candidates):
            stats.preferred_with_unhealthy_candidates += 1
        stats.preferred_calls += 1
        request = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=candidates, must_include_deviceIDs=must, allocation_size=size
                )
            ]
        )
        try:
            answer = await call(registration.stub.GetPreferredAllocation, request)
        except EndpointGone as gone:
            await endpoint_gone(stats, kubelet, registration, str(gone))
            continue
        except grpc.aio.AioRpcError as err:
            stats.preferred_refusals += 1
            stats.wrong(f"GetPreferredAllocation refused: {err.code().name}: {err.details()}")
            continue
        chosen = list(answer.container_responses[0].deviceIDs)
        if len(chosen) != size or not set(must) <= set(chosen) <= set(candidates):
            stats.preferred_bad_answers += 1
            stats.wrong(f"preferred answer {chosen} for size {size}, must {must}")
            continue
        stats.kubelet_allocations += 1
        await allocate(stats, truth, kubelet, registration, chosen)
        stats.gate_allocations += 1
        await allocate(stats, truth, kubelet, registration, [flapping])


def rss_and_fds(pid: int) -> tuple[float, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(rss_kib / 1024, 1), len(os.listdir(f"/proc/{pid}/fd"))


async def watch_process(process: asyncio.subprocess.Process, log: Path) -> None:
    code = await process.wait()
    tail = (await asyncio.to_thread(log.read_text))[-2000:]
    raise RuntimeError(f"serve exited with {code} during the soak; its log ends:\n{tail}")


async def reporter(stats: Stats, pid: int, samples: list[tuple[float, float, int]], started: float) -> None:
    while True:
        await asyncio.sleep(10)
        rss, fds = rss_and_fds(pid)
        elapsed = time.monotonic() - started
        samples.append((round(elapsed, 1), rss, fds))
        wrong = (
            stats.wrong_refused_although_healthy
            + stats.wrong_accepted_although_unhealthy
            + stats.preferred_refusals
            + stats.view_wrong_messages
        )
        progress(
            f"{elapsed:6.0f} s  allocations {stats.allocations}  wrong {wrong}  "
            f"restarts {stats.kubelet_restarts}  registrations {stats.registrations}  "
            f"rss {rss} MiB  fds {fds}"
        )


async def soak(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    plugin_dir = scratch / "plugins"
    plugin_dir.mkdir()
    config = scratch / "conf" / "gpus.yaml"
    config.parent.mkdir()
    write_config(config, {})
    # The plugin's log beside its config: the watcher must not feed on it.
    log_path = config.parent / "serve.log"
    stats = Stats()
    truth = Truth()
    kubelet = SoakKubelet(plugin_dir, stats, truth)
    await kubelet.start()
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *serve_argv(config, plugin_dir),
            stdout=log,
            stderr=log,
            env={**os.environ, "OTEL_SDK_DISABLED": "true"},
        )
    try:
        await asyncio.wait_for(kubelet.registered(), 60)
        started = time.monotonic()
        rss_start, fds_start = rss_and_fds(process.pid)
        progress(
            f"serve {process.pid} registered; rss {rss_start} MiB, fds {fds_start}; "
            f"running {args.duration:.0f} s"
        )
        samples: list[tuple[float, float, int]] = [(0.0, rss_start, fds_start)]
        rng = random.Random(args.seed)
        tasks = [
            flipper(config, truth, kubelet, args.flip_every, stats),
            restarter(kubelet, args.restart_every),
            allocator(stats, truth, kubelet, rng),
            reporter(stats, process.pid, samples, started),
            watch_process(process, log_path),
        ]
        running = [asyncio.create_task(t) for t in tasks]
        try:
            done, _ = await asyncio.wait(running, timeout=args.duration, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.cancelled():
                    raise RuntimeError(f"{task.get_coro()} was cancelled")
                task.result()  # an error in any of them ends the soak with it
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        elapsed = time.monotonic() - started
        rss_end, fds_end = rss_and_fds(process.pid)
    finally:
        await kubelet.stop()
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
    warnings = log_path.read_text().count("ignoring an edit")
    finite_lags = [x for x in stats.view_lag_s if x != float("inf")]
    return {
        "duration_s": round(elapsed, 1),
        "settings": {
            "devices": DEVICES,
            "flip_every_s": args.flip_every,
            "restart_every_s": args.restart_every,
            "judged_after_s": JUDGE_AFTER_S,
            "seed": args.seed,
        },
        "allocations": stats.allocations,
        "allocations_kubelet_like": stats.kubelet_allocations,
        "allocations_of_the_flapping_device": stats.gate_allocations,
        "accepted": stats.accepted,
        "refused": stats.refused,
        "wrong_allocations": {
            "refused_although_healthy_over_2s": stats.wrong_refused_although_healthy,
            "accepted_although_unhealthy_over_2s": stats.wrong_accepted_although_unhealthy,
        },
        "within_2s_of_a_flip": {
            "accepted_unhealthy": stats.accepted_within_2s_of_unhealthy,
            "refused_healthy": stats.refused_within_2s_of_healthy,
        },
        "preferred_calls": stats.preferred_calls,
        "preferred_refusals": stats.preferred_refusals,
        "preferred_bad_answers": stats.preferred_bad_answers,
        "preferred_with_unhealthy_candidates": stats.preferred_with_unhealthy_candidates,
        "interrupted_by_kubelet_restart": stats.interrupted_by_restart,
        "stream_view_wrong_messages": stats.view_wrong_messages,
        "longest_view_difference_ms": round(max(stats.view_lag_s, default=0.0) * 1e3, 2),
        "view_lag_after_flip": percentiles(finite_lags) if finite_lags else None,
        "view_lag_across_restart": (
            percentiles(stats.view_lag_across_restart_s) if stats.view_lag_across_restart_s else None
        ),
        "kubelet_restarts": stats.kubelet_restarts,
        "registrations": stats.registrations,
        "reregistration_register": (
            percentiles(stats.register_after_restart_s) if stats.register_after_restart_s else None
        ),
        "reregistration_first_list": (
            percentiles(stats.first_list_after_restart_s) if stats.first_list_after_restart_s else None
        ),
        "serve_process": {
            "rss_mib_start": rss_start,
            "rss_mib_end": rss_end,
            "rss_mib_max": max(s[1] for s in [*samples, (0.0, rss_end, fds_end)]),
            "fds_start": fds_start,
            "fds_end": fds_end,
            "fds_max": max(s[2] for s in [*samples, (0.0, rss_end, fds_end)]),
            "samples_elapsed_rss_fds": samples,
        },
        "fake_config_warnings_in_log": warnings,
        "wrong_examples": stats.wrong_examples,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM ends the soak as Ctrl-C does: through every finally, serve killed, folder removed.
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    # Removed however the soak ends (scratch_folder: under the runner's root when it runs us).
    with scratch_folder("gdp-soak-") as scratch:
        return await soak(args, Path(scratch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of soak (default 3600)")
    parser.add_argument("--restart-every", type=float, default=30.0, help="kubelet restart period, s")
    parser.add_argument("--flip-every", type=float, default=3.0, help="health flip period, s")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress("interrupted: serve stopped, temporary folder removed")
        sys.exit(130)
    emit(result, args.out)
    wrong = (
        sum(result["wrong_allocations"].values())
        + result["preferred_refusals"]
        + result["preferred_bad_answers"]
        + result["stream_view_wrong_messages"]
    )
    sys.exit(0 if wrong == 0 else 1)


if __name__ == "__main__":
    main()
