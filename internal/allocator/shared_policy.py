"""Preferred allocation for shared and partitioned resources: `distributed` and `packed`, exact.

The kubelet asks for `size` ids out of `available` (which holds every
`must_include` id) of a time-slicing / MPS resource (replicas `<uuid>::<n>`)
or a MIG resource (instances, each a replica of its parent GPU: see below).
Replicas of one GPU are interchangeable, so an answer is first a count x_g per
GPU g, with m_g <= x_g <= a_g and sum(x_g) = size, where for GPU g:

- T_g: the replicas the resource advertises on it (the layout);
- a_g: how many of them are available in this request;
- m_g: how many of them are in must_include;
- u_g = T_g - a_g: replicas of it the request does not offer, i.e. already
  held by other containers (or unusable): how shared the GPU already is. A GPU
  whose replicas are all available (u_g = 0) is unshared;
- the support: the GPUs with x_g > 0; its score is the sum of the pair weights
  (allocator/scoring.py) over every pair of GPUs in it, each GPU counted once
  (a container sees a GPU once however many of its replicas it holds).

Each policy ranks count vectors lexicographically, criterion by criterion:

`distributed` (the default: spread over the least-shared GPUs):
  1. the smallest sum over all GPUs of (u_g + x_g)^2: the balanced load. Its
     minimisers are exactly the "decreasingly minimal" load vectors (the loads
     sorted from most to least loaded are lexicographically smallest; Frank and
     Murota), so no GPU ends up more shared than it must, replicas go to the
     least-shared GPUs first, and unshared GPUs are spread over before any GPU
     takes a second replica;
  2. the most GPUs in the support (spread as wide as the balance allows);
  3. the highest support score (best linked);
  4. the lexicographically largest (x_0, x_1, ...) by GPU index.

`packed` (fill a GPU before the next):
  1. the fewest GPUs in the support;
  2. the largest sum over GPUs of (a_g - x_g)^2: what is left free stays in as
     few, as large blocks as possible. For one GPU this takes the GPU with the
     fewest free replicas that still fits (the most used one), so whole GPUs
     stay free for big requests;
  3. the highest support score;
  4. the lexicographically largest (x_0, x_1, ...) by GPU index.

Counts become ids deterministically: on each GPU its must_include replicas,
then its other available replicas lowest rank (replica number) first. The
answer lists ids by GPU index, then rank. Criterion 4 and this mapping make the
answer a function of the request as a set: the order of the ids in it does not
matter.

MIG: an instance is a replica of its parent GPU, with T_g the instances of
this resource (one profile) on the parent. Instances of one parent share its
PCIe and NVLink links, its power and its fate (an XID on the parent takes every
instance down), so "shared" counts them like replicas; instances of other
profiles are other resources and are not seen here. The pair weights are the
parents' links. Memory and compute slices are isolated by MIG itself, so no
extra weight is given to two instances on one parent: the policy alone decides
whether they go together (`packed`) or apart (`distributed`).

Exactness: criteria 1 and 2 are sums of one term per GPU, so a dynamic program
over GPUs (`_cost_to_go`) gives, for every suffix of the GPUs and every number
of replicas left, the exact best value they can still reach. A depth-first
branch and bound over GPUs in index order, trying the largest count first,
only follows counts that keep that value optimal (so every leaf is optimal for
criteria 1 and 2, and they all have the same support size), and prunes on
criterion 3 with an admissible bound (`_bound`). Leaves are met in
lexicographically decreasing order of x and only a strictly better score
replaces the best so far, which is criterion 4. The search is over counts, not
ids: 16 GPUs x 8 replicas and 8 asked is at most C(16, 8) supports rather than
C(128, 8) id sets, and the bound prunes most of them.

Pure functions: no I/O, no clock, no logging.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from gpu_device_plugin.allocator.preferred import check_preferred_request
from gpu_device_plugin.allocator.shared_layout import SharedLayout, layout_from_inventory
from gpu_device_plugin.errors import RequestError, quote_ids
from gpu_device_plugin.inventory import Inventory


class SharedPolicy(enum.StrEnum):
    """NVIDIA v0.20's names for the policies."""

    DISTRIBUTED = "distributed"
    PACKED = "packed"


