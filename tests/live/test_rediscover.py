"""Re-discovery: a changed layout replaces the snapshot, keeping the health of devices still there."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.health.source import HealthSource, HealthWiring
from gpu_device_plugin.inventory import Device, Health, Inventory, SnapshotCell
from gpu_device_plugin.live.rediscover import keep_health, rediscover_once


def inventory(*indexes: int, unhealthy: tuple[int, ...] = ()) -> Inventory:
    return Inventory(
        devices=tuple(
            Device(
                id=f"GPU-{i}",
                index=i,
                uuid=f"GPU-{i}",
                health=Health.UNHEALTHY if i in unhealthy else Health.HEALTHY,
                health_reason="XID 79" if i in unhealthy else "",
            )
            for i in indexes
        ),
        backend="test",
    )


@dataclass
class Backend:
    """Our DiscoveryBackend, answering what the test sets (or failing)."""

    found: list[Inventory | DiscoveryError] = field(default_factory=list)
    name: str = "test"

    def discover(self) -> Inventory:
        answer = self.found.pop(0)
        if isinstance(answer, DiscoveryError):
            raise answer
        return answer

    def health_source(self, wiring: HealthWiring) -> HealthSource | None:
        return None


def test_devices_still_there_keep_their_health_new_ones_come_healthy() -> None:
    merged = keep_health(inventory(0, 1, 2, unhealthy=(1,)), inventory(1, 2, 3))
    assert [(d.id, d.health, d.health_reason) for d in merged.devices] == [
        ("GPU-1", Health.UNHEALTHY, "XID 79"),
        ("GPU-2", Health.HEALTHY, ""),
        ("GPU-3", Health.HEALTHY, ""),
    ]


async def test_a_changed_layout_is_published_with_the_health_kept() -> None:
    cell = SnapshotCell(inventory(0, 1, unhealthy=(1,)))
    # What discovery reads is health as at start: it must not heal GPU 1.
    assert await rediscover_once(Backend([inventory(0, 1, 2)]), cell)
    assert [(d.id, d.health) for d in cell.value.devices] == [
        ("GPU-0", Health.HEALTHY),
        ("GPU-1", Health.UNHEALTHY),
        ("GPU-2", Health.HEALTHY),
    ]


async def test_the_same_layout_publishes_nothing_even_with_other_health() -> None:
    start = inventory(0, 1, unhealthy=(1,))
    cell = SnapshotCell(start)
    assert not await rediscover_once(Backend([inventory(0, 1)]), cell)
    assert cell.value is start
    assert cell.version == 0


async def test_a_failed_discovery_keeps_the_last_snapshot() -> None:
    start = inventory(0, 1)
    cell = SnapshotCell(start)
    assert not await rediscover_once(Backend([DiscoveryError("NVML went away")]), cell)
    assert cell.value is start
