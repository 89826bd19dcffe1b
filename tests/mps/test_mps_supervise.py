"""DaemonSupervisor against the fake nvidia-cuda-mps-control (hack/mpsfake): a real child process.

What a user of the sidecar would see: the daemon started on the resource's GPUs
with its folders, told the limits, a ready file only once it answered, a daemon
that dies started again (and told again), one that never answers replaced, and
`quit` on stop with the ready file gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from gdp_hack.mpsfake import BINARY, Record
from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.mps.plan import DaemonPlan, MpsGpu
from gpu_device_plugin.mps.root import MpsRoot
from gpu_device_plugin.mps.supervise import DaemonStatus, DaemonSupervisor, State

A = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
B = "GPU-bbbbbbbb-0000-0000-0000-000000000000"
PLAN = DaemonPlan("nvidia.com/gpu", 4, (MpsGpu(A, 16384, 4), MpsGpu(B, 8192, 4)))
TIMEOUT = 20.0


def supervisor(root: MpsRoot, binary: Path = BINARY, **kwargs: object) -> DaemonSupervisor:
    defaults: dict[str, object] = {
        "backoff": Backoff(initial_s=0.05, cap_s=0.2, jitter=0.0),
        "answer_timeout_s": 10.0,
        "stop_timeout_s": 5.0,
    }
    return DaemonSupervisor(PLAN, root, binary, **{**defaults, **kwargs})  # type: ignore[arg-type]


async def until(sup: DaemonSupervisor, check: Callable[[DaemonStatus], bool]) -> DaemonStatus:
    async with asyncio.timeout(TIMEOUT):
        async for status in sup.status.watch():
            if check(status):
                return status
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def running(sup: DaemonSupervisor) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sup.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)


def record(root: MpsRoot) -> Record:
    return Record(Path(root.log_dir(PLAN.resource_name)))


async def test_the_daemon_runs_on_its_gpus_with_its_limits_and_then_says_ready(mps_root: MpsRoot) -> None:
    sup = supervisor(mps_root)
    async with running(sup):
        status = await until(sup, lambda s: s.state is State.READY)
        start = record(mps_root).starts()[-1]
        assert start["mode"] == "-f"
        assert start["pid"] == status.pid
        assert start["env"] == {
            "CUDA_VISIBLE_DEVICES": f"{A},{B}",
            "CUDA_MPS_PIPE_DIRECTORY": f"{mps_root.path}/nvidia.com/gpu/pipe",
            "CUDA_MPS_LOG_DIRECTORY": f"{mps_root.path}/nvidia.com/gpu/log",
        }
        told = [c for c in record(mps_root).commands() if c.startswith("set_")]
        assert told == [
            f"set_default_device_pinned_mem_limit {A} 4096M",
            f"set_default_device_pinned_mem_limit {B} 2048M",
            "set_default_active_thread_percentage 25",
        ]
        ready = Path(mps_root.ready_file("nvidia.com/gpu"))
        assert PLAN.matches(ready.read_text())
        assert json.loads(ready.read_text())["devices"][0] == {"uuid": A, "pinnedMemoryLimitMiB": 4096}
        assert Path(mps_root.shm_dir).is_dir()


async def test_stop_tells_the_daemon_to_quit_and_takes_the_ready_file_away(mps_root: MpsRoot) -> None:
    sup = supervisor(mps_root)
    async with running(sup):
        await until(sup, lambda s: s.state is State.READY)
    events = [e["event"] for e in record(mps_root).events()]
    assert events[-2:] == ["command", "quit"]
    assert record(mps_root).commands()[-1] == "quit"
    assert not Path(mps_root.ready_file("nvidia.com/gpu")).exists()
    assert sup.status.value.state is State.DOWN


async def test_a_killed_daemon_is_started_again_and_told_its_limits_again(mps_root: MpsRoot) -> None:
    sup = supervisor(mps_root)
    ready = Path(mps_root.ready_file("nvidia.com/gpu"))
    async with running(sup):
        first = await until(sup, lambda s: s.state is State.READY)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        down = await until(sup, lambda s: s.state is State.DOWN)
        # Between the death and the next answer nothing may be allocated.
        assert not ready.exists()
        assert down.starts == 1
        second = await until(sup, lambda s: s.state is State.READY and s.starts == 2)
        assert second.pid != first.pid
        assert ready.exists()
        assert record(mps_root).since_last_start()[-2] == "set_default_active_thread_percentage 25"
        assert [s["pid"] for s in record(mps_root).starts()] == [first.pid, second.pid]


async def test_a_daemon_that_cannot_start_is_retried_until_it_can(mps_root: MpsRoot) -> None:
    faults = record(mps_root)
    faults.fault("fail-start", True)
    sup = supervisor(mps_root)
    async with running(sup):
        await until(sup, lambda s: s.starts >= 3 and s.state is State.DOWN)
        assert not Path(mps_root.ready_file("nvidia.com/gpu")).exists()
        faults.fault("fail-start", False)
        status = await until(sup, lambda s: s.state is State.READY)
        assert status.starts >= 4
        assert [e["event"] for e in faults.events()].count("failed-start") == status.starts - 1


async def test_a_daemon_that_never_answers_is_replaced(mps_root: MpsRoot) -> None:
    faults = record(mps_root)
    faults.fault("no-answer", True)
    # Long enough for a python client to start on a loaded machine, short enough to see two.
    sup = supervisor(mps_root, answer_timeout_s=4.0, command_timeout_s=1.5)
    async with running(sup):
        await until(sup, lambda s: s.starts == 2)
        assert not Path(mps_root.ready_file("nvidia.com/gpu")).exists()
        faults.fault("no-answer", False)
        await until(sup, lambda s: s.state is State.READY)


async def test_a_stale_ready_file_goes_before_the_daemon_starts(mps_root: MpsRoot) -> None:
    ready = Path(mps_root.ready_file("nvidia.com/gpu"))
    ready.parent.mkdir(parents=True)
    ready.write_text(PLAN.ready_text())
    sup = supervisor(mps_root, binary=Path("/nonexistent/nvidia-cuda-mps-control"))
    async with running(sup):
        await until(sup, lambda s: s.attempts == 2)
        assert not ready.exists()
        assert sup.status.value.starts == 0


async def test_a_daemon_that_refuses_its_limits_is_not_ready(mps_root: MpsRoot) -> None:
    faults = record(mps_root)
    faults.fault("refuse-limits", True)
    sup = supervisor(mps_root)
    async with running(sup):
        await until(sup, lambda s: s.starts == 2)
        assert not Path(mps_root.ready_file("nvidia.com/gpu")).exists()
        refused = [e for e in faults.events() if e["event"] == "command" and not e["ok"]]
        assert refused[0]["command"].startswith("set_default_device_pinned_mem_limit")
        faults.fault("refuse-limits", False)
        await until(sup, lambda s: s.state is State.READY)
