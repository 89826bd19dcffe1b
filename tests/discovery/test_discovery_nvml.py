"""The NVML backend against a fake NVML: every field, every failure a user would see."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gpu_device_plugin.backends.nvml.discover import NvmlBackend
from gpu_device_plugin.backends.nvml.driver_root import DriverRoot
from gpu_device_plugin.backends.nvml.library import NvmlSession
from gpu_device_plugin.errors import DiscoveryError
from gpu_device_plugin.inventory import Health
from gpu_device_plugin.inventory.reasons import ReasonCode, code_of
from testsupport.fake_nvml import (
    ERROR_GPU_IS_LOST,
    ERROR_NOT_SUPPORTED,
    ERROR_UNKNOWN,
    FakeGpu,
    FakeNvml,
    NVMLError,
)

UUID_0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID_1 = "GPU-66666666-7777-8888-9999-aaaaaaaaaaaa"
NVML_LOG = "gpu_device_plugin.backends.nvml.discover"


@pytest.fixture
def dev_root(tmp_path: Path) -> Path:
    root = tmp_path / "dev"
    root.mkdir()
    return root


@pytest.fixture
def sysfs_root(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    root.mkdir()
    return root


def backend(lib: FakeNvml, dev_root: Path, sysfs_root: Path) -> NvmlBackend:
    # dev_root is <driver root>/dev: the backend finds the nodes there.
    return NvmlBackend(NvmlSession(lib), driver_root=DriverRoot(dev_root.parent), sysfs_root=sysfs_root)


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(uuid=UUID_0, minor=0, bus_id="00000000:17:00.0", numa_node=0),
        FakeGpu(
            uuid=UUID_1,
            name="NVIDIA A100-SXM4-40GB",
            minor=3,
            memory_bytes=40960 * 1024 * 1024,
            bus_id="00000000:B1:00.0",
            numa_node=1,
            compute_capability=(8, 0),
        ),
    ]


def test_every_field_is_discovered(dev_root: Path, sysfs_root: Path) -> None:
    for name in ("nvidia0", "nvidia3", "nvidiactl"):
        (dev_root / name).touch()
    inventory = backend(FakeNvml(gpus=two_gpus()), dev_root, sysfs_root).discover()

    assert inventory.backend == "nvml"
    assert inventory.driver_version == "550.54.15"
    assert inventory.cuda_version == "12.4"
    first, second = inventory.devices
    assert (first.index, first.id, first.uuid) == (0, UUID_0, UUID_0)
    assert first.model == "NVIDIA H100 80GB HBM3"
    assert first.memory_mib == 81559
    assert first.minor == 0
    # As the container sees it; the host path is under the driver root's dev folder.
    assert first.device_nodes == ("/dev/nvidia0",)
    assert inventory.host_path("/dev/nvidia0") == str(dev_root / "nvidia0")
    assert first.pci_bus_id == "0000:17:00.0"
    assert first.numa_node == 0
    assert first.compute_capability == (9, 0)
    assert first.health is Health.HEALTHY
    assert (second.index, second.id) == (1, UUID_1)
    assert second.model == "NVIDIA A100-SXM4-40GB"
    assert second.memory_mib == 40960
    assert second.minor == 3
    assert second.device_nodes == ("/dev/nvidia3",)
    # sysfs names PCI devices with a 4-digit domain, in lower case.
    assert second.pci_bus_id == "0000:b1:00.0"
    assert second.numa_node == 1
    assert second.compute_capability == (8, 0)


@pytest.mark.parametrize(
    ("encoded", "shown"),
    [
        pytest.param(12040, "12.4", id="12.4"),
        pytest.param(12000, "12.0", id="12.0"),
        pytest.param(11080, "11.8", id="11.8"),
        pytest.param(12090, "12.9", id="12.9"),
    ],
)
def test_cuda_version_is_decoded(encoded: int, shown: str, dev_root: Path, sysfs_root: Path) -> None:
    lib = FakeNvml(gpus=[FakeGpu(uuid=UUID_0)], cuda_driver_version=encoded)
    assert backend(lib, dev_root, sysfs_root).discover().cuda_version == shown


def test_old_bindings_returning_bytes_are_decoded(dev_root: Path, sysfs_root: Path) -> None:
    gpu = FakeGpu(uuid=UUID_0.encode(), name=b"Tesla V100", bus_id=b"00000000:3B:00.0")
    lib = FakeNvml(gpus=[gpu], driver_version=b"470.82.01")

    inventory = backend(lib, dev_root, sysfs_root).discover()

    (device,) = inventory.devices
    assert (device.id, device.model, device.pci_bus_id) == (UUID_0, "Tesla V100", "0000:3b:00.0")
    assert inventory.driver_version == "470.82.01"


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        pytest.param((), (), id="none-present"),
        pytest.param(("nvidiactl",), ("nvidiactl",), id="only-nvidiactl"),
        pytest.param(
            ("nvidia-modeset", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"),
            ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"),
            id="all-present-in-fixed-order",
        ),
        pytest.param(("nvidia-uvm", "nvidia-caps"), ("nvidia-uvm",), id="unrelated-nodes-ignored"),
    ],
)
def test_control_nodes_are_only_those_present(
    present: tuple[str, ...], expected: tuple[str, ...], dev_root: Path, sysfs_root: Path
) -> None:
    for name in present:
        (dev_root / name).touch()

    inventory = backend(FakeNvml(gpus=[FakeGpu(uuid=UUID_0)]), dev_root, sysfs_root).discover()

    assert inventory.control_nodes == tuple(f"/dev/{name}" for name in expected)
    assert [inventory.host_path(n) for n in inventory.control_nodes] == [str(dev_root / n) for n in expected]


@pytest.mark.parametrize(
    ("nvml_numa", "expected"),
    [
        pytest.param(0, 0, id="node-0"),
        pytest.param(3, 3, id="node-3"),
        pytest.param(-1, None, id="minus-one-means-unknown"),
    ],
)
def test_numa_node_from_nvml(nvml_numa: int, expected: int | None, dev_root: Path, sysfs_root: Path) -> None:
    lib = FakeNvml(gpus=[FakeGpu(uuid=UUID_0, numa_node=nvml_numa)])
    assert backend(lib, dev_root, sysfs_root).discover().devices[0].numa_node == expected


@pytest.mark.parametrize(
    ("sysfs_text", "expected"),
    [
        pytest.param("1\n", 1, id="sysfs-node-1"),
        pytest.param("-1\n", None, id="sysfs-minus-one"),
        pytest.param("garbage\n", None, id="sysfs-unreadable-number"),
        pytest.param(None, None, id="sysfs-file-missing"),
    ],
)
@pytest.mark.parametrize(
    "lib_kind",
    [
        pytest.param("old-bindings", id="call-missing"),
        pytest.param("call-fails", id="call-fails"),
    ],
)
def test_numa_node_falls_back_to_sysfs(
    lib_kind: str, sysfs_text: str | None, expected: int | None, dev_root: Path, sysfs_root: Path
) -> None:
    if sysfs_text is not None:
        device_dir = sysfs_root / "bus/pci/devices/0000:17:00.0"
        device_dir.mkdir(parents=True)
        (device_dir / "numa_node").write_text(sysfs_text)
    if lib_kind == "old-bindings":
        lib = FakeNvml(
            gpus=[FakeGpu(uuid=UUID_0, numa_node=7)], missing=frozenset({"nvmlDeviceGetNumaNodeId"})
        )
    else:
        errors = {"nvmlDeviceGetNumaNodeId": ERROR_NOT_SUPPORTED}
        lib = FakeNvml(gpus=[FakeGpu(uuid=UUID_0, numa_node=7, errors=errors)])

    (device,) = backend(lib, dev_root, sysfs_root).discover().devices

    assert device.numa_node == expected


def test_init_failure_is_one_clear_discovery_error(dev_root: Path, sysfs_root: Path) -> None:
    lib = FakeNvml(init_error=NVMLError(ERROR_UNKNOWN, "NVML Shared Library Not Found"))

    with pytest.raises(DiscoveryError) as caught:
        backend(lib, dev_root, sysfs_root).discover()

    message = str(caught.value)
    assert message == "NVML could not be initialised: NVML Shared Library Not Found"
    assert "\n" not in message


def test_init_failure_from_a_missing_library_is_a_discovery_error(dev_root: Path, sysfs_root: Path) -> None:
    # pynvml raises plain OSError-like errors when libnvidia-ml.so cannot be loaded.
    lib = FakeNvml(init_error=OSError("libnvidia-ml.so.1: cannot open shared object file"))

    with pytest.raises(DiscoveryError, match=r"^NVML could not be initialised: libnvidia-ml"):
        backend(lib, dev_root, sysfs_root).discover()


@pytest.mark.parametrize(
    "call",
    ["nvmlDeviceGetCount", "nvmlSystemGetDriverVersion", "nvmlSystemGetCudaDriverVersion"],
)
def test_system_call_failure_is_a_discovery_error(call: str, dev_root: Path, sysfs_root: Path) -> None:
    lib = FakeNvml(gpus=[FakeGpu(uuid=UUID_0)], errors={call: ERROR_UNKNOWN})

    with pytest.raises(DiscoveryError, match=rf"NVML could not list devices: {call}"):
        backend(lib, dev_root, sysfs_root).discover()


@pytest.mark.parametrize("call", ["nvmlDeviceGetHandleByIndex", "nvmlDeviceGetUUID"])
def test_gpu_that_cannot_be_identified_names_its_index(call: str, dev_root: Path, sysfs_root: Path) -> None:
    gpus = [FakeGpu(uuid=UUID_0), FakeGpu(uuid=UUID_1, minor=1, errors={call: ERROR_NOT_SUPPORTED})]

    with pytest.raises(DiscoveryError, match=r"^GPU 1: NVML cannot identify it"):
        backend(FakeNvml(gpus=gpus), dev_root, sysfs_root).discover()


@pytest.mark.parametrize(
    ("call", "what", "attribute", "fallback"),
    [
        pytest.param("nvmlDeviceGetName", "name", "model", "unknown", id="name"),
        pytest.param("nvmlDeviceGetMemoryInfo", "memory", "memory_mib", 0, id="memory"),
        pytest.param("nvmlDeviceGetMinorNumber", "minor number", "minor", None, id="minor"),
        pytest.param("nvmlDeviceGetMinorNumber", "minor number", "device_nodes", (), id="no-node"),
        pytest.param("nvmlDeviceGetPciInfo", "PCI info", "pci_bus_id", None, id="pci"),
        pytest.param(
            "nvmlDeviceGetCudaComputeCapability",
            "compute capability",
            "compute_capability",
            None,
            id="compute-capability",
        ),
    ],
)
def test_optional_attribute_failure_keeps_the_device_and_warns(
    call: str,
    what: str,
    attribute: str,
    fallback: object,
    dev_root: Path,
    sysfs_root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpus = [FakeGpu(uuid=UUID_0), FakeGpu(uuid=UUID_1, minor=1, errors={call: ERROR_NOT_SUPPORTED})]
    for name in ("nvidia0", "nvidia1", "nvidiactl"):
        (dev_root / name).touch()
    caplog.set_level(logging.WARNING, logger=NVML_LOG)

    inventory = backend(FakeNvml(gpus=gpus), dev_root, sysfs_root).discover()

    assert [d.id for d in inventory.devices] == [UUID_0, UUID_1]
    assert getattr(inventory.devices[1], attribute) == fallback
    assert getattr(inventory.devices[0], attribute) != fallback
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"GPU 1: cannot read {what}: ")
    assert call in warnings[0]


def test_session_initialises_once_and_shuts_down_once(dev_root: Path, sysfs_root: Path) -> None:
    lib = FakeNvml(gpus=[FakeGpu(uuid=UUID_0)])
    session = NvmlSession(lib)
    nvml = NvmlBackend(session, driver_root=DriverRoot(dev_root.parent), sysfs_root=sysfs_root)

    nvml.discover()
    nvml.discover()
    session.close()
    session.close()

    assert (lib.init_calls, lib.shutdown_calls) == (1, 1)


def test_discovery_is_the_same_on_every_call(dev_root: Path, sysfs_root: Path) -> None:
    nvml = backend(FakeNvml(gpus=two_gpus()), dev_root, sysfs_root)
    assert nvml.discover() == nvml.discover()


def test_devices_are_ordered_by_index(dev_root: Path, sysfs_root: Path) -> None:
    gpus = [FakeGpu(uuid=f"GPU-{n}", minor=n) for n in range(4)]
    inventory = backend(FakeNvml(gpus=gpus), dev_root, sysfs_root).discover()
    assert [d.index for d in inventory.devices] == [0, 1, 2, 3]
    assert [d.id for d in inventory.devices] == ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]


def test_no_gpus_is_an_empty_inventory(dev_root: Path, sysfs_root: Path) -> None:
    inventory = backend(FakeNvml(gpus=[]), dev_root, sysfs_root).discover()
    assert inventory.devices == ()
    assert inventory.driver_version == "550.54.15"


def test_a_lost_gpu_is_unhealthy_with_the_reason_said_once(
    dev_root: Path, sysfs_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gpus = [FakeGpu(uuid=UUID_0), FakeGpu(uuid=UUID_1, minor=1, lost=True)]
    caplog.set_level(logging.WARNING, logger=NVML_LOG)

    inventory = backend(FakeNvml(gpus=gpus), dev_root, sysfs_root).discover()

    healthy, lost = inventory.devices
    assert (healthy.health, healthy.health_reason) == (Health.HEALTHY, "")
    assert (lost.id, lost.health, lost.health_reason) == (UUID_1, Health.UNHEALTHY, "GPU is lost")
    assert code_of(lost.health_reason) is ReasonCode.GPU_LOST, "the metric label is gpu_lost"
    lost_lines = [m for m in caplog.messages if "is lost" in m]
    assert lost_lines == [f"GPU 1 ({UUID_1}) is lost (NVML_ERROR_GPU_IS_LOST): advertised Unhealthy"]


def test_a_lost_gpu_without_a_uuid_is_left_out_and_the_rest_served(
    dev_root: Path, sysfs_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The UUID read fails with GPU_IS_LOST; pynvml's text is NVML's own, naming no call.
    gpus = [FakeGpu(uuid=UUID_0), FakeGpu(uuid=UUID_1, minor=1)]
    lib = FakeNvml(gpus=gpus)
    original = lib.nvmlDeviceGetUUID

    def uuid(handle: object) -> str | bytes:
        if original(handle) == UUID_1:
            raise NVMLError(ERROR_GPU_IS_LOST)
        return original(handle)

    lib.nvmlDeviceGetUUID = uuid  # type: ignore[method-assign]

    inventory = backend(lib, dev_root, sysfs_root).discover()

    assert [d.id for d in inventory.devices] == [UUID_0]
    assert inventory.unidentified == ((1, "GPU is lost"),)
    assert any(r.levelno == logging.ERROR and "GPU 1 is lost" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("nvml_mode", "capable", "label"),
    [
        pytest.param(None, False, None, id="no-mig"),
        pytest.param((0, 0), True, "disabled", id="disabled"),
        pytest.param((1, 1), True, "enabled", id="enabled"),
        pytest.param((0, 1), True, "enable pending", id="enable-pending"),
        pytest.param((1, 0), True, "disable pending", id="disable-pending"),
    ],
)
def test_mig_mode_is_discovered_and_discovery_itself_warns_of_nothing(
    nvml_mode: tuple[int, int] | None,
    capable: bool,
    label: str | None,
    dev_root: Path,
    sysfs_root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=NVML_LOG)
    lib = FakeNvml(gpus=[FakeGpu(uuid=UUID_0, mig_mode=nvml_mode)])

    inventory = backend(lib, dev_root, sysfs_root).discover()
    (device,) = inventory.devices

    assert device.mig_capable is capable
    assert (device.mig_mode.label if device.mig_mode else None) == label
    assert inventory.mig_devices == ()
    # Whether a MIG GPU is served whole depends on --mig-strategy: the plan warns (resources/start.py).
    assert [m for m in caplog.messages if "MIG" in m] == []


def test_missing_device_nodes_are_left_out_and_named_in_one_warning(
    dev_root: Path, sysfs_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (dev_root / "nvidia0").touch()  # nvidia3 and nvidiactl are missing
    caplog.set_level(logging.WARNING, logger=NVML_LOG)

    inventory = backend(FakeNvml(gpus=two_gpus()), dev_root, sysfs_root).discover()

    assert [d.device_nodes for d in inventory.devices] == [("/dev/nvidia0",), ()]
    assert inventory.control_nodes == ()
    assert caplog.messages == [
        f"device nodes not found: {dev_root / 'nvidia3'}, {dev_root / 'nvidiactl'}; "
        "containers are not handed them (--pass-device-specs)"
    ]
