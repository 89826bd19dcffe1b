"""The benchmark runner behind `task bench`: one bench by name, or all of them in order.

    python -m gdp_bench.run [NAME ...] [--BENCH-OPTION ...]
        NAME: a benchmark, the module gdp_bench.NAME (bench/NAME.py); none: all of them (except the soak,
        which is long and runs by name only). Options starting with `-` go to
        every bench run (`--quick`, `--duration 600`). Each writes
        bench/results/NAME.json. An unknown name exits 2 and lists the known ones.
    python -m gdp_bench.run --list

Each bench runs as its own process group with its own scratch root
($GDP_BENCH_SCRATCH and $TMPDIR, see common.py). The runner prints a line when a
bench starts, every 30 s while it runs, and when it ends. On Ctrl-C or SIGTERM it
stops the running bench's whole group (the bench and every `serve` it started:
SIGTERM, SIGKILL after a grace period), removes its scratch root and exits 130 or
143. It is the processes' subreaper, so a `serve` orphaned by its bench is still
its to stop and reap. Run by `task bench` it also stops when `task` itself is killed
(go-task does not pass SIGTERM on), noticing within a second.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import pkgutil
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
#: The order of a full run: quick and basic first, the long ones last.
ORDER = ("core", "health", "allocator", "tracing", "cluster", "metrics", "nvml", "nvml_fake", "soak")
#: Too long for a full run (an hour by default): by name only.
BY_NAME_ONLY = {"soak": "an hour by default; `task bench -- soak [--duration S]`"}
# Modules the benches import; latency.py is the runner bench/metrics.py uses.
NOT_BENCHES = {"common", "latency", "run"}
HEARTBEAT_S = 30.0
#: Set by the Taskfile: stop (and clean up) when `task` itself is killed, within PARENT_CHECK_S.
#: Not by default: `nohup python -m gdp_bench.run soak &` must outlive its shell.
ENV_STOP_WITH_PARENT = "GDP_BENCH_STOP_WITH_PARENT"
PARENT_CHECK_S = 1.0
GRACE_S = 10.0
PR_SET_CHILD_SUBREAPER = 36


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def known(package: str) -> list[str]:
    """Every bench module of package: ORDER first, then any others alphabetically."""
    spec = importlib.util.find_spec(package)
    folders = (spec.submodule_search_locations or []) if spec is not None else []
    found = {m.name for m in pkgutil.iter_modules(folders) if m.name not in NOT_BENCHES | {"__main__"}}
    return [name for name in ORDER if name in found] + sorted(found - set(ORDER))


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def _signals_deferred() -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM are only noted (in the list yielded)."""
    pending: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda n, _f: pending.append(n)) for signum in handled}
    try:
        yield pending
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _become_subreaper() -> None:
    """Orphans of the bench (a `serve` whose parent died) become ours, not init's."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process group still reaches them


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap() -> None:
    """Collect every exited child (orphans included, as subreaper) so none lingers as a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_group(child: subprocess.Popen[bytes], *, grace_s: float) -> None:
    """SIGTERM the bench's process group, SIGKILL what is left after grace_s; reap all of it."""
    pgid = child.pid
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        with_leader = child.poll() is None
        while time.monotonic() < deadline:
            if with_leader and child.poll() is not None:
                with_leader = False
            if not with_leader:
                _reap()
                if not _group_alive(pgid):
                    break
            time.sleep(0.05)  # the members are not ours to wait on one by one
        if not _group_alive(pgid):
            break
    if child.poll() is None:
        child.wait(grace_s)
    _reap()


def run_one(
    name: str,
    *,
    number: int,
    total: int,
    package: str,
    results: Path,
    options: Sequence[str],
    grace_s: float,
) -> int:
    out = results / f"{name}.json"
    argv = [sys.executable, "-m", f"{package}.{name}", "--out", str(out), *options]
    root = Path(tempfile.mkdtemp(prefix=f"gdp-bench-{name}-", dir="/tmp"))
    env = dict(os.environ)
    env.update(TMPDIR=str(root), GDP_BENCH_SCRATCH=str(root), GDP_BENCH_NAME=name)
    log(f"{number}/{total} {name}: started ({' '.join(argv[1:])})")
    started = time.monotonic()
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    parent = os.getppid()
    watch_parent = os.environ.get(ENV_STOP_WITH_PARENT) == "1"
    try:
        next_heartbeat = started + HEARTBEAT_S
        while True:
            try:
                code = child.wait(PARENT_CHECK_S if watch_parent else HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if watch_parent and os.getppid() != parent:
                # `task` was killed (SIGTERM, SIGKILL) without passing it on: stop as if told to.
                raise Interrupted(signal.SIGHUP)
            if time.monotonic() >= next_heartbeat:
                next_heartbeat += HEARTBEAT_S
                log(f"{name}: running for {time.monotonic() - started:.0f} s")
    finally:
        # However it ended (done, failed, interrupted): nothing of it stays behind. A second
        # Ctrl-C meanwhile must not cut the clean-up short; it is acted on afterwards.
        with _signals_deferred() as pending:
            stop_group(child, grace_s=grace_s)
            shutil.rmtree(root, ignore_errors=True)
        if pending:
            raise Interrupted(pending[0])
    seconds = time.monotonic() - started
    if code == 0:
        log(f"{number}/{total} {name}: done in {seconds:.0f} s, {out}")
    else:
        log(f"{number}/{total} {name}: FAILED (exit {code}) after {seconds:.0f} s")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gdp_bench.run", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--list", action="store_true", help="print the known benchmarks")
    # Another package of benches (the runner's tests use stand-ins).
    parser.add_argument("--bench-package", default=__package__ or "gdp_bench", help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=HERE / "results", help=argparse.SUPPRESS)
    parser.add_argument("--grace", type=float, default=GRACE_S, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    # Names first, then the benches' own options: `soak --duration 600` is one name.
    split = next((i for i, arg in enumerate(rest) if arg.startswith("-")), len(rest))
    args.names, options = rest[:split], rest[split:]
    names_known = known(args.bench_package)
    if args.list:
        print("\n".join(names_known))
        return 0
    unknown = [name for name in args.names if name not in names_known]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        print(f"bench: unknown benchmark {names}; known: {', '.join(names_known)}", file=sys.stderr)
        return 2
    if args.names:
        chosen = list(dict.fromkeys(args.names))
    else:
        chosen = [name for name in names_known if name not in BY_NAME_ONLY]
        for name in names_known:
            if name in BY_NAME_ONLY:
                log(f"{name}: not in a full run ({BY_NAME_ONLY[name]})")
    _become_subreaper()
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    failed = []
    try:
        for number, name in enumerate(chosen, 1):
            code = run_one(
                name,
                number=number,
                total=len(chosen),
                package=args.bench_package,
                results=args.results,
                options=options,
                grace_s=args.grace,
            )
            if code != 0:
                failed.append(name)
    except Interrupted as stop:
        log(f"interrupted ({stop}): the running bench was stopped and its scratch folder removed")
        return 128 + stop.signum
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
