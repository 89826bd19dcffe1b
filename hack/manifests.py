"""Render the kustomize overlays, and check them against a real API server.

    python -m gdp_hack.manifests render [--out build/manifests]
        `kubectl kustomize` of every overlay under manifests/kustomize/overlays,
        written to <out>/<overlay>.yaml.
    python -m gdp_hack.manifests validate [--kubeconfig K] [--overlay NAME ...]
        a server-side dry run (`kubectl apply --dry-run=server`) of every object of
        each overlay: the API server validates and admits them, nothing is stored.

The dry run of a namespaced object fails when its Namespace does not exist, so
`validate` creates the overlays' Namespace when it is missing and deletes it
afterwards; it changes nothing else on the cluster.

kubectl comes from $KUBECTL, else PATH, and must embed kustomize v5 or newer
(the overlays use Components and `labels`). The unit tests (tests/manifests) and
the e2e suite (e2e/tests/test_manifests.py) use these functions too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
KUSTOMIZE_DIR = REPO / "manifests" / "kustomize"
OVERLAYS_DIR = KUSTOMIZE_DIR / "overlays"
DEFAULT_OUT = REPO / "build" / "manifests"
MIN_KUSTOMIZE_MAJOR = 5

Manifest = dict[str, Any]


class ToolError(Exception):
    """kubectl is missing or unsuitable, or one of its commands failed; the message says which."""


def overlay_names() -> list[str]:
    return sorted(p.parent.name for p in OVERLAYS_DIR.glob("*/kustomization.yaml"))


def kubectl_binary() -> str:
    """The kubectl to run: $KUBECTL, else the one on PATH; it must embed kustomize v5+."""
    wanted = os.environ.get("KUBECTL") or "kubectl"
    chosen = shutil.which(wanted)
    if not chosen:
        where = f"KUBECTL={wanted} is not an executable" if "KUBECTL" in os.environ else "kubectl not found"
        raise ToolError(
            f"{where}: install kubectl (`apt-get install kubectl`; Debian's own "
            "`kubernetes-client` 1.20 embeds kustomize v2, too old for these overlays) "
            "or set KUBECTL to a kubectl >= 1.27"
        )
    result = _run([chosen, "version", "--client", "-o", "json"], what=f"{chosen} version")
    version = str(json.loads(result.stdout).get("kustomizeVersion", ""))
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < MIN_KUSTOMIZE_MAJOR:
        raise ToolError(
            f"{chosen} embeds kustomize {version or 'of unknown version'}; the overlays need "
            f"v{MIN_KUSTOMIZE_MAJOR} or newer (kubectl >= 1.27): set KUBECTL to one"
        )
    return chosen


def _run(argv: Sequence[str], *, what: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ToolError(f"{what}: {err}") from err
    if result.returncode != 0:
        raise ToolError(f"{what} failed (exit {result.returncode}):\n{result.stderr.strip()}")
    return result


def render(kustomization: Path, *, kubectl: str | None = None) -> str:
    """`kubectl kustomize` of one folder, as YAML text."""
    binary = kubectl or kubectl_binary()
    return _run([binary, "kustomize", str(kustomization)], what=f"kubectl kustomize {kustomization}").stdout


def documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_all(out: Path, *, kubectl: str | None = None) -> dict[str, Path]:
    """Every overlay into <out>/<overlay>.yaml; returns the files written."""
    binary = kubectl or kubectl_binary()
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in overlay_names():
        path = out / f"{name}.yaml"
        path.write_text(render(OVERLAYS_DIR / name, kubectl=binary))
        written[name] = path
    return written


@dataclass(frozen=True)
class Kubectl:
    """kubectl pointed at one cluster (kubeconfig None: kubectl's own default)."""

    binary: str
    kubeconfig: str | None = None

    def argv(self, *args: str) -> list[str]:
        config = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        return [self.binary, *config, *args]

    def run(self, *args: str, stdin: str | None = None) -> str:
        return _run(self.argv(*args), what=f"kubectl {' '.join(args)}", stdin=stdin).stdout

    def phase(self, namespace: str) -> str | None:
        """The namespace's phase (Active, Terminating), or None when there is none."""
        result = subprocess.run(
            self.argv("get", "namespace", namespace, "--ignore-not-found", "-o", "jsonpath={.status.phase}"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise ToolError(f"kubectl get namespace {namespace} failed:\n{result.stderr.strip()}")
        return result.stdout.strip() or None


@contextmanager
def namespaces_present(
    kubectl: Kubectl, objects: Sequence[Manifest], *, timeout_s: int = 120
) -> Iterator[list[str]]:
    """Create the objects' Namespaces that are missing (for real); delete those afterwards.

    Yields the names it created; Namespaces that already existed are left alone.
    One still being deleted (an earlier run's) is waited for first: nothing can
    be created in it, not even in a dry run. Deletion waits until the namespace
    controller has removed it, so the next run finds a clean cluster.
    """
    created: list[str] = []
    wait = f"--timeout={timeout_s}s"
    try:
        for obj in objects:
            if obj["kind"] != "Namespace":
                continue
            name = obj["metadata"]["name"]
            phase = kubectl.phase(name)
            if phase == "Terminating":
                kubectl.run("wait", "--for=delete", f"namespace/{name}", wait)
                phase = None
            if phase is None:
                kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(obj))
                created.append(name)
        yield created
    finally:
        for name in created:
            kubectl.run("delete", "namespace", name, "--ignore-not-found", "--wait=true", wait)


def dry_run(kubectl: Kubectl, objects: Sequence[Manifest]) -> list[str]:
    """Server-side dry run of the objects; kubectl's lines, one per object ("... (server dry run)")."""
    output = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(objects))
    return [line for line in output.splitlines() if line.strip()]


def validate(kubectl: Kubectl, overlays: Sequence[str]) -> dict[str, list[str]]:
    """Every overlay's objects through the API server's validation and admission, stored nowhere."""
    rendered = {name: documents(render(OVERLAYS_DIR / name, kubectl=kubectl.binary)) for name in overlays}
    everything = [obj for objects in rendered.values() for obj in objects]
    results = {}
    with namespaces_present(kubectl, everything):
        for name, objects in rendered.items():
            lines = dry_run(kubectl, objects)
            if len(lines) != len(objects):
                raise ToolError(f"{name}: {len(objects)} objects but kubectl answered:\n" + "\n".join(lines))
            results[name] = lines
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gdp_hack.manifests", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser("render", help="write <out>/<overlay>.yaml for every overlay")
    render_cmd.add_argument("--out", type=Path, default=DEFAULT_OUT)
    validate_cmd = commands.add_parser("validate", help="server-side dry run of every overlay")
    validate_cmd.add_argument("--kubeconfig", help="default: kubectl's own ($KUBECONFIG, ~/.kube/config)")
    validate_cmd.add_argument(
        "--overlay", action="append", choices=overlay_names(), help="only this overlay (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        binary = kubectl_binary()
        if args.command == "render":
            for name, path in render_all(args.out, kubectl=binary).items():
                print(f"{name}: {len(documents(path.read_text()))} objects -> {path}")
        else:
            kubectl = Kubectl(binary, args.kubeconfig)
            for name, lines in validate(kubectl, args.overlay or overlay_names()).items():
                print(f"{name}: accepted by the API server ({len(lines)} objects)")
                for line in lines:
                    print(f"  {line}")
    except ToolError as err:
        print(f"manifests: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
