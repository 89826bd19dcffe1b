"""MPS resources: time-slicing's replicas, plus what a client of the resource's control daemon needs.

An MPS resource is a ReplicatedManager (the same `<uuid>::<n>` ids, health,
Allocate mapping and preferred policy as time-slicing) whose extension adds, to
every container's answer, the daemon's pipe folder (env CUDA_MPS_PIPE_DIRECTORY
and its mount) and the shared memory folder at /dev/shm, at the paths NVIDIA's
plugin uses. The per-client limits are not in the answer: the daemon holds them
as its defaults (mps/plan.py), so no client can raise them; `daemon_plan` is the
one place that says which GPUs the daemon serves and how many clients share each,
read by the plugin (to check the daemon's ready file) and by `mps-control` (to
start the daemon), so the two cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gpu_device_plugin.allocator import ContainerAllocation, Mount
from gpu_device_plugin.inventory import Device, Inventory
from gpu_device_plugin.mps.plan import DaemonPlan, MpsGpu
from gpu_device_plugin.mps.root import CONTAINER_SHM, MpsRoot, container_pipe_dir
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.replicated import ReplicatedManager, base_id

PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"


@dataclass(frozen=True, slots=True)
class MpsExtension:
    """The ReplicaExtension of an MPS resource: its daemon's pipe folder and shm in the container."""

    resource_name: str
    root: MpsRoot

    def extend(
        self, allocation: ContainerAllocation, devices: Sequence[Device], replicas: int
    ) -> ContainerAllocation:
        pipe = str(container_pipe_dir(self.resource_name))
        mounts = (
            Mount(pipe, str(self.root.pipe_dir(self.resource_name))),
            Mount(str(CONTAINER_SHM), str(self.root.shm_dir)),
        )
        return replace(
            allocation, envs={**allocation.envs, PIPE_ENV: pipe}, mounts=(*allocation.mounts, *mounts)
        )


def with_mps(manager: ResourceManager, root: MpsRoot) -> ResourceManager:
    """A replicated manager made an MPS one; any other (the whole GPUs a rename leaves) unchanged."""
    if not isinstance(manager, ReplicatedManager):
        return manager
    return replace(manager, extension=MpsExtension(manager.resource_name, root))


def mps_extension(manager: ResourceManager) -> MpsExtension | None:
    """The manager's MPS extension; None: not an MPS resource."""
    if isinstance(manager, ReplicatedManager) and isinstance(manager.extension, MpsExtension):
        return manager.extension
    return None


def daemon_plan(manager: ReplicatedManager, inventory: Inventory) -> DaemonPlan:
    """The control daemon this resource needs on `inventory`: every GPU it lists, by index,
    with how many of its ids name each (its replicas; 1 for a GPU listed whole)."""
    view = manager.devices(inventory).devices
    counts = Counter(base_id(d.id) for d in view)
    gpus = sorted(manager.base.devices(inventory).devices, key=lambda d: (d.index, d.id))
    return DaemonPlan(
        manager.resource_name,
        manager.replicas,
        tuple(
            MpsGpu(d.uuid, d.memory_mib, counts[d.id], d.compute_capability) for d in gpus if d.id in counts
        ),
    )
