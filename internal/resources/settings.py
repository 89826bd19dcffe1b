"""What the operator asked the resources to be: names, Allocate options, MIG strategy, sharing.

Filled by the CLI from flags and NVIDIA's config file (cmd/.../nvidia_file.py),
read by plan.py together with the inventory. Plain frozen values, compared by
equality: a config change (issue 17) is a new ResourceSettings, and what did
not change plans to equal managers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from gpu_device_plugin.allocator import AllocateOptions
from gpu_device_plugin.allocator.shared_policy import SharedPolicy
from gpu_device_plugin.mps.root import MpsRoot
from gpu_device_plugin.resources.names import DEFAULT_RESOURCE_NAME, check_resource_name


class MigStrategy(enum.StrEnum):
    """NVIDIA's migStrategy: how MIG-enabled GPUs are offered."""

    NONE = "none"  # whole GPUs, MIG or not (a MIG-enabled GPU gets a warning)
    SINGLE = "single"  # every GPU one identical MIG profile, under the resource name
    MIXED = "mixed"  # one resource per MIG profile: <domain>/mig-<profile>


class SharingStrategy(enum.StrEnum):
    """How replicas of one GPU share it; the values are GFD's sharing-strategy label."""

    TIME_SLICING = "time-slicing"
    MPS = "mps"

    @property
    def config_key(self) -> str:
        """Its section in NVIDIA's config file, which errors name: `sharing.timeSlicing`."""
        return "sharing.timeSlicing" if self is SharingStrategy.TIME_SLICING else "sharing.mps"


@dataclass(frozen=True, slots=True)
class SharedResource:
    """One entry of sharing.<strategy>.resources: the devices of `name` offered `replicas` ways."""

    # The resource whose devices are shared: the whole-GPU name, or a MIG profile's name under `mixed`.
    name: str
    replicas: int
    # The resource name the replicas are offered under; None: `name` (or `<name>.shared`
    # when the sharing's rename_by_default is set).
    rename: str | None = None
    # "all", a count of devices (the first N), or GPU indexes, MIG indexes (<gpu>:<mig>) and UUIDs.
    devices: Literal["all"] | int | tuple[str, ...] = "all"

    def __post_init__(self) -> None:
        check_resource_name(self.name)
        if self.rename is not None:
            check_resource_name(self.rename)
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")

    def offered_as(self, rename_by_default: bool) -> str:
        """The name the replicas are offered under: `rename`, else NVIDIA's `<name>.shared`
        when renaming by default, else `name` itself."""
        if self.rename is not None:
            return self.rename
        return f"{self.name}.shared" if rename_by_default else self.name


@dataclass(frozen=True, slots=True)
class Sharing:
    strategy: SharingStrategy
    resources: tuple[SharedResource, ...]
    rename_by_default: bool = False
    # Refuse a container request for more than one replica (NVIDIA's default: true for MPS).
    fail_requests_greater_than_one: bool = False


@dataclass(frozen=True)
class ResourceSettings:
    resource_name: str = DEFAULT_RESOURCE_NAME
    """The whole-GPU resource, <domain>/<name>; MIG resources share its domain."""
    allocate: AllocateOptions = field(default_factory=AllocateOptions)
    mig_strategy: MigStrategy = MigStrategy.NONE
    sharing: Sharing | None = None
    shared_policy: SharedPolicy = SharedPolicy.DISTRIBUTED
    """GetPreferredAllocation for replicas and MIG devices (NVIDIA's sharedDevicesAllocationPolicy)."""
    mps_root: MpsRoot = field(default_factory=MpsRoot)
    """Where the MPS control daemons' folders are on the host (NVIDIA's flags.mpsRoot)."""

    def __post_init__(self) -> None:
        check_resource_name(self.resource_name)
