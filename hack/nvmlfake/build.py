"""Compiling the C fake into a shared cache, once per source, header and compiler.

The cache key is a hash of csrc/*, NVIDIA's nvml.h and `gcc --version`, so a
changed source or compiler rebuilds and anything else is reused. Builders on
one cache (parallel pytest workers, two CI runs) serialise on an flock per key,
build into a private temporary folder and rename it into place, so a reader
never sees a half-written library.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LIBRARY = "libnvidia-ml.so.1"
# resolve(): the installed module is a link to this file; the C sources sit beside the real one.
CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ("state.c", "api.c")
HEADERS = ("fake_nvml.h",)
CFLAGS = (
    "-std=c11", "-O2", "-g", "-fPIC", "-shared", "-fvisibility=hidden",
    "-Wall", "-Wextra", "-Werror", "-Wshadow",
    # Define every entry point by its real name, versioned and not (nvmlInit and nvmlInit_v2 both).
    "-DNVML_NO_UNVERSIONED_FUNC_DEFS",
    f"-Wl,-soname,{LIBRARY}",
)  # fmt: skip
HEADER_ENV = "NVMLFAKE_NVML_H"
CACHE_ENV = "NVMLFAKE_CACHE"


class BuildError(RuntimeError):
    """The fake could not be built; the message says what is missing or what gcc said."""


def nvml_header() -> Path:
    """NVIDIA's nvml.h: $NVMLFAKE_NVML_H, else the nvidia-nvml-dev wheel's copy."""
    if os.environ.get(HEADER_ENV):
        return Path(os.environ[HEADER_ENV])
    for entry in sys.path:
        for candidate in sorted(Path(entry or ".").glob("nvidia/cu*/include/nvml.h"), reverse=True):
            return candidate
    raise BuildError(
        "nvml.h not found: install the dev dependencies (nvidia-nvml-dev) or set NVMLFAKE_NVML_H"
    )


def default_cache() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gpu-device-plugin" / "nvml-fake"


def _compiler() -> tuple[str, str]:
    gcc = os.environ.get("CC", "gcc")
    path = shutil.which(gcc)
    if path is None:
        raise BuildError(f"{gcc} not found on PATH: the NVML fake is C (apt-get install gcc libc6-dev)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    return path, version


def cache_key(header: Path, compiler_version: str) -> str:
    digest = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        digest.update(name.encode() + b"\0" + (CSRC / name).read_bytes())
    digest.update(header.read_bytes())
    digest.update(compiler_version.encode())
    digest.update(" ".join(CFLAGS).encode())
    return digest.hexdigest()[:20]


def build(cache: Path | None = None) -> Path:
    """The folder holding the built libnvidia-ml.so.1 (built now unless cached)."""
    header = nvml_header()
    compiler, version = _compiler()
    cache = (cache or default_cache()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / cache_key(header, version)
    if (final / LIBRARY).exists():
        return final
    with open(cache / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / LIBRARY).exists():  # another builder finished while we waited
            return final
        work = Path(tempfile.mkdtemp(dir=cache, prefix=f".{final.name}."))
        try:
            command = [
                compiler, *CFLAGS, f"-I{header.parent}", "-o", str(work / LIBRARY),
                *(str(CSRC / s) for s in SOURCES), "-lpthread",
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise BuildError(f"gcc failed building the NVML fake:\n{done.stderr.strip()}")
            os.rename(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final
