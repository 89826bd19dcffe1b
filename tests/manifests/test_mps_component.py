"""The mps component on the prod overlay, as a user's overlay would add it, rendered by kubectl.

What must hold for MPS to work on a node: the sidecar runs `mps-control` from the
plugin's image and stops after the plugin; both containers read the one config file,
which asks for MPS with the MPS root they both mount from the host at the same path;
the sidecar's /dev/shm is the root's shm folder (what Allocate mounts into clients);
nothing else of the hardening policy gives way.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import yaml

from gpu_device_plugin import nvidia_config
from gpu_device_plugin.cli.nvidia_file import flag_defaults
from gpu_device_plugin.mps.root import MpsRoot
from gpu_device_plugin.resources.settings import SharingStrategy
from testsupport.manifests import KUSTOMIZE_DIR, Manifest, env_of, hardening_problems, only, render_dir

PROD = KUSTOMIZE_DIR / "overlays" / "prod"
MPS = KUSTOMIZE_DIR / "components" / "mps"


def with_mps(tmp_path: Path) -> list[Manifest]:
    """An overlay of the user's on prod with the component, and prod's images entry repeated
    (as the component's kustomization.yaml says: an overlay's images pin only what it builds)."""
    folder = tmp_path / "my-gpu-plugin"
    folder.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(PROD, folder)],
        "components": [os.path.relpath(MPS, folder)],
        "images": yaml.safe_load((PROD / "kustomization.yaml").read_text())["images"],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render_dir(folder)


def value(container: Manifest, name: str) -> str | None:
    entry = env_of(container).get(name)
    return None if entry is None else entry.get("value")


def mounts(container: Manifest, volumes: dict[str, Manifest]) -> dict[str, Manifest]:
    """mountPath -> the volume mounted there."""
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def test_the_sidecar_runs_mps_control_from_the_plugins_image_and_outlives_it(tmp_path: Path) -> None:
    spec = only(with_mps(tmp_path), "DaemonSet")["spec"]["template"]["spec"]
    (plugin,) = spec["containers"]
    (sidecar,) = spec["initContainers"]

    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up first, down last
    assert sidecar["command"] == ["gpu-device-plugin"]
    assert sidecar["args"] == ["mps-control"]
    assert sidecar["image"] == plugin["image"]
    assert "@sha256:" in sidecar["image"]  # prod's pinned digest reaches the sidecar too
    for name in ("GPU_DP_RESOURCE_NAME", "GPU_DP_DISCOVERY", "GPU_DP_CONFIG_FILE"):
        assert value(sidecar, name) == value(plugin, name), name
    assert "compute" in (value(sidecar, "NVIDIA_DRIVER_CAPABILITIES") or "").split(",")
    # quit, then SIGTERM after 10 s, then SIGKILL after 10 more: within the grace period.
    assert spec["terminationGracePeriodSeconds"] >= 25


def test_both_read_one_file_asking_for_mps_under_the_root_they_both_mount(tmp_path: Path) -> None:
    objects = with_mps(tmp_path)
    spec = only(objects, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (plugin,) = spec["containers"]
    (sidecar,) = spec["initContainers"]
    config_map = only(objects, "ConfigMap")
    assert config_map["metadata"]["namespace"] == only(objects, "DaemonSet")["metadata"]["namespace"]
    config_path = PurePosixPath(value(plugin, "GPU_DP_CONFIG_FILE") or "")

    defaults = flag_defaults(nvidia_config.parse(yaml.safe_load(config_map["data"][config_path.name])))
    assert defaults.sharing is not None
    assert defaults.sharing.strategy is SharingStrategy.MPS
    root = MpsRoot(PurePosixPath(defaults.values["mps_root"]))
    for container in (plugin, sidecar):
        seen = mounts(container, volumes)
        assert seen[str(config_path.parent)]["configMap"]["name"] == config_map["metadata"]["name"]
        # The same path inside as on the host: the pipe folders handed out are host paths.
        assert seen[str(root.path)]["hostPath"]["path"] == str(root.path)
    # The daemon's /dev/shm is the folder every MPS client gets at /dev/shm.
    assert mounts(sidecar, volumes)["/dev/shm"]["hostPath"]["path"] == str(root.shm_dir)


def test_only_the_mps_root_gives_way_in_the_hardening_policy(tmp_path: Path) -> None:
    problems = hardening_problems(with_mps(tmp_path))
    assert problems == [
        "DaemonSet gpu-device-plugin: hostPath volume mps-root mounts /run/nvidia/mps",
        "DaemonSet gpu-device-plugin: hostPath volume mps-shm mounts /run/nvidia/mps/shm",
    ]