def choose_replicas(
    layout: SharedLayout,
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    policy: SharedPolicy = SharedPolicy.DISTRIBUTED,
) -> list[str]:
    """The best `size` ids for the request under `policy`, as the module docstring defines it.

    Raises RequestError for a structurally bad request or ids not in the layout.
    """
    check_preferred_request(available, must_include, size)
    unknown = [i for i in available if i not in layout.place]
    if unknown:
        raise RequestError(f"available_deviceIDs: unknown device ids {quote_ids(unknown)}", unknown)
    n = len(layout.gpus)
    free: list[list[int]] = [[] for _ in range(n)]  # ranks available, per GPU
    must = [0] * n
    for replica in available:
        g, rank = layout.place[replica]
        free[g].append(rank)
    for replica in must_include:
        must[layout.place[replica][0]] += 1
    # Only GPUs with something available can take part; the others keep x = 0.
    active = [g for g in range(n) if free[g]]
    counts = best_counts(
        caps=[len(free[g]) for g in active],
        floors=[must[g] for g in active],
        shared=[len(layout.gpus[g].replicas) - len(free[g]) for g in active],
        weights=[[layout.weights[g][h] for h in active] for g in active],
        size=size,
        policy=policy,
    )
    forced = {layout.place[r] for r in must_include}
    chosen: list[str] = []
    for g, count in zip(active, counts, strict=True):
        ranks = sorted(free[g])
        mine = [r for r in ranks if (g, r) in forced]
        mine += [r for r in ranks if (g, r) not in forced][: count - len(mine)]
        chosen += [layout.gpus[g].replicas[r] for r in sorted(mine)]
    return chosen


def distributed_policy(
    inventory: Inventory, available: Sequence[str], must_include: Sequence[str], size: int
) -> list[str]:
    """A PreferredPolicy (allocator/preferred.py) for a replica inventory: `distributed`."""
    return choose_replicas(layout_from_inventory(inventory), available, must_include, size)


def packed_policy(
    inventory: Inventory, available: Sequence[str], must_include: Sequence[str], size: int
) -> list[str]:
    """A PreferredPolicy (allocator/preferred.py) for a replica inventory: `packed`."""
    return choose_replicas(
        layout_from_inventory(inventory), available, must_include, size, SharedPolicy.PACKED
    )


# ---- the search over counts -------------------------------------------------


def best_counts(
    *,
    caps: Sequence[int],
    floors: Sequence[int],
    shared: Sequence[int],
    weights: Sequence[Sequence[int]],
    size: int,
    policy: SharedPolicy,
) -> list[int]:
    """The optimal count per GPU: caps a_g, floors m_g, shared u_g, pair weights, sum = size.

    Assumes floors <= caps and sum(floors) <= size <= sum(caps) (choose_replicas checks it).
    """
    n = len(caps)
    cost = _separable_cost(caps, shared, policy)
    to_go = _cost_to_go(cost, caps, floors, size)
    support = _support_size(cost, to_go, caps, floors, size)

    best_score = -1
    best: list[int] = []
    x = [0] * n
    # link[j]: sum of weights between j and the GPUs in the support so far.
    link = [0] * n
    tops_from: dict[int, list[list[int]]] = {}

    def tops(pos: int, need: int) -> list[list[int]]:
        # tops(pos)[j - pos][k]: sum of j's k heaviest weights with GPUs >= pos (k < need).
        cached = tops_from.get(pos)
        if cached is None:
            cached = []
            for j in range(pos, n):
                heavy = sorted((weights[j][k] for k in range(pos, n) if k != j), reverse=True)
                sums = [0]
                for w in heavy[: support - 1]:
                    sums.append(sums[-1] + w)
                cached.append(sums)
            tops_from[pos] = cached
        return cached

    def search(g: int, left: int, in_support: int, score: int) -> None:
        nonlocal best_score, best
        need = support - in_support
        if g == n or (need == 0 and left == 0):
            # need == 0: every later GPU must stay at 0 (all optimal leaves share the support size).
            if score > best_score:
                best_score, best = score, x[:g] + [0] * (n - g)
            return
        if _bound(score, link, tops(g, need), g, need) <= best_score:
            return
        target = to_go[g][left]
        for count in range(min(caps[g], left), floors[g] - 1, -1):
            rest = to_go[g + 1][left - count]
            if rest is None or cost[g][count] + rest != target:
                continue
            x[g] = count
            if count:
                row = weights[g]
                gained = link[g]
                for j in range(g + 1, n):
                    link[j] += row[j]
                search(g + 1, left - count, in_support + 1, score + gained)
                for j in range(g + 1, n):
                    link[j] -= row[j]
            else:
                search(g + 1, left, in_support, score)
        x[g] = 0

    search(0, size, 0, 0)
    return best


