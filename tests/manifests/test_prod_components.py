"""The prod overlay with and without each optional part, as a user's own overlay would build it.

Each case is a kustomization written the way overlays/prod/README.md tells a
user to: our prod overlay as the resource, plus a component, or the documented
patch that drops the RuntimeClass. Rendered by the real kubectl, like the rest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from testsupport.manifests import (
    APP_LABEL,
    KUSTOMIZE_DIR,
    Manifest,
    env_of,
    hardening_problems,
    only,
    render_dir,
    render_overlay,
)

PROD = KUSTOMIZE_DIR / "overlays" / "prod"
COMPONENTS = KUSTOMIZE_DIR / "components"
#: overlays/prod/README.md: where NVIDIA's runtime is containerd's default and there is no RuntimeClass.
NO_RUNTIME_CLASS_PATCH = {
    "target": {"kind": "DaemonSet", "name": "gpu-device-plugin"},
    "patch": "- op: remove\n  path: /spec/template/spec/runtimeClassName\n",
}


def _user_overlay(
    tmp_path: Path, *, components: Sequence[str] = (), patches: Sequence[object] = ()
) -> list[Manifest]:
    folder = tmp_path / "my-gpu-plugin"
    folder.mkdir()
    kustomization: dict[str, object] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(PROD, folder)],
    }
    if components:
        kustomization["components"] = [os.path.relpath(COMPONENTS / name, folder) for name in components]
    if patches:
        kustomization["patches"] = list(patches)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render_dir(folder)


def _pod(objects: list[Manifest]) -> Manifest:
    template: Manifest = only(objects, "DaemonSet")["spec"]["template"]
    return template


def _container(objects: list[Manifest]) -> Manifest:
    (container,) = _pod(objects)["spec"]["containers"]
    return container


def _value(container: Manifest, name: str) -> str | None:
    entry = env_of(container).get(name)
    return None if entry is None else entry.get("value")


def test_prod_advertises_nvidia_gpu_as_a_drop_in_for_nvidias_plugin() -> None:
    container = _container(render_overlay("prod"))
    assert _value(container, "GPU_DP_RESOURCE_NAME") == "nvidia.com/gpu"


@pytest.mark.parametrize("overlay", ["dev", "kind"])
def test_dev_and_kind_keep_the_binarys_default_resource(overlay: str) -> None:
    assert _value(_container(render_overlay(overlay)), "GPU_DP_RESOURCE_NAME") == "example.com/gpu"


# ----------------------------------------------------------------- runtime


def test_prod_asks_for_the_nvidia_runtime_class_by_default() -> None:
    assert _pod(render_overlay("prod"))["spec"]["runtimeClassName"] == "nvidia"


def test_the_documented_patch_runs_prod_on_the_default_runtime(tmp_path: Path) -> None:
    # Where NVIDIA's runtime is containerd's default there may be no RuntimeClass to name.
    objects = _user_overlay(tmp_path, patches=[NO_RUNTIME_CLASS_PATCH])
    spec = _pod(objects)["spec"]
    assert "runtimeClassName" not in spec
    # Everything else of prod stays: NVML through the toolkit's environment, GPU nodes only.
    container = _container(objects)
    assert _value(container, "GPU_DP_DISCOVERY") == "nvml"
    assert _value(container, "NVIDIA_VISIBLE_DEVICES") == "all"
    assert "nodeAffinity" in spec["affinity"]
    assert hardening_problems(objects) == []


# ------------------------------------------------------------ traces export


def test_prod_exports_no_traces_unless_given_a_collector() -> None:
    # No endpoint, no exporter: a cluster without a collector gets no export errors.
    container = _container(render_overlay("prod"))
    assert not [name for name in env_of(container) if name.startswith("OTEL_")]


def test_the_otlp_component_points_prod_at_a_collector(tmp_path: Path) -> None:
    objects = _user_overlay(tmp_path, components=["otlp-traces"])
    container = _container(objects)
    assert (_value(container, "OTEL_EXPORTER_OTLP_ENDPOINT") or "").startswith("http")
    assert _value(container, "OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc"
    assert _value(container, "OTEL_SERVICE_NAME") == "gpu-device-plugin"
    assert "k8s.pod.uid=$(POD_UID)" in (_value(container, "OTEL_RESOURCE_ATTRIBUTES") or "")
    # $(POD_UID) expands only when POD_UID comes first.
    names = list(env_of(container))
    assert names.index("POD_UID") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    # Metrics and the rest of prod are untouched.
    assert _value(container, "GPU_DP_METRICS_ADDRESS") == "0.0.0.0:9400"
    assert _value(container, "GPU_DP_RESOURCE_NAME") == "nvidia.com/gpu"
    assert hardening_problems(objects) == []


# ------------------------------------------------------------------ metrics


def test_prod_serves_metrics_on_a_named_pod_port() -> None:
    objects = render_overlay("prod")
    container = _container(objects)
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    host, _, listen_port = (_value(container, "GPU_DP_METRICS_ADDRESS") or "").rpartition(":")
    assert host == "0.0.0.0", "the scraper reaches the pod IP, not its loopback"
    assert int(listen_port) == port["containerPort"]
    annotations = _pod(objects)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port["containerPort"]
    # The policy is opt-in: nothing limits the port until the user sets a namespace.
    assert not [obj for obj in objects if obj["kind"] == "NetworkPolicy"]


def test_the_network_policy_admits_only_the_scrapers_namespace_to_the_metrics_port(tmp_path: Path) -> None:
    objects = _user_overlay(tmp_path, components=["metrics-network-policy"])
    policy = only(objects, "NetworkPolicy")
    daemonset = only(objects, "DaemonSet")
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    # It selects the plugin's pods, in their namespace, and nothing else.
    assert policy["metadata"]["namespace"] == daemonset["metadata"]["namespace"]
    selector = policy["spec"]["podSelector"]
    assert set(selector) == {"matchLabels"}
    assert selector["matchLabels"].items() <= pod_labels.items()
    assert selector["matchLabels"] == dict([APP_LABEL])
    assert policy["metadata"]["labels"][APP_LABEL[0]] == APP_LABEL[1]
    # Ingress only (the plugin's own calls out stay open), from one namespace, to one port.
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert source == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    (port,) = rule["ports"]
    (metrics,) = [p for p in _container(objects)["ports"] if p["name"] == "metrics"]
    assert port == {"port": metrics["name"], "protocol": metrics["protocol"]}


def test_the_scrapers_namespace_is_the_users_to_set(tmp_path: Path) -> None:
    patch = {
        "target": {"kind": "NetworkPolicy", "name": "gpu-device-plugin-metrics"},
        "patch": "- op: replace\n"
        "  path: /spec/ingress/0/from/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name\n"
        "  value: prometheus\n",
    }
    objects = _user_overlay(tmp_path, components=["metrics-network-policy"], patches=[patch])
    (source,) = only(objects, "NetworkPolicy")["spec"]["ingress"][0]["from"]
    assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "prometheus"}


def test_the_observability_component_is_metrics_and_traces_together(tmp_path: Path) -> None:
    dev = tmp_path / "dev-observed"
    dev.mkdir()
    (dev / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(KUSTOMIZE_DIR / "base", dev)],
                "components": [os.path.relpath(COMPONENTS / "observability", dev)],
            }
        )
    )
    container = _container(render_dir(dev))
    assert _value(container, "GPU_DP_METRICS_ADDRESS") == "0.0.0.0:9400"
    assert (_value(container, "OTEL_EXPORTER_OTLP_ENDPOINT") or "").startswith("http")
