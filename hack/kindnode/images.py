"""The images a kind cluster of our node starts, written as OCI archives the node preloads.

kubeadm runs the control plane and etcd as static pods and CoreDNS as a
Deployment, by the names versions.image_tags() gives. Each image here is one
layer: our static build at /usr/local/bin/<name> (CoreDNS's at /coredns, where
its Deployment's args expect the entrypoint), a /tmp, and a passwd/group, with
fixed times (gdp_e2e.cluster.images, the project's deterministic writer). The
sandbox image is our own pause (e2e/images/pause); the workload image the
suite's pods run is the local cluster's busybox.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from gdp_e2e.cluster import build as cluster_build
from gdp_e2e.cluster import images as oci

from . import versions

PASSWD = b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def binary_image(binary: Path, target: Path, *, name: str, at: str) -> Path:
    """A one-layer image of a static binary at `at`, which is also its entrypoint."""
    layer = oci._Layer()
    parent = at.rsplit("/", 1)[0].lstrip("/")
    for folder in ("etc", "tmp", *(_parents(parent) if parent else ())):
        layer.directory(folder, 0o1777 if folder == "tmp" else 0o755)
    layer.file("etc/passwd", PASSWD, 0o644)
    layer.file("etc/group", GROUP, 0o644)
    layer.file(at.lstrip("/"), binary.read_bytes())
    return _archive(target, name=name, layer=layer.finish(), entrypoint=[at])


def _archive(target: Path, *, name: str, layer: bytes, entrypoint: list[str]) -> Path:
    """A one-layer image whose PATH finds /usr/local/bin: kubeadm's static pods name bare commands."""
    with tempfile.TemporaryDirectory(prefix="oci-") as scratch:
        layout = oci.Layout(Path(scratch))
        blob = layout.add(oci.LAYER_TAR, layer)
        config = oci.image_config(entrypoint=entrypoint, cmd=[], env=[PATH_ENV])
        layout.write_index(layout.add_image(layers=[blob], config=config), name=name)
        return oci.archive(layout.folder, target)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: index + 1]) for index in range(len(parts))]


def write_all(binaries: dict[str, Path], folder: Path, *, pause: Path, busybox: Path) -> list[Path]:
    """Every image the node preloads, as archives in `folder`."""
    tags = versions.image_tags()
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        binary_image(binaries[name], folder / f"{name}.tar", name=tags[name], at=f"/usr/local/bin/{name}")
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
    ]
    written.append(
        binary_image(binaries["coredns"], folder / "coredns.tar", name=tags["coredns"], at="/coredns")
    )
    pause_layer = oci._Layer()
    pause_layer.file("pause", pause.read_bytes())
    written.append(
        oci.write_oci_archive(
            folder / "pause.tar",
            name=tags["pause"],
            layer=pause_layer.finish(),
            entrypoint=["/pause"],
            cmd=[],
        )
    )
    written.append(oci.busybox_image(busybox, folder / "busybox.tar"))
    return written


def host_busybox() -> Path:
    """Debian's static busybox (busybox-static), as the local cluster's workload image uses."""
    for candidate in cluster_build.BUSYBOX_CANDIDATES:
        if candidate.is_file() and b"ld-linux" not in candidate.read_bytes()[:4096]:
            return candidate
    raise cluster_build.PrerequisiteError(
        "a static busybox is needed for the workload image: apt-get install busybox-static"
    )
