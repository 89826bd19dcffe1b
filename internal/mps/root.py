"""Where an MPS daemon's files are, on the host and in a client container (NVIDIA's layout).

Under the MPS root (NVIDIA's flags.mpsRoot, /run/nvidia/mps) each resource has a
folder named by its resource name (`nvidia.com/gpu` is two levels): `pipe/` (the
control daemon's sockets, which clients connect to), `log/` and `.ready`. One
`shm/` folder serves every resource: the daemon's and its clients' /dev/shm must
be the same. A client container gets `pipe/` at /mps/<resource>/pipe and `shm/`
at /dev/shm, as NVIDIA's plugin mounts them, so a pod moves between the plugins
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

DEFAULT_MPS_ROOT = PurePosixPath("/run/nvidia/mps")
# Where a client container sees the resource folders, and the shared memory.
CONTAINER_ROOT = PurePosixPath("/mps")
CONTAINER_SHM = PurePosixPath("/dev/shm")
READY_NAME = ".ready"


@dataclass(frozen=True, slots=True)
class MpsRoot:
    path: PurePosixPath = DEFAULT_MPS_ROOT

    def resource_dir(self, resource_name: str) -> PurePosixPath:
        return self.path / resource_name

    def pipe_dir(self, resource_name: str) -> PurePosixPath:
        return self.resource_dir(resource_name) / "pipe"

    def log_dir(self, resource_name: str) -> PurePosixPath:
        return self.resource_dir(resource_name) / "log"

    def ready_file(self, resource_name: str) -> PurePosixPath:
        return self.resource_dir(resource_name) / READY_NAME

    @property
    def shm_dir(self) -> PurePosixPath:
        return self.path / "shm"


def container_pipe_dir(resource_name: str) -> PurePosixPath:
    """The pipe folder as a client container sees it (its CUDA_MPS_PIPE_DIRECTORY)."""
    return CONTAINER_ROOT / resource_name / "pipe"
