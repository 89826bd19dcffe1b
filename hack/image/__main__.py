"""Command line: `python -m gdp_hack.image build|verify|base|push` (needs root).

build:  the image, into build/image/gpu-device-plugin.oci.tar (bases and BuildKit
        are made first when missing; later builds reuse BuildKit's cache).
verify: two builds from empty BuildKit states must give the same manifest digest;
        the image must be within 150 MB uncompressed and pass the runc smoke checks.
base:   only the Debian bases (`--refresh` remakes them with today's Debian updates).
push:   build, push to --registry (REGISTRY in `task image:push`) with crane, and pin the
        pushed digest in the prod overlay with `kustomize edit set image` (push.py);
        `--archive FILE` pushes an archive built before instead of building.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import debian, paths, push, smoke, steps, tools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gdp_hack.image", description=__doc__.split("\n\n", 1)[1])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the image archive")
    commands.add_parser("verify", help="prove the build reproducible, small enough and working")
    base = commands.add_parser("base", help="make the Debian bases only")
    base.add_argument("--refresh", action="store_true", help="remake them even if cached")
    pushing = commands.add_parser("push", help="build, push, and pin the digest in the prod overlay")
    pushing.add_argument("--registry", required=True, help="host[:port]/path to push gpu-device-plugin under")
    pushing.add_argument("--archive", type=Path, help="push this OCI archive instead of building one")
    args = parser.parse_args(argv)
    cache = paths.cache_dir()
    if args.command == "push":
        try:
            registry = push.check_registry(args.registry)
        except ValueError as error:
            print(f"error: REGISTRY: {error}", file=sys.stderr)
            return 2
        if args.archive is not None and not args.archive.is_file():
            print(f"error: --archive: {args.archive} is not a file", file=sys.stderr)
            return 2
    try:
        if args.command == "push":
            archive = args.archive or steps.build(cache=cache).image.archive
            crane, kustomize = push.clients(cache=cache)
            pushed = push.push(archive, registry, crane=crane, kustomize=kustomize)
            print(f"pushed:  {pushed.tag}")
            print(f"pinned:  {pushed.reference} in {push.PROD_OVERLAY.relative_to(paths.REPO)}")
            print(f"next:    kubectl apply -k {push.PROD_OVERLAY.relative_to(paths.REPO)}")
        elif args.command == "build":
            steps.build(cache=cache)
        elif args.command == "verify":
            steps.verify(cache=cache)
        else:
            tools.require_root("making the Debian bases")
            made = debian.bases(cache=cache, refresh=args.refresh)
            print(f"bases: {made.build} and {made.runtime} ({made.info()})")
    except tools.PrerequisiteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (tools.StepError, steps.VerifyError, smoke.SmokeError, push.PushError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
