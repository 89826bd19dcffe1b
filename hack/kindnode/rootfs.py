"""The kind node's Debian tree: debootstrap bookworm with systemd, runc and the CNI plugins.

What a kind node needs from a distribution: systemd as PID 1 (and D-Bus, which
the kubelet's and runc's systemd cgroup drivers talk to), mount/util-linux,
iproute2 and iptables for the kubelet and CNI, kmod, procps (the suite's pkill),
conntrack, socat and ethtool (kubeadm's and kubectl port-forward's helpers),
ca-certificates, runc, and the CNI plugins. Kubernetes, containerd and crictl
are not Debian's (bookworm's containerd is 1.6; CDI wants >= 1.7): the
Dockerfile adds our builds.

Packed as an OCI layout by the project's deterministic writer with times clamped
to the archive's Release date, cached under a key of this recipe
(<image cache>/kind-node-rootfs/<key>), like hack/image's bases.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from gdp_e2e.cluster import cachefill
from gdp_e2e.cluster import images as oci
from gdp_hack.image import debian, tools

SUITE = debian.SUITE
NAME = f"localhost/gpu-dp-kind-node-rootfs:{SUITE}"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "iptables",
    "kmod",
    "procps",
    "conntrack",
    "socat",
    "ethtool",
    "ca-certificates",
    "runc",
    "containernetworking-plugins",
    "libseccomp2",
)
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def recipe_key() -> str:
    digest = hashlib.sha256()
    for source in (Path(__file__).resolve(), Path(oci.__file__).resolve()):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def digest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    found: str = index["manifests"][0]["digest"]
    return found


def rootfs(*, cache: Path) -> Path:
    """The OCI layout of the node's Debian tree, made first if missing."""
    folder = cache / "kind-node-rootfs" / recipe_key()

    def complete(candidate: Path) -> bool:
        return (candidate / "index.json").is_file()

    if complete(folder):
        return folder
    tools.require_root("making the kind node's Debian tree")
    debootstrap = tools.program("debootstrap")

    def make_into(partial: Path) -> None:
        work = Path(tempfile.mkdtemp(prefix="work-", dir=partial.parent))
        try:
            _make(partial, work / "root", debootstrap)
        finally:
            tools.remove(work)

    cachefill.fill_once(
        folder,
        make_into,
        complete=complete,
        what="the kind node's Debian tree",
        log=tools.log,
        remove=tools.remove,
    )
    return folder


def _make(target: Path, root: Path, debootstrap: Path) -> None:
    mirror = os.environ.get(debian.ENV_MIRROR, debian.DEFAULT_MIRROR)
    tools.log(f"debootstrap {SUITE} for the kind node ({', '.join(PACKAGES)}) from {mirror}")
    tools.run(
        [
            debootstrap,
            "--variant=minbase",
            "--include=" + ",".join(PACKAGES),
            "--components=main",
            SUITE,
            root,
            mirror,
        ],
        what="debootstrap (kind node)",
        log_file=target / "debootstrap.log",
    )
    epoch = debian.release_epoch(root)
    debian.prune(root, debian.UNNEEDED_EVERYWHERE, emptied=debian.EMPTIED)
    layout = oci.Layout(target)
    layer = layout.add_layer(
        lambda tar: tar.add_tree(root, epoch=epoch, skip_contents=debian.SPECIAL_FOLDERS)
    )
    created = debian._iso(epoch)
    config = oci.image_config(
        entrypoint=[],
        cmd=["/bin/bash"],
        env=[PATH_ENV],
        created=created,
        history=f"hack/kindnode: debootstrap --variant=minbase {SUITE} + {' '.join(PACKAGES)}, pruned",
    )
    manifest = layout.add_image(layers=[layer], config=config)
    layout.write_index(manifest, name=NAME)
    tools.log(f"packed {NAME}: {layer.size / 1e6:.1f} MB, {manifest.digest}")
