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
            out, _ = await asyncio.wait_for(proc.communicate(text), self.timeout_s)
        except (TimeoutError, asyncio.CancelledError) as err:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(err, asyncio.CancelledError):
                raise
            raise MpsControlError(
                f"{commands[0] if commands else 'a client'}: no answer within {self.timeout_s:g} s"
            ) from err
        answer = out.decode(errors="replace")
        if proc.returncode != 0:
            first = next((line.strip() for line in answer.splitlines() if line.strip()), "no output")
            raise MpsControlError(f"{' / '.join(commands)}: exit {proc.returncode}: {first[:200]}")
        return answer
