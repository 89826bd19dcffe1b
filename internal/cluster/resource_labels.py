"""GPU Feature Discovery's resource labels: how the GPUs are shared and partitioned.

A pure function of (ResourceSettings, Inventory): a change of either (a config
reload, a new MIG layout) is a new set of labels, and equal inputs give equal
labels, so the label sync patches only what changed. Nothing here talks to the
API server or reads a flag.

The keys are GFD's when the prefix is `nvidia.com/gpu.`. GFD names each label
after the resource it describes, `<resource>.<fact>`: the whole GPUs under the
prefix (`nvidia.com/gpu.replicas`), each MIG profile under the prefix's domain
(`nvidia.com/mig-1g.10gb.count`), and the strategy beside them
(`nvidia.com/mig.strategy`). Another prefix moves all of them into its domain.
feature_labels.owned_labels says which keys of a Node these are, so a label of
a profile that is gone, or of a strategy no longer in force, is removed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from gpu_device_plugin.inventory import Device, Inventory, MigDevice, MigProfile
from gpu_device_plugin.k8s_names import is_qualified_name
from gpu_device_plugin.resources.settings import MigStrategy, ResourceSettings

PRODUCT = "product"
COUNT = "count"
MEMORY = "memory"
REPLICAS = "replicas"
SHARING_STRATEGY = "sharing-strategy"
# GFD's value of sharing-strategy for a resource that is not shared.
NOT_SHARED = "none"
MIG_STRATEGY = "mig.strategy"
# What a MIG profile is, as GFD's keys name its facts (MigProfile's fields).
MIG_FACTS: tuple[tuple[str, str], ...] = (
    ("multiprocessors", "multiprocessors"),
    ("slices.gi", "gi_slices"),
    ("slices.ci", "ci_slices"),
    ("engines.copy", "copy_engines"),
    ("engines.decoder", "decoders"),
    ("engines.encoder", "encoders"),
    ("engines.jpeg", "jpeg_engines"),
    ("engines.ofa", "ofa_engines"),
)
# Every fact a resource's labels name; a key <domain>/mig-<profile>.<one of these> is ours.
RESOURCE_FACTS = (PRODUCT, COUNT, MEMORY, REPLICAS, SHARING_STRATEGY, *(k for k, _ in MIG_FACTS))


@dataclass(frozen=True, slots=True)
class Replication:
    """How one resource is offered: GFD's replicas and sharing-strategy, and the -SHARED suffix."""

    replicas: int
    strategy: str = NOT_SHARED
    # Shared under its own name: GFD marks the product -SHARED only when the name stays.
    renamed: bool = False

    @property
    def marks_product(self) -> bool:
        return self.replicas > 1 and not self.renamed


# A resource this node does not serve whole (every GPU partitioned): GFD says 0 replicas.
NOT_SERVED = Replication(replicas=0)


def replication(settings: ResourceSettings, resource: str) -> Replication:
    """What the sharing settings make of `resource`: 1 replica and "none" when it is not shared."""
    sharing = settings.sharing
    if sharing is None:
        return Replication(replicas=1)
    entry = next((r for r in sharing.resources if r.name == resource), None)
    if entry is None or entry.replicas <= 1:
        return Replication(replicas=1 if entry is None else entry.replicas)
    return Replication(
        replicas=entry.replicas,
        strategy=sharing.strategy.value,
        renamed=entry.rename is not None or sharing.rename_by_default,
    )


def mig_resource_name(resource_name: str, profile: MigProfile) -> str:
    """The resource `mixed` serves a profile under: `<the whole-GPU resource's domain>/mig-<profile>`."""
    return f"{resource_name.partition('/')[0]}/mig-{profile.name}"


def profile_key_name(profile: MigProfile) -> str:
    """The profile as a label key part: '+' is not allowed there, GFD writes it '.' (1g.10gb.me)."""
    return profile.name.replace("+", ".")


def product(model: str, *parts: str, replicated: Replication) -> str:
    """GFD's product: the model and parts joined by '-', -SHARED when shared under its own name.
    Raw text: feature_labels makes every value a valid label value."""
    return "-".join([model, *parts] + (["SHARED"] if replicated.marks_product else []))


def _mig_on(device: Device) -> bool:
    return device.mig_mode is not None and device.mig_mode.current


def _profile_facts(profile: MigProfile) -> dict[str, str | None]:
    facts: dict[str, str | None] = {MEMORY: str(profile.memory_mib) if profile.memory_mib else None}
    for key, attribute in MIG_FACTS:
        value = getattr(profile, attribute)
        facts[key] = None if value is None else str(value)
    return facts


def _by_profile(migs: Iterable[MigDevice]) -> dict[str, list[MigDevice]]:
    groups: dict[str, list[MigDevice]] = {}
    for mig in migs:
        groups.setdefault(mig.profile.name, []).append(mig)
    return groups


