"""What every rendered overlay must be: hardened, sized, probed, labelled, and only what it says.

Each overlay is rendered by the real `kubectl kustomize`; the policy check
(testsupport.manifests.hardening_problems) is also run on crafted bad manifests, so
a check that found nothing could not pass these tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from testsupport.manifests import (
    APP_LABEL,
    KUBELET_PLUGIN_DIR,
    OVERLAYS,
    Manifest,
    containers,
    env_of,
    hardening_problems,
    only,
    pod_specs,
    render_overlay,
)


def test_every_overlay_is_there() -> None:
    assert set(OVERLAYS) == {"dev", "kind", "kind-time-slicing", "prod"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_install(overlay: str) -> None:
    kinds = sorted(obj["kind"] for obj in render_overlay(overlay))
    expected = ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "Namespace", "ServiceAccount"]
    if overlay == "kind":
        expected = sorted([*expected, "ConfigMap"])
    if overlay == "kind-time-slicing":  # the fake GPUs' ConfigMap and NVIDIA's file's
        expected = sorted([*expected, "ConfigMap", "ConfigMap"])
    assert kinds == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_hardening_policy(overlay: str) -> None:
    assert hardening_problems(render_overlay(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_and_the_pods_carry_the_app_label(overlay: str) -> None:
    # `gpu-device-plugin report` finds the plugin's pods by this label.
    objects = render_overlay(overlay)
    key, value = APP_LABEL
    unlabelled = [
        f"{obj['kind']} {obj['metadata']['name']}"
        for obj in objects
        if obj["metadata"].get("labels", {}).get(key) != value
    ]
    assert unlabelled == []
    daemonset = only(objects, "DaemonSet")
    assert daemonset["spec"]["template"]["metadata"]["labels"].get(key) == value
    assert daemonset["spec"]["selector"] == {"matchLabels": {key: value}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespaced_objects_live_in_the_overlays_namespace(overlay: str) -> None:
    objects = render_overlay(overlay)
    namespace = only(objects, "Namespace")["metadata"]["name"]
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    elsewhere = [
        f"{obj['kind']} {obj['metadata']['name']} in {obj['metadata'].get('namespace')}"
        for obj in objects
        if obj["kind"] not in cluster_scoped and obj["metadata"].get("namespace") != namespace
    ]
    assert elsewhere == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_daemonset_runs_as_a_node_critical_rolling_daemon(overlay: str) -> None:
    daemonset = only(render_overlay(overlay), "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"nvidia.com/gpu", "CriticalAddonsOnly"} <= {t.get("key") for t in spec["tolerations"]}
    strategy = daemonset["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"]
    # Two plugins on one node would fight over the same resource's registration.
    assert strategy["rollingUpdate"].get("maxSurge", 0) == 0
    (container,) = spec["containers"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_kubelets_folder_comes_from_the_host(overlay: str) -> None:
    spec = only(render_overlay(overlay), "DaemonSet")["spec"]["template"]["spec"]
    host_paths = [v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v]
    assert host_paths == [KUBELET_PLUGIN_DIR]
    (container,) = spec["containers"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert KUBELET_PLUGIN_DIR in mounts
    assert not any(m.startswith("/dev") for m in mounts)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_identity_comes_from_the_downward_api(overlay: str) -> None:
    (container,) = only(render_overlay(overlay), "DaemonSet")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    fields = {
        name: env[name]["valueFrom"]["fieldRef"]["fieldPath"] for name in env if "valueFrom" in env[name]
    }
    assert {
        "NODE_NAME": "spec.nodeName",
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
    }.items() <= fields.items()


# -------------------------------------------------- the policy check can fail


def _pod_spec(daemonset: Manifest) -> Manifest:
    return daemonset["spec"]["template"]["spec"]


def _container(daemonset: Manifest) -> Manifest:
    return _pod_spec(daemonset)["containers"][0]


def _set(path: list[str], value: Any) -> Callable[[Manifest], None]:
    def change(daemonset: Manifest) -> None:
        target = _container(daemonset)
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value

    return change


def _delete(path: list[str]) -> Callable[[Manifest], None]:
    def change(daemonset: Manifest) -> None:
        target = _container(daemonset)
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _add_host_path(path: str) -> Callable[[Manifest], None]:
    def change(daemonset: Manifest) -> None:
        _pod_spec(daemonset)["volumes"].append({"name": "extra", "hostPath": {"path": path}})

    return change


def _pod_field(name: str) -> Callable[[Manifest], None]:
    def change(daemonset: Manifest) -> None:
        _pod_spec(daemonset)[name] = True

    return change


def _late_variable(daemonset: Manifest) -> None:
    _container(daemonset)["env"].insert(0, {"name": "EARLY", "value": "node=$(NODE_NAME)"})


BAD = {
    "no limits": (_delete(["resources", "limits"]), "lacks resources.limits.cpu"),
    "no memory limit": (_delete(["resources", "limits", "memory"]), "lacks resources.limits.memory"),
    "no requests": (_delete(["resources", "requests"]), "lacks resources.requests.memory"),
    "no resources": (_delete(["resources"]), "lacks resources.limits.memory"),
    "no securityContext": (_delete(["securityContext"]), "lacks a securityContext"),
    "privileged": (_set(["securityContext", "privileged"], True), "is privileged"),
    "escalation": (
        _delete(["securityContext", "allowPrivilegeEscalation"]),
        "allowPrivilegeEscalation is not false",
    ),
    "capabilities kept": (_set(["securityContext", "capabilities"], {}), "drop lacks ALL"),
    "capability added": (
        _set(["securityContext", "capabilities", "add"], ["SYS_ADMIN"]),
        "capabilities.add",
    ),
    "writable root": (
        _set(["securityContext", "readOnlyRootFilesystem"], False),
        "readOnlyRootFilesystem is not true",
    ),
    "unconfined": (
        _set(["securityContext", "seccompProfile"], {"type": "Unconfined"}),
        "seccompProfile is not RuntimeDefault",
    ),
    "no liveness": (_delete(["livenessProbe"]), "no livenessProbe"),
    "no readiness": (_delete(["readinessProbe"]), "no readinessProbe"),
    "/dev from the host": (_add_host_path("/dev"), "mounts /dev"),
    "host root": (_add_host_path("/"), "mounts /"),
    "hostNetwork": (_pod_field("hostNetwork"), "hostNetwork is on"),
    "hostPID": (_pod_field("hostPID"), "hostPID is on"),
    "variable used before it is defined": (_late_variable, "uses $(NODE_NAME) before it is defined"),
}


@pytest.mark.parametrize("change", BAD.values(), ids=BAD.keys())
def test_policy_check_finds_a_crafted_bad_manifest(
    change: tuple[Callable[[Manifest], None], str],
) -> None:
    mutate, expected = change
    objects = render_overlay("prod")
    mutate(only(objects, "DaemonSet"))
    problems = hardening_problems(objects)
    assert any(expected in problem for problem in problems), problems
    assert all(problem.startswith("DaemonSet gpu-device-plugin") for problem in problems)


def test_policy_check_covers_init_containers_and_bare_pods() -> None:
    pod = {
        "kind": "Pod",
        "metadata": {"name": "bare"},
        "spec": {"initContainers": [{"name": "setup", "image": "x"}], "containers": []},
    }
    problems = hardening_problems([pod])
    assert "Pod bare container setup: lacks resources.limits.cpu" in problems
    assert "Pod bare container setup: lacks a securityContext" in problems
    assert [what for what, _ in pod_specs([pod])] == ["Pod bare"]
    assert [c["name"] for c in containers(pod["spec"])] == ["setup"]
