"""The shared-resource policies: exact against brute force over ids, intuitive answers on tables.

The oracle is written from the criteria in allocator/shared_policy.py's
docstring, over every id set the request allows (not over counts), ranked by
the policy's criteria, then by the GPU indexes of the set, then by the ranks of
its replicas (must_include first, lowest replica numbers first).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_device_plugin.allocator.preferred import plan_preferred
from gpu_device_plugin.allocator.shared_layout import SharedLayout, layout_from_inventory
from gpu_device_plugin.allocator.shared_policy import (
    SharedPolicy,
    choose_replicas,
    distributed_policy,
    packed_policy,
)
from gpu_device_plugin.backends.fake.spec import FakeConfig, to_inventory
from gpu_device_plugin.backends.fake.topology import FakeTopology
from gpu_device_plugin.errors import RequestError
from gpu_device_plugin.inventory import Device, Inventory

# ---- helpers ----------------------------------------------------------------


def rid(gpu: int, n: int) -> str:
    return f"GPU-{gpu}::{n}"


def layout(replicas: Sequence[int], weights: Sequence[Sequence[int]] | None = None) -> SharedLayout:
    """GPU g has replicas[g] replicas GPU-g::0.. ; weights default to none known."""
    n = len(replicas)
    w = weights if weights is not None else [[0] * n for _ in range(n)]
    gpu_of = {rid(g, k): f"GPU-{g}" for g in range(n) for k in range(replicas[g])}
    return SharedLayout.of(gpu_of, order=[f"GPU-{g}" for g in range(n)], weights=w)


def all_ids(lay: SharedLayout) -> list[str]:
    return [r for gpu in lay.gpus for r in gpu.replicas]


def per_gpu(lay: SharedLayout, chosen: Sequence[str]) -> list[int]:
    counts = [0] * len(lay.gpus)
    for r in chosen:
        counts[lay.place[r][0]] += 1
    return counts


def objective(
    lay: SharedLayout, available: Sequence[str], chosen: Sequence[str], policy: SharedPolicy
) -> tuple[int, int, int]:
    """Criteria 1 to 3 of the docstring, each as a number to minimise."""
    n = len(lay.gpus)
    x = per_gpu(lay, chosen)
    a = per_gpu(lay, available)
    u = [len(lay.gpus[g].replicas) - a[g] for g in range(n)]
    support = [g for g in range(n) if x[g]]
    score = sum(lay.weights[g][h] for g, h in itertools.combinations(support, 2))
    if policy is SharedPolicy.DISTRIBUTED:
        return (sum((u[g] + x[g]) ** 2 for g in range(n)), -len(support), -score)
    return (len(support), -sum((a[g] - x[g]) ** 2 for g in range(n)), -score)


def brute_force(
    lay: SharedLayout, available: Sequence[str], must: Sequence[str], size: int, policy: SharedPolicy
) -> list[str]:
    best_key = None
    best: list[str] = []
    for combo in itertools.combinations(sorted(available), size):
        if not set(must) <= set(combo):
            continue
        places = sorted(lay.place[r] for r in combo)
        key = (objective(lay, available, combo, policy), [g for g, _ in places], places)
        if best_key is None or key < best_key:
            best_key, best = key, list(combo)
    return best


def in_order(lay: SharedLayout, ids: Sequence[str]) -> list[str]:
    return sorted(ids, key=lay.place.__getitem__)


# ---- exact against brute force ------------------------------------------------


@st.composite
def requests(draw: st.DrawFn) -> tuple[SharedLayout, list[str], list[str], int]:
    gpus = draw(st.integers(1, 4))
    replicas = [draw(st.integers(1, 4)) for _ in range(gpus)]
    w = [[0] * gpus for _ in range(gpus)]
    for g, h in itertools.combinations(range(gpus), 2):
        # Small weights so that ties happen, as they do on real topologies.
        w[g][h] = w[h][g] = draw(st.sampled_from([0, 10, 20, 100, 110, 250]))
    lay = layout(replicas, w)
    everything = all_ids(lay)
    # Whole GPUs free half the time: ties on load, where the topology decides.
    available = [
        r
        for gpu in lay.gpus
        for r in (
            gpu.replicas
            if draw(st.booleans())
            else draw(st.lists(st.sampled_from(gpu.replicas), unique=True))
        )
    ]
    if not available:
        available = [everything[0]]
    size = draw(st.integers(1, len(available)))
    must = draw(st.lists(st.sampled_from(sorted(available)), max_size=size, unique=True))
    return lay, available, must, size


@pytest.mark.parametrize("policy", list(SharedPolicy), ids=str)
@settings(max_examples=400, deadline=None)
@given(case=requests(), shuffle=st.randoms(use_true_random=False))
def test_matches_brute_force_and_is_valid(
    policy: SharedPolicy, case: tuple[SharedLayout, list[str], list[str], int], shuffle: random.Random
) -> None:
    lay, available, must, size = case
    chosen = choose_replicas(lay, available, must, size, policy)

    assert len(chosen) == size
    assert len(set(chosen)) == size
    assert set(chosen) <= set(available)
    assert set(must) <= set(chosen)
    expected = brute_force(lay, available, must, size, policy)
    assert objective(lay, available, chosen, policy) == objective(lay, available, expected, policy)
    assert chosen == in_order(lay, expected)
    # The order of the request's ids changes nothing.
    mixed_available, mixed_must = list(available), list(must)
    shuffle.shuffle(mixed_available)
    shuffle.shuffle(mixed_must)
    assert choose_replicas(lay, mixed_available, mixed_must, size, policy) == chosen


# ---- the intuitive cases -------------------------------------------------------

NVLINK_PAIRS_8 = [[0] * 8 for _ in range(8)]
for _g in range(0, 8, 2):
    NVLINK_PAIRS_8[_g][_g + 1] = NVLINK_PAIRS_8[_g + 1][_g] = 100
    for _h in range(8):
        if _h // 2 != _g // 2:
            NVLINK_PAIRS_8[_g][_h] = NVLINK_PAIRS_8[_h][_g] = 10
            NVLINK_PAIRS_8[_g + 1][_h] = NVLINK_PAIRS_8[_h][_g + 1] = 10


def taken(lay: SharedLayout, *ids: str) -> list[str]:
    gone = set(ids)
    return [r for r in all_ids(lay) if r not in gone]


TABLE = [
    pytest.param(
        SharedPolicy.DISTRIBUTED,
        layout([4] * 4),
        None,
        [],
        4,
        [1, 1, 1, 1],
        id="distributed-spreads-4-over-4",
    ),
    pytest.param(SharedPolicy.PACKED, layout([4] * 4), None, [], 4, [4, 0, 0, 0], id="packed-fills-one"),
    pytest.param(
        SharedPolicy.PACKED,
        layout([4] * 4),
        [rid(2, 0), rid(2, 1)],
        [],
        2,
        [0, 0, 2, 0],
        id="packed-prefers-partly-used-gpu",
    ),
    pytest.param(
        SharedPolicy.DISTRIBUTED,
        layout([4] * 4),
        [rid(0, 0), rid(1, 0), rid(2, 0)],
        [],
        1,
        [0, 0, 0, 1],
        id="distributed-avoids-partly-used-gpus",
    ),
    pytest.param(
        SharedPolicy.DISTRIBUTED,
        layout([4] * 2),
        [rid(0, 0), rid(0, 1), rid(0, 2)],
        [],
        2,
        [0, 2],
        id="distributed-two-on-unshared-before-one-on-busy",
    ),
    pytest.param(
        SharedPolicy.PACKED,
        layout([4] * 4),
        [rid(0, 0), rid(0, 1), rid(0, 2)],
        [],
        3,
        [0, 3, 0, 0],
        id="packed-skips-a-gpu-too-full-to-fit",
    ),
    pytest.param(
        SharedPolicy.DISTRIBUTED,
        layout([16] * 8, NVLINK_PAIRS_8),
        [rid(0, 0)],
        [],
        2,
        [0, 0, 1, 1, 0, 0, 0, 0],
        id="distributed-nvlink-pair-of-unshared",
    ),
    pytest.param(
        SharedPolicy.PACKED,
        layout([2] * 8, NVLINK_PAIRS_8),
        [rid(g, 0) for g in range(8)],
        [],
        2,
        [1, 1, 0, 0, 0, 0, 0, 0],
        id="packed-nvlink-pair-when-no-gpu-fits",
    ),
    pytest.param(
        SharedPolicy.DISTRIBUTED,
        layout([4] * 4),
        None,
        [rid(3, 2), rid(3, 3)],
        3,
        [1, 0, 0, 2],
        id="distributed-must-include-honoured",
    ),
    pytest.param(
        SharedPolicy.PACKED,
        layout([4] * 4),
        None,
        [rid(1, 3)],
        2,
        [0, 2, 0, 0],
        id="packed-fills-around-must-include",
    ),
]


@pytest.mark.parametrize(("policy", "lay", "gone", "must", "size", "expected"), TABLE)
def test_table(
    policy: SharedPolicy,
    lay: SharedLayout,
    gone: list[str] | None,
    must: list[str],
    size: int,
    expected: list[int],
) -> None:
    available = taken(lay, *(gone or []))
    chosen = choose_replicas(lay, available, must, size, policy)
    assert per_gpu(lay, chosen) == expected
    assert set(must) <= set(chosen)


def test_lowest_replica_numbers_and_must_include_first() -> None:
    lay = layout([4, 4])
    chosen = choose_replicas(lay, all_ids(lay), [rid(0, 3)], 2, SharedPolicy.PACKED)
    assert chosen == [rid(0, 0), rid(0, 3)]


# ---- through an inventory, as the server calls it ----------------------------


def replica_inventory(preset: str, count: int, replicas: int) -> Inventory:
    """A preset's GPUs with `replicas` ids each, carrying their GPU's UUID (time-slicing)."""
    whole = to_inventory(FakeConfig(count=count, topology=FakeTopology(preset=preset)))
    devices = tuple(
        Device(id=f"{d.uuid}::{k}", index=d.index, uuid=d.uuid, numa_node=d.numa_node)
        for d in whole.devices
        for k in range(replicas)
    )
    return Inventory(devices=devices, backend="fake", topology=whole.topology)


def gpu_indexes(inventory: Inventory, chosen: Sequence[str]) -> list[int]:
    return sorted(inventory.by_id[i].index for i in chosen)


def test_inventory_distributed_takes_an_nvlinked_pair() -> None:
    inventory = replica_inventory("dgx-1v", 8, 4)
    everything = [d.id for d in inventory.devices]
    chosen = plan_preferred(inventory, everything, [], 2, distributed_policy).ids
    first, second = gpu_indexes(inventory, chosen)
    lay = layout_from_inventory(inventory)
    best = max(lay.weights[g][h] for g, h in itertools.combinations(range(8), 2))
    assert first != second
    assert lay.weights[first][second] == best


def test_inventory_packed_keeps_to_one_gpu() -> None:
    inventory = replica_inventory("dgx-a100", 8, 4)
    everything = [d.id for d in inventory.devices]
    chosen = plan_preferred(inventory, everything, [], 3, packed_policy).ids
    assert gpu_indexes(inventory, chosen) == [0, 0, 0]


def test_mig_instances_by_parent() -> None:
    parents = to_inventory(FakeConfig(count=2)).devices
    instances = tuple(
        Device(id=f"MIG-{p.index}-{k}", index=p.index * 7 + k, uuid=f"MIG-{p.index}-{k}")
        for p in parents
        for k in range(3)
    )
    parent = {d.id: parents[int(d.id.split("-")[1])].uuid for d in instances}
    inventory = Inventory(devices=instances, backend="fake")
    lay = layout_from_inventory(inventory, parent_of=lambda d: parent[d.id], parents=parents)
    assert [len(g.replicas) for g in lay.gpus] == [3, 3]
    ids_ = [d.id for d in instances]
    assert choose_replicas(lay, ids_, [], 2) == ["MIG-0-0", "MIG-1-0"]
    assert choose_replicas(lay, ids_, [], 2, SharedPolicy.PACKED) == ["MIG-0-0", "MIG-0-1"]


# ---- bad input -----------------------------------------------------------------


def test_unknown_id_is_a_request_error() -> None:
    lay = layout([2])
    with pytest.raises(RequestError, match="unknown device ids 'GPU-9::0'"):
        choose_replicas(lay, [rid(0, 0), "GPU-9::0"], [], 1)


def test_bad_size_is_a_request_error() -> None:
    lay = layout([2])
    with pytest.raises(RequestError, match="larger than available"):
        choose_replicas(lay, [rid(0, 0)], [], 2)


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        pytest.param([[0, 1], [2, 0]], "symmetric", id="asymmetric"),
        pytest.param([[0, -1], [-1, 0]], "negative", id="negative"),
        pytest.param([[0]], "2 x 2", id="wrong-shape"),
    ],
)
def test_bad_weights_are_refused(weights: list[list[int]], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        layout([1, 1], weights)
