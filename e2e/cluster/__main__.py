"""Command line: `python -m gdp_e2e.cluster build|up|kubectl`.

build: build or find everything the cluster needs, and Jaeger (the suite's
       tracing backend; jaeger.py) (warms the cache; CI runs it before the
       suite so the build time shows on its own line).
kubectl: print the path of a kubectl for the manifest tests: the pinned one if
       cached, else one on PATH within one minor version of it, else the pinned
       one built alone (needs only Go; about a sixth of the full build).
       `--pinned` skips PATH. Says on stderr which one and why.
up:    start the cluster, print its kubeconfig, and keep it up until
       interrupted (then tear it down).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time

from . import build, jaeger
from .local import LocalCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gdp_e2e.cluster")
    parser.add_argument("command", choices=("build", "up", "kubectl"))
    parser.add_argument("--pinned", action="store_true", help="kubectl: never one from PATH")
    args = parser.parse_args(argv)
    if args.command == "kubectl":
        try:
            if args.pinned:
                kubectl, why = build.kubectl_binary(), "the pinned kubectl"
            else:
                kubectl, why = build.kubectl_for_manifests()
            print(f"[e2e-cluster] kubectl: {kubectl} ({why})", file=sys.stderr)
            print(kubectl)
        except build.PrerequisiteError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    try:
        started = time.monotonic()
        tools = build.toolchain()
        print(f"toolchain ready in {time.monotonic() - started:.0f} s: Kubernetes {tools.kubernetes_version}")
    except build.PrerequisiteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.command == "build":
        # The suite's tracing backend too, so its first build also shows on a line of its own.
        started = time.monotonic()
        release = jaeger.jaeger_version().release
        jaeger.jaeger_binary()
        print(f"jaeger ready in {time.monotonic() - started:.0f} s: Jaeger {release}")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with LocalCluster(tools) as cluster:
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"device plugin dir: {cluster.device_plugin_dir}")
        print("cluster is up; Ctrl-C to tear it down", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
