"""Topology-aware preferred allocation: the best-linked set that leaves the best rest.

The score of a set of devices is the sum, over every pair in it, of the weight of
what connects the pair (`WEIGHTS`, the one table of weights). Among the sets a
request allows (every must_include device, only available devices, exactly
`size` of them) `topology_policy` returns:

1. one with the highest score;
2. among those, the one that leaves the best rest: the highest score of the
   devices it leaves available (available minus chosen). Because the score of
   everything available is fixed, this is the set with the weakest links to
   what it leaves behind, so a request takes a whole well-linked group (or the
   odd device out) rather than breaking up a group the next request could use;
3. among those, the first by device index (the smallest sorted tuple of
   indexes), so the same request always gets the same answer.

Up to `EXACT_MAX_CANDIDATES` free candidates (available minus must_include) the
answer is exact: a depth-first branch and bound over devices in index order,
pruned by an admissible bound (see `_exact`). Beyond that a documented greedy
heuristic answers (see `_heuristic`); it is not guaranteed optimal.

What the topology does not say scores nothing and is never an error: with no
topology at all, the NUMA nodes of the devices still count, and with nothing
known every set ties and the answer is the first devices by index.

Pure functions: no I/O, no clock, no logging (discovery logs what it could not read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gpu_device_plugin.inventory import Device, Inventory, PciePath, Topology


@dataclass(frozen=True, slots=True)
class Weight:
    name: str
    value: int
    why: str


# The weight of one pair of devices in a set. A link's weight is its NVLink part
# plus its PCIe part, so among equally NVLinked pairs the closer on PCIe wins.
WEIGHTS: Final[tuple[Weight, ...]] = (
    Weight(
        "same-gpu",
        10_000,
        "replicas of one physical GPU share its memory and need no link at all: "
        "pack them together before anything else",
    ),
    Weight(
        "nvlink",
        100,
        "per active NVLink, direct or through NVSwitch: bandwidth grows with every link, "
        "and one link (100) outweighs the whole PCIe range below (60 - 0), so NVLink beats "
        "any PCIe path and more links beat fewer",
    ),
    Weight("BOARD", 60, "two GPUs on one card: the shortest PCIe path there is"),
    Weight("PIX", 50, "behind one PCIe switch: peer-to-peer traffic never leaves the switch"),
    Weight("PXB", 40, "behind several PCIe switches, but not through the CPU"),
    Weight("PHB", 30, "through the CPU's PCIe host bridge: peer traffic crosses the root complex"),
    Weight(
        "NODE",
        20,
        "between host bridges of one NUMA node; also assumed for two GPUs whose PCIe path "
        "is unknown but whose NUMA node is the same",
    ),
    Weight(
        "SYS",
        10,
        "across NUMA nodes (QPI/UPI, Infinity Fabric): the slowest path, but a known one; "
        "also assumed for an unknown path between different NUMA nodes",
    ),
    Weight(
        "unknown",
        0,
        "nothing known about the pair: no credit, so devices we can vouch for come first, "
        "and never a refusal",
    ),
)

_BY_NAME: Final = {w.name: w.value for w in WEIGHTS}
SAME_GPU: Final = _BY_NAME["same-gpu"]
PER_NVLINK: Final = _BY_NAME["nvlink"]
UNKNOWN: Final = _BY_NAME["unknown"]
PCIE: Final = {path: _BY_NAME[path.key] for path in PciePath}

# Largest number of free candidates answered exactly: C(16, 8) = 12870 sets at
# worst, of which the bound visits a few dozen search nodes on the presets and
# under a thousand on random weights. Beyond it, the heuristic.
EXACT_MAX_CANDIDATES: Final = 16
# Seeds tried by the heuristic: each grows one set greedily.
HEURISTIC_SEEDS: Final = 8


def pair_weight(a: Device, b: Device, topology: Topology | None) -> int:
    """The weight of the pair (a, b) from WEIGHTS; unknown parts score nothing."""
    if a.uuid == b.uuid:
        return SAME_GPU
    link = topology.link(a.uuid, b.uuid) if topology is not None else None
    nvlinks = link.nvlinks if link is not None else None
    pcie = link.pcie if link is not None else None
    if pcie is None and a.numa_node is not None and b.numa_node is not None:
        pcie = PciePath.NUMA_NODE if a.numa_node == b.numa_node else PciePath.SYSTEM
    return (nvlinks or 0) * PER_NVLINK + (UNKNOWN if pcie is None else PCIE[pcie])


def weight_matrix(devices: Sequence[Device], topology: Topology | None) -> list[list[int]]:
    n = len(devices)
    matrix = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i][j] = matrix[j][i] = pair_weight(devices[i], devices[j], topology)
    return matrix


def set_score(inventory: Inventory, ids: Sequence[str]) -> int:
    """The score of a set of devices: the sum of its pairs' weights."""
    devices = [inventory.by_id[i] for i in ids]
    return sum(
        pair_weight(devices[i], devices[j], inventory.topology)
        for i in range(len(devices))
        for j in range(i + 1, len(devices))
    )


