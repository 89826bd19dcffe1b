"""check_allocatable: unknown, duplicate and unhealthy ids, each named in the message."""

from __future__ import annotations

import pytest

from gpu_device_plugin.allocator import check_allocatable, check_bounds, check_containers
from gpu_device_plugin.errors import DeviceUnavailableError, RequestError
from gpu_device_plugin.inventory import Device, Health, Inventory


def inventory() -> Inventory:
    return Inventory(
        devices=(
            Device(id="GPU-0", index=0, uuid="GPU-0"),
            Device(id="GPU-1", index=1, uuid="GPU-1"),
            Device(id="GPU-2", index=2, uuid="GPU-2", health=Health.UNHEALTHY, health_reason="XID 79"),
            Device(id="GPU-3", index=3, uuid="GPU-3", health=Health.UNHEALTHY, health_reason="XID 48"),
        ),
        backend="fake",
    )


@pytest.mark.parametrize(
    "ids",
    [
        pytest.param([], id="empty"),
        pytest.param(["GPU-0"], id="one"),
        pytest.param(["GPU-1", "GPU-0"], id="two-any-order"),
    ],
)
def test_known_healthy_distinct_ids_pass(ids: list[str]) -> None:
    check_allocatable(inventory(), ids, what="devices_ids")


@pytest.mark.parametrize(
    ("ids", "error", "named", "phrase"),
    [
        pytest.param(["GPU-9"], RequestError, ["GPU-9"], "unknown device ids", id="unknown"),
        pytest.param(
            ["GPU-0", "GPU-x", "GPU-y"],
            RequestError,
            ["GPU-x", "GPU-y"],
            "unknown device ids",
            id="two-unknown",
        ),
        pytest.param(["GPU-0", "GPU-0"], RequestError, ["GPU-0"], "named more than once", id="duplicate"),
        pytest.param(
            ["GPU-0", "GPU-1", "GPU-0", "GPU-1"],
            RequestError,
            ["GPU-0", "GPU-1"],
            "named more than once",
            id="two-duplicates",
        ),
        pytest.param(["GPU-2"], DeviceUnavailableError, ["GPU-2"], "unhealthy", id="unhealthy"),
        pytest.param(
            ["GPU-0", "GPU-3", "GPU-2"],
            DeviceUnavailableError,
            ["GPU-2", "GPU-3"],
            "unhealthy",
            id="two-unhealthy",
        ),
        # An unknown id is the client's mistake and is reported before anything else.
        pytest.param(["GPU-2", "GPU-9"], RequestError, ["GPU-9"], "unknown", id="unknown-first"),
    ],
)
def test_bad_ids_are_refused_naming_every_offender(
    ids: list[str], error: type[RequestError], named: list[str], phrase: str
) -> None:
    with pytest.raises(RequestError) as caught:
        check_allocatable(inventory(), ids, what="devices_ids")

    assert type(caught.value) is error
    message = str(caught.value)
    assert message.startswith("devices_ids: ")
    assert phrase in message
    for device_id in named:
        assert repr(device_id) in message
    assert sorted(caught.value.ids) == sorted(set(caught.value.ids)) == named


def test_healthy_ids_are_not_named_in_an_unhealthy_error() -> None:
    with pytest.raises(DeviceUnavailableError) as caught:
        check_allocatable(inventory(), ["GPU-0", "GPU-2"], what="devices_ids")
    assert "GPU-0" not in str(caught.value)


# ---- bounds: what no kubelet could send, refused early with a short message ----


def test_more_ids_than_devices_is_refused_naming_only_a_few() -> None:
    many = [f"GPU-{n}" for n in range(10_000)]
    with pytest.raises(RequestError) as caught:
        check_bounds(many, what="devices_ids", limit=8)
    message = str(caught.value)
    assert "names 10,000 devices, more than the 8 this plugin has" in message
    assert len(message) < 400
    assert "and 9,995 more" in message
    assert len(caught.value.ids) == 5


def test_an_id_longer_than_63_characters_is_unknown_and_cut() -> None:
    huge = "G" * (1 << 20)
    with pytest.raises(RequestError) as caught:
        check_bounds(["GPU-0", huge], what="devices_ids", limit=8)
    message = str(caught.value)
    assert message.startswith("devices_ids: unknown device ids ")
    assert "(1,048,576 characters)" in message
    assert len(message) < 200
    assert all(len(i) < 80 for i in caught.value.ids)


def test_an_id_of_63_characters_is_within_bounds() -> None:
    check_bounds(["G" * 63] * 8, what="devices_ids", limit=8)


def test_more_containers_than_devices_is_refused() -> None:
    with pytest.raises(RequestError, match="9 containers, more than the 8 devices"):
        check_containers(9, limit=8)
    check_containers(8, limit=8)


def test_ten_thousand_unknown_ids_make_a_short_message() -> None:
    unknown = [f"nope-{n:05}" for n in range(10_000)]
    big = Inventory(
        devices=tuple(Device(id=f"GPU-{n}", index=n, uuid=f"GPU-{n}") for n in range(10_000)),
        backend="fake",
    )
    with pytest.raises(RequestError) as caught:
        check_allocatable(big, unknown, what="devices_ids")
    message = str(caught.value)
    assert message == (
        "devices_ids: unknown device ids 'nope-00000', 'nope-00001', 'nope-00002', 'nope-00003', "
        "'nope-00004' and 9,995 more"
    )


def test_an_unhealthy_device_in_tolerate_is_allocatable() -> None:
    check_allocatable(inventory(), ["GPU-0", "GPU-2"], what="devices_ids", tolerate={"GPU-2"})
    with pytest.raises(DeviceUnavailableError, match="GPU-3"):
        check_allocatable(inventory(), ["GPU-2", "GPU-3"], what="devices_ids", tolerate={"GPU-2"})