def _parent_model(inventory: Inventory, migs: list[MigDevice]) -> str:
    models = Counter(inventory.by_id[m.parent_id].model for m in migs if m.parent_id in inventory.by_id)
    return models.most_common(1)[0][0] if models else "unknown"


def whole_gpu_facts(settings: ResourceSettings, inventory: Inventory, model: str) -> dict[str, str | None]:
    """replicas, sharing-strategy and the product for the whole-GPU resource (names after the prefix)."""
    served_whole = [
        d for d in inventory.devices if settings.mig_strategy is MigStrategy.NONE or not _mig_on(d)
    ]
    replicated = replication(settings, settings.resource_name) if served_whole else NOT_SERVED
    return {
        PRODUCT: product(model, replicated=replicated) if model != "unknown" else None,
        REPLICAS: str(replicated.replicas),
        SHARING_STRATEGY: replicated.strategy,
    }


def single_problem(inventory: Inventory) -> str | None:
    """Why `single` cannot offer this node's MIG layout; None when it can (or no GPU has MIG on)."""
    enabled = [d for d in inventory.devices if _mig_on(d)]
    if not enabled:
        return None
    with_migs = {m.parent_id for m in inventory.mig_devices}
    if any(d.id not in with_migs for d in enabled):
        return "a MIG-enabled GPU has no MIG devices"
    if len(enabled) != len(inventory.devices):
        return "GPUs with MIG enabled and disabled"
    if len(_by_profile(inventory.mig_devices)) > 1:
        return "more than one MIG profile"
    return None


def single_facts(settings: ResourceSettings, inventory: Inventory) -> dict[str, str | None]:
    """Under `single`, the MIG devices stand in for the GPUs in the whole-GPU labels (as GFD's)."""
    enabled = [d for d in inventory.devices if _mig_on(d)]
    if not enabled:
        return {}
    if single_problem(inventory) is not None:
        # GFD's labels for a layout `single` cannot serve: nothing here to select on.
        return {
            PRODUCT: product(enabled[0].model, "MIG", "INVALID", replicated=NOT_SERVED),
            COUNT: "0",
            REPLICAS: "0",
            MEMORY: "0",
            SHARING_STRATEGY: NOT_SHARED,
        }
    migs = list(inventory.mig_devices)
    profile = migs[0].profile
    replicated = replication(settings, settings.resource_name)
    return {
        PRODUCT: product(
            _parent_model(inventory, migs), "MIG", profile_key_name(profile), replicated=replicated
        ),
        COUNT: str(len(migs)),
        REPLICAS: str(replicated.replicas),
        SHARING_STRATEGY: replicated.strategy,
        **_profile_facts(profile),
    }


def mixed_labels(settings: ResourceSettings, inventory: Inventory, domain: str) -> dict[str, str | None]:
    """Under `mixed`, one set of labels per MIG profile, keyed <domain>/mig-<profile>.<fact>."""
    labels: dict[str, str | None] = {}
    for migs in _by_profile(inventory.mig_devices).values():
        profile = migs[0].profile
        name = f"mig-{profile_key_name(profile)}"
        longest = f"{name}.{max(RESOURCE_FACTS, key=len)}"
        if not is_qualified_name(longest):
            continue  # a profile name no label key can hold: left out rather than cut
        replicated = replication(settings, mig_resource_name(settings.resource_name, profile))
        facts = {
            PRODUCT: product(
                _parent_model(inventory, migs), "MIG", profile_key_name(profile), replicated=replicated
            ),
            COUNT: str(len(migs)),
            REPLICAS: str(replicated.replicas),
            SHARING_STRATEGY: replicated.strategy,
            **_profile_facts(profile),
        }
        labels.update({f"{domain}/{name}.{fact}": value for fact, value in facts.items()})
    return labels


def resource_labels(
    settings: ResourceSettings, inventory: Inventory, *, prefix: str, model: str
) -> dict[str, str | None]:
    """Every sharing and MIG label, by full key; None values are facts nobody could read.

    `model`: the product the whole-GPU labels describe (the most common one).
    """
    domain = prefix.partition("/")[0]
    labels: dict[str, str | None] = {}
    if inventory.devices:
        facts = whole_gpu_facts(settings, inventory, model)
        if settings.mig_strategy is MigStrategy.SINGLE:
            facts.update(single_facts(settings, inventory))
        labels.update({prefix + name: value for name, value in facts.items()})
    if settings.mig_strategy is not MigStrategy.NONE:
        labels[f"{domain}/{MIG_STRATEGY}"] = settings.mig_strategy.value
    if settings.mig_strategy is MigStrategy.MIXED:
        labels.update(mixed_labels(settings, inventory, domain))
    return labels
