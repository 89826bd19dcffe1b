"""Node feature labels: what discovery found, and how it is offered, as label keys and values.

Pure functions of the ResourceSettings and an Inventory. Nothing here talks to
the API server; the label sync (label_sync.py) decides when to apply what these
compute. Health is not a label on purpose: a flapping GPU must not cost a Node
patch per flap (health reaches the cluster as allocatable and as Events). The
sharing and MIG labels (GFD's) are resource_labels.py's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

from gpu_device_plugin.cluster import resource_labels
from gpu_device_plugin.inventory import Inventory, Topology
from gpu_device_plugin.k8s_names import is_dns_subdomain, is_qualified_name
from gpu_device_plugin.resources.settings import ResourceSettings

DEFAULT_LABEL_PREFIX = "example.com/gpu."

# A label value: at most 63 characters of [A-Za-z0-9._-], beginning and ending
# with a letter or digit (or empty). Label names share the rule.
_MAX_VALUE = 63
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._-]+")

# The names after the prefix. With the prefix `nvidia.com/gpu.` the first five
# are the keys GPU Feature Discovery sets, so existing node selectors keep working.
PRODUCT = "product"
COUNT = "count"
MEMORY = "memory"
COMPUTE_MAJOR = "compute.major"
COMPUTE_MINOR = "compute.minor"
DRIVER = "driver.version"
CUDA = "cuda.version"
MIG_CAPABLE = "mig.capable"
INTERCONNECT = "interconnect"
PLUGIN_VERSION = "plugin.version"
NAMES = (
    PRODUCT,
    COUNT,
    MEMORY,
    COMPUTE_MAJOR,
    COMPUTE_MINOR,
    DRIVER,
    CUDA,
    MIG_CAPABLE,
    INTERCONNECT,
    PLUGIN_VERSION,
    # GFD's sharing and MIG facts of the whole-GPU resource (resource_labels.py).
    *resource_labels.RESOURCE_FACTS,
)
_LONGEST_NAME = max(len(n) for n in NAMES)


def check_label_prefix(prefix: str) -> str:
    """`<dns-subdomain>/<start of a name>`; ValueError saying what is wrong otherwise."""
    domain, slash, start = prefix.partition("/")
    if not slash:
        raise ValueError(f"{prefix!r} must be <domain>/<name start>, e.g. {DEFAULT_LABEL_PREFIX}")
    if not is_dns_subdomain(domain):
        raise ValueError(f"domain {domain!r} is not a valid DNS subdomain")
    # The longest label name this prefix makes must still be a valid name.
    longest = start + "x" * _LONGEST_NAME
    if not is_qualified_name(longest):
        raise ValueError(
            f"{start!r} cannot begin label names: [A-Za-z0-9._-], starting with a letter or digit, "
            f"at most {_MAX_VALUE - _LONGEST_NAME} characters"
        )
    return prefix


def label_value(text: str) -> str | None:
    """`text` as a valid label value: runs of other characters become '-', ends trimmed, cut
    to 63. None when nothing usable is left (the label is then left out rather than faked)."""
    cleaned = _NOT_ALLOWED.sub("-", text.strip())[:_MAX_VALUE]
    cleaned = cleaned.strip("-._")
    return cleaned or None


def interconnect(topology: Topology | None) -> str | None:
    """nvswitch, nvlink or pcie: the best GPU-to-GPU path any pair has; None without evidence."""
    if topology is None:
        return None
    links = [link for _, _, link in topology.links]
    if any(link.nvswitch for link in links):
        return "nvswitch"
    if any(link.nvlinks for link in links):
        return "nvlink"
    if any(link.nvlinks == 0 or link.pcie is not None for link in links):
        return "pcie"
    return None


def feature_labels(
    inventory: Inventory, *, prefix: str, plugin_version: str, settings: ResourceSettings
) -> dict[str, str]:
    """Every feature label this inventory earns as the settings offer it, keyed by the full label key."""
    devices = inventory.devices
    values: dict[str, str | None] = {COUNT: str(len(devices)), PLUGIN_VERSION: plugin_version}
    model = "unknown"
    if devices:
        # Mixed GPUs in one node are rare; the labels then describe the most common model.
        model, _ = Counter(d.model for d in devices).most_common(1)[0]
        typical = next(d for d in devices if d.model == model)
        values[MEMORY] = str(typical.memory_mib) if typical.memory_mib else None
        if typical.compute_capability is not None:
            values[COMPUTE_MAJOR] = str(typical.compute_capability[0])
            values[COMPUTE_MINOR] = str(typical.compute_capability[1])
        known_mig = [d.mig_capable for d in devices if d.mig_capable is not None]
        if known_mig:
            values[MIG_CAPABLE] = "true" if any(known_mig) else "false"
        values[INTERCONNECT] = interconnect(inventory.topology)
    values[DRIVER] = inventory.driver_version
    values[CUDA] = inventory.cuda_version
    raw = {prefix + name: value for name, value in values.items()}
    # The product, sharing and MIG labels; under `single` they replace count and memory.
    raw.update(resource_labels.resource_labels(settings, inventory, prefix=prefix, model=model))
    labels: dict[str, str] = {}
    for key, text in raw.items():
        value = label_value(text) if text is not None else None
        if value is not None:
            labels[key] = value
    return labels


def owned_labels(labels: Mapping[str, str] | None, prefix: str) -> dict[str, str]:
    """The labels this plugin owns: those under its prefix, its domain's mig.strategy and the
    per-profile facts <domain>/mig-<profile>.<fact> (not the MIG manager's <domain>/mig.config)."""
    domain = prefix.partition("/")[0]
    strategy = f"{domain}/{resource_labels.MIG_STRATEGY}"
    mig = f"{domain}/mig-"
    facts = tuple(f".{fact}" for fact in resource_labels.RESOURCE_FACTS)

    def ours(key: str) -> bool:
        return key.startswith(prefix) or key == strategy or (key.startswith(mig) and key.endswith(facts))

    return {k: v for k, v in (labels or {}).items() if ours(k)}


def label_patch(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str | None]:
    """A JSON merge patch of `metadata.labels` turning `current` into `desired`.

    Both hold only labels this plugin owns; keys in `current` that `desired`
    lacks map to None (merge-patch for "delete"). Empty: nothing to do.
    """
    patch: dict[str, str | None] = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in desired})
    return patch
