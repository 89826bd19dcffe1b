"""Inventory: immutable snapshots, health updates as new copies, and their differences."""

from __future__ import annotations

import dataclasses

import pytest

from gpu_device_plugin.inventory import Device, Health, Inventory
from gpu_device_plugin.inventory.model import HealthChange, sorted_devices

H, U = Health.HEALTHY, Health.UNHEALTHY


def inventory(*health: Health) -> Inventory:
    return Inventory(
        devices=tuple(
            Device(id=f"GPU-{i}", index=i, uuid=f"GPU-{i}", health=h) for i, h in enumerate(health)
        ),
        backend="fake",
        driver_version="550",
        control_nodes=("/dev/nvidiactl",),
    )


def test_with_health_returns_a_new_snapshot_and_leaves_the_old_one() -> None:
    before = inventory(H, H, H)

    after = before.with_health({"GPU-1": (U, "XID 79: fallen off the bus")})

    assert [d.health for d in before.devices] == [H, H, H]
    assert [d.health for d in after.devices] == [H, U, H]
    assert after.by_id["GPU-1"].health_reason == "XID 79: fallen off the bus"
    assert after.by_id["GPU-1"].healthy is False
    assert after.healthy_count == 2
    assert before.healthy_count == 3
    assert after != before
    # Node-wide facts travel with the copy.
    assert (after.backend, after.driver_version, after.control_nodes) == (
        "fake",
        "550",
        ("/dev/nvidiactl",),
    )


def test_with_health_ignores_unknown_ids() -> None:
    before = inventory(H, H)
    assert before.with_health({"GPU-9": (U, "gone")}) == before


def test_with_health_can_recover_a_device() -> None:
    sick = inventory(U).with_health({"GPU-0": (U, "XID 48")})
    well = sick.with_health({"GPU-0": (H, "")})
    assert well.by_id["GPU-0"].healthy
    assert well.by_id["GPU-0"].health_reason == ""
    assert well == inventory(H)


def test_snapshots_are_immutable() -> None:
    snapshot = inventory(H)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.devices[0].health = U  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.backend = "nvml"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(inventory(H, H), inventory(H, H), [], id="no-change"),
        pytest.param(
            inventory(H, H),
            inventory(H, H).with_health({"GPU-1": (U, "XID 79")}),
            [HealthChange("GPU-1", H, U, "XID 79")],
            id="one-falls-ill",
        ),
        pytest.param(
            inventory(U, U),
            inventory(H, U),
            [HealthChange("GPU-0", U, H, "")],
            id="one-recovers",
        ),
        pytest.param(
            inventory(H, H, H),
            inventory(U, H, U),
            [HealthChange("GPU-0", H, U, ""), HealthChange("GPU-2", H, U, "")],
            id="two-change-in-index-order",
        ),
        pytest.param(inventory(H), inventory(H, U), [], id="new-device-is-not-a-change"),
        pytest.param(inventory(H, U), inventory(H), [], id="removed-device-is-not-a-change"),
        pytest.param(
            inventory(H).with_health({"GPU-0": (U, "a")}),
            inventory(H).with_health({"GPU-0": (U, "b")}),
            [],
            id="new-reason-same-health",
        ),
    ],
)
def test_health_changes(before: Inventory, after: Inventory, expected: list[HealthChange]) -> None:
    assert before.health_changes(after) == expected


def test_by_id_finds_every_device() -> None:
    snapshot = inventory(H, U)
    assert list(snapshot.by_id) == ["GPU-0", "GPU-1"]
    assert snapshot.by_id["GPU-1"].health is U


def test_sorted_devices_orders_by_index_then_id() -> None:
    devices = [
        Device(id="b", index=1, uuid="b"),
        Device(id="z", index=0, uuid="z"),
        Device(id="a", index=1, uuid="a"),
    ]
    assert [d.id for d in sorted_devices(devices)] == ["z", "a", "b"]
