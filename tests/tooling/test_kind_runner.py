"""`task e2e:kind` must fail, naming what is missing, where Docker or kind is absent: never pass."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[2] / "e2e" / "kind" / "run.sh"


def _run_with_path(path: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        ["/bin/bash", str(RUNNER)], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_fails_naming_kind_and_docker_when_neither_is_installed(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    for tool in ("mktemp", "dirname"):  # what the script itself needs before its checks
        (empty / tool).symlink_to(f"/usr/bin/{tool}")
    result = _run_with_path(str(empty))
    assert result.returncode == 1, result
    assert "missing docker" in result.stderr
    assert "missing kind" in result.stderr
    assert "missing kubectl" in result.stderr


def test_fails_when_the_docker_engine_does_not_answer(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mktemp", "dirname"):
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}")
    for tool in ("docker", "kind", "kubectl"):
        script = bin_dir / tool
        script.write_text("#!/bin/sh\nexit 1\n")  # present, but the engine is down
        script.chmod(0o755)
    result = _run_with_path(str(bin_dir))
    assert result.returncode == 1, result
    assert "Docker engine does not answer" in result.stderr
