"""Running one MPS control daemon per resource: start, configure, report ready, restart, quit.

The daemon runs in the foreground (`nvidia-cuda-mps-control -f`), as our child:
with `-d` it would detach and its death would only be seen by asking it, on a
timer. Here its exit is seen at once, and its log lines come to our stdout (the
sidecar's `kubectl logs`), prefixed with the resource.

Each start: the ready file goes first (nothing is allocatable while the daemon is
not as planned), the pipe, log and shm folders are made, the daemon is started,
asked until it answers (bounded), told the plan's limits, asked back the thread
percentage, and only then is the ready file written (atomically, holding the plan).
A daemon that exits, or does not answer in time, is stopped and started again
after a backoff (1 s doubling to 60 s; back to 1 s once a daemon has stayed up
`steady_s`). Cancelled (SIGTERM): the ready file goes, the daemon is told `quit`,
and killed if it has not exited within `stop_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.inventory import SnapshotCell
from gpu_device_plugin.mps.control import ControlClient, MpsControlError
from gpu_device_plugin.mps.plan import GET_THREADS, QUIT, DaemonPlan
from gpu_device_plugin.mps.root import MpsRoot

log = logging.getLogger(__name__)

# Between two "do you answer yet?" calls of a starting daemon: doubling, at most this.
_ASK_AGAIN_S = (0.05, 1.0)


class State(enum.StrEnum):
    STARTING = "starting"  # started, not yet answering with its limits set
    READY = "ready"  # the ready file is written
    DOWN = "down"  # not running: between two starts, or stopped


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    state: State = State.DOWN
    # How many times a daemon has been started, and the current one's pid.
    starts: int = 0
    pid: int | None = None
    # How many starts were tried (a binary that cannot be run is tried, never started).
    attempts: int = 0


@dataclass
class DaemonSupervisor:
    plan: DaemonPlan
    root: MpsRoot
    binary: Path
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=1.0, cap_s=60.0))
    # From its start until it must answer, with its limits set.
    answer_timeout_s: float = 30.0
    # One client call.
    command_timeout_s: float = 5.0
    # After `quit`, how long it may take to exit before it is killed.
    stop_timeout_s: float = 10.0
    # A daemon up this long resets the backoff.
    steady_s: float = 60.0
    # The environment the daemon inherits, under the plan's variables.
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    # Where it is now; every change wakes the cell's watchers (tests, a future probe).
    status: SnapshotCell[DaemonStatus] = field(default_factory=lambda: SnapshotCell(DaemonStatus()))

    @property
    def name(self) -> str:
        return self.plan.resource_name

    @property
    def ready_file(self) -> Path:
        return Path(self.root.ready_file(self.name))

    @property
    def env(self) -> dict[str, str]:
        return {**self.base_env, **self.plan.env(self.root)}

    def client(self) -> ControlClient:
        return ControlClient(self.binary, self.env, self.command_timeout_s)

    async def run(self) -> None:
        """Keep the daemon running until cancelled."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            began = loop.time()
            await self._run_once()
            if loop.time() - began >= self.steady_s:
                attempt = 0
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.warning("MPS control daemon for %s: starting it again in %.1f s", self.name, delay)
            await asyncio.sleep(delay)

    async def _run_once(self) -> None:
        self._not_ready()
        before = self.status.value
        attempts = before.attempts + 1
        self.status.publish(replace(before, state=State.DOWN, pid=None, attempts=attempts))
        self._prepare()
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self.binary),
                "-f",
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Its own session: a signal to our process group (Ctrl-C, `timeout`) reaches
                # us, and we tell the daemon to quit, instead of it dying under its clients.
                start_new_session=True,
            )
        except OSError as err:
            log.error("MPS control daemon for %s: cannot run %s: %s", self.name, self.binary, err)
            return
        starts = self.status.value.starts + 1
        self.status.publish(DaemonStatus(State.STARTING, starts, proc.pid, attempts))
        log.info(
            "MPS control daemon for %s started (pid %d) on %s",
            self.name,
            proc.pid,
            ",".join(self.plan.uuids),
        )
        pump = asyncio.create_task(self._forward(proc), name=f"mps-log {self.name}")
        exited = asyncio.create_task(proc.wait(), name=f"mps-wait {self.name}")
        try:
            if await self._configured(exited):
                self._write_ready()
                self.status.publish(DaemonStatus(State.READY, starts, proc.pid, attempts))
                log.info(
                    "MPS control daemon for %s ready: %s",
                    self.name,
                    "; ".join(self.plan.commands()),
                )
                code = await asyncio.shield(exited)
                self._not_ready()
                log.error("MPS control daemon for %s exited (code %s)", self.name, code)
            else:
                await self._stop(proc, exited, polite=False)
        except asyncio.CancelledError:
            self._not_ready()
            await self._stop(proc, exited, polite=True)
            raise
        finally:
            self.status.publish(DaemonStatus(State.DOWN, starts, None, attempts))
            exited.cancel()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _configured(self, exited: asyncio.Task[int]) -> bool:
        """Whether the daemon answered and took the plan's limits before `answer_timeout_s`."""
        work = asyncio.create_task(self._configure(), name=f"mps-configure {self.name}")
        try:
            done, _ = await asyncio.wait(
                {work, exited}, timeout=self.answer_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if exited in done:
            log.error(
                "MPS control daemon for %s exited (code %s) before it was ready", self.name, exited.result()
            )
            return False
        if work not in done:
            log.error(
                "MPS control daemon for %s did not answer within %g s", self.name, self.answer_timeout_s
            )
            return False
        err = work.exception()
        if err is not None:
            log.error("MPS control daemon for %s refused its configuration: %s", self.name, err)
            return False
        return True

    async def _configure(self) -> None:
        client = self.client()
        wait = _ASK_AGAIN_S[0]
        while True:
            try:
                await client.send(GET_THREADS)
                break
            except MpsControlError:
                # Not listening yet: a starting daemon announces nothing, so ask again.
                await asyncio.sleep(wait)
                wait = min(wait * 2, _ASK_AGAIN_S[1])
        for command in self.plan.commands():
            await client.send(command)
        answer = (await client.send(GET_THREADS)).strip()
        try:
            took = float(answer.split()[-1]) == float(self.plan.active_thread_percentage)
        except (ValueError, IndexError):
            took = False
        if not took:
            raise MpsControlError(
                f"{GET_THREADS} answers {answer!r}, not {self.plan.active_thread_percentage}"
            )

    async def _stop(
        self, proc: asyncio.subprocess.Process, exited: asyncio.Task[int], *, polite: bool
    ) -> None:
        """polite: `quit` first (SIGTERM to us); else (it failed its start) straight to SIGTERM."""
        if polite and proc.returncode is None:
            try:
                await self.client().send(QUIT)
            except MpsControlError as err:
                log.warning("MPS control daemon for %s: quit: %s", self.name, err)
            if await _exits(exited, self.stop_timeout_s):
                log.info("MPS control daemon for %s quit (code %s)", self.name, proc.returncode)
                return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        if not await _exits(exited, self.stop_timeout_s):
            log.warning("MPS control daemon for %s ignored SIGTERM: killing it", self.name)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            # Bounded even now: an exit that is never reported (a child reaped elsewhere, a
            # process stuck in the kernel) must not keep the supervisor, or a stop, waiting.
            if not await _exits(exited, self.stop_timeout_s):
                log.error(
                    "MPS control daemon for %s (pid %d): no exit seen %g s after SIGKILL; going on",
                    self.name,
                    proc.pid,
                    self.stop_timeout_s,
                )

    async def _forward(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                log.info("mps %s: %s", self.name, line[:500])

    def _prepare(self) -> None:
        for folder in (self.root.pipe_dir(self.name), self.root.log_dir(self.name), self.root.shm_dir):
            Path(folder).mkdir(parents=True, exist_ok=True)

    def _write_ready(self) -> None:
        partial = self.ready_file.with_name(self.ready_file.name + ".partial")
        partial.write_text(self.plan.ready_text())
        # A rename: the plugin never reads half a file.
        partial.replace(self.ready_file)

    def _not_ready(self) -> None:
        self.ready_file.unlink(missing_ok=True)


async def _exits(exited: asyncio.Task[int], timeout: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(exited), timeout)
    except TimeoutError:
        return False
    return True
