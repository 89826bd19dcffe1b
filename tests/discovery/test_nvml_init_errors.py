"""NVML failing to start says, in one line, what is missing and what to check on the node.

The errors are pynvml's own (`pynvml.NVMLError(code)` builds the subclass a real
nvmlInit raises), thrown by the fake library at nvmlInit.
"""

from __future__ import annotations

import pynvml
import pytest

from gpu_device_plugin.backends.nvml.library import NvmlSession
from gpu_device_plugin.errors import DiscoveryError
from testsupport.fake_nvml import FakeNvml


def init_failure(error: Exception) -> str:
    with pytest.raises(DiscoveryError) as caught:
        NvmlSession(FakeNvml(init_error=error)).open()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_missing_library_names_the_driver_the_runtime_and_the_driver_root() -> None:
    message = init_failure(pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))

    assert message == (
        "NVML could not be initialised: NVML Shared Library Not Found: libnvidia-ml.so.1 was not found: "
        "is the NVIDIA driver installed on this node? In a pod the NVIDIA container toolkit injects it "
        "(runtimeClassName: nvidia, or nvidia as containerd's default runtime); a driver installed "
        "elsewhere needs --driver-root"
    )


def test_the_loaders_own_failure_gets_the_same_advice() -> None:
    message = init_failure(OSError("libnvidia-ml.so.1: cannot open shared object file"))

    assert message.startswith(
        "NVML could not be initialised: libnvidia-ml.so.1: cannot open shared object file: "
    )
    assert "is the NVIDIA driver installed on this node?" in message


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        pytest.param(
            pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "kernel driver is not loaded", id="driver-not-loaded"
        ),
        pytest.param(
            pynvml.NVML_ERROR_NO_PERMISSION, "no permission to open the NVIDIA devices", id="no-permission"
        ),
        pytest.param(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "differ in version", id="version-mismatch"),
    ],
)
def test_other_start_failures_say_what_to_check(code: int, advice: str) -> None:
    error = pynvml.NVMLError(code)

    message = init_failure(error)

    assert message.startswith(f"NVML could not be initialised: {error}: ")
    assert advice in message


def test_an_error_without_advice_is_passed_on_as_it_is() -> None:
    assert (
        init_failure(pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN))
        == "NVML could not be initialised: Unknown Error"
    )
