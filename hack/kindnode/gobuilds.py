"""kind, Kubernetes and the node's Go programs, built from the Go module proxy once per version.

Each goes through gdp_e2e.cluster.build.go_build: static (CGO off), -trimpath,
the pinned go.mod as it is, into <cache>/<name>-<version>/bin under that
folder's lock, all or nothing. Kubernetes for the node lands in
<cache>/k8s-<version>/bin beside the local cluster's (a different version).
"""

from __future__ import annotations

from pathlib import Path

from gdp_e2e.cluster import build, paths

from . import versions


def kubernetes(*, cache: Path | None = None) -> Path:
    cache = cache or paths.cache_dir()
    version = versions.kubernetes()
    bindir = cache / f"k8s-{version}" / "bin"
    build.go_build(
        what=f"Kubernetes {version} (kind node)",
        module_dir=versions.K8S_BUILD_DIR,
        packages=[f"k8s.io/kubernetes/cmd/{name}" for name in versions.KUBERNETES_COMMANDS],
        # The stamps upstream's build sets: kubeadm reads its own version to pick image tags.
        ldflags=build._kubernetes_ldflags(version),
        bindir=bindir,
    )
    return bindir


def tool(spec: versions.Tool, *, cache: Path | None = None) -> Path:
    """The folder with `spec`'s commands (named as `go build -o dir/` names them)."""
    cache = cache or paths.cache_dir()
    version = spec.version
    bindir = cache / f"{spec.name}-{version}" / "bin"
    ldflags = " ".join(["-s", "-w", *(f"-X {stamp.format(v=version)}" for stamp in spec.stamps)])
    build.go_build(
        what=f"{spec.name} {version}",
        module_dir=spec.module_dir,
        packages=list(spec.packages),
        ldflags=ldflags,
        bindir=bindir,
    )
    return bindir


def command(spec: versions.Tool, package: str, *, cache: Path | None = None) -> Path:
    return tool(spec, cache=cache) / build.command_name(package)


def kind(*, cache: Path | None = None) -> Path:
    """The pinned kind binary."""
    return command(versions.KIND, versions.KIND.packages[0], cache=cache)


def all_binaries(*, cache: Path | None = None) -> dict[str, Path]:
    """Every binary the node image and its images carry, by the name it has there."""
    k8s = kubernetes(cache=cache)
    found = {name: k8s / name for name in versions.KUBERNETES_COMMANDS}
    containerd = tool(versions.CONTAINERD, cache=cache)
    for name in ("containerd", "ctr", "containerd-shim-runc-v2"):
        found[name] = containerd / name
    found["crictl"] = command(versions.CRICTL, versions.CRICTL.packages[0], cache=cache)
    # go build names etcd's main package (go.etcd.io/etcd/server/v3) "server".
    found["etcd"] = command(versions.ETCD, versions.ETCD.packages[0], cache=cache)
    found["coredns"] = command(versions.COREDNS, versions.COREDNS.packages[0], cache=cache)
    return found
