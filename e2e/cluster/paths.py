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


def cache_folder(variable: str, name: str) -> Path:
    """`$variable` when set, else ~/.cache/<name>: where built things are kept between runs."""
    configured = os.environ.get(variable)
    return Path(configured) if configured else Path.home() / ".cache" / name


def required_version(go_mod: Path, module: str) -> str:
    """The version of `module` that the `require` line of `go_mod` pins."""
    match = re.search(rf"^require {re.escape(module)} (v\S+)$", go_mod.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no 'require {module} vX' line in {go_mod}")
    return match.group(1)


def cache_dir() -> Path:
    """The folder that keeps built binaries between runs, keyed by version."""
    return cache_folder(ENV_CACHE, "gpu-device-plugin-e2e")


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version required by e2e/k8s-build/go.mod."""
    return required_version(K8S_BUILD_DIR / "go.mod", "k8s.io/kubernetes")
