"""The node image: node/Dockerfile on a private buildkitd, into a docker-archive, cached.

The build context is assembled in a scratch folder: node/files, the Go builds
under bin/, the preloaded image archives under images/. The base is the Debian
tree of rootfs.py as a named OCI-layout context. The output is BuildKit's
`docker` exporter (Docker 20.10's `docker load` reads no OCI archives), with
layer times rewritten to SOURCE_DATE_EPOCH (the Debian archive's Release date).

Cached as <image cache>/kind-node/<key>/node.tar, where the key hashes
everything the image is made of (this package, node/, every go.mod and go.sum
under e2e/kind, the pause source, the busybox binary, the rootfs digest), and
tagged localhost/gpu-dp-kind/node:<kubernetes version>-<key>.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gdp_e2e.cluster import build as cluster_build
from gdp_e2e.cluster import cachefill
from gdp_e2e.cluster import paths as cluster_paths
from gdp_hack.image import buildkit, tools

from . import gobuilds, images, rootfs, versions

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
REPOSITORY = "localhost/gpu-dp-kind/node"
BASE_REF = "gpu-dp-kind-node-rootfs"
#: What node/Dockerfile copies from bin/.
NODE_BINARIES = ("kubeadm", "kubelet", "kubectl", "containerd", "ctr", "containerd-shim-runc-v2", "crictl")


@dataclass(frozen=True)
class NodeImage:
    tag: str
    archive: Path


def _hash_tree(digest: hashlib._Hash, folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(oct(path.stat().st_mode & 0o777).encode())
            digest.update(path.read_bytes())


def key(*, base: Path, busybox: Path) -> str:
    digest = hashlib.sha256()
    _hash_tree(digest, HERE)
    for folder in (versions.K8S_BUILD_DIR, *(tool.module_dir for tool in versions.TOOLS)):
        for name in ("go.mod", "go.sum"):
            digest.update((folder / name).read_bytes())
    digest.update(cluster_paths.PAUSE_SOURCE.read_bytes())
    digest.update(busybox.read_bytes())
    digest.update(rootfs.digest(base).encode())
    return digest.hexdigest()[:12]


def _epoch(layout: Path) -> int:
    """The base's `created` time: the Debian archive's Release date it was clamped to."""
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / rootfs.digest(layout).removeprefix("sha256:")).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].removeprefix("sha256:")).read_text())
    return int(datetime.fromisoformat(config["created"].replace("Z", "+00:00")).timestamp())


def _check_preloads_cover_kubeadm(kubeadm: Path) -> None:
    """kubeadm itself names the images it will start (offline, given its version): refuse
    to build a node that would have to pull one."""
    version = versions.kubernetes()
    listed = tools.run(
        [kubeadm, "config", "images", "list", "--kubernetes-version", version],
        what="kubeadm config images list",
        timeout=60,
    )
    missing = versions.not_preloaded(listed)
    if missing:
        raise tools.StepError(
            f"kind node: kubeadm {version} starts {', '.join(missing)}, which the node image "
            "does not preload (hack/kindnode/versions.py image_tags)"
        )


def build(*, image_cache: Path, e2e_cache: Path | None = None) -> NodeImage:
    """The node image archive for the pinned versions, built first if not cached."""
    tools.require_root("building the kind node image")
    busybox = images.host_busybox()
    base = rootfs.rootfs(cache=image_cache)
    image_key = key(base=base, busybox=busybox)
    tag = f"{REPOSITORY}:{versions.kubernetes()}-{image_key}"
    folder = image_cache / "kind-node" / image_key
    made = NodeImage(tag=tag, archive=folder / "node.tar")
    if made.archive.is_file():
        return made
    binaries = gobuilds.all_binaries(cache=e2e_cache)
    _check_preloads_cover_kubeadm(binaries["kubeadm"])
    pause = cluster_build.pause_binary(cache=e2e_cache)
    buildkitd, buildctl = buildkit.binaries(cache=image_cache)
    runc = tools.program("runc")

    def build_into(staging: Path) -> None:
        context = Path(tempfile.mkdtemp(prefix="context-", dir=staging.parent))
        try:
            shutil.copytree(NODE_DIR / "files", context / "files", symlinks=True)
            shutil.copy2(NODE_DIR / "Dockerfile", context / "Dockerfile")
            (context / "bin").mkdir()
            for name in NODE_BINARIES:
                shutil.copy2(binaries[name], context / "bin" / name)
            written = images.write_all(binaries, context / "images", pause=pause, busybox=busybox)
            size = sum(path.stat().st_size for path in written)
            tools.log(f"kind node: {len(written)} preloaded images, {size / 1e6:.0f} MB")
            epoch = _epoch(base)
            output = staging / "node.tar"
            exporter = ",".join(["type=docker", f"dest={output}", f"name={tag}", "rewrite-timestamp=true"])
            state = image_cache / "kind-node-buildkitd-state"
            with buildkit.Buildkitd(buildkitd=buildkitd, buildctl=buildctl, state=state, runc=runc) as daemon:
                daemon.build_dockerfile(
                    context=context,
                    layouts={"rootfs": base},
                    opts={
                        "build-arg:BASE": BASE_REF,
                        f"context:{BASE_REF}": f"oci-layout://rootfs:{rootfs.SUITE}@{rootfs.digest(base)}",
                        "build-arg:KUBERNETES_VERSION": versions.kubernetes(),
                        "build-arg:SOURCE_DATE_EPOCH": str(epoch),
                    },
                    exporter=exporter,
                    source_date_epoch=str(epoch),
                    what="buildctl build (kind node)",
                    log_file=staging.parent / f"{image_key}.build.log",
                )
            (staging / "tag").write_text(tag + "\n")
        finally:
            tools.remove(context)

    cachefill.fill_once(
        folder,
        build_into,
        complete=lambda candidate: (candidate / "node.tar").is_file(),
        what="the kind node image",
        log=tools.log,
        remove=tools.remove,
    )
    tools.log(f"kind node image {tag}: {made.archive} ({made.archive.stat().st_size / 1e6:.0f} MB)")
    # Images of other keys are never read again; one that another run is building stays.
    for stale in folder.parent.iterdir():
        if stale.name.startswith(".") or stale.suffix in (".lock", ".log") or stale == folder:
            continue
        if cachefill.try_remove(stale, remove=tools.remove):
            (stale.parent / f"{stale.name}.build.log").unlink(missing_ok=True)
            tools.log(f"removed the node image of an earlier key: {stale}")
    return made
