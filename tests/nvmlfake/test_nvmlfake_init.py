"""Where the fake finds its state, and how nvmlInit fails when it should."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gdp_hack.nvmlfake import FakeDriver
from testsupport.nvmlfake_fixtures import load_in_process, pynvml_on, run_child, shutdown_all

CHILD = """
import ctypes, json, pynvml
pynvml.nvmlInit()
lib = ctypes.CDLL("libnvidia-ml.so.1")
lib.fake_nvml_state_path.restype = ctypes.c_char_p
print(json.dumps({"count": pynvml.nvmlDeviceGetCount(), "state": lib.fake_nvml_state_path().decode()}))
"""


def test_a_failing_init_gives_its_code_until_cleared(fake_driver: FakeDriver, nvml_fake_lib: Path) -> None:
    import pynvml

    load_in_process(nvml_fake_lib)
    fake_driver.fail_init()
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded), pynvml_on(fake_driver, nvml_fake_lib):
        pass
    fake_driver.fail_init(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)
    with pytest.raises(pynvml.NVMLError_LibRmVersionMismatch), pynvml_on(fake_driver, nvml_fake_lib):
        pass
    fake_driver.heal()
    with pynvml_on(fake_driver, nvml_fake_lib) as nv:
        assert nv.nvmlDeviceGetCount() == 8


def test_no_state_file_is_a_node_without_a_driver(tmp_path: Path, nvml_fake_lib: Path) -> None:
    import pynvml

    load_in_process(nvml_fake_lib)
    shutdown_all(pynvml)
    os.environ["FAKE_NVML_STATE"] = str(tmp_path / "absent.state")
    try:
        with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
            pynvml.nvmlInit()
        # Not initialised: every call says so.
        with pytest.raises(pynvml.NVMLError_Uninitialized):
            pynvml.nvmlDeviceGetCount()
    finally:
        del os.environ["FAKE_NVML_STATE"]


def test_the_state_beside_the_library_needs_no_environment(fake_driver: FakeDriver) -> None:
    env = {"LD_LIBRARY_PATH": fake_driver.env()["LD_LIBRARY_PATH"], "FAKE_NVML_STATE": ""}
    done = run_child(CHILD, env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"count": 8, "state": str(fake_driver.state_path)}


def test_a_child_process_uses_the_env_it_is_given(fake_driver: FakeDriver, tmp_path: Path) -> None:
    other = FakeDriver(tmp_path / "other", "pcie-4gpu", library=fake_driver.library)
    env = {**fake_driver.env(), "FAKE_NVML_STATE": str(other.state_path)}
    done = run_child(CHILD, env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] == 4


def test_a_state_file_that_does_not_parse_keeps_the_last_good_one(fake_driver: FakeDriver) -> None:
    code = f"""
import os, pynvml
pynvml.nvmlInit()
path = {str(fake_driver.state_path)!r}
with open(path + ".tmp", "w") as f:
    f.write("fake-nvml-state\\t1\\ngpu\\tnonsense\\n")
os.replace(path + ".tmp", path)
print(pynvml.nvmlDeviceGetCount(), pynvml.nvmlDeviceGetCount())
"""
    done = run_child(code, fake_driver.env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8", "8"]
    # Said once, naming the file and the line.
    assert done.stderr.count("fake-nvml:") == 1
    assert f"{fake_driver.state_path}:2: gpu needs 18 fields" in done.stderr
