"""What the shared-resource policies need to know: which physical GPU each replica id is on.

A time-slicing or MPS resource advertises N ids per physical GPU
(`<uuid>::<n>`, as NVIDIA names them); a MIG resource advertises one id per
instance, and its "GPU" here is the parent GPU. Either way a `SharedLayout`
lists, per GPU in index order, its replica ids in rank order (lowest replica
number first), plus the pair weights between the GPUs from the topology scoring
(allocator/scoring.py's `pair_weight`, the one table of weights).

Replicas of one GPU are interchangeable: the search (shared_policy.py) only
ever sees counts per GPU, and the rank order here is what turns counts back into
ids deterministically.

Pure: no I/O, no clocks; built from a snapshot, never mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gpu_device_plugin.allocator.scoring import pair_weight
from gpu_device_plugin.inventory import Device, Inventory


@dataclass(frozen=True, slots=True)
class SharedGpu:
    """One physical GPU (or MIG parent) and the ids advertised on it, in rank order."""

    key: str
    replicas: tuple[str, ...]


@dataclass(frozen=True)
class SharedLayout:
    """The GPUs of one shared resource, in index order, and their pair weights.

    `weights[g][h]` is the weight of the link between GPUs g and h (symmetric,
    not negative; the diagonal is unused).
    """

    gpus: tuple[SharedGpu, ...]
    weights: tuple[tuple[int, ...], ...]
    # Derived: replica id -> (GPU position, rank within that GPU).
    place: Mapping[str, tuple[int, int]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.gpus)
        if len(self.weights) != n or any(len(row) != n for row in self.weights):
            raise ValueError(f"weights must be a {n} x {n} matrix, one row per GPU")
        for g in range(n):
            for h in range(n):
                if g != h and self.weights[g][h] != self.weights[h][g]:
                    raise ValueError(f"weights must be symmetric: [{g}][{h}] != [{h}][{g}]")
                if self.weights[g][h] < 0:
                    raise ValueError(f"weights must not be negative: [{g}][{h}] = {self.weights[g][h]}")
        place: dict[str, tuple[int, int]] = {}
        for g, gpu in enumerate(self.gpus):
            for rank, replica in enumerate(gpu.replicas):
                if replica in place:
                    raise ValueError(f"replica id {replica!r} is listed twice")
                place[replica] = (g, rank)
        object.__setattr__(self, "place", place)

    @classmethod
    def of(
        cls,
        gpu_of: Mapping[str, str],
        *,
        order: Sequence[str],
        weights: Sequence[Sequence[int]],
    ) -> SharedLayout:
        """The minimal description: each replica id -> its GPU's key; GPU keys in index order.

        Within a GPU, replicas rank by their replica number (`::<n>`), then id.
        """
        known = set(order)
        stray = sorted({g for g in gpu_of.values() if g not in known})
        if stray:
            raise ValueError(f"replicas name GPUs not in the order: {stray[:5]}")
        groups: dict[str, list[str]] = {key: [] for key in order}
        for replica, gpu in gpu_of.items():
            groups[gpu].append(replica)
        gpus = tuple(
            SharedGpu(key, tuple(sorted(groups[key], key=lambda r: (replica_number(r), r)))) for key in order
        )
        return cls(gpus, tuple(tuple(row) for row in weights))


def replica_number(replica_id: str) -> int:
    """The `<n>` of `<uuid>::<n>`; -1 for an id without one (a MIG UUID, a whole GPU)."""
    _, sep, number = replica_id.rpartition("::")
    return int(number) if sep and number.isdigit() else -1


def layout_from_inventory(
    inventory: Inventory,
    *,
    parent_of: Callable[[Device], str] | None = None,
    parents: Sequence[Device] = (),
) -> SharedLayout:
    """The layout of a shared resource's inventory.

    By default a device's GPU is its `uuid` (a replica carries its physical
    GPU's UUID, which is also how pair_weight tells replicas of one GPU apart),
    and the GPU's links are read from its first device. For MIG, pass
    `parent_of` (instance -> parent GPU UUID) and the parent GPUs themselves
    (`parents`, whole-GPU devices), whose links and NUMA nodes score the pairs.
    """
    key_of = parent_of if parent_of is not None else (lambda d: d.uuid)
    by_parent = {p.uuid: p for p in parents}
    members: dict[str, list[Device]] = {}
    for device in inventory.devices:
        members.setdefault(key_of(device), []).append(device)
    missing = sorted(k for k in members if parents and k not in by_parent)
    if missing:
        raise ValueError(f"instances name parent GPUs that are not given: {missing[:5]}")
    representative = {k: by_parent.get(k, group[0]) for k, group in members.items()}
    order = sorted(members, key=lambda k: (representative[k].index, k))
    gpus = tuple(
        SharedGpu(
            key,
            tuple(d.id for d in sorted(members[key], key=lambda d: (replica_number(d.id), d.index, d.id))),
        )
        for key in order
    )
    reps = [representative[k] for k in order]
    weights = tuple(
        tuple(0 if g == h else pair_weight(reps[g], reps[h], inventory.topology) for h in range(len(reps)))
        for g in range(len(reps))
    )
    return SharedLayout(gpus, weights)
