"""Finding the host programs the build needs, and running them with useful failures.

Every missing program is reported with the Debian package that provides it;
every failed step says what it was doing and shows the end of its log. This
module never installs anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The Debian package that provides each program we run.
DEBIAN_PACKAGES = {
    "debootstrap": "debootstrap",
    "chroot": "coreutils",
    "runc": "runc",
    "containerd": "containerd",
    "ctr": "containerd",
    "mount": "mount",
    "umount": "mount",
    "git": "git",
}
GO_HINT = "the Go toolchain ('go', https://go.dev/dl/, at /usr/local/go/bin) is needed to build BuildKit"


class PrerequisiteError(RuntimeError):
    """Something the build needs is missing; the message says what to install or do."""


class StepError(RuntimeError):
    """A build step failed; the message names the step and ends with its log."""


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise PrerequisiteError(f"{action} needs root: debootstrap, buildkitd and runc do (run it with sudo)")


def program(name: str) -> Path:
    """The absolute path of `name`, looking in the sbin folders too; or a PrerequisiteError."""
    search = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    if name == "go":
        search += ":/usr/local/go/bin"
    found = shutil.which(name, path=search)
    if found is None:
        if name == "go":
            raise PrerequisiteError(GO_HINT)
        raise PrerequisiteError(
            f"'{name}' is not installed: apt-get install {DEBIAN_PACKAGES.get(name, name)}"
        )
    return Path(found)


def run(
    command: Sequence[str | Path],
    *,
    what: str,
    log_file: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Run a command to completion; return its output, or raise StepError naming `what`.

    With `log_file`, output goes there (long steps); otherwise it is captured.
    """
    args = [str(part) for part in command]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("w") as out:
            returncode = subprocess.run(
                args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
            ).returncode
        output = log_file.read_text(errors="replace")
    else:
        completed = subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        returncode = completed.returncode
        output = completed.stdout + completed.stderr
    if returncode != 0:
        where = f", log: {log_file}" if log_file else ""
        raise StepError(f"{what} failed (exit {returncode}{where}):\n{output[-4000:]}")
    return output


def mounts_below(folder: Path) -> list[str]:
    """Mount points under `folder`, deepest first (the order to unmount them)."""
    prefix = str(folder.resolve()) + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # mountinfo escapes blanks and backslashes in paths as octal (\040).
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_below(folder: Path) -> None:
    """Undo every mount under `folder` (lazily, so a busy one cannot keep us from cleaning up)."""
    for point in mounts_below(folder):
        run([program("umount"), "--lazy", point], what=f"unmounting {point}")


def remove(path: Path) -> None:
    """Remove a file or tree, unmounting whatever is mounted inside it first."""
    if path.is_dir() and not path.is_symlink():
        unmount_below(path)
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
