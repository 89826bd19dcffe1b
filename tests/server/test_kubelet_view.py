"""KubeletView: which unhealthy devices the kubelet may still have chosen in good faith."""

from __future__ import annotations

import pytest

from gpu_device_plugin.inventory import Device, Health, Inventory
from gpu_device_plugin.server.kubelet_view import KubeletView


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def snapshot(*unhealthy: int, count: int = 4) -> Inventory:
    return Inventory(
        devices=tuple(
            Device(
                id=f"GPU-{i}",
                index=i,
                uuid=f"GPU-{i}",
                health=Health.UNHEALTHY if i in unhealthy else Health.HEALTHY,
            )
            for i in range(count)
        ),
        backend="fake",
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def view(clock: Clock) -> KubeletView:
    view = KubeletView(grace_s=1.0, clock=clock)
    view.streams = 1
    view.sent(snapshot())
    return view


def test_published_but_not_yet_sent_is_racing(view: KubeletView) -> None:
    assert view.racing(snapshot(2)) == {"GPU-2": None}


def test_sent_moments_ago_is_racing_until_the_grace_ends(view: KubeletView, clock: Clock) -> None:
    view.sent(snapshot(2))
    clock.now += 0.4
    assert view.racing(snapshot(2)) == {"GPU-2": pytest.approx(0.4)}
    clock.now += 0.6
    assert view.racing(snapshot(2)) == {}


def test_a_later_snapshot_does_not_restart_the_grace(view: KubeletView, clock: Clock) -> None:
    view.sent(snapshot(2))
    clock.now += 0.8
    view.sent(snapshot(2, 3))
    clock.now += 0.3
    assert view.racing(snapshot(2, 3)) == {"GPU-3": pytest.approx(0.3)}


def test_never_shown_healthy_gets_no_grace(clock: Clock) -> None:
    view = KubeletView(grace_s=1.0, clock=clock)
    view.streams = 1
    view.sent(snapshot(1))
    assert view.racing(snapshot(1)) == {}


def test_no_stream_means_no_kubelet_is_choosing(view: KubeletView) -> None:
    view.streams = 0
    assert view.racing(snapshot(2)) == {}


def test_recovery_then_failure_starts_a_new_grace(view: KubeletView, clock: Clock) -> None:
    view.sent(snapshot(2))
    clock.now += 5
    view.sent(snapshot())
    view.sent(snapshot(2))
    clock.now += 0.5
    assert view.racing(snapshot(2)) == {"GPU-2": pytest.approx(0.5)}


def test_most_devices_remembers_the_largest_snapshot_sent(view: KubeletView) -> None:
    view.sent(snapshot(count=2))
    assert view.most_devices == 4
