"""The kustomize overlays as kubectl renders them, and the checks every rendered pod must pass.

Rendering goes through gdp_hack.manifests (the same code `task manifests` runs).
No kubectl is a failure, never a skip: CI must not turn these checks into a
pass by lacking the tool.

`hardening_problems` is the policy in one place: the tests assert it finds
nothing in our overlays, and that it does find each problem in crafted bad
manifests (so it cannot pass by checking nothing).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gdp_hack import manifests as hack

REPO = Path(__file__).resolve().parents[2]
KUBELET_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
APP_LABEL = ("app.kubernetes.io/name", "gpu-device-plugin")
POD_TEMPLATE_KINDS = {"DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job"}

Manifest = dict[str, Any]


OVERLAYS: list[str] = hack.overlay_names()
KUSTOMIZE_DIR: Path = hack.KUSTOMIZE_DIR


@functools.cache
def kubectl() -> str:
    try:
        return str(hack.kubectl_binary())
    except hack.ToolError as err:
        pytest.fail(str(err), pytrace=False)


def render_dir(folder: Path) -> list[Manifest]:
    try:
        return list(hack.documents(hack.render(folder, kubectl=kubectl())))
    except hack.ToolError as err:
        pytest.fail(str(err), pytrace=False)


@functools.cache
def _rendered(overlay: str) -> tuple[Manifest, ...]:
    return tuple(render_dir(hack.OVERLAYS_DIR / overlay))


def render_overlay(overlay: str) -> list[Manifest]:
    """The overlay's objects (a fresh deep copy each call: tests may change them)."""
    return copy.deepcopy(list(_rendered(overlay)))


def only(objects: list[Manifest], kind: str) -> Manifest:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(what, pod spec) of every object that makes pods."""
    for obj in objects:
        what = f"{obj['kind']} {obj['metadata'].get('name', '?')}"
        if obj["kind"] == "Pod":
            yield what, obj["spec"]
        elif obj["kind"] in POD_TEMPLATE_KINDS:
            yield what, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield what, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(spec: Manifest) -> list[Manifest]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def hardening_problems(objects: list[Manifest]) -> list[str]:
    """Everything in the objects' pods that breaks our policy, one line each; empty: none."""
    problems: list[str] = []
    for what, spec in pod_specs(objects):
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(field):
                problems.append(f"{what}: {field} is on")
        for volume in spec.get("volumes", []):
            path = _get(volume, "hostPath", "path")
            if path is not None and path.rstrip("/") != KUBELET_PLUGIN_DIR:
                problems.append(f"{what}: hostPath volume {volume['name']} mounts {path}")
        pod_seccomp = _get(spec, "securityContext", "seccompProfile", "type")
        regular = {c["name"] for c in spec.get("containers", [])}
        for container in containers(spec):
            where = f"{what} container {container['name']}"
            problems += [f"{where}: {p}" for p in _container_problems(container, pod_seccomp)]
            if container["name"] in regular:
                for probe in ("livenessProbe", "readinessProbe"):
                    if not container.get(probe):
                        problems.append(f"{where}: no {probe}")
    return problems


def _container_problems(container: Manifest, pod_seccomp: str | None) -> list[str]:
    problems = []
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if not _get(container, "resources", section, resource):
                problems.append(f"lacks resources.{section}.{resource}")
    context = container.get("securityContext")
    if not context:
        return [*problems, "lacks a securityContext"]
    if context.get("privileged"):
        problems.append("is privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("securityContext.allowPrivilegeEscalation is not false")
    if "ALL" not in (_get(context, "capabilities", "drop") or []):
        problems.append("securityContext.capabilities.drop lacks ALL")
    if _get(context, "capabilities", "add"):
        problems.append(f"securityContext.capabilities.add {context['capabilities']['add']}")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("securityContext.readOnlyRootFilesystem is not true")
    if (_get(context, "seccompProfile", "type") or pod_seccomp) != "RuntimeDefault":
        problems.append("seccompProfile is not RuntimeDefault")
    # The kubelet expands $(VAR) only from variables defined earlier in the list;
    # a later or missing one is passed on literally.
    defined: set[str] = set()
    for entry in container.get("env", []):
        for name in _VAR_REF.findall(str(entry.get("value", ""))):
            if name not in defined:
                problems.append(f"env {entry['name']} uses $({name}) before it is defined")
        defined.add(entry["name"])
    return problems


def rbac_rules(role: Manifest) -> set[tuple[str, str, str]]:
    """A Role's rules as (apiGroup, resource, verb) triples; wildcards kept literally.

    A rule narrowed by resourceNames, or one for non-resource URLs, becomes a
    triple that names it, so an exact comparison still catches it.
    """
    triples = set()
    for rule in role.get("rules", []):
        for url in rule.get("nonResourceURLs", []):
            triples.update(("nonResourceURL", url, verb) for verb in rule.get("verbs", []))
        names = ",".join(rule.get("resourceNames", []))
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    triples.add((group, f"{resource}[{names}]" if names else resource, verb))
    return triples
