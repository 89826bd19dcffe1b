"""Where the e2e cluster keeps its cache, and which Kubernetes it builds.

The pinned Kubernetes release is read from e2e/k8s-build/go.mod, so the
version is written in exactly one place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent.parent
K8S_BUILD_DIR = E2E_DIR / "k8s-build"
PAUSE_SOURCE = E2E_DIR / "images" / "pause" / "pause.c"

#: Overrides the cache folder (default ~/.cache/gpu-device-plugin-e2e).
ENV_CACHE = "E2E_CACHE"


def cache_dir() -> Path:
    """The folder that keeps built binaries between runs, keyed by version."""
    configured = os.environ.get(ENV_CACHE)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "gpu-device-plugin-e2e"


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version required by e2e/k8s-build/go.mod."""
    text = (K8S_BUILD_DIR / "go.mod").read_text()
    match = re.search(r"^require k8s\.io/kubernetes (v\S+)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no 'require k8s.io/kubernetes vX' line in {K8S_BUILD_DIR / 'go.mod'}")
    return match.group(1)
