"""`KUBECTL=... task manifests` uses that kubectl and builds nothing (no Go needed).

The stub answers `version` as a kubectl 1.32 with kustomize v5 and records every
call; asked to render, it fails, which stops the task right there: all this test
needs to see is which kubectl the task ran and that nothing was built.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TASK = REPO / ".venv" / "bin" / "task"

_STUB = """#!/bin/sh
echo "$*" >> "{calls}"
case "$1" in
  version) echo '{{"clientVersion": {{"gitVersion": "v1.32.0"}}, "kustomizeVersion": "v5.5.0"}}';;
  *) echo "stub kubectl: not rendering" >&2; exit 3;;
esac
"""


def test_task_manifests_runs_the_kubectl_it_is_given_and_builds_nothing(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    stub = tmp_path / "kubectl-stub"
    stub.write_text(_STUB.format(calls=calls))
    stub.chmod(0o755)
    cache = tmp_path / "e2e-cache"
    env = {
        # No Go anywhere on PATH: a build, if one started, could only fail.
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "KUBECTL": str(stub),
        "E2E_CACHE": str(cache),
    }
    done = subprocess.run(
        [str(TASK), "--dir", str(REPO), "manifests"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output  # the stub refuses to render
    recorded = calls.read_text().splitlines()
    assert recorded[0].startswith("version --client"), recorded
    assert any(line.startswith("kustomize ") for line in recorded), recorded
    assert "stub kubectl: not rendering" in output
    # Nothing looked for Go or built anything, and the cache was never touched.
    assert "[e2e-cluster]" not in output
    assert "Go toolchain" not in output
    assert not cache.exists()
