"""Command line: `PYTHONPATH=hack python -m image build|verify|base` (needs root).

build:  the image, into build/image/gpu-device-plugin.oci.tar (bases and BuildKit
        are made first when missing; later builds reuse BuildKit's cache).
verify: two builds from empty BuildKit states must give the same manifest digest;
        the image must be within 150 MB uncompressed and pass the runc smoke checks.
base:   only the Debian bases (`--refresh` remakes them with today's Debian updates).
"""

from __future__ import annotations

import argparse
import sys

from . import debian, paths, smoke, steps, tools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image", description=__doc__.split("\n\n", 1)[1])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the image archive")
    commands.add_parser("verify", help="prove the build reproducible, small enough and working")
    base = commands.add_parser("base", help="make the Debian bases only")
    base.add_argument("--refresh", action="store_true", help="remake them even if cached")
    args = parser.parse_args(argv)
    cache = paths.cache_dir()
    try:
        if args.command == "build":
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
    except (tools.StepError, steps.VerifyError, smoke.SmokeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
