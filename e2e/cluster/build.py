"""Builds what the local cluster runs and checks what it takes from Debian.

Kubernetes binaries come from the Go module proxy through e2e/k8s-build/go.mod
and are cached under <cache>/k8s-<version>/bin, so only the first run on a
machine pays for the build; kubectl alone (what the manifest tests need) can be
built and cached on its own. Every cache is filled through cachefill.py: one
build per folder at a time, never a half-built folder that looks finished.
containerd, runc, etcd and the CNI loopback plugin are Debian packages; this
module only finds them and says which package to install when one is missing.
It never installs anything itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cachefill, paths

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


def _kubernetes_ldflags(version: str) -> str:
    """The version stamps upstream's build sets, so `kubectl version` says which it is."""
    major, minor = version.lstrip("v").split(".")[:2]
    return " ".join(
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


def kubernetes_binaries(*, cache: Path | None = None) -> Path:
    """Return the folder holding the pinned Kubernetes commands, building them if needed."""
    cache = cache or paths.cache_dir()
    version = paths.kubernetes_version()
    bindir = cache / f"k8s-{version}" / "bin"
    go_build(
        what=f"Kubernetes {version}",
        module_dir=paths.K8S_BUILD_DIR,
        packages=[f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_COMMANDS],
        ldflags=_kubernetes_ldflags(version),
        bindir=bindir,
    )
    return bindir


def kubectl_binary(*, cache: Path | None = None) -> Path:
    """The pinned kubectl: the full build's when cached, else built alone (about a sixth of it).

    What the manifest tests need is kubectl's kustomize, not a cluster; built from
    the same e2e/k8s-build/go.mod, so it is the e2e cluster's kubectl to the byte,
    cached apart (k8s-<version>/kubectl-only) so that a later full build does not
    have to wait for it or replace it.
    """
    cache = cache or paths.cache_dir()
    version = paths.kubernetes_version()
    full = cache / f"k8s-{version}" / "bin" / "kubectl"
    if full.is_file():
        return full
    bindir = cache / f"k8s-{version}" / "kubectl-only"
    go_build(
        what=f"kubectl {version} (alone)",
        module_dir=paths.K8S_BUILD_DIR,
        packages=["k8s.io/kubernetes/cmd/kubectl"],
        ldflags=_kubernetes_ldflags(version),
        bindir=bindir,
    )
    return bindir / "kubectl"


#: kubectl is supported within one minor version of the API server (Kubernetes'
#: version-skew policy); the same window decides whether a kubectl already on PATH
#: renders the overlays as the pinned one would (same kustomize major, same API types).
KUBECTL_SKEW_MINORS = 1
_GIT_VERSION = re.compile(r"^v(\d+)\.(\d+)")


def kubectl_version(kubectl: Path) -> tuple[int, int] | None:
    """(major, minor) of a kubectl client, or None if it does not say."""
    try:
        done = subprocess.run(
            [str(kubectl), "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        version = str(json.loads(done.stdout)["clientVersion"]["gitVersion"])
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None
    match = _GIT_VERSION.match(version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def within_skew(found: tuple[int, int], pinned: tuple[int, int]) -> bool:
    return found[0] == pinned[0] and abs(found[1] - pinned[1]) <= KUBECTL_SKEW_MINORS


def kubectl_for_manifests(*, cache: Path | None = None) -> tuple[Path, str]:
    """The kubectl that renders the overlays in the unit tests, and why that one.

    In order: the pinned one if already cached; one on PATH within the supported
    skew of the pinned version; else the pinned one, built alone (kubectl_binary).
    """
    cache = cache or paths.cache_dir()
    version = paths.kubernetes_version()
    match = _GIT_VERSION.match(version)
    assert match is not None, version
    pinned = (int(match.group(1)), int(match.group(2)))
    for cached in (cache / f"k8s-{version}" / "bin", cache / f"k8s-{version}" / "kubectl-only"):
        if (cached / "kubectl").is_file():
            return cached / "kubectl", f"the pinned kubectl {version}, cached"
    on_path = shutil.which("kubectl")
    if on_path is not None:
        found = kubectl_version(Path(on_path))
        if found is not None and within_skew(found, pinned):
            return Path(on_path), (
                f"kubectl v{found[0]}.{found[1]} on PATH, within {KUBECTL_SKEW_MINORS} minor "
                f"version of the pinned {version}"
            )
        seen = f"v{found[0]}.{found[1]}" if found else "of unknown version"
        _log(f"{on_path} is {seen}, not within {KUBECTL_SKEW_MINORS} minor of {version}: building kubectl")
    return kubectl_binary(cache=cache), f"the pinned kubectl {version}, built alone"


def command_name(package: str) -> str:
    """The file `go build -o dir/` writes for a main package (a /vN suffix is skipped)."""
    parts = package.split("/")
    return parts[-2] if len(parts) > 1 and re.fullmatch(r"v[2-9][0-9]*", parts[-1]) else parts[-1]


def _has_commands(packages: list[str]) -> Callable[[Path], bool]:
    names = [command_name(package) for package in packages]
    return lambda folder: all((folder / name).is_file() for name in names)


def go_build(*, what: str, module_dir: Path, packages: list[str], ldflags: str, bindir: Path) -> None:
    """`go build` the packages of a pinned go.mod into bindir, once per machine, all or nothing.

    Static (CGO off), reproducible paths (-trimpath), the go.mod as it is
    (-mod=readonly). A no-op when bindir already has every command. Otherwise
    built under bindir's lock into a private folder renamed into place on
    success (cachefill.py): two runs never build into one folder, and an
    interrupted build never looks cached.
    """
    complete = _has_commands(packages)
    if complete(bindir):
        return
    go = shutil.which("go")
    if go is None:
        raise PrerequisiteError(f"the Go toolchain ('go') is needed to build {what}")
    log_file = bindir.with_name(bindir.name + ".build.log")

    def build_into(staging: Path) -> None:
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
        _log(f"built {what} in {time.monotonic() - started:.0f} s")

    cachefill.fill_once(bindir, build_into, complete=complete, what=what, log=_log)


def pause_binary(*, cache: Path | None = None) -> Path:
    """Compile the static sandbox ('pause') program, cached by its source digest."""
    cache = cache or paths.cache_dir()
    source = paths.PAUSE_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    folder = cache / "pause" / digest

    def compile_into(staging: Path) -> None:
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise PrerequisiteError(
                "a C compiler is needed for the pause image: apt-get install gcc libc6-dev"
            )
        subprocess.run(
            [compiler, "-static", "-Os", "-s", "-o", str(staging / "pause"), str(paths.PAUSE_SOURCE)],
            check=True,
        )

    cachefill.fill_once(
        folder, compile_into, complete=lambda f: (f / "pause").is_file(), what="the pause program", log=_log
    )
    return folder / "pause"


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
