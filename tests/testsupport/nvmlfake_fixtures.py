"""The C NVML fake in tests: the built library, a driver root per test, pynvml in-process.

pynvml loads one libnvidia-ml per process (a global CDLL and a global cache of
function pointers), so a test process can only ever use one library. This
fixture set is built around that: the library is built once (cached across runs)
and loaded into the test process by its full path, after which pynvml's
`CDLL("libnvidia-ml.so.1")` finds it by soname; each test gets its own driver root
and state file, chosen through FAKE_NVML_STATE, which the library reads at every
first nvmlInit. Tests that need a fresh process (the plugin as a subprocess, a
missing library) run a child with `fake_driver.env()`.

    @pytest.mark.parametrize("fake_driver", ["dgx1-v100"], indirect=True)
    def test_x(fake_driver: FakeDriver, fake_pynvml: ModuleType) -> None: ...
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest

from gdp_hack.nvmlfake import LIBRARY, FakeDriver, build

DEFAULT_PROFILE = "dgx-a100"
_loaded: ctypes.CDLL | None = None


@pytest.fixture(scope="session")
def nvml_fake_lib() -> Path:
    """The folder holding the built libnvidia-ml.so.1 (built once per source change)."""
    return build()


@pytest.fixture
def fake_driver(request: pytest.FixtureRequest, tmp_path: Path, nvml_fake_lib: Path) -> FakeDriver:
    """A driver root under tmp_path for the profile given by indirect parametrisation."""
    profile = getattr(request, "param", DEFAULT_PROFILE)
    return FakeDriver(tmp_path / "driver-root", profile, library=nvml_fake_lib)


def load_in_process(lib_folder: Path) -> ctypes.CDLL:
    """Loads the fake into this process once; fails if pynvml already holds another library."""
    global _loaded
    import pynvml

    if _loaded is None:
        current = pynvml.nvmlLib
        if current is not None and not hasattr(current, "fake_nvml_state_path"):
            pytest.fail(
                "pynvml already loaded a real libnvidia-ml in this process; the fake cannot replace it"
            )
        _loaded = ctypes.CDLL(str(lib_folder / LIBRARY))
        _loaded.fake_nvml_state_path.restype = ctypes.c_char_p
    return _loaded


def shutdown_all(pynvml: ModuleType) -> None:
    """Drops every nvmlInit a previous test may have left, so the next init re-reads the env."""
    for _ in range(1000):
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            return


@contextlib.contextmanager
def pynvml_on(driver: FakeDriver, lib_folder: Path) -> Iterator[ModuleType]:
    """pynvml in this process, initialised on `driver`'s state until the block ends."""
    import pynvml

    lib = load_in_process(lib_folder)
    shutdown_all(pynvml)
    previous = os.environ.get("FAKE_NVML_STATE")
    os.environ["FAKE_NVML_STATE"] = str(driver.state_path)
    try:
        pynvml.nvmlInit()
        assert lib.fake_nvml_state_path().decode() == str(driver.state_path)
        yield pynvml
    finally:
        shutdown_all(pynvml)
        if previous is None:
            os.environ.pop("FAKE_NVML_STATE", None)
        else:
            os.environ["FAKE_NVML_STATE"] = previous


@pytest.fixture
def fake_pynvml(fake_driver: FakeDriver, nvml_fake_lib: Path) -> Iterator[ModuleType]:
    """The real pynvml, initialised on `fake_driver` (faults injected on it show at once)."""
    with pynvml_on(fake_driver, nvml_fake_lib) as pynvml:
        yield pynvml


def run_child(code: str, env: Mapping[str, str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Python `code` in a fresh interpreter with `env` added (e.g. FakeDriver.env())."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
