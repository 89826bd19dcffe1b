"""MPS resources as plan_resources makes them: time-slicing's replicas plus the daemon's folders.

What a container of an MPS resource gets (its GPUs once, the pipe folder in env and
mounted, shm at /dev/shm, NVIDIA's paths), which daemon the resource needs (its GPUs
by UUID, how many clients share each), and what is refused.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from gpu_device_plugin.allocator import Mount
from gpu_device_plugin.backends.fake.spec import FakeConfig, fake_uuid, to_inventory
from gpu_device_plugin.errors import ConfigError, RequestError
from gpu_device_plugin.inventory import Inventory
from gpu_device_plugin.mps.root import MpsRoot
from gpu_device_plugin.resources.mps import daemon_plan, mps_extension
from gpu_device_plugin.resources.plan import plan_resources
from gpu_device_plugin.resources.replicated import ReplicatedManager
from gpu_device_plugin.resources.settings import (
    MigStrategy,
    ResourceSettings,
    SharedResource,
    Sharing,
    SharingStrategy,
)

GPU = "nvidia.com/gpu"
ROOT = MpsRoot(PurePosixPath("/run/nvidia/mps"))


def node(count: int = 4) -> Inventory:
    return to_inventory(FakeConfig(count=count, memory_mib=40960))


def mps(*resources: SharedResource, **kwargs: object) -> ResourceSettings:
    sharing = Sharing(SharingStrategy.MPS, resources, fail_requests_greater_than_one=True)
    return ResourceSettings(GPU, sharing=sharing, mps_root=ROOT, **kwargs)  # type: ignore[arg-type]


def only(settings: ResourceSettings, inventory: Inventory) -> ReplicatedManager:
    (manager,) = plan_resources(settings, inventory)
    assert isinstance(manager, ReplicatedManager)
    return manager


def test_a_replica_gets_its_gpu_the_pipe_folder_and_shm() -> None:
    inventory = node()
    manager = only(mps(SharedResource(GPU, 4)), inventory)
    view = manager.devices(inventory)

    answer = manager.allocate(view, [f"{fake_uuid(2)}::3"])

    assert answer.envs == {
        "NVIDIA_VISIBLE_DEVICES": fake_uuid(2),
        "CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu/pipe",
    }
    assert answer.mounts == (
        Mount("/mps/nvidia.com/gpu/pipe", "/run/nvidia/mps/nvidia.com/gpu/pipe"),
        Mount("/dev/shm", "/run/nvidia/mps/shm"),
    )
    assert len(view.devices) == 16


def test_a_renamed_mps_resource_has_its_own_folder() -> None:
    inventory = node()
    settings = mps(SharedResource(GPU, 2, rename="nvidia.com/gpu-mps"))
    manager = only(settings, inventory)

    answer = manager.allocate(manager.devices(inventory), [f"{fake_uuid(0)}::1"])

    assert answer.envs["CUDA_MPS_PIPE_DIRECTORY"] == "/mps/nvidia.com/gpu-mps/pipe"
    assert answer.mounts[0].host_path == "/run/nvidia/mps/nvidia.com/gpu-mps/pipe"


def test_two_replicas_for_one_container_are_refused_naming_nvidias_option() -> None:
    inventory = node()
    manager = only(mps(SharedResource(GPU, 4)), inventory)

    with pytest.raises(RequestError, match=r"sharing\.mps\.failRequestsGreaterThanOne"):
        manager.allocate(manager.devices(inventory), [f"{fake_uuid(0)}::0", f"{fake_uuid(1)}::0"])


def test_the_daemon_serves_the_shared_gpus_and_those_listed_whole_by_uuid() -> None:
    inventory = node()
    manager = only(mps(SharedResource(GPU, 4, devices=("1", "3"))), inventory)

    plan = daemon_plan(manager, inventory)

    assert plan.resource_name == GPU
    assert [(g.uuid, g.replicas) for g in plan.gpus] == [
        (fake_uuid(0), 1),
        (fake_uuid(1), 4),
        (fake_uuid(2), 1),
        (fake_uuid(3), 4),
    ]
    assert plan.commands()[1] == f"set_default_device_pinned_mem_limit {fake_uuid(1)} 10240M"
    assert plan.commands()[0] == f"set_default_device_pinned_mem_limit {fake_uuid(0)} 40960M"
    assert plan.active_thread_percentage == 25


def test_time_slicing_resources_have_no_mps_part() -> None:
    inventory = node()
    sharing = Sharing(SharingStrategy.TIME_SLICING, (SharedResource(GPU, 4),))
    (manager,) = plan_resources(ResourceSettings(GPU, sharing=sharing), inventory)

    assert mps_extension(manager) is None
    answer = manager.allocate(manager.devices(inventory), [f"{fake_uuid(0)}::0"])
    assert answer.mounts == ()
    assert "CUDA_MPS_PIPE_DIRECTORY" not in answer.envs


def test_mps_with_a_mig_strategy_is_refused_naming_sharing_mps() -> None:
    with pytest.raises(ConfigError) as caught:
        plan_resources(mps(SharedResource(GPU, 2), mig_strategy=MigStrategy.MIXED), node())
    assert caught.value.field == "sharing.mps"
    assert "MIG devices with MPS is not supported" in caught.value.reason


def test_more_replicas_than_an_mps_server_takes_are_refused() -> None:
    plan_resources(mps(SharedResource(GPU, 48)), node())
    with pytest.raises(ConfigError, match="at most 48 clients"):
        plan_resources(mps(SharedResource(GPU, 49)), node())


def test_equal_settings_plan_equal_mps_managers() -> None:
    first = plan_resources(mps(SharedResource(GPU, 4)), node())
    assert plan_resources(mps(SharedResource(GPU, 4)), node()) == first
    other_root = ResourceSettings(
        GPU, sharing=mps(SharedResource(GPU, 4)).sharing, mps_root=MpsRoot(PurePosixPath("/x"))
    )
    assert plan_resources(other_root, node()) != first
