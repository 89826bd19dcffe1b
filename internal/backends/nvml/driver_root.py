"""The driver root: the folder under which libnvidia-ml and the /dev/nvidia* nodes are found.

`/` (the default) means what the container runtime injected: pynvml loads
`libnvidia-ml.so.1` through the dynamic loader's search path, and the nodes are
in /dev. Any other root is a driver installed under a folder, as a driver
container leaves it on the host (/run/nvidia/driver): the library is looked up
in that root's usual library folders, the ones NVIDIA's plugin searches too,
and the nodes in `<root>/dev` when that folder exists, else in /dev.

One path for both sides: the plugin opens what it finds at the root as it
sees it, and hands the same path to the kubelet as a device node's host path.
So in a pod the host's driver root must be mounted at the same path it has on
the host (hostPath /run/nvidia/driver at /run/nvidia/driver). NVIDIA keeps two
settings for this (nvidiaDriverRoot on the host, containerDriverRoot inside);
one root mounted at its own path needs neither translation nor a second flag.

Nothing here talks to NVML; it only finds files.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from gpu_device_plugin.errors import DiscoveryError

NVML_LIBRARY = "libnvidia-ml.so.1"
# Debian/Ubuntu name library folders by the machine's multiarch triplet.
_TRIPLETS = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "arm64": "aarch64-linux-gnu"}
# Symlinks followed inside the root before giving up (a loop, or a very odd tree).
_MAX_LINKS = 40


def library_folders(machine: str | None = None) -> tuple[str, ...]:
    """Folders under a driver root searched for libnvidia-ml, in order (RHEL, Debian, then plain)."""
    triplet = _TRIPLETS.get(machine or platform.machine())
    multiarch = (f"usr/lib/{triplet}", f"lib/{triplet}") if triplet else ()
    return ("usr/lib64", *multiarch[:1], "lib64", *multiarch[1:], "usr/lib", "lib")


@dataclass(frozen=True)
class DriverRoot:
    path: Path = Path("/")

    @property
    def is_host_default(self) -> bool:
        return self.path == Path("/")

    @property
    def dev(self) -> Path:
        """Where the /dev/nvidia* nodes are: `<root>/dev` when it is a folder, else /dev."""
        candidate = self.path / "dev"
        return candidate if candidate.is_dir() else Path("/dev")

    def nvml_library(self, machine: str | None = None) -> Path | None:
        """libnvidia-ml under the root, symlinks resolved inside it; None for the default root.

        None means: let pynvml load it through the loader's search path, as it
        does on its own. DiscoveryError when a root is set and holds no library.
        """
        if self.is_host_default:
            return None
        folders = library_folders(machine)
        for folder in folders:
            found = self._resolve(Path(folder) / NVML_LIBRARY)
            if found is not None:
                return found
        searched = ", ".join(str(self.path / f) for f in folders)
        raise DiscoveryError(
            f"{NVML_LIBRARY} not found under the driver root {self.path} (searched {searched})"
        )

    def _resolve(self, relative: Path) -> Path | None:
        # An absolute link inside a driver root points into that root, not into ours:
        # libnvidia-ml.so.1 -> /usr/lib64/libnvidia-ml.so.550.54.15 means <root>/usr/lib64/...
        current = relative
        for _ in range(_MAX_LINKS):
            candidate = self.path / current
            if candidate.is_symlink():
                target = Path(candidate.readlink())
                current = target.relative_to("/") if target.is_absolute() else current.parent / target
                continue
            return candidate if candidate.is_file() else None
        return None
