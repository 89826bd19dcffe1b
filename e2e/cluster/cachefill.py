"""Filling a cache folder once, safely, when several runs on one machine want it at once.

Every cache this project fills (the Kubernetes binaries, kubectl alone, Jaeger,
the pause program, BuildKit, the Debian bases) goes through `fill_once`:

- one lock file beside the folder (`<folder>.lock`, fcntl.flock), so a second
  run waits for the first instead of building the same thing into the same
  place; the waiter then finds the finished folder and builds nothing;
- the build writes into a private folder made by mkdtemp in the same parent
  (`.<folder>.partial-XXXX`), never a fixed name another run could remove;
- the private folder is renamed into place only once it is complete, so a run
  killed half-way leaves nothing that looks cached; the next holder of the lock
  removes such leftovers.

The kernel drops a flock when its holder dies, however it dies, so a killed
builder can never leave the lock held. Standard library only, like the rest
of e2e/cluster; hack/image imports it too.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

Fill = Callable[[Path], None]
Check = Callable[[Path], bool]
Log = Callable[[str], None]
Remove = Callable[[Path], None]


def lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def _partial_prefix(folder: Path) -> str:
    return f".{folder.name}.partial-"


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def locked(folder: Path, *, what: str, log: Log) -> Iterator[IO[str]]:
    """Hold the lock of `folder` (waiting, and saying so, while another run holds it)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(folder)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another run is building {what} ({path} is locked); waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def leftovers(folder: Path) -> list[Path]:
    """Private folders of builds of `folder` that never finished (only valid under the lock)."""
    if not folder.parent.is_dir():
        return []
    prefix = _partial_prefix(folder)
    return sorted(p for p in folder.parent.iterdir() if p.name.startswith(prefix))


def fill_once(
    folder: Path,
    fill: Fill,
    *,
    complete: Check,
    what: str,
    log: Log,
    refresh: bool = False,
    remove: Remove = _remove_tree,
) -> Path:
    """Return `folder`, first filling it with `fill(private_folder)` unless `complete(folder)`.

    `fill` gets an empty private folder and must leave in it exactly what `folder`
    should hold; `complete` says whether a folder holds all of it. `refresh`
    rebuilds even a complete folder (the Debian bases' `--refresh`). `remove`
    deletes a tree (hack/image passes one that undoes mounts first).
    """
    if complete(folder) and not refresh:
        return folder
    with locked(folder, what=what, log=log):
        # The run we waited for may have finished it.
        if complete(folder) and not refresh:
            return folder
        for stale in leftovers(folder):
            log(f"removing {stale}, left by a build of {what} that did not finish")
            remove(stale)
        staging = Path(tempfile.mkdtemp(prefix=_partial_prefix(folder), dir=folder.parent))
        try:
            fill(staging)
            if not complete(staging):
                raise RuntimeError(f"building {what} finished without producing all of it in {staging}")
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the cache is read by others (root's pods)
            if folder.exists() or folder.is_symlink():
                # Incomplete (an older layout, or refresh): nobody else writes it while we hold the lock.
                remove(folder)
            staging.rename(folder)
        except BaseException:
            remove(staging)
            raise
    return folder


def try_remove(folder: Path, *, remove: Remove = _remove_tree) -> bool:
    """Remove a cache folder nobody is building (its lock is free), with its leftovers and lock.

    False, and nothing removed, while another run holds the lock.
    """
    path = lock_path(folder)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        for stale in leftovers(folder):
            remove(stale)
        remove(folder)
        path.unlink(missing_ok=True)
    return True
