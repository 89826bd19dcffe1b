"""mpsfake: a fake `nvidia-cuda-mps-control` (the script beside this file), and a reader of what it was told.

    from gdp_hack.mpsfake import BINARY, Record
    # point `gpu-device-plugin mps-control --mps-control-bin` at BINARY, then:
    record = Record(log_dir)          # the daemon's CUDA_MPS_LOG_DIRECTORY
    record.starts()                   # one dict per daemon start: pid, mode, env
    record.commands()                 # every command it was sent, in order
    record.fault("fail-start", True)  # its next start fails, until switched off

See the script's docstring for its modes, files and faults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BINARY = Path(__file__).resolve().parent / "nvidia-cuda-mps-control"
RECORD_NAME = "fake-control.jsonl"
FAULTS = ("fail-start", "no-answer", "refuse-limits")


class Record:
    """What the fake daemons of one log folder recorded, read afresh on every call."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def events(self) -> list[dict[str, Any]]:
        path = self.log_dir / RECORD_NAME
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def starts(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "start"]

    def commands(self) -> list[str]:
        return [e["command"] for e in self.events() if e["event"] == "command"]

    def since_last_start(self) -> list[str]:
        """The commands the current (last started) daemon was sent."""
        out: list[str] = []
        for event in self.events():
            if event["event"] == "start":
                out = []
            elif event["event"] == "command":
                out.append(event["command"])
        return out

    def fault(self, name: str, on: bool) -> None:
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; one of {', '.join(FAULTS)}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        flag = self.log_dir / name
        if on:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)
