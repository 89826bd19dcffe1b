"""Removes from the image's virtual environment what the daemon never loads.

Run by the Dockerfile's build stage (`python3 trim.py <site-packages>`), standard
library only. Why: the image must stay within 150 MB uncompressed, and the
kubernetes client alone installs about 126 MB, most of it code we never run:

- kubernetes/aio (about 68 MB): the asyncio copy of the client. We use the
  sync kubernetes.client (internal/cluster/kubeclient.py).
- kubernetes/client/api: one generated module per API group and version
  (about 26 MB with their .pyc). We call CoreV1Api only; KEPT_API_MODULES
  stays, with the small discovery APIs. tests/image/test_trim.py fails when
  internal/ or cmd/ starts using an API class whose module is not kept.
- kubernetes/client/apis: a deprecated alias that star-imports every API group.
- test modules shipped inside packages.

It must never break `import kubernetes`, `kubernetes.client` or
`kubernetes.config`: the client's models, ApiClient, configuration and the
config loaders all stay, and the build stage imports them right after.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

#: kubernetes/client/api modules kept (module -> why).
KEPT_API_MODULES = {
    "core_v1_api": "CoreV1Api: nodes, pods and events (internal/cluster/kubeclient.py)",
    "core_api": "/api versions discovery",
    "version_api": "the server version",
    "custom_objects_api": "small (30 KB), and kubernetes.utils names it",
}
#: Whole trees removed, relative to site-packages.
REMOVED_TREES = ("kubernetes/aio", "kubernetes/client/apis", "websocket/tests", "certifi/tests")
#: Test modules some packages ship beside their code.
TEST_MODULE_PATTERNS = ("kubernetes/**/*_test.py",)


def _remove_module(source: Path) -> int:
    freed = source.stat().st_size
    source.unlink()
    for compiled in (source.parent / "__pycache__").glob(f"{source.stem}.*.pyc"):
        freed += compiled.stat().st_size
        compiled.unlink()
    return freed


def _tree_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def trim(site_packages: Path) -> int:
    """Remove the unused parts under `site_packages`; return the bytes freed."""
    api = site_packages / "kubernetes/client/api"
    if not (api / "core_v1_api.py").is_file():
        raise FileNotFoundError(f"{api / 'core_v1_api.py'} is missing: is kubernetes installed there?")
    freed = 0
    for relative in REMOVED_TREES:
        tree = site_packages / relative
        if tree.is_dir():
            freed += _tree_size(tree)
            shutil.rmtree(tree)
    for module in sorted(api.glob("*_api.py")):
        if module.stem not in KEPT_API_MODULES:
            freed += _remove_module(module)
    for pattern in TEST_MODULE_PATTERNS:
        for module in sorted(site_packages.glob(pattern)):
            freed += _remove_module(module)
    return freed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: trim.py <site-packages>", file=sys.stderr)
        return 2
    freed = trim(Path(argv[0]))
    print(f"trim: removed {freed / 1e6:.1f} MB the daemon never loads")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
