"""Telling a running MPS control daemon something: its client mode, one command a line on stdin.

`nvidia-cuda-mps-control` without arguments connects to the daemon of
$CUDA_MPS_PIPE_DIRECTORY, sends what it reads on stdin and prints the answers.
Each call here is one such client process, bounded by a timeout (a daemon that
accepted but hangs must not hang its supervisor). A client that cannot reach the
daemon, or that the daemon refuses, exits non-zero: MpsControlError with the
first line it printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpu_device_plugin.errors import PluginError


class MpsControlError(PluginError):
    """The MPS control daemon could not be reached, refused a command or did not answer."""


@dataclass(frozen=True)
class ControlClient:
    binary: Path
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 5.0

    async def send(self, *commands: str) -> str:
        """The daemon's answers to `commands`, sent in one client call."""
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self.binary),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(self.env),
                # Like the daemon: a `quit` sent while we stop is not cut short by our own signal.
                start_new_session=True,
            )
        except OSError as err:
            raise MpsControlError(f"cannot run {self.binary}: {err.strerror or err}") from err
        text = "".join(f"{c}\n" for c in commands).encode()
        try:
            # asyncio.timeout, not wait_for: on 3.11 a wait_for cancelled from outside waits
            # for communicate() to end, and that waits for the client's stdout to close,
            # which a stuck client never does (a supervisor's stop hung there, under load).
            async with asyncio.timeout(self.timeout_s):
                out, _ = await proc.communicate(text)
        except TimeoutError as err:
            await _end(proc, self.timeout_s)
            raise MpsControlError(
                f"{commands[0] if commands else 'a client'}: no answer within {self.timeout_s:g} s"
            ) from err
        except asyncio.CancelledError:
            await _end(proc, self.timeout_s)
            raise
        answer = out.decode(errors="replace")
        if proc.returncode != 0:
            first = next((line.strip() for line in answer.splitlines() if line.strip()), "no output")
            raise MpsControlError(f"{' / '.join(commands)}: exit {proc.returncode}: {first[:200]}")
        return answer


async def _end(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """SIGKILL to the client's session (it is its own), our end of its stdin closed, its exit
    awaited for at most `timeout`: asyncio reports an exit only once every pipe is closed."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.stdin is not None:
        proc.stdin.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await proc.wait()
