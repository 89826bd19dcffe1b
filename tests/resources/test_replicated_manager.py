"""Replicas of a base resource: the ids the kubelet sees, their health, and what a container gets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest

from gpu_device_plugin.allocator import (
    AllocateOptions,
    ContainerAllocation,
    DeviceIdStrategy,
    PreferredPolicy,
)
from gpu_device_plugin.allocator.shared_policy import SharedPolicy, distributed_policy, packed_policy
from gpu_device_plugin.backends.fake.spec import FakeConfig, fake_uuid, to_inventory
from gpu_device_plugin.backends.fake.topology import FakeTopology
from gpu_device_plugin.errors import ConfigError, DeviceUnavailableError, RequestError
from gpu_device_plugin.inventory import Device, Health, Inventory, SnapshotCell
from gpu_device_plugin.resources.replicated import PartManager, ReplicatedManager, base_id, replica_id
from gpu_device_plugin.resources.view import ResourceView
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager

WHOLE = WholeGpuManager("nvidia.com/gpu")


def gpus(count: int = 4, *, unhealthy: Sequence[int] = (), preset: str | None = None) -> Inventory:
    topology = FakeTopology.model_validate({"preset": preset}) if preset else None
    inventory = to_inventory(FakeConfig(count=count, topology=topology))
    return inventory.with_health({fake_uuid(i): (Health.UNHEALTHY, "XID 79") for i in unhealthy})


def shared(replicas: int = 4, *, name: str = "nvidia.com/gpu", **kwargs: Any) -> ReplicatedManager:
    return ReplicatedManager(WHOLE, replicas, name, **kwargs)


def ids(inventory: Inventory) -> list[str]:
    return [d.id for d in inventory.devices]


def test_each_gpu_is_offered_replicas_times_under_stable_annotated_ids() -> None:
    view = shared(4).devices(gpus(2))

    assert ids(view) == [f"{fake_uuid(g)}::{n}" for g in range(2) for n in range(4)]
    # A replica is its GPU with only the id changed: NUMA, index and UUID are the GPU's.
    for device in view.devices:
        assert device.uuid == base_id(device.id)
        assert replace(device, id=device.uuid) == gpus(2).by_id[device.uuid]
    # Built again (a restart): the same ids, which is what the kubelet's checkpoint needs.
    assert shared(4).devices(gpus(2)) == view


def test_an_unhealthy_gpu_takes_all_its_replicas_down_and_back() -> None:
    manager = shared(4)
    down = manager.devices(gpus(4, unhealthy=[2]))
    assert [d.id for d in down.devices if not d.healthy] == [replica_id(fake_uuid(2), n) for n in range(4)]
    assert down.healthy_count == 12
    assert manager.devices(gpus(4)).healthy_count == 16


def test_allocate_names_each_physical_gpu_once_in_the_order_first_asked() -> None:
    manager = shared(4)
    view = manager.devices(gpus(4))
    asked = [replica_id(fake_uuid(3), 1), replica_id(fake_uuid(0), 2), replica_id(fake_uuid(3), 0)]

    answer = manager.allocate(view, asked)

    assert answer.envs["NVIDIA_VISIBLE_DEVICES"] == f"{fake_uuid(3)},{fake_uuid(0)}"
    assert answer.container_devices == (fake_uuid(3), fake_uuid(0))


def test_allocate_answers_through_the_base_so_its_options_apply() -> None:
    by_index = WholeGpuManager("nvidia.com/gpu", AllocateOptions(id_strategy=DeviceIdStrategy.INDEX))
    manager = ReplicatedManager(by_index, 2, "nvidia.com/gpu")
    view = manager.devices(gpus(4))

    answer = manager.allocate(view, [replica_id(fake_uuid(2), 0), replica_id(fake_uuid(2), 1)])

    assert answer.envs["NVIDIA_VISIBLE_DEVICES"] == "2"
    assert manager.allocate_options == by_index.allocate_options


@pytest.mark.parametrize(
    ("asked", "error", "phrase"),
    [
        pytest.param([fake_uuid(0)], RequestError, "unknown device ids", id="a-gpu-id-is-not-a-replica"),
        pytest.param([f"{fake_uuid(0)}::4"], RequestError, "unknown device ids", id="replica-out-of-range"),
        pytest.param(
            [f"{fake_uuid(0)}::1", f"{fake_uuid(0)}::1"], RequestError, "more than once", id="named-twice"
        ),
        pytest.param([f"{fake_uuid(1)}::0"], DeviceUnavailableError, "unhealthy", id="unhealthy-replica"),
        pytest.param([], RequestError, "at least one device", id="empty"),
    ],
)
def test_bad_requests_name_the_replica_ids_the_kubelet_sent(
    asked: list[str], error: type[Exception], phrase: str
) -> None:
    manager = shared(4)
    view = manager.devices(gpus(2, unhealthy=[1]))

    with pytest.raises(error, match=phrase) as caught:
        manager.allocate(view, asked)

    if asked:
        assert repr(asked[0]) in str(caught.value)


def test_a_health_race_on_a_replica_is_tolerated_as_the_base_would() -> None:
    manager = shared(2)
    view = manager.devices(gpus(2, unhealthy=[1]))
    racing = [replica_id(fake_uuid(1), 0)]

    answer = manager.allocate(view, racing, tolerate=racing)

    assert answer.envs["NVIDIA_VISIBLE_DEVICES"] == fake_uuid(1)


def test_fail_requests_greater_than_one_refuses_two_replicas_naming_the_option() -> None:
    manager = shared(4, one_per_container=True)
    view = manager.devices(gpus(2))

    with pytest.raises(RequestError) as caught:
        manager.allocate(view, [replica_id(fake_uuid(0), 0), replica_id(fake_uuid(1), 0)])

    assert type(caught.value) is RequestError  # INVALID_ARGUMENT: the request, not the node
    assert "sharing.timeSlicing.failRequestsGreaterThanOne" in str(caught.value)
    assert "request 1" in str(caught.value)
    # One replica is what the option allows.
    one = manager.allocate(view, [replica_id(fake_uuid(1), 3)])
    assert one.envs["NVIDIA_VISIBLE_DEVICES"] == fake_uuid(1)


def test_the_option_named_is_the_one_the_sharing_mode_gives() -> None:
    manager = shared(2, one_per_container=True, option="sharing.mps.failRequestsGreaterThanOne")
    view = manager.devices(gpus(1))
    with pytest.raises(RequestError, match=r"sharing\.mps\.failRequestsGreaterThanOne"):
        manager.allocate(view, [replica_id(fake_uuid(0), 0), replica_id(fake_uuid(0), 1)])


def test_only_the_listed_gpus_are_replicated_the_others_stay_whole_under_the_name() -> None:
    listed = frozenset({fake_uuid(1), fake_uuid(2)})
    manager = shared(2, shared=listed, keep_unshared=True, one_per_container=True)
    view = manager.devices(gpus(4))

    assert ids(view) == [
        fake_uuid(0),
        replica_id(fake_uuid(1), 0),
        replica_id(fake_uuid(1), 1),
        replica_id(fake_uuid(2), 0),
        replica_id(fake_uuid(2), 1),
        fake_uuid(3),
    ]
    # Two whole GPUs together are no shared request: NVIDIA refuses only requests holding a replica.
    assert manager.allocate(view, [fake_uuid(0), fake_uuid(3)]).envs["NVIDIA_VISIBLE_DEVICES"] == (
        f"{fake_uuid(0)},{fake_uuid(3)}"
    )
    with pytest.raises(RequestError, match="failRequestsGreaterThanOne"):
        manager.allocate(view, [fake_uuid(0), replica_id(fake_uuid(1), 0)])


def test_a_renamed_share_leaves_the_rest_to_the_base_resource() -> None:
    listed = frozenset({fake_uuid(0)})
    replicas = shared(3, name="nvidia.com/gpu.shared", shared=listed)
    rest = PartManager(WHOLE, listed)
    snapshot = gpus(3)

    assert ids(replicas.devices(snapshot)) == [replica_id(fake_uuid(0), n) for n in range(3)]
    assert ids(rest.devices(snapshot)) == [fake_uuid(1), fake_uuid(2)]
    assert rest.resource_name == "nvidia.com/gpu"
    assert rest.preferred_policy is WHOLE.preferred_policy
    with pytest.raises(RequestError, match="unknown device ids"):
        rest.allocate(rest.devices(snapshot), [fake_uuid(0)])


@pytest.mark.parametrize(
    ("policy", "plain"),
    [(SharedPolicy.DISTRIBUTED, distributed_policy), (SharedPolicy.PACKED, packed_policy)],
    ids=["distributed", "packed"],
)
def test_the_preferred_policy_answers_as_the_shared_one_with_its_layout_built_once_per_view(
    policy: SharedPolicy, plain: PreferredPolicy
) -> None:
    manager = shared(4, policy=policy)
    preferred = manager.preferred_policy
    assert preferred is not None
    assert getattr(preferred, "__name__", "") == plain.__name__  # what spans call it
    first = manager.devices(gpus(8, preset="dgx-h100"))
    taken = set(ids(first)[::3])
    for view in (first, first, manager.devices(gpus(16, preset="dgx-2", unhealthy=[1]))):
        free = [i for i in ids(view) if i not in taken and view.by_id[i].healthy]
        for size in (1, 3, 8):
            assert preferred(view, free, [], size) == plain(view, free, [], size)


def test_distributed_is_the_default() -> None:
    assert shared(4).policy is SharedPolicy.DISTRIBUTED


@pytest.mark.parametrize(
    ("policy", "expected_gpus"),
    [
        pytest.param(SharedPolicy.DISTRIBUTED, 4, id="distributed-spreads"),
        pytest.param(SharedPolicy.PACKED, 1, id="packed-fills-one-gpu"),
    ],
)
def test_preferred_allocation_over_replica_ids(policy: SharedPolicy, expected_gpus: int) -> None:
    manager = shared(4, policy=policy)
    view = manager.devices(gpus(8, preset="dgx-h100"))
    policy_call = manager.preferred_policy
    assert policy_call is not None

    chosen = policy_call(view, ids(view), [], 4)

    assert len(chosen) == 4
    assert len({base_id(i) for i in chosen}) == expected_gpus


def test_equal_settings_build_equal_managers_and_a_change_is_seen() -> None:
    assert shared(4) == shared(4)
    assert shared(4, shared=frozenset({"a"})) == shared(4, shared=frozenset({"a"}))
    assert shared(4) != shared(3)
    assert shared(4) != shared(4, one_per_container=True)
    assert shared(4) != shared(4, name="nvidia.com/gpu.shared")


def test_a_view_of_replicas_keeps_its_object_while_nothing_changes() -> None:
    cell = SnapshotCell(gpus(2))
    view = ResourceView(cell, shared(4))
    first = view.value
    cell.publish(gpus(2))
    assert view.value is first
    cell.publish(gpus(2, unhealthy=[0]))
    assert view.value is not first


@dataclass(frozen=True)
class Tagging:
    """Test-only extension: names the base devices and the replica count in an env var."""

    def extend(
        self, allocation: ContainerAllocation, devices: Sequence[Device], replicas: int
    ) -> ContainerAllocation:
        envs = {**allocation.envs, "SHARED": f"{','.join(str(d.index) for d in devices)}/{replicas}"}
        return replace(allocation, envs=envs)


def test_an_extension_adds_to_the_answer_with_each_gpu_once() -> None:
    manager = shared(4, extension=Tagging())
    view = manager.devices(gpus(4))

    answer = manager.allocate(view, [replica_id(fake_uuid(2), 0), replica_id(fake_uuid(2), 3)])

    assert answer.envs["SHARED"] == "2/4"
    assert answer.envs["NVIDIA_VISIBLE_DEVICES"] == fake_uuid(2)


@pytest.mark.parametrize("replicas", [0, 1000])
def test_a_replica_count_out_of_range_is_refused(replicas: int) -> None:
    with pytest.raises(ValueError, match="replicas must be between 1 and 999"):
        shared(replicas)


def test_a_bad_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="resource-name"):
        shared(2, name="no-slash")
