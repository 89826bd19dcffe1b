"""`task image:push REGISTRY=...`: build, push to the user's registry, pin the pushed digest in prod.

The image is built as `task image` builds it (steps.build: an OCI archive, no
registry involved), then:

1. crane (github.com/google/go-containerregistry, the registry client Google's
   and others' release tooling uses) pushes the archive's OCI layout to
   <REGISTRY>/gpu-device-plugin:<version>. Credentials are crane's, which are
   Docker's: ~/.docker/config.json (`docker login`, or `crane auth login`).
   Registries on localhost / 127.0.0.1 are spoken to over plain HTTP.
2. The digest the registry now serves must be the archive's own manifest
   digest (what `task image:verify` proved reproducible); anything else fails.
3. `kustomize edit set image` points the prod overlay at
   <REGISTRY>/gpu-device-plugin@<digest>.

crane and kustomize are built once from the Go module proxy (push-build/go.mod
pins both) and cached like BuildKit. Building needs root; `--archive` pushes an
archive that exists already (a verified one, say) without building.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gdp_e2e.cluster import build as gobuild

from . import ociread, paths, tools

PUSH_BUILD_DIR = paths.HERE / "push-build"
PROD_OVERLAY = paths.REPO / "manifests" / "kustomize" / "overlays" / "prod"
#: The image name the base DaemonSet names and the overlays replace.
BASE_IMAGE = "ghcr.io/example/gpu-device-plugin"
REPOSITORY = "gpu-device-plugin"
#: host[:port] then one or more lower-case path parts: where `<REGISTRY>/gpu-device-plugin` goes.
_REGISTRY = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_PUSHED = re.compile(r"@(sha256:[0-9a-f]{64})\s*$")


class PushError(RuntimeError):
    """The push, or pinning what was pushed, failed; the message says which step."""


@dataclass(frozen=True)
class Pushed:
    reference: str  # <REGISTRY>/gpu-device-plugin@sha256:...
    tag: str  # <REGISTRY>/gpu-device-plugin:<version>


def check_registry(registry: str) -> str:
    """The registry and path to push under, or ValueError saying why it is not one."""
    value = registry.strip().rstrip("/")
    if not value:
        raise ValueError("empty: say where to push, e.g. REGISTRY=registry.example.com/gpu")
    if "://" in value:
        raise ValueError(f"{registry!r} has a scheme: give host[:port]/path, e.g. registry.example.com/gpu")
    # A colon after the host is a tag: the name and tag are ours (gpu-device-plugin:<version>).
    if "@" in value or any(":" in part for part in value.split("/")[1:]):
        raise ValueError(f"{registry!r} has a tag or digest: give only where to push, the name is ours")
    if not _REGISTRY.match(value):
        raise ValueError(f"{registry!r} is not host[:port][/path] (path parts in lower case)")
    return value


def clients(*, cache: Path) -> tuple[Path, Path]:
    """(crane, kustomize) at the versions push-build/go.mod pins, built once (cluster.cachefill)."""
    go_mod = PUSH_BUILD_DIR / "go.mod"
    crane_version = required_version_of(go_mod, "github.com/google/go-containerregistry")
    kustomize_version = required_version_of(go_mod, "sigs.k8s.io/kustomize/kustomize/v5")
    bindir = cache / f"push-clients-crane-{crane_version}-kustomize-{kustomize_version}" / "bin"
    packages = ["github.com/google/go-containerregistry/cmd/crane", "sigs.k8s.io/kustomize/kustomize/v5"]
    try:
        gobuild.go_build(
            what=f"crane {crane_version} and kustomize {kustomize_version}",
            module_dir=PUSH_BUILD_DIR,
            packages=packages,
            # kustomize's own release build stamps its version the same way.
            ldflags=f"-s -w -X sigs.k8s.io/kustomize/api/provenance.version=kustomize/{kustomize_version}",
            bindir=bindir,
        )
    except gobuild.PrerequisiteError as error:
        raise tools.PrerequisiteError(str(error)) from error
    return bindir / gobuild.command_name(packages[0]), bindir / gobuild.command_name(packages[1])


def required_version_of(go_mod: Path, module: str) -> str:
    """The version of `module` in the go.mod's require block (one module per line)."""
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", go_mod.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{go_mod} does not require {module}")
    return match.group(1)


def version() -> str:
    return str(tomllib.loads((paths.REPO / "pyproject.toml").read_text())["project"]["version"])


def push(
    archive: Path, registry: str, *, crane: Path, kustomize: Path, overlay: Path = PROD_OVERLAY
) -> Pushed:
    """Push the OCI archive under `registry`, check the digest, pin it in `overlay`."""
    image = ociread.read(archive)
    target = f"{registry}/{REPOSITORY}:{version()}"
    with tempfile.TemporaryDirectory(prefix="gdp-push-") as scratch:
        layout = Path(scratch) / "layout"
        with tarfile.open(archive) as tar:
            tar.extractall(layout, filter="data")
        tools.log(f"pushing {archive.name} ({image.manifest_digest}) to {target}")
        command = [str(crane), "push", str(layout), target]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise PushError(
            f"crane push to {target} failed (exit {done.returncode}):\n{done.stderr.strip()[-3000:]}\n"
            "(credentials: `docker login` or `crane auth login` for that registry)"
        )
    match = _PUSHED.search(done.stdout)
    if match is None:
        raise PushError(f"crane push printed no digest: {done.stdout.strip()!r}")
    digest = match.group(1)
    if digest != image.manifest_digest:
        raise PushError(
            f"the registry holds {digest} under {target}, not the archive's {image.manifest_digest}"
        )
    reference = f"{registry}/{REPOSITORY}@{digest}"
    edit = subprocess.run(
        [str(kustomize), "edit", "set", "image", f"{BASE_IMAGE}={reference}"],
        cwd=overlay,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if edit.returncode != 0:
        raise PushError(
            f"pushed {reference}, but `kustomize edit set image` in {overlay} failed:\n{edit.stderr.strip()}"
        )
    tools.log(f"{overlay}: now runs {reference}")
    return Pushed(reference=reference, tag=target)
