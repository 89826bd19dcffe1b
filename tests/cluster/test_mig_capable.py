"""MIG capability: read by the NVML backend, given by the fake file, shown as a node label."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_device_plugin.backends.fake.spec import parse_fake_config, to_inventory
from gpu_device_plugin.backends.nvml.discover import NvmlBackend
from gpu_device_plugin.backends.nvml.library import NvmlSession
from gpu_device_plugin.cluster.feature_labels import feature_labels
from gpu_device_plugin.resources.settings import ResourceSettings
from testsupport.fake_nvml import ERROR_UNKNOWN, FakeGpu, FakeNvml

#: Whole GPUs, nothing shared: the labels of a plain `serve`.
WHOLE = ResourceSettings()


def discover(lib: Any) -> list[bool | None]:
    return [d.mig_capable for d in NvmlBackend(NvmlSession(lib)).discover().devices]


def test_nvml_reads_mig_capability_per_gpu() -> None:
    lib = FakeNvml(
        gpus=[
            FakeGpu(uuid="GPU-a", mig_mode=(1, 1)),  # enabled
            FakeGpu(uuid="GPU-b", mig_mode=(0, 0)),  # disabled
            FakeGpu(uuid="GPU-c", mig_mode=None),  # NOT_SUPPORTED: no MIG on this GPU
            FakeGpu(uuid="GPU-d", errors={"nvmlDeviceGetMigMode": ERROR_UNKNOWN}),
        ]
    )
    # Enabled or not, a GPU that answers can do MIG; NOT_SUPPORTED means it cannot; other errors: unknown.
    assert discover(lib) == [True, True, False, None]


def test_bindings_without_the_call_leave_it_unknown() -> None:
    assert discover(FakeNvml(gpus=[FakeGpu(uuid="GPU-a")], missing=frozenset({"nvmlDeviceGetMigMode"}))) == [
        None
    ]


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
    lib = FakeNvml(gpus=[FakeGpu(uuid="GPU-a", mig_mode=None), FakeGpu(uuid="GPU-b", minor=1, mig_mode=None)])
    inventory = NvmlBackend(NvmlSession(lib)).discover()
    assert (
        feature_labels(inventory, prefix="example.com/gpu.", plugin_version="1", settings=WHOLE)[
            "example.com/gpu.mig.capable"
        ]
        == "false"
    )
