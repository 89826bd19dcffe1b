"""plan_resources with sharing.timeSlicing: which resources a node serves, as NVIDIA's plugin would."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_device_plugin.allocator.shared_policy import SharedPolicy
from gpu_device_plugin.backends.fake.spec import FakeConfig, fake_uuid, to_inventory
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Device, Inventory, MigDevice, MigMode, MigProfile
from gpu_device_plugin.resources.manager import ResourceManager
from gpu_device_plugin.resources.plan import plan_resources
from gpu_device_plugin.resources.replicated import ReplicatedManager
from gpu_device_plugin.resources.settings import (
    MigStrategy,
    ResourceSettings,
    SharedResource,
    Sharing,
    SharingStrategy,
)
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager

GPU = "nvidia.com/gpu"


def node(count: int = 8) -> Inventory:
    return to_inventory(FakeConfig(count=count))


def time_slicing(*resources: SharedResource, **kwargs: Any) -> ResourceSettings:
    policy = kwargs.pop("policy", SharedPolicy.DISTRIBUTED)
    sharing = Sharing(SharingStrategy.TIME_SLICING, resources, **kwargs)
    return ResourceSettings(GPU, sharing=sharing, shared_policy=policy)


def served(managers: tuple[ResourceManager, ...], inventory: Inventory) -> dict[str, list[str]]:
    return {m.resource_name: [d.id for d in m.devices(inventory).devices] for m in managers}


def replicas_of(*gpus: int, count: int = 4) -> list[str]:
    return [f"{fake_uuid(g)}::{n}" for g in gpus for n in range(count)]


def test_no_sharing_serves_whole_gpus() -> None:
    (manager,) = plan_resources(ResourceSettings(GPU), node())
    assert isinstance(manager, WholeGpuManager)


def test_all_gpus_four_ways_under_the_same_name() -> None:
    # NVIDIA's documented example: 8 GPUs, replicas 4 -> 32 devices of nvidia.com/gpu.
    inventory = node()
    managers = plan_resources(time_slicing(SharedResource(GPU, 4)), inventory)

    assert served(managers, inventory) == {GPU: replicas_of(*range(8))}
    (manager,) = managers
    assert isinstance(manager, ReplicatedManager)
    assert not manager.one_per_container


def test_rename_by_default_offers_the_replicas_as_name_dot_shared() -> None:
    inventory = node()
    managers = plan_resources(
        time_slicing(SharedResource(GPU, 4), rename_by_default=True, fail_requests_greater_than_one=True),
        inventory,
    )

    # Every GPU is shared, so nothing is left under the original name.
    assert served(managers, inventory) == {"nvidia.com/gpu.shared": replicas_of(*range(8))}
    (manager,) = managers
    assert isinstance(manager, ReplicatedManager)
    assert manager.one_per_container
    assert manager.option == "sharing.timeSlicing.failRequestsGreaterThanOne"


def test_an_explicit_rename_wins_over_rename_by_default() -> None:
    inventory = node(2)
    managers = plan_resources(
        time_slicing(SharedResource(GPU, 2, rename="nvidia.com/shared-gpu"), rename_by_default=True),
        inventory,
    )
    assert list(served(managers, inventory)) == ["nvidia.com/shared-gpu"]


def test_gpus_a_renamed_share_leaves_out_stay_whole_under_the_original_name() -> None:
    inventory = node()
    entry = SharedResource(GPU, 4, rename="nvidia.com/gpu.small", devices=("0", fake_uuid(5)))

    managers = plan_resources(time_slicing(entry), inventory)

    assert served(managers, inventory) == {
        GPU: [fake_uuid(g) for g in (1, 2, 3, 4, 6, 7)],
        "nvidia.com/gpu.small": replicas_of(0, 5),
    }


def test_gpus_a_share_under_the_same_name_leaves_out_are_listed_whole_beside_the_replicas() -> None:
    inventory = node(4)
    managers = plan_resources(time_slicing(SharedResource(GPU, 2, devices=2)), inventory)

    assert served(managers, inventory) == {GPU: [*replicas_of(0, 1, count=2), fake_uuid(2), fake_uuid(3)]}


@pytest.mark.parametrize(
    ("entry", "key", "phrase"),
    [
        pytest.param(
            SharedResource("nvidia.com/mig-1g.10gb", 2),
            "sharing.timeSlicing.resources[0].name",
            "nvidia.com/mig-1g.10gb is not a resource this plugin serves here (it serves nvidia.com/gpu)",
            id="unknown-name",
        ),
        pytest.param(
            SharedResource(GPU, 2, devices=9),
            "sharing.timeSlicing.resources[0].devices",
            "9 devices to share, but nvidia.com/gpu has 8 on this node",
            id="count-too-large",
        ),
        pytest.param(
            SharedResource(GPU, 2, devices=("1", "8")),
            "sharing.timeSlicing.resources[0].devices[1]",
            "no device '8' of nvidia.com/gpu on this node",
            id="index-absent",
        ),
        pytest.param(
            SharedResource(GPU, 2, devices=("GPU-00000000-0000-0000-0000-000000000000",)),
            "sharing.timeSlicing.resources[0].devices[0]",
            "no device 'GPU-00000000-0000-0000-0000-000000000000'",
            id="uuid-absent",
        ),
        pytest.param(
            SharedResource(GPU, 2, devices=("0:1",)),
            "sharing.timeSlicing.resources[0].devices[0]",
            "no device '0:1'",
            id="mig-index-on-whole-gpus",
        ),
    ],
)
def test_what_this_node_cannot_share_is_an_error_naming_the_key(
    entry: SharedResource, key: str, phrase: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_resources(time_slicing(entry), node())
    assert caught.value.field == key
    assert phrase in caught.value.reason


def test_one_resource_shared_twice_is_refused_at_the_second_entry() -> None:
    with pytest.raises(ConfigError) as caught:
        plan_resources(time_slicing(SharedResource(GPU, 2), SharedResource(GPU, 4)), node())
    assert caught.value.field == "sharing.timeSlicing.resources[1].name"


def test_the_shared_policy_setting_chooses_packed() -> None:
    (manager,) = plan_resources(time_slicing(SharedResource(GPU, 4), policy=SharedPolicy.PACKED), node())
    assert isinstance(manager, ReplicatedManager)
    assert manager.policy is SharedPolicy.PACKED


def test_equal_settings_plan_equal_managers() -> None:
    entry = SharedResource(GPU, 4, rename="nvidia.com/gpu.small", devices=("0", "1"))
    first = plan_resources(time_slicing(entry), node())
    assert plan_resources(time_slicing(entry), node()) == first
    assert plan_resources(time_slicing(SharedResource(GPU, 4)), node()) != first


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        pytest.param({"name": "gpu"}, "must be <domain>/<name>", id="bad-name"),
        pytest.param({"rename": "nvidia.com/no/slash"}, "not a valid qualified name", id="bad-rename"),
    ],
)
def test_shared_resource_names_are_checked_as_the_kubelet_would(kwargs: dict[str, str], phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase):
        SharedResource(**{"name": GPU, "replicas": 2, **kwargs})  # type: ignore[arg-type]


# ---- replicas of MIG devices (mixed) --------------------------------------------

ON = MigMode(current=True, pending=True)


def mig_node() -> Inventory:
    """GPU 0: two 1g.10gb and a 3g.40gb MIG device; GPU 1: MIG off."""
    one, three = (MigProfile(name=n, gi_slices=g, ci_slices=g) for n, g in (("1g.10gb", 1), ("3g.40gb", 3)))
    gpus = (
        Device(id="GPU-0", index=0, uuid="GPU-0", mig_capable=True, mig_mode=ON),
        Device(id="GPU-1", index=1, uuid="GPU-1"),
    )
    migs = tuple(
        MigDevice(
            id=f"MIG-0-{k}", uuid=f"MIG-0-{k}", parent_id="GPU-0", index=k, profile=p, gi_id=k + 1, ci_id=0
        )
        for k, p in enumerate((one, one, three))
    )
    return Inventory(devices=gpus, backend="test", mig_devices=migs)


def mixed(*resources: SharedResource) -> ResourceSettings:
    sharing = Sharing(SharingStrategy.TIME_SLICING, resources)
    return ResourceSettings(GPU, mig_strategy=MigStrategy.MIXED, sharing=sharing)


def test_replicas_of_a_mig_profile_are_replicas_of_each_mig_device() -> None:
    inventory = mig_node()
    managers = plan_resources(mixed(SharedResource("nvidia.com/mig-1g.10gb", 2)), inventory)

    assert served(managers, inventory) == {
        GPU: ["GPU-1"],
        "nvidia.com/mig-1g.10gb": ["MIG-0-0::0", "MIG-0-0::1", "MIG-0-1::0", "MIG-0-1::1"],
        "nvidia.com/mig-3g.40gb": ["MIG-0-2"],
    }
    shared = next(m for m in managers if m.resource_name == "nvidia.com/mig-1g.10gb")
    view = shared.devices(inventory)
    # Through the MIG manager: the MIG UUID, once.
    answer = shared.allocate(view, ["MIG-0-1::0", "MIG-0-1::1"])
    assert answer.envs["NVIDIA_VISIBLE_DEVICES"] == "MIG-0-1"


def test_a_mig_device_is_chosen_by_its_gpu_and_mig_index() -> None:
    inventory = mig_node()
    entry = SharedResource("nvidia.com/mig-1g.10gb", 2, rename="nvidia.com/small", devices=("0:1",))

    managers = plan_resources(mixed(entry), inventory)

    listed = served(managers, inventory)
    assert listed["nvidia.com/small"] == ["MIG-0-1::0", "MIG-0-1::1"]
    assert listed["nvidia.com/mig-1g.10gb"] == ["MIG-0-0"]


def test_a_mig_profile_this_node_lacks_shares_nothing_but_another_name_is_an_error() -> None:
    inventory = mig_node()
    unshared = plan_resources(ResourceSettings(GPU, mig_strategy=MigStrategy.MIXED), inventory)
    absent = SharedResource("nvidia.com/mig-7g.80gb", 2)
    assert plan_resources(mixed(absent), inventory) == unshared
    with pytest.raises(ConfigError) as caught:
        plan_resources(mixed(SharedResource("nvidia.com/other", 2)), inventory)
    assert caught.value.field == "sharing.timeSlicing.resources[0].name"
