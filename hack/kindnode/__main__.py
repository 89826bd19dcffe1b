"""Command line: `python -m gdp_hack.kindnode kind|build|config` (build needs root).

kind:    build (once) the pinned kind and print its path.
build:   build (once per key) the node image; print its tag, then its docker-archive.
config:  print the kind Cluster config: `--ours` for our image, `--nvml-root DIR` to
         mount the NVML fake's driver root into the node.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdp_e2e.cluster import build as cluster_build
from gdp_hack.image import paths as image_paths
from gdp_hack.image import tools

from . import clusterconfig, gobuilds, nodeimage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gdp_hack.kindnode", description=__doc__.split("\n\n", 1)[1]
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("kind", help="the pinned kind binary")
    commands.add_parser("build", help="the node image")
    config = commands.add_parser("config", help="the kind Cluster config")
    config.add_argument("--ours", action="store_true", help="for our node image (else kindest/node)")
    config.add_argument("--nvml-root", type=Path, help="the NVML fake's driver root, mounted into the node")
    args = parser.parse_args(argv)
    if args.command == "config" and args.nvml_root is not None and not args.nvml_root.is_dir():
        print(f"error: --nvml-root: {args.nvml_root} is not a folder", file=sys.stderr)
        return 2
    try:
        if args.command == "kind":
            print(gobuilds.kind())
        elif args.command == "build":
            made = nodeimage.build(image_cache=image_paths.cache_dir())
            print(made.tag)
            print(made.archive)
        else:
            print(clusterconfig.render(ours=args.ours, nvml_root=args.nvml_root), end="")
    except (tools.PrerequisiteError, cluster_build.PrerequisiteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (tools.StepError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
