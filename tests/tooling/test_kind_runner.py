"""`task e2e:kind` must fail before it starts, naming everything that is missing in one message.

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
def test_names_docker_go_and_the_engine_in_one_message_and_exits_1(tmp_path: Path, via: list[str]) -> None:
    result = _run(via, _bin_dir(tmp_path, stubs={}))
    assert result.returncode == 1, result
    message = _message(result)
    for missing in ("docker client", "go, to build kind", "running Docker engine"):
        assert missing in message, message
    assert "kubectl" not in message  # ours is built with the node's Kubernetes


def test_only_the_engine_when_the_tools_are_there_but_no_dockerd(tmp_path: Path) -> None:
    # docker's client is installed but no engine answers, and there is no dockerd to start.
    stubs = {"docker": "exit 1", "go": "exit 0", "id": "echo 0"}
    result = _run(["/bin/bash", str(RUNNER)], _bin_dir(tmp_path, stubs=stubs))
    assert result.returncode == 1, result
    assert _message(result) == (
        "e2e:kind cannot run: missing a running Docker engine, or root and dockerd to start ours "
        "(apt-get install docker.io)"
    )


def test_the_stock_image_needs_a_kubectl(tmp_path: Path) -> None:
    stubs = {"docker": "exit 0", "go": "exit 0"}
    env_path = _bin_dir(tmp_path, stubs=stubs)
    env = {
        "PATH": str(env_path),
        "HOME": os.environ.get("HOME", "/root"),
        "KIND_NODE_IMAGE": "kindest/node:v1.34.0",
    }
    result = subprocess.run(
        ["/bin/bash", str(RUNNER)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 1, result
    assert _message(result) == "e2e:kind cannot run: missing kubectl for the stock image (or set KUBECTL)"
