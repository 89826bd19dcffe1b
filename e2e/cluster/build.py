"""Builds what the local cluster runs and checks what it takes from Debian.

Kubernetes binaries come from the Go module proxy through e2e/k8s-build/go.mod
and are cached under <cache>/k8s-<version>/bin, so only the first run on a
machine pays for the build. containerd, runc, etcd and the CNI loopback plugin
are Debian packages; this module only finds them and says which package to
install when one is missing. It never installs anything itself.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import paths

#: The controller manager runs the DaemonSet, ServiceAccount and namespace controllers
#: that the plugin's own manifests need.
KUBERNETES_COMMANDS = ("kubelet", "kube-apiserver", "kube-scheduler", "kube-controller-manager", "kubectl")

#: Debian package that provides each host program the cluster needs.
DEBIAN_PROGRAMS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "etcd": "etcd-server",
    "openssl": "openssl",
    "cc": "gcc",
    "unshare": "util-linux",
    "nsenter": "util-linux",
}
CNI_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))


class PrerequisiteError(RuntimeError):
    """A program the cluster needs is not installed; the message says which package."""


@dataclass(frozen=True)
class Toolchain:
    """Absolute paths of every program the local cluster runs."""

    kubernetes_version: str
    kubelet: Path
    kube_apiserver: Path
    kube_scheduler: Path
    kube_controller_manager: Path
    kubectl: Path
    containerd: Path
    ctr: Path
    runc: Path
    etcd: Path
    openssl: Path
    cni_bin_dir: Path
    busybox: Path
    pause: Path


def _log(message: str) -> None:
    print(f"[e2e-cluster] {message}", file=sys.stderr, flush=True)


def goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def kubernetes_binaries(*, cache: Path | None = None) -> Path:
    """Return the folder holding the pinned Kubernetes commands, building them if needed."""
    cache = cache or paths.cache_dir()
    version = paths.kubernetes_version()
    bindir = cache / f"k8s-{version}" / "bin"
    if all((bindir / name).is_file() for name in KUBERNETES_COMMANDS):
        return bindir
    major, minor = version.lstrip("v").split(".")[:2]
    ldflags = " ".join(
        [
            "-s",
            "-w",
            *(
                f"-X {pkg}.{key}={value}"
                for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
                for key, value in (
                    ("gitVersion", version),
                    ("gitMajor", major),
                    ("gitMinor", minor),
                    ("gitTreeState", "clean"),
                )
            ),
        ]
    )
    go_build(
        what=f"Kubernetes {version}",
        module_dir=paths.K8S_BUILD_DIR,
        packages=[f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_COMMANDS],
        ldflags=ldflags,
        bindir=bindir,
    )
    return bindir


def go_build(*, what: str, module_dir: Path, packages: list[str], ldflags: str, bindir: Path) -> None:
    """`go build` the packages of a pinned go.mod into bindir, all or nothing.

    Static (CGO off), reproducible paths (-trimpath), the go.mod as it is
    (-mod=readonly). The output goes to a staging folder renamed into place
    only on success, so an interrupted build never looks cached.
    """
    go = shutil.which("go")
    if go is None:
        raise PrerequisiteError(f"the Go toolchain ('go') is needed to build {what}")
    staging = bindir.with_name("bin.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log_file = bindir.parent / "build.log"
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false")
    command = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(staging) + "/", *packages]
    _log(f"building {what}; log: {log_file}")
    started = time.monotonic()
    with log_file.open("w") as out:
        result = subprocess.run(
            command, cwd=module_dir, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        tail = log_file.read_text()[-4000:]
        raise RuntimeError(f"building {what} failed (exit {result.returncode}), see {log_file}:\n{tail}")
    shutil.rmtree(bindir, ignore_errors=True)
    staging.rename(bindir)
    _log(f"built {what} in {time.monotonic() - started:.0f} s")


def pause_binary(*, cache: Path | None = None) -> Path:
    """Compile the static sandbox ('pause') program, cached by its source digest."""
    cache = cache or paths.cache_dir()
    source = paths.PAUSE_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = cache / "pause" / digest / "pause"
    if target.is_file():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise PrerequisiteError("a C compiler is needed for the pause image: apt-get install gcc libc6-dev")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    subprocess.run(
        [compiler, "-static", "-Os", "-s", "-o", str(partial), str(paths.PAUSE_SOURCE)], check=True
    )
    partial.rename(target)
    return target


def _program(name: str, *extra_dirs: Path) -> Path:
    for directory in extra_dirs:
        if (directory / name).is_file():
            return directory / name
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        package = DEBIAN_PROGRAMS.get(name, name)
        raise PrerequisiteError(f"'{name}' is not installed: apt-get install {package}")
    return Path(found)


def host_programs() -> dict[str, Path]:
    """Find the Debian-provided programs, or raise naming the missing package."""
    found = {name.replace("-", "_"): _program(name) for name in DEBIAN_PROGRAMS}
    cni = next((d for d in CNI_DIRS if (d / "loopback").is_file()), None)
    if cni is None:
        raise PrerequisiteError(
            "the CNI loopback plugin is not installed: apt-get install containernetworking-plugins"
        )
    busybox = next((p for p in BUSYBOX_CANDIDATES if p.is_file()), None)
    if busybox is None or b"ld-linux" in busybox.read_bytes()[:4096]:
        raise PrerequisiteError(
            "a static busybox is needed for the workload image: apt-get install busybox-static"
        )
    found["cni_bin_dir"] = cni
    found["busybox"] = busybox
    return found


def toolchain(*, cache: Path | None = None) -> Toolchain:
    """Everything the cluster needs, built or found; fails loudly if anything is missing."""
    host = host_programs()
    bindir = kubernetes_binaries(cache=cache)
    return Toolchain(
        kubernetes_version=paths.kubernetes_version(),
        kubelet=bindir / "kubelet",
        kube_apiserver=bindir / "kube-apiserver",
        kube_scheduler=bindir / "kube-scheduler",
        kube_controller_manager=bindir / "kube-controller-manager",
        kubectl=bindir / "kubectl",
        containerd=host["containerd"],
        ctr=host["ctr"],
        runc=host["runc"],
        etcd=host["etcd"],
        openssl=host["openssl"],
        cni_bin_dir=host["cni_bin_dir"],
        busybox=host["busybox"],
        pause=pause_binary(cache=cache),
    )
