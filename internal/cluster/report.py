"""`report`'s view of the cluster, computed from one list of Nodes and one list of Pods.

Pure functions over the API's JSON (plain dicts): the CLI lists each kind
once (kubeclient.list_all) and renders what this builds. Per node: every
resource of the plugin's domain (the whole GPUs, a shared `<name>.shared`, each
MIG profile's `mig-<profile>`), each one's capacity and allocatable and their
difference (devices the plugin reports unhealthy), the plugin's pods (by label
selector), the pods holding those resources and how many each, and the labels
the plugin owns (its prefix, GFD's sharing and MIG keys).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpu_device_plugin.cluster.feature_labels import owned_labels
from gpu_device_plugin.cluster.selector import LabelSelector

DEFAULT_PLUGIN_SELECTOR = "app.kubernetes.io/name=gpu-device-plugin"
# Pods that no longer hold anything, left out by the API server itself.
LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"

_QUANTITY = re.compile(r"^\s*(\d+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?\s*$")
_MULTIPLIERS = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18} | {
    f"{p}i": 2 ** (10 * (n + 1)) for n, p in enumerate("KMGTPE")
}


def quantity(text: str | int | None) -> int:
    """A whole-number resource quantity ("8", "1k"); extended resources are always whole."""
    if text is None:
        return 0
    if isinstance(text, int):
        return text
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a whole-number quantity")
    suffix = match.group(2)
    multiplier = _MULTIPLIERS[suffix] if suffix else 1
    return int(match.group(1)) * multiplier


def _amount(container: Mapping[str, Any], resource: str) -> int:
    resources = container.get("resources") or {}
    # The API server copies limits into requests when only limits are given;
    # reading limits too covers objects written before that defaulting.
    value = (resources.get("requests") or {}).get(resource) or (resources.get("limits") or {}).get(resource)
    return quantity(value)


def requested(pod: Mapping[str, Any], resource: str) -> int:
    """How many of `resource` the pod holds, counted as the scheduler does.

    App containers (and sidecars: init containers that keep running) add up; an
    ordinary init container runs alone, so the pod holds the larger of the two.
    """
    spec = pod.get("spec") or {}
    init = spec.get("initContainers") or []
    running = sum(_amount(c, resource) for c in spec.get("containers") or [])
    running += sum(_amount(c, resource) for c in init if c.get("restartPolicy") == "Always")
    one_off = max((_amount(c, resource) for c in init if c.get("restartPolicy") != "Always"), default=0)
    return max(running, one_off)


@dataclass(frozen=True)
class PluginPod:
    namespace: str
    name: str
    phase: str
    ready: bool
    restarts: int

    @classmethod
    def from_json(cls, pod: Mapping[str, Any]) -> PluginPod:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            phase=status.get("phase") or "Unknown",
            ready=conditions.get("Ready") == "True",
            restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
        )


@dataclass(frozen=True)
class Holder:
    """A pod holding some of one resource on a node."""

    namespace: str
    name: str
    count: int
    resource: str


@dataclass(frozen=True)
class ResourceCount:
    """One resource on one node: what the kubelet has, may hand out, and has handed out."""

    name: str
    capacity: int | None  # None: the node does not advertise it
    allocatable: int | None
    in_use: int = 0

    @property
    def unhealthy(self) -> int:
        """Devices the kubelet has but may not hand out: the plugin reports them unhealthy."""
        return max(0, (self.capacity or 0) - (self.allocatable or 0))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capacity": self.capacity,
            "allocatable": self.allocatable,
            "unhealthy": self.unhealthy,
            "in_use": self.in_use,
        }


@dataclass(frozen=True)
class NodeReport:
    """One node: every resource of the plugin's domain (`resource` first), its pods and labels."""

    name: str
    resource: str
    resources: tuple[ResourceCount, ...] = ()
    plugin_pods: tuple[PluginPod, ...] = ()
    holders: tuple[Holder, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def main(self) -> ResourceCount:
        """The `--resource-name` resource (capacity None when the node does not advertise it)."""
        found = next((r for r in self.resources if r.name == self.resource), None)
        return found or ResourceCount(self.resource, None, None)

    @property
    def capacity(self) -> int | None:
        return self.main.capacity

    @property
    def allocatable(self) -> int | None:
        return self.main.allocatable

    @property
    def unhealthy(self) -> int:
        return self.main.unhealthy

    @property
    def in_use(self) -> int:
        return self.main.in_use

    def problems(self) -> list[str]:
        found = [
            f"{self.name}: plugin pod {p.namespace}/{p.name} is not ready "
            f"(phase {p.phase}, {p.restarts} restarts)"
            for p in self.plugin_pods
            if not p.ready
        ]
        found += [
            f"{self.name}: {r.unhealthy} of {r.capacity} {r.name} unhealthy "
            f"(capacity {r.capacity}, allocatable {r.allocatable or 0})"
            for r in self.resources
            if r.unhealthy
        ]
        return found

    def to_json(self) -> dict[str, Any]:
        main = self.main
        return {
            "name": self.name,
            # The --resource-name resource, as before; every resource of its domain below.
            "capacity": main.capacity,
            "allocatable": main.allocatable,
            "unhealthy": main.unhealthy,
            "in_use": main.in_use,
            "resources": [r.to_json() for r in self.resources],
            "plugin_pods": [vars(p) for p in self.plugin_pods],
            "pods": [vars(h) for h in self.holders],
            "labels": dict(self.labels),
            "problems": self.problems(),
        }


@dataclass(frozen=True)
class ClusterReport:
    resource: str
    nodes: tuple[NodeReport, ...]

    @property
    def problems(self) -> list[str]:
        return [p for n in self.nodes for p in n.problems()]

    @property
    def ok(self) -> bool:
        return not self.problems

    def totals(self) -> list[ResourceCount]:
        """Each resource summed over the nodes: the main one first, then by name."""
        sums: dict[str, list[int]] = {self.resource: [0, 0, 0]}
        for node in self.nodes:
            for r in node.resources:
                total = sums.setdefault(r.name, [0, 0, 0])
                total[0] += r.capacity or 0
                total[1] += r.allocatable or 0
                total[2] += r.in_use
        return [ResourceCount(name, *sums[name]) for name in _ordered(sums, self.resource)]

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "ok": self.ok,
            "problems": self.problems,
            "nodes": [n.to_json() for n in self.nodes],
        }


