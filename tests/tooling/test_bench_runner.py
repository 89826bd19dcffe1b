"""`task bench -- NAME`: the runner's names, its results, and what an interrupt leaves (nothing).

The benches here are small stand-ins written into a package of their own (the
runner's hidden --bench-package), using the real gdp_bench.common as the real ones do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = [sys.executable, "-m", "gdp_bench.run"]
#: The stand-in benches' package, in a folder of the test's own.
STANDINS = "standin_benches"
TIMEOUT_S = 60

_WRITES_ITS_ARGS = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"argv": sys.argv[1:], "name": os.environ["GDP_BENCH_NAME"]}))
    """
)

#: A bench-like child: a scratch folder, a `serve`-like grandchild, then it waits to be stopped.
_STARTS_A_SERVER = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from pathlib import Path
    from gdp_bench.common import progress, scratch_folder

    with scratch_folder() as scratch:
        (Path(scratch) / "plugin.sock").write_text("")
        server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        # One that ignores SIGTERM, like a server stuck in shutdown: only SIGKILL stops it.
        stuck = subprocess.Popen([sys.executable, "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ignoring', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
        stuck.stdout.readline()
        Path(os.environ["REPORT"]).write_text(json.dumps(
            {"pids": [os.getpid(), server.pid, stuck.pid], "scratch": scratch,
             "root": os.environ["GDP_BENCH_SCRATCH"]}))
        progress("ready")
        time.sleep(600)
    """
)


def _bench_dir(tmp_path: Path, benches: dict[str, str]) -> Path:
    folder = tmp_path / "benches"
    (folder / STANDINS).mkdir(parents=True)
    (folder / STANDINS / "__init__.py").write_text("")
    for name, source in benches.items():
        (folder / STANDINS / f"{name}.py").write_text(source)
    return folder


def _runner(bench_dir: Path, results: Path, *args: str) -> list[str]:
    # env(1) execs the runner (same pid, so signals reach it) with the stand-ins importable.
    return [
        "env",
        f"PYTHONPATH={bench_dir}",
        *RUNNER,
        "--bench-package",
        STANDINS,
        "--results",
        str(results),
        "--grace",
        "2",
        *args,
    ]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def test_an_unknown_name_exits_2_listing_the_known_ones(tmp_path: Path) -> None:
    benches = _bench_dir(tmp_path, {"core": _WRITES_ITS_ARGS, "extra": _WRITES_ITS_ARGS})
    done = _run(_runner(benches, tmp_path / "results", "core", "nope"))
    assert done.returncode == 2
    assert done.stderr.strip() == "bench: unknown benchmark 'nope'; known: core, extra"
    assert not (tmp_path / "results").exists()  # nothing ran


def test_the_real_benches_are_known_by_name() -> None:
    done = _run([*RUNNER, "--list"])
    assert done.returncode == 0
    listed = done.stdout.split()
    assert listed[:6] == ["core", "health", "allocator", "tracing", "cluster", "metrics"]
    assert "common" not in listed
    assert "run" not in listed


def test_one_name_runs_that_bench_alone_with_its_options(tmp_path: Path) -> None:
    benches = _bench_dir(tmp_path, {"core": _WRITES_ITS_ARGS, "health": _WRITES_ITS_ARGS})
    results = tmp_path / "results"
    done = _run(_runner(benches, results, "health", "--quick"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in results.iterdir()) == ["health.json"]
    written = json.loads((results / "health.json").read_text())
    assert written == {"argv": ["--out", str(results / "health.json"), "--quick"], "name": "health"}
    assert "1/1 health: started" in done.stderr
    assert "1/1 health: done" in done.stderr


def test_no_name_runs_all_in_order_but_the_soak(tmp_path: Path) -> None:
    benches = _bench_dir(
        tmp_path, {name: _WRITES_ITS_ARGS for name in ("zeta", "core", "metrics", "health", "soak")}
    )
    results = tmp_path / "results"
    done = _run(_runner(benches, results))
    assert done.returncode == 0, done.stderr
    started = [line.split()[2].rstrip(":") for line in done.stderr.splitlines() if ": started" in line]
    assert started == ["core", "health", "metrics", "zeta"]
    assert "soak: not in a full run" in done.stderr
    assert sorted(p.stem for p in results.iterdir()) == ["core", "health", "metrics", "zeta"]
    # By name, the soak runs.
    assert _run(_runner(benches, results, "soak")).returncode == 0
    assert (results / "soak.json").is_file()


def test_a_failing_bench_fails_the_run_and_the_rest_still_run(tmp_path: Path) -> None:
    benches = _bench_dir(tmp_path, {"core": "raise SystemExit(3)\n", "health": _WRITES_ITS_ARGS})
    done = _run(_runner(benches, tmp_path / "results"))
    assert done.returncode == 1
    assert "core: FAILED (exit 3)" in done.stderr
    assert (tmp_path / "results" / "health.json").is_file()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_stops_the_bench_and_its_servers_and_removes_its_scratch(
    tmp_path: Path, signum: signal.Signals
) -> None:
    benches = _bench_dir(tmp_path, {"core": _STARTS_A_SERVER})
    report = tmp_path / "report.json"
    runner = subprocess.Popen(
        _runner(benches, tmp_path / "results", "core"),
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REPORT": str(report)},
    )
    try:
        assert runner.stderr is not None
        for line in runner.stderr:  # wait for the bench to say it is ready (a line, not a sleep)
            if line.rstrip().endswith("] ready"):
                break
        else:
            pytest.fail(f"the bench never got ready (runner exit {runner.wait(TIMEOUT_S)})")
        seen = json.loads(report.read_text())
        assert Path(seen["scratch"]).is_dir()
        assert Path(seen["scratch"]).parent == Path(seen["root"])
        runner.send_signal(signum)
        assert runner.wait(TIMEOUT_S) == 128 + signum
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(TIMEOUT_S)
        if runner.stderr is not None:
            runner.stderr.close()
    # The bench, the server and the one that ignored SIGTERM: all gone, and reaped.
    assert [pid for pid in seen["pids"] if not _gone(pid)] == []
    assert not Path(seen["root"]).exists()
    assert not (tmp_path / "results" / "core.json").exists()


def test_under_task_it_stops_when_task_itself_is_killed(tmp_path: Path) -> None:
    # go-task does not pass SIGTERM on, and SIGKILL cannot be: the runner watches its parent.
    benches = _bench_dir(tmp_path, {"core": _STARTS_A_SERVER})
    report = tmp_path / "report.json"
    parent = [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])"]
    wrapper = subprocess.Popen(
        [*parent, *_runner(benches, tmp_path / "results", "core")],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REPORT": str(report), "GDP_BENCH_STOP_WITH_PARENT": "1"},
    )
    assert wrapper.stderr is not None
    try:
        for line in wrapper.stderr:
            if line.rstrip().endswith("] ready"):
                break
        seen = json.loads(report.read_text())
        wrapper.kill()  # as `task` killed: the runner is orphaned
        wrapper.wait(TIMEOUT_S)
        # Every process left holds this pipe: its end means all of them are gone.
        rest = wrapper.stderr.read()
    finally:
        wrapper.stderr.close()
    assert "interrupted (SIGHUP)" in rest
    assert [pid for pid in seen["pids"] if not _gone(pid)] == []
    assert not Path(seen["root"]).exists()
