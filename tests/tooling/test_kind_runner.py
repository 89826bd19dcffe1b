"""`task e2e:kind` must fail, naming everything that is missing in one message: never pass.

Exit 1, as the README says, from the script and from `task -x e2e:kind` (go-task
itself turns any failed command into 201 unless given -x; there is no Taskfile
setting for it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "e2e" / "kind" / "run.sh"
TASK = REPO / ".venv" / "bin" / "task"
#: What the script itself, and scripts/bootstrap before it under task, need before their checks.
BASICS = ("bash", "mktemp", "dirname", "flock", "cat", "find", "sort", "sha256sum", "cut")


def _bin_dir(tmp_path: Path, *, stubs: dict[str, str]) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in BASICS:
        (folder / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    for tool, body in stubs.items():
        script = folder / tool
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return folder


def _run(argv: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path), "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def _message(result: subprocess.CompletedProcess[str]) -> str:
    (line,) = [line for line in result.stderr.splitlines() if "e2e:kind cannot run" in line]
    return line


@pytest.mark.parametrize(
    "via",
    [["/bin/bash", str(RUNNER)], [str(TASK), "-x", "--dir", str(REPO), "e2e:kind"]],
    ids=["script", "task"],
)
def test_names_docker_kind_and_kubectl_in_one_message_and_exits_1(tmp_path: Path, via: list[str]) -> None:
    result = _run(via, _bin_dir(tmp_path, stubs={}))
    assert result.returncode == 1, result
    message = _message(result)
    for missing in ("docker", "kind", "kubectl"):
        assert missing in message, message


def test_a_stopped_engine_is_named_with_the_other_missing_tools(tmp_path: Path) -> None:
    # docker is installed but its engine does not answer; kind is not installed either.
    result = _run(
        ["/bin/bash", str(RUNNER)], _bin_dir(tmp_path, stubs={"docker": "exit 1", "kubectl": "exit 0"})
    )
    assert result.returncode == 1, result
    message = _message(result)
    assert "running Docker engine" in message
    assert "kind (" in message
    assert "kubectl" not in message
    assert "missing docker (" not in message


def test_only_the_engine_when_the_tools_are_there(tmp_path: Path) -> None:
    stubs = {"docker": "exit 1", "kind": "exit 0", "kubectl": "exit 0"}
    result = _run(["/bin/bash", str(RUNNER)], _bin_dir(tmp_path, stubs=stubs))
    assert result.returncode == 1, result
    assert _message(result) == (
        "e2e:kind cannot run: missing a running Docker engine "
        "('docker info' failed: is dockerd up, may this user reach its socket?)"
    )
