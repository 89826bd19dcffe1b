"""The plugin's API access: exactly what node labels and health Events use, bound to its own account.

The same rules are checked against a real API server, as the service account,
in e2e/tests/test_manifests.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testsupport.manifests import (
    KUSTOMIZE_DIR,
    OVERLAYS,
    Manifest,
    only,
    rbac_rules,
    render_dir,
    render_overlay,
)

#: nodes get+patch: read its own Node, merge-patch its feature labels;
#: nodes list+watch: follow its own Node's config label (a watch by field selector);
#: events create+patch: a health or config Event on the Node, and the count bump of a repeat.
EXPECTED_RULES = {
    ("", "nodes", "get"),
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    ("", "nodes", "patch"),
    ("", "events", "create"),
    ("", "events", "patch"),
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cluster_role_grants_exactly_what_the_daemon_uses(overlay: str) -> None:
    objects = render_overlay(overlay)
    assert rbac_rules(only(objects, "ClusterRole")) == EXPECTED_RULES
    assert not [obj for obj in objects if obj["kind"] in {"Role", "RoleBinding"}]


def _check_binding(objects: list[Manifest]) -> None:
    role = only(objects, "ClusterRole")
    binding = only(objects, "ClusterRoleBinding")
    account = only(objects, "ServiceAccount")
    daemonset = only(objects, "DaemonSet")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert daemonset["metadata"]["namespace"] == account["metadata"]["namespace"]
    # The token is what in-cluster config authenticates with.
    assert pod.get("automountServiceAccountToken", True) is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_binding_gives_the_role_to_the_daemons_own_account(overlay: str) -> None:
    _check_binding(render_overlay(overlay))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_binding_follows_an_overlay_that_moves_the_namespace(overlay: str, tmp_path: Path) -> None:
    # Users install into kube-system or their own namespace with an overlay of ours;
    # a binding left pointing at the old namespace would silently grant nothing.
    target = KUSTOMIZE_DIR / "overlays" / overlay
    (tmp_path / "kustomization.yaml").write_text(
        "namespace: kube-system\n"
        "nameSuffix: -mine\n"
        f"resources:\n  - {os.path.relpath(target, tmp_path)}\n"  # kustomize refuses absolute paths
    )
    objects = render_dir(tmp_path)
    _check_binding(objects)
    assert only(objects, "ServiceAccount")["metadata"] == {
        "name": "gpu-device-plugin-mine",
        "namespace": "kube-system",
        "labels": {"app.kubernetes.io/name": "gpu-device-plugin"},
    }


def test_rule_comparison_sees_widening() -> None:
    # rbac_rules must expose a wildcard, an extra verb or a narrowed rule to the comparison.
    role = {
        "kind": "ClusterRole",
        "rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch", "list"]},
            {"apiGroups": ["*"], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["x"], "verbs": ["get"]},
        ],
    }
    triples = rbac_rules(role)
    assert triples != EXPECTED_RULES
    assert {("", "nodes", "list"), ("*", "events", "create"), ("", "secrets[x]", "get")} <= triples
