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

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Inventory, MigDevice, MigProfile
from gpu_device_plugin.k8s_names import is_qualified_name
from gpu_device_plugin.resources.mig import check_single, mig_enabled, mig_resource_name, servable
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


def _profile_resource(settings: ResourceSettings, profile: MigProfile) -> str | None:
    """The resource `mixed` serves the profile under (nvidia.com/mig-1g.10gb.me: '+' written '.',
    as NVIDIA and GFD write it); None when the profile's name cannot make one."""
    try:
        return mig_resource_name(settings.resource_name, profile.name)
    except ConfigError:
        return None


def _label_name(profile: MigProfile) -> str:
    """The profile in a product label: GFD writes '+' as '.' there too (...-MIG-1g.10gb.me)."""
    return profile.name.replace("+", ".")


def product(model: str, *parts: str, replicated: Replication) -> str:
    """GFD's product: the model and parts joined by '-', -SHARED when shared under its own name.
    Raw text: feature_labels makes every value a valid label value."""
    return "-".join([model, *parts] + (["SHARED"] if replicated.marks_product else []))


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
        d for d in inventory.devices if settings.mig_strategy is MigStrategy.NONE or not mig_enabled(d)
    ]
    replicated = replication(settings, settings.resource_name) if served_whole else NOT_SERVED
    return {
        PRODUCT: product(model, replicated=replicated) if model != "unknown" else None,
        REPLICAS: str(replicated.replicas),
        SHARING_STRATEGY: replicated.strategy,
    }


def _single_serves_migs(inventory: Inventory) -> bool | None:
    """resources/mig.check_single's verdict: True MIG devices, False whole GPUs, None refused."""
    try:
        return check_single(inventory)
    except ConfigError:
        return None


def single_facts(settings: ResourceSettings, inventory: Inventory) -> dict[str, str | None]:
    """Under `single`, the MIG devices stand in for the GPUs in the whole-GPU labels (as GFD's)."""
    enabled = [d for d in inventory.devices if mig_enabled(d)]
    serves = _single_serves_migs(inventory)
    if serves is False:
        return {}
    if serves is None:
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
        PRODUCT: product(_parent_model(inventory, migs), "MIG", _label_name(profile), replicated=replicated),
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
        resource = _profile_resource(settings, profile)
        if resource is None or not servable(profile):
            continue  # no resource is served for it, so no label says there is
        name = resource.partition("/")[2]
        if not is_qualified_name(f"{name}.{max(RESOURCE_FACTS, key=len)}"):
            continue  # a profile name no label key can hold: left out rather than cut
        replicated = replication(settings, resource)
        facts = {
            PRODUCT: product(
                _parent_model(inventory, migs), "MIG", _label_name(profile), replicated=replicated
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