def topology_policy(
    inventory: Inventory, available: Sequence[str], must_include: Sequence[str], size: int
) -> list[str]:
    """A PreferredPolicy: the best set for the request, as the module docstring defines it.

    Assumes a request validated by `preferred_allocation`. Returns ids in index order.
    """
    devices = sorted((inventory.by_id[i] for i in available), key=lambda d: (d.index, d.id))
    if size >= len(devices):
        return [d.id for d in devices]
    must = set(must_include)
    fixed = [k for k, d in enumerate(devices) if d.id in must]
    free = [k for k, d in enumerate(devices) if d.id not in must]
    slots = size - len(fixed)
    if slots <= 0:
        return [devices[k].id for k in fixed]
    w = weight_matrix(devices, inventory.topology)
    degree = [sum(row) for row in w]
    # One integer objective for rules 1 and 2. With S the chosen set and R the
    # rest: score(R) = score(all) + score(S) - sum of degree(i) over i in S, so
    # BIG * score(S) + score(R) orders sets by rule 1, then rule 2, whenever
    # BIG > score(all); dropping the constant leaves
    #   (BIG + 1) * score(S) - sum(degree(i) for i in S),
    # a sum of pair terms plus one term per device, which is what the search takes.
    scale = sum(degree) // 2 + 2
    gain = [scale * sum(w[c][m] for m in fixed) - degree[c] for c in free]
    pairs = [[scale * w[c][d] for d in free] for c in free]
    if len(free) <= EXACT_MAX_CANDIDATES:
        picked = _exact(gain, pairs, slots)
    else:
        picked = _heuristic(gain, pairs, slots)
    return [devices[k].id for k in sorted(fixed + [free[k] for k in picked])]


# ---- the search -----------------------------------------------------------
# Candidates are numbered 0..p-1 in device-index order; `gain[j]` is candidate
# j's own term and `pairs[j][l]` (>= 0, zero diagonal) the term of the pair. The
# value of a selection is the sum of its gains and of its pairs' terms.


def _value(gain: Sequence[int], pairs: Sequence[Sequence[int]], picked: Sequence[int]) -> int:
    return sum(gain[j] for j in picked) + sum(
        pairs[a][b] for i, a in enumerate(picked) for b in picked[i + 1 :]
    )


def _exact(gain: Sequence[int], pairs: Sequence[Sequence[int]], slots: int) -> list[int]:
    """The best `slots` candidates; among equal values the first in index order.

    Depth-first over candidates in index order, "take j" before "skip j", so
    selections are met in lexicographic order and only a strictly better one
    replaces the best so far: ties resolve to the first, as rule 3 says.

    Bound at a node where `taken` is fixed, t more are needed, and only the
    candidates from `pos` on remain: each candidate j adds
      base[j] = gain[j] + its pair terms with the taken ones
    plus its share of the pairs among the t added. Give each such pair half to
    either end: j's share is at most half the sum of its t-1 largest pair
    terms with the remaining candidates, top(pos, j, t-1). So
      value(taken) + the t largest of (base[j] + top(pos, j, t-1) / 2)
    is at least the value of any completion: admissible, and tight when pairs
    weigh nearly the same (NVSwitch), where the first leaf is the answer. A
    subtree whose bound does not beat the best so far cannot hold a better
    selection, nor (being later in index order) a tie that should win.

    One greedy set (`_grow` from the most promising seed) gives the best value
    to beat from the start, minus one so that an equal but earlier selection is
    still found: it prunes from the first node. (The full heuristic costs more
    than it saves at these sizes.)
    """
    p = len(gain)
    if slots >= p:
        return list(range(p))
    heaviest = [_heaviest_first(pairs[j], j) for j in range(p)]
    tops_from: dict[int, list[list[int]]] = {}

    def tops(pos: int) -> list[list[int]]:
        # tops(pos)[j - pos][k]: sum of j's k largest pair terms with candidates >= pos.
        cached = tops_from.get(pos)
        if cached is None:
            need = min(slots - 1, p - pos - 1)
            cached = []
            for j in range(pos, p):
                row = pairs[j]
                sums = [0]
                for k in heaviest[j]:
                    if k >= pos:
                        sums.append(sums[-1] + row[k])
                        if len(sums) > need:
                            break
                cached.append(sums)
            tops_from[pos] = cached
        return cached

    seed = _grow(gain, pairs, slots, _seeds(gain, pairs, slots)[0])
    best_value = _value(gain, pairs, seed) - 1
    best: list[int] = seed
    taken: list[int] = []

    def search(pos: int, need: int, value: int, base: list[int]) -> None:
        nonlocal best_value, best
        left = p - pos
        if need == 1:
            j = max(range(pos, p), key=base.__getitem__)  # first of the largest
            if value + base[j] > best_value:
                best_value, best = value + base[j], [*taken, j]
            return
        if left == need:
            rest = range(pos, p)
            total = (
                value + sum(base[j] for j in rest) + sum(pairs[a][b] for a in rest for b in range(a + 1, p))
            )
            if total > best_value:
                best_value, best = total, [*taken, *rest]
            return
        top = tops(pos)
        bounds = sorted((2 * base[j] + top[j - pos][need - 1] for j in range(pos, p)), reverse=True)
        if 2 * value + sum(bounds[:need]) <= 2 * best_value:
            return
        taken.append(pos)
        row = pairs[pos]
        search(pos + 1, need - 1, value + base[pos], [b + x for b, x in zip(base, row, strict=True)])
        taken.pop()
        if left - 1 >= need:
            search(pos + 1, need, value, base)

    search(0, slots, 0, list(gain))
    return best


