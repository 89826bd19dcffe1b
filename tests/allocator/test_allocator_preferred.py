"""GetPreferredAllocation: structural mistakes are refused, health races answered; in-order is stable."""

from __future__ import annotations

import itertools

import pytest

from gpu_device_plugin.allocator import in_order_policy, plan_preferred, preferred_allocation
from gpu_device_plugin.errors import RequestError
from gpu_device_plugin.inventory import Device, Health, Inventory


def gpu(index: int, health: Health = Health.HEALTHY) -> Device:
    return Device(id=f"GPU-{index}", index=index, uuid=f"GPU-{index}", health=health)


def eight(unhealthy: tuple[int, ...] = ()) -> Inventory:
    return Inventory(
        devices=tuple(gpu(i, Health.UNHEALTHY if i in unhealthy else Health.HEALTHY) for i in range(8)),
        backend="fake",
    )


def ids(*indices: int) -> list[str]:
    return [f"GPU-{i}" for i in indices]


@pytest.mark.parametrize(
    ("available", "must_include", "size", "expected"),
    [
        pytest.param(ids(0, 1, 2, 3), [], 2, ids(0, 1), id="lowest-indices-first"),
        pytest.param(ids(3, 1, 2, 0), [], 2, ids(0, 1), id="available-order-ignored"),
        pytest.param(ids(0, 1, 2, 3), ids(2), 3, ids(2, 0, 1), id="must-include-first"),
        pytest.param(ids(0, 1, 2, 3), ids(3, 1), 2, ids(3, 1), id="must-include-only-kept-in-order"),
        pytest.param(ids(0, 1, 2, 3), ids(3, 1), 4, ids(3, 1, 0, 2), id="must-include-then-rest"),
        pytest.param(ids(5, 7), [], 2, ids(5, 7), id="all-available"),
        pytest.param(ids(6), ids(6), 1, ids(6), id="single"),
        pytest.param(ids(7, 6, 5, 4, 3, 2, 1, 0), [], 8, ids(0, 1, 2, 3, 4, 5, 6, 7), id="all-eight"),
    ],
)
def test_in_order_policy(
    available: list[str], must_include: list[str], size: int, expected: list[str]
) -> None:
    assert preferred_allocation(eight(), available, must_include, size) == expected


def test_in_order_policy_is_stable_whatever_the_input_order() -> None:
    answers = {
        tuple(preferred_allocation(eight(), list(order), ["GPU-4"], 3))
        for order in itertools.permutations(ids(1, 2, 4, 6))
    }
    assert answers == {("GPU-4", "GPU-1", "GPU-2")}


def test_policy_is_pluggable() -> None:
    def reverse(inv: Inventory, available: object, must_include: object, size: int) -> list[str]:
        return ids(7, 6)[:size]

    assert preferred_allocation(eight(), ids(6, 7), [], 2, policy=reverse) == ids(7, 6)
    assert in_order_policy(eight(), ids(6, 7), [], 2) == ids(6, 7)


@pytest.mark.parametrize(
    ("available", "must_include", "size", "error", "phrase", "named"),
    [
        pytest.param(
            ids(0, 1),
            ids(2),
            1,
            RequestError,
            "not within available_deviceIDs",
            ids(2),
            id="must-include-outside-available",
        ),
        pytest.param(
            ids(0, 1, 2),
            ids(0, 1),
            1,
            RequestError,
            "smaller than must_include",
            ids(0, 1),
            id="size-below-must-include",
        ),
        pytest.param(
            ids(0, 1),
            [],
            3,
            RequestError,
            "larger than available",
            ids(0, 1),
            id="size-above-available",
        ),
        pytest.param(ids(0, 1), [], 0, RequestError, "at least 1", [], id="size-zero"),
        pytest.param(ids(0, 1), [], -1, RequestError, "at least 1", [], id="size-negative"),
        pytest.param(
            ids(0, 0, 1), [], 1, RequestError, "more than once", ids(0), id="duplicate-in-available"
        ),
        pytest.param(
            ids(0, 1), ids(1, 1), 2, RequestError, "more than once", ids(1), id="duplicate-in-must-include"
        ),
    ],
)
def test_bad_requests_are_refused(
    available: list[str],
    must_include: list[str],
    size: int,
    error: type[RequestError],
    phrase: str,
    named: list[str],
) -> None:
    with pytest.raises(RequestError) as caught:
        preferred_allocation(eight(unhealthy=(3,)), available, must_include, size)

    assert type(caught.value) is error
    assert phrase in str(caught.value)
    for device_id in named:
        assert repr(device_id) in str(caught.value)


# The kubelet's view lags ours by one ListAndWatch message: these are valid from
# where it stands, so they get an answer (KUBELET.md §6), healthy devices first.
@pytest.mark.parametrize(
    ("available", "must_include", "size", "expected", "unhealthy", "unknown", "used"),
    [
        pytest.param(ids(0, 3), [], 1, ids(0), ids(3), [], [], id="unhealthy-skipped-when-healthy-suffice"),
        pytest.param(ids(3, 4), [], 1, ids(4), ids(3), [], [], id="healthy-preferred-over-lower-index"),
        pytest.param(ids(0, 3), [], 2, ids(0, 3), ids(3), [], ids(3), id="unhealthy-fills-the-size"),
        pytest.param(ids(3), [], 1, ids(3), ids(3), [], ids(3), id="only-unhealthy"),
        pytest.param(
            ["GPU-9", *ids(0)], [], 1, ids(0), [], ["GPU-9"], [], id="unknown-skipped-when-healthy-suffice"
        ),
        pytest.param(
            ["GPU-9", *ids(3, 0)],
            [],
            3,
            [*ids(0, 3), "GPU-9"],
            ids(3),
            ["GPU-9"],
            ["GPU-3", "GPU-9"],
            id="healthy-then-unhealthy-then-unknown",
        ),
        pytest.param(
            ids(0, 1, 3), ids(3), 2, ids(3, 0), ids(3), [], ids(3), id="unhealthy-must-include-kept"
        ),
        pytest.param(
            ["GPU-9", *ids(0, 1)],
            ["GPU-9"],
            2,
            ["GPU-0", "GPU-9"],
            [],
            ["GPU-9"],
            ["GPU-9"],
            id="unknown-must-include-kept",
        ),
    ],
)
def test_health_races_are_answered(
    available: list[str],
    must_include: list[str],
    size: int,
    expected: list[str],
    unhealthy: list[str],
    unknown: list[str],
    used: list[str],
) -> None:
    plan = plan_preferred(eight(unhealthy=(3,)), available, must_include, size)
    assert plan.ids == expected
    assert len(plan.ids) == size
    assert set(must_include) <= set(plan.ids) <= set(available)
    assert (list(plan.unhealthy), list(plan.unknown), sorted(plan.used)) == (unhealthy, unknown, used)
    assert plan.worked_around


def test_a_plain_request_works_around_nothing() -> None:
    plan = plan_preferred(eight(unhealthy=(3,)), ids(0, 1, 2), [], 2)
    assert plan.ids == ids(0, 1)
    assert not plan.worked_around
