"""The kustomize manifests against the e2e cluster's real API server.

- Every overlay, as `kubectl kustomize` renders it, passes a server-side dry run
  (validation and admission, nothing stored) through hack/manifests.py, the code
  behind `task manifests`.
- The DaemonSet's pod passes pod admission (Pod Security, priority class, service
  account, runtime class), which a DaemonSet dry run never reaches: the DaemonSet
  controller would only fail later, in events nobody reads.
- The base's RBAC, applied for real, gives its service account exactly what the
  daemon uses: `kubectl auth can-i` as that account, then the calls themselves
  with a token minted for it (allowed ones work, others get 403).

The RBAC objects are applied under a namespace and name suffix of this test's
own, so they never collide with a plugin deployed by the rest of the suite;
everything created is deleted afterwards.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import ClusterUnderTest
from gdp_hack import manifests as hack
from gpu_device_plugin.cluster.feature_labels import DEFAULT_LABEL_PREFIX

REPO = Path(__file__).resolve().parents[2]
EVENTS_NAMESPACE = "default"  # where the daemon posts its Node Events, as the kubelet does
RBAC_KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding")


@pytest.fixture(scope="module")
def kubectl(cluster: ClusterUnderTest) -> Any:
    """hack/manifests.py's kubectl, pointed at the suite's cluster as its admin."""
    binary, *flags = cluster.kubectl
    kubeconfig = next((f.split("=", 1)[1] for f in flags if f.startswith("--kubeconfig=")), None)
    return hack.Kubectl(binary, kubeconfig)


# ----------------------------------------------------------------- dry runs


def test_every_overlay_passes_a_server_side_dry_run(kubectl: Any) -> None:
    overlays = hack.overlay_names()
    assert overlays == ["dev", "kind", "kind-time-slicing", "prod"]
    results = hack.validate(kubectl, overlays)
    for overlay in overlays:
        objects = hack.documents(hack.render(hack.OVERLAYS_DIR / overlay, kubectl=kubectl.binary))
        lines = results[overlay]
        assert len(lines) == len(objects), lines
        assert all(line.endswith("(server dry run)") for line in lines), lines
        for obj in objects:
            kind = obj["kind"].lower()
            name = obj["metadata"]["name"]
            assert any(line.split("/")[0].split(".")[0] == kind and f"/{name} " in line for line in lines), (
                f"{kind}/{name} missing from:\n" + "\n".join(lines)
            )


def _break_limit(container: dict[str, Any]) -> None:
    container["resources"]["limits"]["memory"] = "64Mi"  # below the request


def _misspell_field(container: dict[str, Any]) -> None:
    container["securityContext"]["readOnlyRootFS"] = container["securityContext"].pop(
        "readOnlyRootFilesystem"
    )


@pytest.mark.parametrize(
    ("change", "refusal"),
    [(_break_limit, "must be less than or equal to memory limit"), (_misspell_field, "readOnlyRootFS")],
    ids=["limit below request", "misspelt field"],
)
def test_dry_run_refuses_a_broken_daemonset(
    kubectl: Any, change: Callable[[dict[str, Any]], None], refusal: str
) -> None:
    # The dry run is a real check: the API server's validation runs, strict about fields.
    objects = hack.documents(hack.render(hack.OVERLAYS_DIR / "prod", kubectl=kubectl.binary))
    daemonset = next(obj for obj in objects if obj["kind"] == "DaemonSet")
    change(daemonset["spec"]["template"]["spec"]["containers"][0])
    with hack.namespaces_present(kubectl, objects), pytest.raises(hack.ToolError) as refused:
        hack.dry_run(kubectl, objects)
    assert refusal in str(refused.value)


@dataclass
class PluginAccount:
    """The base's RBAC applied for real under a namespace and suffix of the test's own."""

    namespace: str
    service_account: str
    objects: list[dict[str, Any]]

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def _render_base_as(suffix: str, folder: Path, kubectl: Any) -> list[dict[str, Any]]:
    base = hack.KUSTOMIZE_DIR / "base"
    (folder / "kustomization.yaml").write_text(
        f"namespace: gpu-dp-rbac-{suffix}\n"
        f'nameSuffix: "-{suffix}"\n'
        f"resources:\n  - {os.path.relpath(base, folder)}\n"  # kustomize refuses absolute paths
    )
    return list(hack.documents(hack.render(folder, kubectl=kubectl.binary)))


@pytest.fixture(scope="module")
def account(kubectl: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginAccount]:
    suffix = secrets.token_hex(3)
    rendered = _render_base_as(suffix, tmp_path_factory.mktemp("rbac"), kubectl)
    # Never the DaemonSet: the RBAC is what is under test, not a second plugin.
    objects = [obj for obj in rendered if obj["kind"] in RBAC_KINDS]
    assert sorted(obj["kind"] for obj in objects) == sorted(RBAC_KINDS)
    text = yaml.safe_dump_all(objects)
    kubectl.run("apply", "-f", "-", stdin=text)
    try:
        sa = next(obj for obj in objects if obj["kind"] == "ServiceAccount")["metadata"]
        yield PluginAccount(namespace=sa["namespace"], service_account=sa["name"], objects=objects)
    finally:
        kubectl.run("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=text)


def _pod_from_template(rendered: list[dict[str, Any]], account: PluginAccount, name: str) -> dict[str, Any]:
    """The pod the DaemonSet controller would make, in the test's namespace and account."""
    daemonset = next(obj for obj in rendered if obj["kind"] == "DaemonSet")
    template = daemonset["spec"]["template"]
    spec = {**template["spec"], "serviceAccountName": account.service_account}
    # The kind overlay's ConfigMap is not in this namespace; a dry run does not mount it.
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": name, "namespace": account.namespace},
        "spec": spec,
    }


