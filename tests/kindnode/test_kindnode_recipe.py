"""The kind node recipe's pure parts: image names kubeadm asks for, the cluster config, the runc wrapper.

What a user would notice: a node that never pulls (every image kubeadm of the
pinned Kubernetes names is one we write), a kubelet that starts on cgroup v1,
no kube-proxy on our image and kind's defaults on the stock one, and a
privileged container that starts on a root without every capability.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
import tarfile
from pathlib import Path
from types import ModuleType
from typing import IO

import pytest

from gdp_hack.kindnode import clusterconfig, images, versions

REPO = Path(__file__).resolve().parents[2]


def _runc_bounded() -> ModuleType:
    path = REPO / "e2e" / "kind" / "runc-bounded"
    loader = importlib.machinery.SourceFileLoader("runc_bounded", str(path))
    spec = importlib.util.spec_from_loader("runc_bounded", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_every_version_is_pinned_in_a_go_mod() -> None:
    assert re.fullmatch(r"v1\.(3[4-9]|[4-9]\d)\.\d+", versions.kubernetes()), "Kubernetes >= 1.34 (DRA v1 GA)"
    for tool in versions.TOOLS:
        assert re.fullmatch(r"v\d+\.\d+\.\d+", tool.version), tool
        assert (tool.module_dir / "go.sum").is_file(), f"{tool.name}: go.sum pins the rest"


def test_image_tags_are_kubeadms_for_the_pinned_kubernetes() -> None:
    tags = versions.image_tags()
    version = versions.kubernetes()
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert tags[component] == f"registry.k8s.io/{component}:{version}"
    assert tags["etcd"] == f"registry.k8s.io/etcd:{versions.ETCD.version.lstrip('v')}-0"
    assert tags["coredns"] == f"registry.k8s.io/coredns/coredns:{versions.COREDNS.version}"
    assert tags["pause"] == f"registry.k8s.io/pause:{versions.PAUSE_TAG}"


def test_a_kubeadm_image_the_node_does_not_preload_is_named() -> None:
    # The shape of `kubeadm config images list`; the node image build runs the real kubeadm.
    tags = versions.image_tags()
    listed = "\n".join([*tags.values(), "registry.k8s.io/kube-proxy:v9.9.9", ""])
    assert versions.not_preloaded(listed) == []

    newer = listed.replace(tags["coredns"], "registry.k8s.io/coredns/coredns:v9.9.9")
    assert versions.not_preloaded(newer) == ["registry.k8s.io/coredns/coredns:v9.9.9"]


def test_the_containerd_sandbox_image_is_the_preloaded_pause() -> None:
    config = (REPO / "hack/kindnode/node/files/etc/containerd/config.toml").read_text()
    assert f'sandbox = "{versions.image_tags()["pause"]}"' in config


def test_our_image_config_runs_on_cgroup_v1_without_kube_proxy() -> None:
    config = json.loads(clusterconfig.render(ours=True, nvml_root=None))
    patch = config["nodes"][0]["kubeadmConfigPatches"][0]
    assert "failCgroupV1: false" in patch
    assert "nodeStatusUpdateFrequency: 1s" in patch
    assert "syncFrequency: 1s" in patch
    assert config["networking"]["kubeProxyMode"] == "none"
    assert config["networking"]["disableDefaultCNI"] is True
    assert "extraMounts" not in config["nodes"][0]


def test_the_stock_config_keeps_kinds_networking_and_mounts_the_nvml_root(tmp_path: Path) -> None:
    config = json.loads(clusterconfig.render(ours=False, nvml_root=tmp_path))
    assert "networking" not in config
    assert "failCgroupV1" not in config["nodes"][0]["kubeadmConfigPatches"][0]
    (mount,) = config["nodes"][0]["extraMounts"]
    assert mount["hostPath"] == mount["containerPath"] == str(tmp_path)


def test_a_bad_nvml_root_exits_2_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gdp_hack.kindnode.__main__ import main

    assert main(["config", "--nvml-root", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: --nvml-root: ")


def test_runc_bounded_cuts_capabilities_outside_the_bounding_set(tmp_path: Path) -> None:
    runc_bounded = _runc_bounded()
    everything = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"]
    config = {
        "ociVersion": "1.0.2",
        "process": {"capabilities": {"bounding": everything, "effective": everything}},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = ["--root", "/run/x", "create", "--bundle", str(tmp_path), "--pid-file", "p", "id"]
    folder = runc_bounded.bundle(args)
    assert folder == tmp_path
    runc_bounded.bound(folder / "config.json", {"CAP_CHOWN", "CAP_SYS_ADMIN"}, whole_config=True)
    cut = json.loads((tmp_path / "config.json").read_text())
    assert cut["process"]["capabilities"] == {
        "bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
        "effective": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
    }
    assert cut["ociVersion"] == "1.0.2"


def test_runc_bounded_cuts_an_exec_process_and_leaves_other_calls_alone(tmp_path: Path) -> None:
    runc_bounded = _runc_bounded()
    process = tmp_path / "process.json"
    process.write_text(
        json.dumps({"args": ["sh"], "capabilities": {"permitted": ["CAP_SYS_RESOURCE", "CAP_KILL"]}})
    )
    found = runc_bounded.process_file(["exec", "--process", str(process), "id"])
    assert found == process
    runc_bounded.bound(found, {"CAP_KILL"}, whole_config=False)
    assert json.loads(process.read_text())["capabilities"] == {"permitted": ["CAP_KILL"]}
    assert runc_bounded.bundle(["state", "id"]) is None
    assert runc_bounded.process_file(["kill", "id", "9"]) is None


def test_runc_bounded_reads_this_processs_bounding_set() -> None:
    names = _runc_bounded().bounding_set()
    assert "CAP_CHOWN" in names
    assert all(name.startswith("CAP_") for name in names)


def test_a_control_plane_image_finds_its_bare_command_on_path(tmp_path: Path) -> None:
    # kubeadm's static pods run `kube-apiserver ...`, not a path: the image's PATH must find it.
    binary = tmp_path / "kube-apiserver"
    binary.write_bytes(b"\x7fELF stand-in")
    archive = images.binary_image(
        binary,
        tmp_path / "apiserver.tar",
        name="registry.k8s.io/kube-apiserver:v1.34.4",
        at="/usr/local/bin/kube-apiserver",
    )
    with tarfile.open(archive) as outer:
        index = json.load(_member(outer, "index.json"))
        (descriptor,) = index["manifests"]
        assert (
            descriptor["annotations"]["io.containerd.image.name"] == "registry.k8s.io/kube-apiserver:v1.34.4"
        )
        manifest = json.load(_member(outer, _blob(descriptor["digest"])))
        config = json.load(_member(outer, _blob(manifest["config"]["digest"])))
        (layer_descriptor,) = manifest["layers"]
        with tarfile.open(fileobj=_member(outer, _blob(layer_descriptor["digest"]))) as layer:
            assert layer.getmember("usr/local/bin/kube-apiserver").mode & 0o111
    path = next(e for e in config["config"]["Env"] if e.startswith("PATH="))
    assert "/usr/local/bin" in path.removeprefix("PATH=").split(":")


def _blob(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    extracted = archive.extractfile(name)
    assert extracted is not None, name
    return extracted
