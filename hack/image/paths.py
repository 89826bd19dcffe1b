"""Where the image build keeps its cache and output, and which BuildKit it builds.

The BuildKit release is read from buildkit-build/go.mod, so the version is
written in exactly one place.
"""

from __future__ import annotations

from pathlib import Path

from gdp_e2e.cluster.paths import cache_folder, required_version

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILDKIT_BUILD_DIR = HERE / "buildkit-build"

#: The name `ctr images import` registers, and the e2e DaemonSet runs.
IMAGE_NAME = "localhost/gpu-device-plugin:dev"
#: The image archive; e2e/tests reads it from here (E2E_PLUGIN_IMAGE overrides).
OUTPUT = REPO / "build" / "image" / "gpu-device-plugin.oci.tar"
#: The budget from issue 7, in bytes of uncompressed layers (decimal megabytes).
SIZE_LIMIT = 150_000_000

#: Overrides the cache folder (default ~/.cache/gpu-device-plugin-image).
ENV_CACHE = "GPU_DP_IMAGE_CACHE"


def cache_dir() -> Path:
    return cache_folder(ENV_CACHE, "gpu-device-plugin-image")


def buildkit_version() -> str:
    """The github.com/moby/buildkit version required by buildkit-build/go.mod."""
    return required_version(BUILDKIT_BUILD_DIR / "go.mod", "github.com/moby/buildkit")