def _ordered(names: Iterable[str], main: str) -> list[str]:
    return sorted(set(names), key=lambda n: (n != main, n))


def _in_domain(values: Mapping[str, Any] | None, domain: str) -> set[str]:
    return {k for k in (values or {}) if k.startswith(domain)}


def _pod_resources(pod: Mapping[str, Any], domain: str) -> set[str]:
    """The resources of `domain` any container of the pod asks for."""
    spec = pod.get("spec") or {}
    names: set[str] = set()
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        resources = c.get("resources") or {}
        names |= _in_domain(resources.get("requests"), domain) | _in_domain(resources.get("limits"), domain)
    return names


def _resource(node: Mapping[str, Any], kind: str, resource: str) -> int | None:
    values = (node.get("status") or {}).get(kind) or {}
    return quantity(values[resource]) if resource in values else None


def build_report(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    resource: str,
    plugin_selector: LabelSelector,
    label_prefix: str,
) -> ClusterReport:
    """Nodes that advertise a resource of `resource`'s domain (shared and MIG resources are
    resources of their own: nvidia.com/gpu.shared, nvidia.com/mig-1g.10gb), run a plugin pod,
    carry its labels or hold one of those resources."""
    domain = resource.partition("/")[0] + "/"
    plugin_pods: dict[str, list[PluginPod]] = defaultdict(list)
    holders: dict[str, list[Holder]] = defaultdict(list)
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            continue  # not scheduled: holds nothing anywhere yet
        meta = pod.get("metadata") or {}
        if plugin_selector.matches(meta.get("labels")):
            plugin_pods[node_name].append(PluginPod.from_json(pod))
        for name in _ordered(_pod_resources(pod, domain), resource):
            count = requested(pod, name)
            if count:
                holders[node_name].append(
                    Holder(meta.get("namespace", ""), meta.get("name", ""), count, name)
                )
    reports = []
    for node in nodes:
        name = (node.get("metadata") or {}).get("name", "")
        status = node.get("status") or {}
        held = holders.get(name, [])
        advertised = _in_domain(status.get("capacity"), domain) | _in_domain(
            status.get("allocatable"), domain
        )
        counts = tuple(
            ResourceCount(
                r,
                _resource(node, "capacity", r),
                _resource(node, "allocatable", r),
                sum(h.count for h in held if h.resource == r),
            )
            for r in _ordered(advertised | {h.resource for h in held}, resource)
        )
        report = NodeReport(
            name=name,
            resource=resource,
            resources=counts,
            plugin_pods=tuple(sorted(plugin_pods.get(name, ()), key=lambda p: (p.namespace, p.name))),
            holders=tuple(
                sorted(held, key=lambda h: (h.resource != resource, h.resource, h.namespace, h.name))
            ),
            labels=owned_labels((node.get("metadata") or {}).get("labels"), label_prefix),
        )
        if report.resources or report.plugin_pods or report.labels:
            reports.append(report)
    return ClusterReport(resource=resource, nodes=tuple(sorted(reports, key=lambda r: r.name)))
