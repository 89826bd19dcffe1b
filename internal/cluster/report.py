"""`report`'s view of the cluster, computed from one list of Nodes and one list of Pods.

Pure functions over the API's JSON (plain dicts): the CLI lists each kind
once (kubeclient.list_all) and renders what this builds. Per node: the
resource's capacity and allocatable and their difference (devices the plugin
reports unhealthy), the plugin's pods (by label selector), the pods holding the
resource and how many each, and the feature labels under the prefix.
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
    """A pod holding some of the resource on a node."""

    namespace: str
    name: str
    count: int


@dataclass(frozen=True)
class NodeReport:
    name: str
    capacity: int | None  # None: the node does not advertise the resource at all
    allocatable: int | None
    plugin_pods: tuple[PluginPod, ...] = ()
    holders: tuple[Holder, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def unhealthy(self) -> int:
        """Devices the kubelet has but may not hand out: the plugin reports them unhealthy."""
        return max(0, (self.capacity or 0) - (self.allocatable or 0))

    @property
    def in_use(self) -> int:
        return sum(h.count for h in self.holders)

    def problems(self, resource: str) -> list[str]:
        found = [
            f"{self.name}: plugin pod {p.namespace}/{p.name} is not ready "
            f"(phase {p.phase}, {p.restarts} restarts)"
            for p in self.plugin_pods
            if not p.ready
        ]
        if self.unhealthy:
            found.append(
                f"{self.name}: {self.unhealthy} of {self.capacity} {resource} unhealthy "
                f"(capacity {self.capacity}, allocatable {self.allocatable or 0})"
            )
        return found

    def to_json(self, resource: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "capacity": self.capacity,
            "allocatable": self.allocatable,
            "unhealthy": self.unhealthy,
            "in_use": self.in_use,
            "plugin_pods": [vars(p) for p in self.plugin_pods],
            "pods": [vars(h) for h in self.holders],
            "labels": dict(self.labels),
            "problems": self.problems(resource),
        }


@dataclass(frozen=True)
class ClusterReport:
    resource: str
    nodes: tuple[NodeReport, ...]

    @property
    def problems(self) -> list[str]:
        return [p for n in self.nodes for p in n.problems(self.resource)]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "ok": self.ok,
            "problems": self.problems,
            "nodes": [n.to_json(self.resource) for n in self.nodes],
        }


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
    """Nodes that advertise the resource, run a plugin pod, carry feature labels or hold the resource."""
    plugin_pods: dict[str, list[PluginPod]] = defaultdict(list)
    holders: dict[str, list[Holder]] = defaultdict(list)
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            continue  # not scheduled: holds nothing anywhere yet
        meta = pod.get("metadata") or {}
        if plugin_selector.matches(meta.get("labels")):
            plugin_pods[node_name].append(PluginPod.from_json(pod))
        count = requested(pod, resource)
        if count:
            holders[node_name].append(Holder(meta.get("namespace", ""), meta.get("name", ""), count))
    reports = []
    for node in nodes:
        name = (node.get("metadata") or {}).get("name", "")
        report = NodeReport(
            name=name,
            capacity=_resource(node, "capacity", resource),
            allocatable=_resource(node, "allocatable", resource),
            plugin_pods=tuple(sorted(plugin_pods.get(name, ()), key=lambda p: (p.namespace, p.name))),
            holders=tuple(sorted(holders.get(name, ()), key=lambda h: (h.namespace, h.name))),
            labels=owned_labels((node.get("metadata") or {}).get("labels"), label_prefix),
        )
        if report.capacity is not None or report.plugin_pods or report.labels or report.holders:
            reports.append(report)
    return ClusterReport(resource=resource, nodes=tuple(sorted(reports, key=lambda r: r.name)))
