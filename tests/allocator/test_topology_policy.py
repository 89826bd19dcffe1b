"""The topology-aware policy: exact against brute force, known-best answers on presets.

The oracle below is written from the rules in allocator/scoring.py's docstring,
not from the search: every allowed set, ranked by (score, score of the rest,
earliest by index).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_device_plugin.allocator import preferred_allocation, set_score, topology_policy
from gpu_device_plugin.allocator.scoring import (
    EXACT_MAX_CANDIDATES,
    PCIE,
    PER_NVLINK,
    SAME_GPU,
    UNKNOWN,
    WEIGHTS,
    pair_weight,
)
from gpu_device_plugin.backends.fake.spec import FakeConfig, to_inventory
from gpu_device_plugin.backends.fake.topology import FakeTopology
from gpu_device_plugin.errors import RequestError
from gpu_device_plugin.inventory import Device, Inventory, Link, PciePath, Topology

# ---- helpers ----------------------------------------------------------------


def preset_inventory(name: str, count: int) -> Inventory:
    return to_inventory(FakeConfig(count=count, topology=FakeTopology(preset=name)))


def ids(inventory: Inventory, *indexes: int) -> list[str]:
    by_index = {d.index: d.id for d in inventory.devices}
    return [by_index[i] for i in indexes]


def indexes(inventory: Inventory, chosen: Sequence[str]) -> list[int]:
    return sorted(inventory.by_id[i].index for i in chosen)


def ask(
    inventory: Inventory, size: int, available: Sequence[int] | None = None, must: Sequence[int] = ()
) -> list[int]:
    pool = ids(inventory, *(available if available is not None else [d.index for d in inventory.devices]))
    return indexes(inventory, topology_policy(inventory, pool, ids(inventory, *must), size))


def brute_force(inventory: Inventory, available: Sequence[str], must: Sequence[str], size: int) -> list[str]:
    pool = sorted(available, key=lambda i: (inventory.by_id[i].index, i))
    best: tuple[tuple[int, int, tuple[int, ...]], list[str]] | None = None
    for combo in itertools.combinations(pool, size):
        if not set(must) <= set(combo):
            continue
        rest = [i for i in pool if i not in combo]
        order = tuple(-pool.index(i) for i in combo)
        key = (set_score(inventory, combo), set_score(inventory, rest), order)
        if best is None or key > best[0]:
            best = (key, list(combo))
    assert best is not None
    return best[1]


# ---- the weights table ------------------------------------------------------


def test_weights_are_stated_once_with_a_reason_each() -> None:
    names = [w.name for w in WEIGHTS]
    assert len(names) == len(set(names))
    assert all(w.why for w in WEIGHTS)
    assert set(PCIE) == set(PciePath), "every PCIe relationship has a weight"


def test_weights_keep_their_promises() -> None:
    pcie_range = max(PCIE.values()) - min([*PCIE.values(), UNKNOWN])
    assert pcie_range < PER_NVLINK, "one NVLink beats any PCIe path"
    ordered = [PCIE[p] for p in sorted(PciePath)]
    assert ordered == sorted(ordered, reverse=True), "nearer on PCIe weighs more"
    assert PCIE[PciePath.SINGLE_SWITCH] > PCIE[PciePath.HOST_BRIDGE] > PCIE[PciePath.SYSTEM]
    assert PCIE[PciePath.NUMA_NODE] > PCIE[PciePath.SYSTEM] > UNKNOWN
    assert 18 * PER_NVLINK + max(PCIE.values()) < SAME_GPU, "replicas of one GPU pack first"


def _device(index: int, uuid: str | None = None, numa: int | None = None) -> Device:
    return Device(id=f"dev-{index}", index=index, uuid=uuid or f"gpu-{index}", numa_node=numa)


NV2_SYS = Link(nvlinks=2, pcie=PciePath.SYSTEM)
NV12_SWITCH = Link(nvlinks=12, nvswitch=True)
NVLINK_UNREADABLE = Link(nvlinks=None, pcie=PciePath.SINGLE_SWITCH)


@pytest.mark.parametrize(
    ("link", "numa", "expected"),
    [
        pytest.param(NV2_SYS, (0, 1), 2 * PER_NVLINK + PCIE[PciePath.SYSTEM], id="nv2-sys"),
        pytest.param(
            NV12_SWITCH, (0, 0), 12 * PER_NVLINK + PCIE[PciePath.NUMA_NODE], id="nvswitch-same-numa"
        ),
        pytest.param(None, (0, 1), PCIE[PciePath.SYSTEM], id="unknown-pair-across-numa"),
        pytest.param(None, (None, 1), UNKNOWN, id="nothing-known"),
        pytest.param(NVLINK_UNREADABLE, (0, 0), PCIE[PciePath.SINGLE_SWITCH], id="nvlink-unreadable"),
    ],
)
def test_pair_weight(link: Link | None, numa: tuple[int | None, int | None], expected: int) -> None:
    a, b = _device(0, numa=numa[0]), _device(1, numa=numa[1])
    topology = Topology.of({("gpu-0", "gpu-1"): link} if link else {})
    assert pair_weight(a, b, topology) == expected
    assert pair_weight(b, a, topology) == expected


def test_replicas_of_one_gpu_weigh_the_most() -> None:
    assert pair_weight(_device(0, uuid="gpu-x"), _device(1, uuid="gpu-x"), None) == SAME_GPU


# ---- known-best answers on the presets, written down by hand -----------------

CASES = [
    # (preset, count, size, available or None for all, must_include, expected, why)
    ("dgx-1v", 8, 4, None, (), [0, 1, 2, 3], "a fully linked quad (9 NVLinks); 0-3 before 4-7 by index"),
    ("dgx-1v", 8, 2, None, (), [2, 3], "an NV2 pair that also shares a PCIe switch"),
    ("dgx-1v", 8, 3, None, (), [0, 2, 3], "a triangle of 5 NVLinks (NV1+NV2+NV2), the first by index"),
    ("dgx-1v", 8, 8, None, (), [0, 1, 2, 3, 4, 5, 6, 7], "everything"),
    ("dgx-1v", 8, 2, None, (7,), [6, 7], "7's NV2 partner on its own switch (6), not 4 (NV2 via PHB)"),
    ("dgx-1v", 8, 2, (0, 3, 4, 5, 6), (), [0, 3],
     "0-3 and 5-6 are both NV2+PHB; taking 0-3 leaves the 4-5-6 triangle whole"),
    ("dgx-1v", 8, 4, (0, 1, 2, 4, 5, 6, 7), (), [4, 5, 6, 7], "the intact quad, not 0-1-2 plus one"),
    ("dgx-a100", 8, 4, None, (), [0, 1, 2, 3], "one CPU socket; NVSwitch makes NVLink equal"),
    ("dgx-a100", 8, 2, None, (), [0, 1], "a pair behind one PCIe switch tree"),
    ("dgx-a100", 8, 1, (1, 2, 3, 4, 5, 6, 7), (), [1], "the orphan whose switch partner is gone"),
    ("dgx-a100", 8, 2, (1, 2, 3, 4, 5, 6, 7), (), [2, 3], "an intact PXB pair, not the orphan"),
    ("dgx-h100", 8, 4, None, (), [0, 1, 2, 3], "one CPU socket"),
    ("dgx-h100", 8, 4, (2, 3, 4, 5, 6, 7), (), [4, 5, 6, 7], "the whole socket, not two plus two"),
    ("pcie-2numa", 8, 2, None, (), [0, 1], "one PCIe switch"),
    ("pcie-2numa", 8, 4, None, (), [0, 1, 2, 3], "one NUMA node"),
    ("pcie-2numa", 8, 1, (0, 2, 3, 4, 5, 6, 7), (), [0], "the orphan of switch 0"),
    ("pcie-2numa", 8, 2, (0, 2, 3, 4, 5, 6, 7), (), [2, 3], "a whole switch"),
    ("pcie-2numa", 8, 3, (0, 2, 3, 4, 5, 6, 7), (), [0, 2, 3], "the rest of NUMA node 0"),
    ("pcie-2numa", 4, 2, None, (), [0, 1], "one NUMA node"),
    ("dgx-2", 16, 8, None, (), [0, 1, 2, 3, 4, 5, 6, 7], "one board, one CPU"),
    ("dgx-2", 16, 2, None, (), [0, 1], "a leaf PCIe switch"),
    ("dgx-2", 16, 4, None, (), [0, 1, 2, 3], "an upper PCIe switch"),
    ("dgx-2", 16, 8, None, (8,), [8, 9, 10, 11, 12, 13, 14, 15], "the board of the device it must keep"),
    ("dgx-2", 16, 4, (1, 3, 5, 7, 9, 11, 13, 15), (), [1, 3, 5, 7], "same board when leaves are split"),
    ("dgx-2", 16, 2, (0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), (), [2, 3],
     "a whole leaf switch; 0 stays for a single-GPU request"),
    ("dgx-2", 16, 1, (0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), (), [0], "the orphan"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "count", "size", "available", "must", "expected"),
    [pytest.param(*case[:6], id=f"{case[0]}-{case[2]}-{case[6]}") for case in CASES],
)
def test_known_best_answers(
    preset: str,
    count: int,
    size: int,
    available: tuple[int, ...] | None,
    must: tuple[int, ...],
    expected: list[int],
) -> None:
    inventory = preset_inventory(preset, count)
    assert ask(inventory, size, available, must) == expected


def test_dgx_1v_quad_is_fully_nvlinked_and_pairs_are_nv2() -> None:
    inventory = preset_inventory("dgx-1v", 8)
    topology = inventory.topology
    assert topology is not None
    quad = ids(inventory, *ask(inventory, 4))
    for a, b in itertools.combinations(quad, 2):
        link = topology.link(inventory.by_id[a].uuid, inventory.by_id[b].uuid)
        assert link is not None
        assert link.nvlinks
    a, b = ids(inventory, *ask(inventory, 2))
    assert topology.link(inventory.by_id[a].uuid, inventory.by_id[b].uuid) == Link(
        nvlinks=2, pcie=PciePath.SINGLE_SWITCH
    )


@pytest.mark.parametrize(
    ("preset", "count"), [("dgx-1v", 8), ("dgx-a100", 8), ("pcie-2numa", 8), ("dgx-2", 16)]
)
def test_presets_agree_with_brute_force_for_every_size(preset: str, count: int) -> None:
    inventory = preset_inventory(preset, count)
    everything = [d.id for d in inventory.devices]
    rng = random.Random(count)
    for size in range(1, count + 1):
        if count > 8 and size not in (1, 2, 3, 5, 8, 14):
            continue  # C(16, k) brute force is slow for the middle sizes
        assert topology_policy(inventory, everything, [], size) == brute_force(
            inventory, everything, [], size
        )
        fragmented = sorted(rng.sample(everything, k=max(size, count * 2 // 3)))
        assert topology_policy(inventory, fragmented, [], size) == brute_force(
            inventory, fragmented, [], size
        )


# ---- random topologies against the brute-force optimum ------------------------

PCIE_OR_UNKNOWN = st.sampled_from([None, *PciePath])


@st.composite
def links(draw: st.DrawFn) -> Link | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None  # the pair is missing: unknown
    nvlinks = draw(st.one_of(st.none(), st.integers(0, 4)))
    return Link(nvlinks=nvlinks, nvswitch=bool(nvlinks) and draw(st.booleans()), pcie=draw(PCIE_OR_UNKNOWN))


@st.composite
def requests(draw: st.DrawFn, max_devices: int = 8) -> tuple[Inventory, list[str], list[str], int]:
    n = draw(st.integers(1, max_devices))
    # A few devices may be replicas of one physical GPU (same uuid).
    gpu_of = [draw(st.integers(0, i)) if draw(st.integers(0, 5)) == 0 else i for i in range(n)]
    numa = [draw(st.one_of(st.none(), st.integers(0, 1))) for _ in range(n)]
    devices = tuple(
        Device(id=f"dev-{i}", index=i, uuid=f"gpu-{gpu_of[i]}", numa_node=numa[gpu_of[i]]) for i in range(n)
    )
    gpus = sorted({d.uuid for d in devices})
    pairs = {}
    for a, b in itertools.combinations(gpus, 2):
        link = draw(links())
        if link is not None:
            pairs[(a, b)] = link
    topology = None if draw(st.integers(0, 9)) == 0 else Topology.of(pairs)
    inventory = Inventory(devices=devices, backend="test", topology=topology)
    everything = [d.id for d in devices]
    available = draw(st.lists(st.sampled_from(everything), min_size=1, unique=True))
    must = draw(st.lists(st.sampled_from(available), unique=True, max_size=len(available)))
    size = draw(st.integers(max(1, len(must)), len(available)))
    return inventory, available, must, size


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_answer_is_valid_and_optimal(request: tuple[Inventory, list[str], list[str], int]) -> None:
    inventory, available, must, size = request
    chosen = preferred_allocation(inventory, available, must, size, topology_policy)
    assert len(chosen) == size == len(set(chosen))
    assert set(must) <= set(chosen) <= set(available)
    expected = brute_force(inventory, available, must, size)
    assert set_score(inventory, chosen) == set_score(inventory, expected)
    assert chosen == sorted(expected, key=lambda i: inventory.by_id[i].index)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(max_devices=12))
def test_answer_is_optimal_beyond_eight_devices(request: tuple[Inventory, list[str], list[str], int]) -> None:
    inventory, available, must, size = request
    chosen = topology_policy(inventory, available, must, size)
    expected = brute_force(inventory, available, must, size)
    assert chosen == sorted(expected, key=lambda i: inventory.by_id[i].index)


@settings(max_examples=150, deadline=None)
@given(requests(), st.randoms(use_true_random=False))
def test_same_request_same_answer_whatever_the_order(
    request: tuple[Inventory, list[str], list[str], int], rng: random.Random
) -> None:
    inventory, available, must, size = request
    first = topology_policy(inventory, available, must, size)
    shuffled, shuffled_must = available[:], must[:]
    rng.shuffle(shuffled)
    rng.shuffle(shuffled_must)
    assert topology_policy(inventory, shuffled, shuffled_must, size) == first
    assert topology_policy(inventory, available, must, size) == first


# ---- unknown and partial topologies -------------------------------------------


def test_no_topology_and_no_numa_is_the_first_devices_by_index() -> None:
    inventory = to_inventory(FakeConfig(count=6))
    assert inventory.topology is None
    assert ask(inventory, 3, available=(5, 1, 3, 4)) == [1, 3, 4]


def test_no_topology_still_keeps_to_one_numa_node() -> None:
    inventory = to_inventory(FakeConfig(count=8, numa_nodes=2))
    assert ask(inventory, 4, available=(2, 3, 4, 5, 6, 7)) == [4, 5, 6, 7]


def test_partial_topology_scores_what_is_known() -> None:
    # dgx-1v with everything about GPU 2 lost (it fell off the bus).
    full = preset_inventory("dgx-1v", 8)
    assert full.topology is not None
    lost = full.by_id[ids(full, 2)[0]].uuid
    partial = Topology.of([(a, b, link) for a, b, link in full.topology.links if lost not in (a, b)])
    inventory = Inventory(devices=full.devices, backend="fake", topology=partial)
    everything = [d.id for d in inventory.devices]
    for size in range(1, 9):
        chosen = preferred_allocation(inventory, everything, [], size, topology_policy)
        assert chosen == brute_force(inventory, everything, [], size)
    # The best NV2 pair does not need GPU 2; the best quad routes around it.
    assert ask(inventory, 2) == [6, 7]
    assert ask(inventory, 4) == [4, 5, 6, 7]


def test_topology_naming_devices_we_do_not_have_is_harmless() -> None:
    inventory = Inventory(
        devices=(_device(0), _device(1), _device(2)),
        backend="test",
        topology=Topology.of({("gpu-1", "gpu-2"): Link(nvlinks=1), ("gpu-1", "gpu-9"): Link(nvlinks=4)}),
    )
    assert topology_policy(inventory, ["dev-0", "dev-1", "dev-2"], [], 2) == ["dev-1", "dev-2"]


def test_bad_requests_are_still_refused_with_the_ids() -> None:
    inventory = preset_inventory("dgx-1v", 8)
    with pytest.raises(RequestError, match="nope"):
        preferred_allocation(inventory, ["nope", "nope", *ids(inventory, 0)], [], 1, topology_policy)


def test_an_unknown_candidate_never_reaches_the_policy() -> None:
    inventory = preset_inventory("dgx-1v", 8)
    everything = ids(inventory, *range(8))
    assert preferred_allocation(inventory, ["nope", *everything], [], 2, topology_policy) == (
        preferred_allocation(inventory, everything, [], 2, topology_policy)
    )


# ---- beyond the exact limit: the heuristic --------------------------------------


def replicas_inventory(gpus: int, per_gpu: int) -> Inventory:
    devices = tuple(
        Device(id=f"gpu-{g}::{r}", index=g * per_gpu + r, uuid=f"gpu-{g}", numa_node=g * 2 // gpus)
        for g in range(gpus)
        for r in range(per_gpu)
    )
    topology = Topology.of(
        {
            (f"gpu-{a}", f"gpu-{b}"): Link(nvlinks=2 if a // 2 == b // 2 else 0)
            for a, b in itertools.combinations(range(gpus), 2)
        }
    )
    return Inventory(devices=devices, backend="test", topology=topology)


def test_heuristic_packs_replicas_of_one_gpu_first() -> None:
    inventory = replicas_inventory(gpus=8, per_gpu=4)  # 32 devices: past the exact limit
    everything = [d.id for d in inventory.devices]
    assert len(everything) > EXACT_MAX_CANDIDATES
    assert topology_policy(inventory, everything, [], 4) == ["gpu-0::0", "gpu-0::1", "gpu-0::2", "gpu-0::3"]
    chosen = topology_policy(inventory, everything, [], 8)
    assert {inventory.by_id[i].uuid for i in chosen} == {"gpu-0", "gpu-1"}, "two whole NVLinked GPUs"
    chosen = topology_policy(inventory, everything, ["gpu-5::2"], 3)
    assert {inventory.by_id[i].uuid for i in chosen} == {"gpu-5"}


@settings(max_examples=40, deadline=None)
@given(st.integers(17, 40), st.integers(1, 40), st.randoms(use_true_random=False))
def test_heuristic_answers_are_valid_and_deterministic(n: int, size: int, rng: random.Random) -> None:
    size = min(size, n)
    devices = tuple(_device(i, numa=i % 2) for i in range(n))
    pairs = {
        (f"gpu-{a}", f"gpu-{b}"): Link(nvlinks=rng.choice([0, 0, 1, 2]), pcie=rng.choice(list(PciePath)))
        for a, b in itertools.combinations(range(n), 2)
        if rng.random() < 0.8
    }
    inventory = Inventory(devices=devices, backend="test", topology=Topology.of(pairs))
    everything = [d.id for d in devices]
    must = rng.sample(everything, k=rng.randint(0, size))
    chosen = preferred_allocation(inventory, everything, must, size, topology_policy)
    assert len(chosen) == size == len(set(chosen))
    assert set(must) <= set(chosen)
    assert topology_policy(inventory, list(reversed(everything)), must, size) == chosen
