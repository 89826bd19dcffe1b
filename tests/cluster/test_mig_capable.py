"""MIG capability: read by the NVML backend, given by the fake file, shown as a node label."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from discovery.fake_nvml import FakeGpu, FakeNvml, NVMLError

from gpu_device_plugin.cluster.labels import feature_labels
from gpu_device_plugin.discovery.fake_config import parse_fake_config, to_inventory
from gpu_device_plugin.discovery.nvml import NvmlBackend, NvmlSession


class NotSupported(NVMLError):
    value = 3  # NVML_ERROR_NOT_SUPPORTED, as pynvml's error carries it


class Unknown(NVMLError):
    value = 999


@dataclass
class MigNvml(FakeNvml):
    # Per UUID: "enabled", "disabled", "unsupported" or "error".
    mig: dict[str, str] = field(default_factory=dict)

    @property
    def nvmlDeviceGetMigMode(self) -> Any:
        return self._modes

    def _modes(self, handle: Any) -> tuple[int, int]:
        # Handles are ctypes pointers (as pynvml's): the fake finds the GPU behind one.
        mode = self.mig[str(self._device(handle, "nvmlDeviceGetMigMode").uuid)]
        if mode == "unsupported":
            raise NotSupported("Not Supported")
        if mode == "error":
            raise Unknown("Unknown Error")
        return (1, 1) if mode == "enabled" else (0, 0)


def discover(lib: Any) -> list[bool | None]:
    return [d.mig_capable for d in NvmlBackend(NvmlSession(lib)).discover().devices]


def test_nvml_reads_mig_capability_per_gpu() -> None:
    modes = {"GPU-a": "enabled", "GPU-b": "disabled", "GPU-c": "unsupported", "GPU-d": "error"}
    lib = MigNvml(gpus=[FakeGpu(uuid=u, minor=i) for i, u in enumerate(modes)], mig=modes)
    # Enabled or not, a GPU that answers can do MIG; NOT_SUPPORTED means it cannot; other errors: unknown.
    assert discover(lib) == [True, True, False, None]


def test_bindings_without_the_call_leave_it_unknown() -> None:
    assert discover(FakeNvml(gpus=[FakeGpu(uuid="GPU-a")], has_mig_call=False)) == [None]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("count: 2\n", [None, None], id="unsaid"),
        pytest.param("count: 2\nmig_capable: true\n", [True, True], id="default-for-all"),
        pytest.param(
            "mig_capable: true\ndevices: [{}, {mig_capable: false}]\n", [True, False], id="per-device"
        ),
    ],
)
def test_the_fake_file_says_it(text: str, expected: list[bool | None]) -> None:
    inventory = to_inventory(parse_fake_config(text, source="test"))
    assert [d.mig_capable for d in inventory.devices] == expected


def test_nvml_capability_reaches_the_label() -> None:
    lib = MigNvml(
        gpus=[FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b", minor=1)],
        mig={"GPU-a": "unsupported", "GPU-b": "unsupported"},
    )
    inventory = NvmlBackend(NvmlSession(lib)).discover()
    assert (
        feature_labels(inventory, prefix="example.com/gpu.", plugin_version="1")[
            "example.com/gpu.mig.capable"
        ]
        == "false"
    )