def _bound(score: int, link: Sequence[int], top: list[list[int]], pos: int, need: int) -> int:
    """At least the score of any completion that adds `need` GPUs from `pos` on.

    Each added GPU j brings its links to the support so far (link[j]) and its
    share of the links among the added ones; giving each such link half to
    either end, j's share is at most half its need-1 heaviest links to GPUs >=
    pos. The `need` largest of those sums bound the gain. (Floored: scores are
    integers, so a bound of k + 1/2 admits nothing better than k.)
    """
    gains = sorted((2 * link[j] + top[j - pos][need - 1] for j in range(pos, len(link))), reverse=True)
    return (2 * score + sum(gains[:need])) // 2


def _separable_cost(caps: Sequence[int], shared: Sequence[int], policy: SharedPolicy) -> list[list[int]]:
    """cost[g][x]: criteria 1 and 2 of GPU g taking x, as one integer to minimise.

    Criterion 1 times a factor larger than the whole range of criterion 2, plus
    criterion 2: the sum over GPUs then orders count vectors by 1, then 2.
    """
    n = len(caps)
    if policy is SharedPolicy.DISTRIBUTED:
        scale = n + 1  # criterion 2 (minus the support size) spans at most n
        return [
            [(shared[g] + x) ** 2 * scale - (1 if x else 0) for x in range(caps[g] + 1)] for g in range(n)
        ]
    scale = sum(a * a for a in caps) + 1  # criterion 2 (minus the free squares) spans at most this
    return [[(scale if x else 0) - (caps[g] - x) ** 2 for x in range(caps[g] + 1)] for g in range(n)]


def _cost_to_go(
    cost: Sequence[Sequence[int]], caps: Sequence[int], floors: Sequence[int], size: int
) -> list[list[int | None]]:
    """to_go[g][t]: the least cost GPUs g.. can reach taking exactly t; None: they cannot."""
    n = len(caps)
    to_go: list[list[int | None]] = [[None] * (size + 1) for _ in range(n + 1)]
    to_go[n][0] = 0
    for g in range(n - 1, -1, -1):
        after = to_go[g + 1]
        for t in range(size + 1):
            best: int | None = None
            for x in range(floors[g], min(caps[g], t) + 1):
                rest = after[t - x]
                if rest is not None and (best is None or cost[g][x] + rest < best):
                    best = cost[g][x] + rest
            to_go[g][t] = best
    return to_go


def _support_size(
    cost: Sequence[Sequence[int]],
    to_go: Sequence[Sequence[int | None]],
    caps: Sequence[int],
    floors: Sequence[int],
    size: int,
) -> int:
    """The support size of one optimal vector: the same for all (criterion 1 or 2 fixes it)."""
    left, support = size, 0
    for g in range(len(caps)):
        target = to_go[g][left]
        for count in range(floors[g], min(caps[g], left) + 1):
            rest = to_go[g + 1][left - count]
            if rest is not None and cost[g][count] + rest == target:
                break
        support += 1 if count else 0
        left -= count
    return support