def _heaviest_first(row: Sequence[int], j: int) -> list[int]:
    """The other candidates, heaviest pair term with j first (ties by index)."""
    return sorted((k for k in range(len(row)) if k != j), key=lambda k: -row[k])


def _heuristic(gain: Sequence[int], pairs: Sequence[Sequence[int]], slots: int) -> list[int]:
    """A good selection, fast, not always the best: for more than EXACT_MAX_CANDIDATES.

    1. Seeds: the HEURISTIC_SEEDS candidates with the highest optimistic value
       (own gain plus their slots-1 heaviest pair terms), ties by index.
    2. From each seed, grow greedily: add the candidate that adds the most
       (ties by index) until the set is full. Replicas of one physical GPU
       weigh the most (SAME_GPU), so they are packed together first.
    3. Improve by single swaps (one in, one out) while any raises the value.
    The best grown set wins; ties go to the first in index order.
    """
    p = len(gain)
    if slots >= p:
        return list(range(p))
    best: list[int] = []
    best_key: tuple[int, tuple[int, ...]] | None = None
    for seed in _seeds(gain, pairs, slots)[:HEURISTIC_SEEDS]:
        picked = _improve(gain, pairs, _grow(gain, pairs, slots, seed))
        key = (_value(gain, pairs, picked), tuple(-j for j in picked))
        if best_key is None or key > best_key:
            best, best_key = picked, key
    return best


def _seeds(gain: Sequence[int], pairs: Sequence[Sequence[int]], slots: int) -> list[int]:
    """Candidates by optimistic value (own gain plus their slots-1 heaviest pair terms)."""
    optimistic = [gain[j] + sum(sorted(row, reverse=True)[: slots - 1]) for j, row in enumerate(pairs)]
    return sorted(range(len(gain)), key=lambda j: (-optimistic[j], j))


def _grow(gain: Sequence[int], pairs: Sequence[Sequence[int]], slots: int, seed: int) -> list[int]:
    p = len(gain)
    inside = [False] * p
    # marginal[j]: what adding j adds now (gain plus pair terms with the set).
    marginal = list(gain)
    picked: list[int] = []
    j = seed
    while True:
        picked.append(j)
        inside[j] = True
        marginal = [m + x for m, x in zip(marginal, pairs[j], strict=True)]
        if len(picked) == slots:
            return sorted(picked)
        j = max((k for k in range(p) if not inside[k]), key=marginal.__getitem__)


def _improve(gain: Sequence[int], pairs: Sequence[Sequence[int]], picked: list[int]) -> list[int]:
    p = len(gain)
    inside = set(picked)
    # contrib[k] = gain[k] + pair terms of k with the set (k itself adds 0).
    contrib = [gain[k] + sum(pairs[k][i] for i in inside) for k in range(p)]
    for _ in range(p * len(picked)):  # each swap strictly improves; this only caps it
        best_delta, swap = 0, None
        for i in sorted(inside):
            for j in range(p):
                if j not in inside:
                    delta = contrib[j] - pairs[i][j] - contrib[i]
                    if delta > best_delta:
                        best_delta, swap = delta, (i, j)
        if swap is None:
            break
        out, into = swap
        inside.remove(out)
        inside.add(into)
        contrib = [c + pairs[into][k] - pairs[out][k] for k, c in enumerate(contrib)]
    return sorted(inside)
