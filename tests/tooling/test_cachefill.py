"""Two runs filling one cache folder at once: one build, both succeed, nothing half-built left.

The build step is injected (a fake that writes files), so these run in
milliseconds; the real builds (Kubernetes, kubectl, Jaeger, pause, BuildKit,
the Debian bases) all go through the same `fill_once`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from gdp_e2e.cluster import cachefill

TIMEOUT_S = 30


def _complete(folder: Path) -> bool:
    return (folder / "tool").is_file() and (folder / "helper").is_file()


def _entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_two_concurrent_builders_share_one_build(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "k8s-v1" / "bin"
    builds: list[str] = []
    first_started = threading.Event()
    second_waiting = threading.Event()
    release = threading.Event()
    results: dict[str, Path] = {}
    errors: list[BaseException] = []

    def fill(staging: Path) -> None:
        builds.append(threading.current_thread().name)
        first_started.set()
        assert release.wait(TIMEOUT_S), "the second builder never waited"
        (staging / "tool").write_text("built")
        (staging / "helper").write_text("built")

    def log(message: str) -> None:
        if "waiting" in message and threading.current_thread().name == "second":
            second_waiting.set()

    def builder() -> None:
        try:
            results[threading.current_thread().name] = cachefill.fill_once(
                target, fill, complete=_complete, what="fake tools", log=log
            )
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    first = threading.Thread(target=builder, name="first")
    second = threading.Thread(target=builder, name="second")
    first.start()
    assert first_started.wait(TIMEOUT_S)
    second.start()
    # The second is blocked on the lock while the first builds, then finds it done.
    assert second_waiting.wait(TIMEOUT_S)
    release.set()
    for thread in (first, second):
        thread.join(TIMEOUT_S)
        assert not thread.is_alive()
    assert errors == []
    assert builds == ["first"]
    assert results == {"first": target, "second": target}
    assert (target / "tool").read_text() == "built"
    # The finished folder and its lock file; no private build folder left.
    assert _entries(target.parent) == ["bin", "bin.lock"]


def test_a_failed_build_leaves_nothing_and_the_next_run_builds(tmp_path: Path) -> None:
    target = tmp_path / "bin"

    def broken(staging: Path) -> None:
        (staging / "tool").write_text("half")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError, match="compiler crashed"):
        cachefill.fill_once(target, broken, complete=_complete, what="fake", log=lambda _: None)
    assert _entries(tmp_path) == ["bin.lock"]

    def incomplete(staging: Path) -> None:
        (staging / "tool").write_text("only one of two")

    with pytest.raises(RuntimeError, match="without producing all of it"):
        cachefill.fill_once(target, incomplete, complete=_complete, what="fake", log=lambda _: None)
    assert _entries(tmp_path) == ["bin.lock"]


_KILLED_BUILDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gdp_e2e.cluster import cachefill

    def fill(staging):
        (staging / "tool").write_text("half")   # one of the two files, then stuck
        print("filling", flush=True)
        sys.stdin.read()                       # until killed

    cachefill.fill_once(Path(sys.argv[1]), fill, complete=lambda f: (f / "tool").is_file()
                        and (f / "helper").is_file(), what="fake", log=print)
    """
)


def test_a_builder_killed_half_way_leaves_nothing_the_next_one_trusts(tmp_path: Path) -> None:
    target = tmp_path / "bin"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BUILDER, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "filling"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(TIMEOUT_S)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    # Killed while holding the lock, with a half-filled private folder.
    assert not _complete(target)
    (leftover,) = cachefill.leftovers(target)
    assert (leftover / "tool").is_file()

    builds: list[Path] = []
    messages: list[str] = []

    def fill(staging: Path) -> None:
        builds.append(staging)
        (staging / "tool").write_text("built")
        (staging / "helper").write_text("built")

    # The kernel released the dead builder's lock: the next run does not wait, it builds.
    assert cachefill.fill_once(target, fill, complete=_complete, what="fake", log=messages.append) == target
    assert len(builds) == 1
    assert (target / "tool").read_text() == "built"
    assert _entries(tmp_path) == ["bin", "bin.lock"]
    assert not any("waiting" in message for message in messages)
    assert any(str(leftover) in message for message in messages)


def test_a_complete_folder_is_not_rebuilt_unless_refreshed(tmp_path: Path) -> None:
    target = tmp_path / "bases"
    count: list[str] = []

    def fill(staging: Path) -> None:
        count.append("built")
        (staging / "tool").write_text(str(len(count)))
        (staging / "helper").write_text("")

    for _ in range(2):
        cachefill.fill_once(target, fill, complete=_complete, what="fake", log=lambda _: None)
    assert count == ["built"]
    cachefill.fill_once(target, fill, complete=_complete, what="fake", log=lambda _: None, refresh=True)
    assert (target / "tool").read_text() == "2"
    assert _entries(tmp_path) == ["bases", "bases.lock"]


def test_try_remove_spares_a_folder_another_run_is_building(tmp_path: Path) -> None:
    target = tmp_path / "old"
    target.mkdir()
    with cachefill.locked(target, what="old", log=lambda _: None):
        assert cachefill.try_remove(target) is False
        assert target.is_dir()
    assert cachefill.try_remove(target) is True
    assert _entries(tmp_path) == []