@pytest.fixture
def nvidia_runtime_class(cluster: ClusterUnderTest) -> Iterator[None]:
    """The RuntimeClass the prod overlay names (the GPU Operator or the admin makes it)."""
    node_api = client.NodeV1Api(cluster.api)
    try:
        node_api.read_runtime_class("nvidia")
        yield
        return
    except ApiException as error:
        if error.status != 404:
            raise
    node_api.create_runtime_class(
        client.V1RuntimeClass(metadata=client.V1ObjectMeta(name="nvidia"), handler="nvidia")
    )
    try:
        yield
    finally:
        node_api.delete_runtime_class("nvidia")


@pytest.mark.usefixtures("nvidia_runtime_class")
@pytest.mark.parametrize("overlay", ["dev", "kind", "prod"])
def test_the_daemonsets_pod_passes_pod_admission(overlay: str, kubectl: Any, account: PluginAccount) -> None:
    rendered = hack.documents(hack.render(hack.OVERLAYS_DIR / overlay, kubectl=kubectl.binary))
    pod = _pod_from_template(rendered, account, f"admission-{overlay}")
    output = kubectl.run("create", "--dry-run=server", "-o", "yaml", "-f", "-", stdin=yaml.safe_dump(pod))
    admitted = yaml.safe_load(output)
    # Admission resolved the priority class to its value: the pod is node-critical.
    assert admitted["spec"]["priorityClassName"] == "system-node-critical"
    assert admitted["spec"]["priority"] == 2000001000


