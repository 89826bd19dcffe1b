"""Helpers every benchmark shares: percentiles, the `serve` command line, scratch folders, progress.

Scratch folders and progress lines go through here so that the runner
(bench/run.py) can clean up after a bench it interrupts: it gives each bench
its own scratch root ($GDP_BENCH_SCRATCH, also $TMPDIR) and its own process
group, and on Ctrl-C or SIGTERM stops the group (the bench and every `serve`
it started) and removes that root. A bench must therefore make its temporary
folders with `scratch_folder()` and never start a process in a new session.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Set by bench/run.py: the folder this bench's scratch folders go into.
ENV_SCRATCH = "GDP_BENCH_SCRATCH"
#: Set by bench/run.py: the bench's name, for its progress lines.
ENV_NAME = "GDP_BENCH_NAME"
_STARTED = time.monotonic()


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds of samples taken in seconds."""
    ordered = sorted(samples_s)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 4)

    return {
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "max_ms": round(ordered[-1] * 1e3, 4),
        "n": len(ordered),
    }


def serve_argv(config: Path, plugin_dir: Path, *extra: str) -> list[str]:
    """The plugin as its own process on the fake backend, quiet unless something is wrong."""
    return [
        sys.executable, "-m", "gpu_device_plugin.cli", "serve",
        "--discovery", "fake", "--fake-config", str(config),
        "--device-plugin-dir", str(plugin_dir), "--log-level", "WARNING", *extra,
    ]  # fmt: skip


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print the result as JSON, and write it to `out` too when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def scratch_folder(prefix: str = "gdp-bench-") -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for sockets and configs, under the runner's scratch root if there is one.

    Outside the runner it is under /tmp, not $TMPDIR: unix socket paths are limited
    to 107 bytes and a user's TMPDIR can be long.
    """
    return tempfile.TemporaryDirectory(prefix=prefix, dir=os.environ.get(ENV_SCRATCH, "/tmp"))


def progress(message: str) -> None:
    """One line on stderr: which bench, how long it has run, what it is doing now."""
    name = os.environ.get(ENV_NAME) or Path(sys.argv[0]).stem
    print(f"[bench {name} +{time.monotonic() - _STARTED:.0f}s] {message}", file=sys.stderr, flush=True)
