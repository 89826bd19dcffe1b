"""`report`: per node, every resource of the plugin's domain (whole, shared, MIG), the plugin's pods,
the pods holding them and the plugin's labels.

Reads the cluster with the user's kubeconfig: one list of Nodes and one list
of live Pods (paginated), whatever the cluster's size; the plugin's own pods
are picked out of the same pod list by label selector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gpu_device_plugin.cluster.kubeclient import list_all, user_client
from gpu_device_plugin.cluster.nodeapi import ClusterApiError
from gpu_device_plugin.cluster.report import (
    LIVE_PODS,
    ClusterReport,
    Holder,
    NodeReport,
    ResourceCount,
    build_report,
)
from gpu_device_plugin.cluster.selector import LabelSelector


def collect(
    api: Any, *, resource: str, selector: LabelSelector, label_prefix: str, page_size: int
) -> ClusterReport:
    nodes = list(list_all(api, "nodes", page_size=page_size))
    pods = list(list_all(api, "pods", field_selector=LIVE_PODS, page_size=page_size))
    return build_report(nodes, pods, resource=resource, plugin_selector=selector, label_prefix=label_prefix)


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _rows(node: NodeReport) -> list[list[str]]:
    """One row per resource of the node (the main one first); the plugin pod on the first."""
    pods = node.plugin_pods
    plugin = [
        ", ".join(f"{p.namespace}/{p.name}" for p in pods) or "-",
        ", ".join("yes" if p.ready else f"NO ({p.phase})" for p in pods) or "-",
        ", ".join(str(p.restarts) for p in pods) or "-",
    ]
    resources = list(node.resources) or [ResourceCount(node.resource, None, None)]
    return [
        [
            node.name,
            r.name,
            _number(r.capacity),
            _number(r.allocatable),
            str(r.unhealthy),
            str(r.in_use),
            *(plugin if i == 0 else ["", "", ""]),
        ]
        for i, r in enumerate(resources)
    ]


def _held(holder: Holder, main: str) -> str:
    return str(holder.count) if holder.resource == main else f"{holder.count} {holder.resource}"


def render_table(report: ClusterReport, label_prefix: str) -> str:
    header = [
        "NODE",
        "RESOURCE",
        "CAPACITY",
        "ALLOCATABLE",
        "UNHEALTHY",
        "IN USE",
        "PLUGIN POD",
        "READY",
        "RESTARTS",
    ]
    rows = [header] + [row for n in report.nodes for row in _rows(n)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for node in report.nodes:
        if node.holders:
            held = ", ".join(f"{h.namespace}/{h.name} ({_held(h, report.resource)})" for h in node.holders)
            lines.append(f"{node.name} pods: {held}")
        if node.labels:
            # Under the prefix: the name after it; GFD's MIG keys beside it: in full.
            shown = " ".join(f"{k.removeprefix(label_prefix)}={v}" for k, v in sorted(node.labels.items()))
            lines.append(f"{node.name} labels ({label_prefix}*): {shown}")
    if not report.nodes:
        lines.append(f"no node advertises {report.resource}, runs the plugin or carries its labels")
    totals = "; ".join(
        f"{t.name} capacity {t.capacity or 0}, allocatable {t.allocatable or 0}, in use {t.in_use}"
        for t in report.totals()
    )
    lines.append(f"{len(report.nodes)} node(s): {totals}")
    lines.extend(f"problem: {p}" for p in report.problems)
    return "\n".join(lines)


def run_report(
    *,
    kubeconfig: Path | None,
    context: str | None,
    resource: str,
    selector: LabelSelector,
    label_prefix: str,
    as_json: bool,
    page_size: int,
) -> bool:
    """Print the report; True when every plugin pod is ready and every device healthy.

    Raises ConfigError for a kubeconfig that cannot be loaded; an unreachable
    or refusing API server is printed and counts as not ok.
    """
    import json

    api = user_client(kubeconfig, context)
    try:
        report = collect(
            api, resource=resource, selector=selector, label_prefix=label_prefix, page_size=page_size
        )
    except ClusterApiError as err:
        click.echo(f"gpu-device-plugin: cannot read the cluster at {api.configuration.host}: {err}", err=True)
        return False
    finally:
        api.close()  # type: ignore[no-untyped-call]
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(render_table(report, label_prefix))
    return report.ok