def test_the_namespace_must_allow_the_hostpath(
    cluster: ClusterUnderTest, kubectl: Any, account: PluginAccount
) -> None:
    # Why base/namespace.yaml says "privileged": at "baseline" the pod is refused for its
    # one hostPath, and for nothing else.
    rendered = hack.documents(hack.render(hack.OVERLAYS_DIR / "dev", kubectl=kubectl.binary))
    pod = _pod_from_template(rendered, account, "admission-baseline")
    label = "pod-security.kubernetes.io/enforce"
    cluster.core.patch_namespace(account.namespace, {"metadata": {"labels": {label: "baseline"}}})
    try:
        with pytest.raises(hack.ToolError) as refused:
            kubectl.run("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(pod))
    finally:
        cluster.core.patch_namespace(account.namespace, {"metadata": {"labels": {label: "privileged"}}})
    message = str(refused.value)
    _, marker, violations = message.partition('violates PodSecurity "baseline:latest": ')
    assert marker, message
    assert violations.strip() == 'hostPath volumes (volume "device-plugins")'


# -------------------------------------------------------------------- RBAC


ALLOWED = [
    ("get", "nodes", None),
    ("patch", "nodes", None),
    # --config-dir: the watch of its own Node's label (RBAC cannot narrow it to one name).
    ("list", "nodes", None),
    ("watch", "nodes", None),
    ("create", "events", EVENTS_NAMESPACE),
    ("patch", "events", EVENTS_NAMESPACE),
]
DENIED = [
    ("list", "secrets", "--all-namespaces"),
    ("get", "secrets", EVENTS_NAMESPACE),
    ("patch", "pods", EVENTS_NAMESPACE),
    ("get", "pods", EVENTS_NAMESPACE),
    ("delete", "nodes", None),
    ("update", "nodes", None),
    ("create", "pods", EVENTS_NAMESPACE),
    ("delete", "events", EVENTS_NAMESPACE),
    ("get", "configmaps", EVENTS_NAMESPACE),
]


def _can_i(kubectl: Any, account: PluginAccount, verb: str, resource: str, scope: str | None) -> bool:
    where = [] if scope is None else [scope] if scope.startswith("--") else ["-n", scope]
    result = subprocess.run(
        kubectl.argv("auth", "can-i", verb, resource, *where, f"--as={account.user}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise AssertionError(f"kubectl auth can-i failed:\n{result.stderr}")
    return result.returncode == 0


def test_auth_can_i_as_the_service_account(kubectl: Any, account: PluginAccount) -> None:
    # The authorizer learns new bindings from a watch: allow it a moment for the first.
    deadline = time.monotonic() + 15
    while not _can_i(kubectl, account, *ALLOWED[0]):
        assert time.monotonic() < deadline, f"{account.user} never got {ALLOWED[0]}"
        time.sleep(0.2)
    answers = {
        (verb, resource): _can_i(kubectl, account, verb, resource, scope) for verb, resource, scope in ALLOWED
    }
    assert answers == {(verb, resource): True for verb, resource, _ in ALLOWED}
    answers = {
        (verb, resource): _can_i(kubectl, account, verb, resource, scope) for verb, resource, scope in DENIED
    }
    assert answers == {(verb, resource): False for verb, resource, _ in DENIED}


@pytest.fixture(scope="module")
def as_plugin(cluster: ClusterUnderTest, kubectl: Any, account: PluginAccount) -> client.CoreV1Api:
    """The API as the plugin's service account, with a token minted for it."""
    token = kubectl.run(
        "create", "token", account.service_account, "-n", account.namespace, "--duration=10m"
    ).strip()
    admin = cluster.api.configuration
    configuration = client.Configuration()
    configuration.host = admin.host
    configuration.ssl_ca_cert = admin.ssl_ca_cert
    configuration.verify_ssl = admin.verify_ssl
    configuration.api_key = {"authorization": f"Bearer {token}"}
    core = client.CoreV1Api(client.ApiClient(configuration))
    # Who the API server says we are (also waits out the authorizer's first sync).
    deadline = time.monotonic() + 15
    while True:
        try:
            core.read_node(cluster.node_name)
            return core
        except ApiException as error:
            if error.status != 403 or time.monotonic() > deadline:
                raise


def _forbidden(call: Callable[[], Any]) -> ApiException:
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 403, caught.value
    return caught.value


def test_allowed_calls_work_as_the_service_account(
    cluster: ClusterUnderTest, as_plugin: client.CoreV1Api
) -> None:
    node = as_plugin.read_node(cluster.node_name)
    assert node.metadata.name == cluster.node_name

    key = f"{DEFAULT_LABEL_PREFIX}e2e-rbac-check"
    value = secrets.token_hex(4)
    try:
        as_plugin.patch_node(cluster.node_name, {"metadata": {"labels": {key: value}}})
        assert cluster.core.read_node(cluster.node_name).metadata.labels.get(key) == value
        as_plugin.patch_node(cluster.node_name, {"metadata": {"labels": {key: None}}})
        assert key not in cluster.core.read_node(cluster.node_name).metadata.labels
    finally:
        cluster.core.patch_node(cluster.node_name, {"metadata": {"labels": {key: None}}})

    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    name = f"{cluster.node_name}.rbac-check-{secrets.token_hex(3)}"
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": EVENTS_NAMESPACE},
        "involvedObject": {"kind": "Node", "name": cluster.node_name, "uid": node.metadata.uid},
        "reason": "RBACCheck",
        "message": "the e2e suite checks the plugin's RBAC",
        "type": "Normal",
        "source": {"component": "gpu-device-plugin"},
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
    }
    try:
        as_plugin.create_namespaced_event(EVENTS_NAMESPACE, event)
        as_plugin.patch_namespaced_event(name, EVENTS_NAMESPACE, {"count": 2})
        assert cluster.core.read_namespaced_event(name, EVENTS_NAMESPACE).count == 2
        # ... but it cannot tidy up after itself: delete is not in its role.
        _forbidden(lambda: as_plugin.delete_namespaced_event(name, EVENTS_NAMESPACE))
    finally:
        try:
            cluster.core.delete_namespaced_event(name, EVENTS_NAMESPACE)
        except ApiException as error:
            if error.status != 404:
                raise


def test_other_calls_are_forbidden_to_the_service_account(
    cluster: ClusterUnderTest, as_plugin: client.CoreV1Api, account: PluginAccount
) -> None:
    _forbidden(lambda: as_plugin.list_secret_for_all_namespaces())
    _forbidden(lambda: as_plugin.list_namespaced_secret(account.namespace))
    _forbidden(lambda: as_plugin.list_namespaced_pod(EVENTS_NAMESPACE))
    _forbidden(lambda: as_plugin.read_namespaced_pod("anything", EVENTS_NAMESPACE))
    _forbidden(
        lambda: as_plugin.patch_namespaced_pod(
            "anything", EVENTS_NAMESPACE, {"metadata": {"labels": {"a": "b"}}}
        )
    )
    # A dry run, so that a wrong role could not take the node away from the rest of the suite.
    _forbidden(lambda: as_plugin.delete_node(cluster.node_name, dry_run="All"))
    node = cluster.core.read_node(cluster.node_name)
    _forbidden(lambda: as_plugin.replace_node(cluster.node_name, node, dry_run="All"))
