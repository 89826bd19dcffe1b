"""The kind Cluster config for the e2e: one control-plane node, for our image or the stock one.

Both get the kubelet settings the suite's time limits need (node status and pod
sync every second) and image GC off (nothing here can be pulled again), plus,
when given, the NVML fake's driver root mounted into the node at the same path
(extraMounts), as NVIDIA's own GPU-free kind CI mounts its fake driver.

Our image (`ours`) adds what it is built for:
- `failCgroupV1: false`: the kubelet's refusal of cgroup v1 is on by default from
  1.35; 1.34 already warns. This machine has cgroup v1 only.
- no kube-proxy and no kindnetd: every pod of the suite is on the host network
  (the plugin's DaemonSet too, as on the local cluster, reaching the API server at
  127.0.0.1:6443 on the node), and the node's own bridge CNI config (198.19.16.0/24)
  serves any other pod (CoreDNS).
- pod and Service ranges in 198.19.0.0/16, benchmarking space that nothing routes.
"""

from __future__ import annotations

import json
from pathlib import Path

POD_SUBNET = "198.19.16.0/24"
SERVICE_SUBNET = "198.19.32.0/24"


def kubelet_patch(*, ours: bool) -> str:
    lines = [
        "kind: KubeletConfiguration",
        "nodeStatusUpdateFrequency: 1s",
        "syncFrequency: 1s",
        "imageGCHighThresholdPercent: 100",
        "imageGCLowThresholdPercent: 99",
    ]
    if ours:
        lines.append("failCgroupV1: false")
    return "\n".join(lines) + "\n"


def render(*, ours: bool, nvml_root: Path | None) -> str:
    """The config as YAML (JSON is YAML; kind reads either)."""
    node: dict[str, object] = {"role": "control-plane", "kubeadmConfigPatches": [kubelet_patch(ours=ours)]}
    if nvml_root is not None:
        node["extraMounts"] = [
            {"hostPath": str(nvml_root), "containerPath": str(nvml_root), "readOnly": False}
        ]
    config: dict[str, object] = {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "nodes": [node]}
    if ours:
        config["networking"] = {
            "kubeProxyMode": "none",
            "disableDefaultCNI": True,
            "podSubnet": POD_SUBNET,
            "serviceSubnet": SERVICE_SUBNET,
        }
    return json.dumps(config, indent=2) + "\n"
