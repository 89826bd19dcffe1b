"""The driver root: where libnvidia-ml and the device nodes are found, and pynvml made to load that file."""

from __future__ import annotations

import ctypes.util
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from gpu_device_plugin.backends.nvml.driver_root import DriverRoot, library_folders
from gpu_device_plugin.backends.nvml.library import NvmlSession, bind_library
from gpu_device_plugin.errors import DiscoveryError


def a_real_shared_library() -> Path:
    # Any ELF library proves the load; libm is on every Linux with a C library.
    name = ctypes.util.find_library("m")
    assert name is not None
    for folder in (
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ):
        if (Path(folder) / name).exists():
            return (Path(folder) / name).resolve()
    pytest.skip(reason=f"{name} not found in the usual folders")


def test_the_default_root_leaves_the_lookup_to_the_loader() -> None:
    root = DriverRoot()
    assert root.nvml_library() is None
    assert root.dev == Path("/dev")


@pytest.mark.parametrize(
    ("folder", "machine"),
    [
        pytest.param("usr/lib64", "x86_64", id="rhel"),
        pytest.param("usr/lib/x86_64-linux-gnu", "x86_64", id="debian-amd64"),
        pytest.param("usr/lib/aarch64-linux-gnu", "aarch64", id="debian-arm64"),
        pytest.param("lib", "x86_64", id="plain-lib"),
    ],
)
def test_the_library_is_found_in_the_roots_usual_folders(folder: str, machine: str, tmp_path: Path) -> None:
    (tmp_path / folder).mkdir(parents=True)
    (tmp_path / folder / "libnvidia-ml.so.1").write_bytes(b"\x7fELF")
    assert DriverRoot(tmp_path).nvml_library(machine) == tmp_path / folder / "libnvidia-ml.so.1"


def test_an_absolute_link_inside_the_root_points_into_the_root(tmp_path: Path) -> None:
    lib = tmp_path / "usr/lib64"
    lib.mkdir(parents=True)
    (lib / "libnvidia-ml.so.550.54.15").write_bytes(b"\x7fELF")
    # As a driver container leaves it: an absolute target, meant inside its own tree.
    (lib / "libnvidia-ml.so.1").symlink_to("/usr/lib64/libnvidia-ml.so.550.54.15")
    assert DriverRoot(tmp_path).nvml_library("x86_64") == lib / "libnvidia-ml.so.550.54.15"


def test_a_root_without_the_library_names_every_folder_searched(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError) as caught:
        DriverRoot(tmp_path).nvml_library("x86_64")
    message = str(caught.value)
    assert message.startswith(f"libnvidia-ml.so.1 not found under the driver root {tmp_path} (searched ")
    for folder in library_folders("x86_64"):
        assert str(tmp_path / folder) in message


def test_device_nodes_live_in_the_roots_dev_folder_when_it_has_one(tmp_path: Path) -> None:
    assert DriverRoot(tmp_path).dev == Path("/dev")
    (tmp_path / "dev").mkdir()
    assert DriverRoot(tmp_path).dev == tmp_path / "dev"


def pynvml_like() -> SimpleNamespace:
    # The two module globals of pynvml that bind_library touches.
    return SimpleNamespace(nvmlLib=None, libLoadLock=threading.Lock())


def test_bind_library_makes_pynvml_load_that_file(tmp_path: Path) -> None:
    module = pynvml_like()
    bind_library(module, a_real_shared_library())
    assert isinstance(module.nvmlLib, ctypes.CDLL)
    assert module.nvmlLib._name == str(a_real_shared_library())


def test_a_file_that_is_no_library_is_a_clear_discovery_error(tmp_path: Path) -> None:
    bogus = tmp_path / "libnvidia-ml.so.1"
    bogus.write_text("not a library")
    with pytest.raises(DiscoveryError, match=rf"^cannot load {bogus}: "):
        bind_library(pynvml_like(), bogus)


def test_the_session_looks_the_library_up_before_nvml_init(tmp_path: Path) -> None:
    calls: list[str] = []

    class Lib:
        NVMLError = Exception

        def nvmlInit(self) -> None:
            calls.append("init")

    def prepare() -> None:
        calls.append("prepare")
        DriverRoot(tmp_path).nvml_library()

    with pytest.raises(DiscoveryError, match="not found under the driver root"):
        NvmlSession(Lib(), prepare=prepare).open()  # type: ignore[arg-type]
    assert calls == ["prepare"], "nvmlInit is never reached without the library"
