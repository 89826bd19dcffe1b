"""One MPS control daemon's plan: its GPUs, the per-client limits derived from the replicas, its commands.

A resource shared `replicas` ways through MPS gets one control daemon for its
GPUs. As NVIDIA's plugin does, the limits are the daemon's defaults, so every
client inherits them and none can raise them: pinned device memory per GPU is
the GPU's memory divided by its replicas (in MiB, rounded down), and the active
thread percentage is 100 divided by the replicas (rounded down). The devices are
named by UUID, never by ordinal: with CUDA_VISIBLE_DEVICES set, an ordinal would
mean the daemon's own numbering, not NVML's.

The ready file holds the plan the daemon was configured with (JSON), so the plugin
can tell a daemon configured for this plan from one left by another configuration.

Pure values; no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.mps.root import MpsRoot

# How many clients one MPS server takes: 48 from Volta (compute capability 7.0) on, 16 before.
MAX_CLIENTS = 48
MAX_CLIENTS_BEFORE_VOLTA = 16
# The control daemon's commands (its stdin protocol).
SET_PINNED = "set_default_device_pinned_mem_limit"
SET_THREADS = "set_default_active_thread_percentage"
GET_THREADS = "get_default_active_thread_percentage"
QUIT = "quit"


@dataclass(frozen=True, slots=True)
class MpsGpu:
    uuid: str
    # 0: not known, so no memory limit (NVIDIA skips such a GPU too).
    memory_mib: int
    # How many clients share it: the resource's replicas, or 1 for a GPU listed whole.
    replicas: int
    compute_capability: tuple[int, int] | None = None

    @property
    def pinned_limit_mib(self) -> int | None:
        return self.memory_mib // self.replicas if self.memory_mib > 0 else None

    @property
    def max_clients(self) -> int:
        cc = self.compute_capability
        return MAX_CLIENTS_BEFORE_VOLTA if cc is not None and cc < (7, 0) else MAX_CLIENTS


@dataclass(frozen=True, slots=True)
class DaemonPlan:
    resource_name: str
    replicas: int
    gpus: tuple[MpsGpu, ...]

    @property
    def active_thread_percentage(self) -> int:
        return max(1, 100 // self.replicas)

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(g.uuid for g in self.gpus)

    def commands(self) -> tuple[str, ...]:
        """What the daemon is told once it answers: its per-client defaults."""
        limits = tuple(
            f"{SET_PINNED} {g.uuid} {g.pinned_limit_mib}M" for g in self.gpus if g.pinned_limit_mib
        )
        return (*limits, f"{SET_THREADS} {self.active_thread_percentage}")

    def env(self, root: MpsRoot) -> dict[str, str]:
        """The daemon's (and its clients' commands') environment: its GPUs and folders."""
        return {
            "CUDA_VISIBLE_DEVICES": ",".join(self.uuids),
            "CUDA_MPS_PIPE_DIRECTORY": str(root.pipe_dir(self.resource_name)),
            "CUDA_MPS_LOG_DIRECTORY": str(root.log_dir(self.resource_name)),
        }

    def ready_data(self) -> dict[str, Any]:
        return {
            "resource": self.resource_name,
            "replicas": self.replicas,
            "activeThreadPercentage": self.active_thread_percentage,
            "devices": [{"uuid": g.uuid, "pinnedMemoryLimitMiB": g.pinned_limit_mib} for g in self.gpus],
        }

    def ready_text(self) -> str:
        return json.dumps(self.ready_data(), indent=2, sort_keys=True) + "\n"

    def matches(self, text: str) -> bool:
        """Whether a ready file's content is this plan's (a daemon configured as planned)."""
        try:
            return bool(json.loads(text) == self.ready_data())
        except ValueError:
            return False

    def check(self) -> DaemonPlan:
        """ConfigError when an MPS server cannot take this many clients on one of the GPUs."""
        for gpu in self.gpus:
            if gpu.replicas > gpu.max_clients:
                raise ConfigError(
                    "sharing.mps.resources",
                    f"{self.resource_name}: {gpu.replicas} replicas of {gpu.uuid}, but an MPS server "
                    f"takes at most {gpu.max_clients} clients on it",
                )
        return self
