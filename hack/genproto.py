"""Regenerate the Python stubs for the v1beta1 device-plugin API.

Run through `task proto` with the pinned grpcio-tools and mypy-protobuf from the
dev lock file. The proto is compiled from a temporary tree shaped like the
import package, so the generated `_grpc` module imports its messages as
`gpu_device_plugin.api.v1beta1.api_pb2` rather than a bare top-level name.

`--check` regenerates into a temporary folder and exits 1 when any committed
file differs: the staleness test and CI use it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIR = REPO / "internal" / "api" / "v1beta1"
PACKAGE_PATH = Path("gpu_device_plugin") / "api" / "v1beta1"
OUTPUTS = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi")


def generate(into: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / PACKAGE_PATH).mkdir(parents=True)
        shutil.copy(SOURCE_DIR / "api.proto", root / PACKAGE_PATH / "api.proto")
        bin_dir = Path(sys.executable).parent
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={root}",
            f"--grpc_python_out={root}",
            f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
            f"--mypy_out={root}",
            f"--mypy_grpc_out={root}",
            str(PACKAGE_PATH / "api.proto"),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        into.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            shutil.copy(root / PACKAGE_PATH / name, into / name)


def stale_files() -> list[str]:
    with tempfile.TemporaryDirectory() as fresh:
        generate(Path(fresh))
        return [
            name
            for name in OUTPUTS
            if not (SOURCE_DIR / name).exists()
            or (Path(fresh) / name).read_bytes() != (SOURCE_DIR / name).read_bytes()
        ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m gdp_hack.genproto", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    if parser.parse_args().check:
        stale = stale_files()
        if stale:
            print(f"stale generated stubs: {', '.join(stale)}; run `task proto`", file=sys.stderr)
            return 1
        print("generated stubs are up to date")
        return 0
    generate(SOURCE_DIR)
    print(f"wrote {', '.join(OUTPUTS)} to {SOURCE_DIR.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
