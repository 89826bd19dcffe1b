"""--driver-root on the C NVML fake: the library and the device nodes found under a root, as on a
node whose driver lives in a container (/run/nvidia/driver), with no LD_LIBRARY_PATH at all.

The plugin runs as its own process: pynvml holds one library per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gdp_hack.nvmlfake import FakeDriver
from gpu_device_plugin.allocator import AllocateOptions, container_allocation
from gpu_device_plugin.inventory import Device, Inventory

PLUGIN = [sys.executable, "-m", "gpu_device_plugin.cli"]


def without_loader_path() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "FAKE_NVML_STATE")}
    return {**env, "OTEL_SDK_DISABLED": "true"}


def discover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PLUGIN, "discover", "--discovery", "nvml", "--json", *args],
        env=without_loader_path(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("fake_driver", ["dgx-a100"], indirect=True)
def test_discover_finds_the_library_and_the_nodes_under_the_driver_root(fake_driver: FakeDriver) -> None:
    result = discover("--driver-root", str(fake_driver.root))

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["devices"]) == 8
    assert report["dev_root"] == str(fake_driver.dev)
    # Container paths as usual; every GPU's node exists under the root, so none is left out.
    assert all(d["device_nodes"] == [f"/dev/nvidia{d['minor']}"] for d in report["devices"])
    assert "/dev/nvidiactl" in report["control_nodes"]
    assert "device nodes not found" not in result.stderr
    # What the kubelet would be handed with --pass-device-specs: host paths under the root.
    inventory = Inventory(
        devices=tuple(
            Device(id=d["id"], index=d["index"], uuid=d["uuid"], device_nodes=tuple(d["device_nodes"]))
            for d in report["devices"]
        ),
        backend="nvml",
        control_nodes=tuple(report["control_nodes"]),
        dev_root=report["dev_root"],
    )
    first = report["devices"][0]
    nodes = container_allocation(
        inventory, [first["id"]], AllocateOptions(pass_device_specs=True)
    ).device_nodes
    assert (nodes[0].path, nodes[0].host) == (
        f"/dev/nvidia{first['minor']}",
        str(fake_driver.dev / f"nvidia{first['minor']}"),
    )


@pytest.mark.parametrize("fake_driver", ["dgx-a100"], indirect=True)
def test_missing_device_nodes_under_the_root_are_named_once(fake_driver: FakeDriver) -> None:
    (fake_driver.dev / "nvidia3").unlink()

    result = discover("--driver-root", str(fake_driver.root))

    assert result.returncode == 0, result.stderr
    (device,) = [d for d in json.loads(result.stdout)["devices"] if d["minor"] == 3]
    assert device["device_nodes"] == []
    warnings = [line for line in result.stderr.splitlines() if "device nodes not found" in line]
    assert warnings == [
        f"device nodes not found: {fake_driver.dev / 'nvidia3'}; "
        "containers are not handed them (--pass-device-specs)"
    ]


def test_without_a_driver_root_and_no_loader_path_nvml_is_not_found(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = discover("--driver-root", str(tmp_path))
    assert result.returncode == 1
    assert "libnvidia-ml.so.1 not found under the driver root" in result.stderr


@pytest.mark.parametrize("fake_driver", ["mig-a100"], indirect=True)
def test_mig_mode_per_gpu_and_the_mig_devices_under_their_parent(fake_driver: FakeDriver) -> None:
    result = discover("--driver-root", str(fake_driver.root))

    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout)["devices"]
    modes = [d["mig_mode"] for d in devices]
    assert modes[:2] == [{"current": "enabled", "pending": "enabled"}] * 2
    assert modes[2] == {"current": "disabled", "pending": "disabled"}
    assert [m["profile"] for m in devices[0]["mig_devices"]] == ["1g.10gb"] * 7
    assert [(m["index"], m["profile"], m["gpu_instance"]) for m in devices[1]["mig_devices"]] == [
        ("1:0", "3g.40gb", 1),
        ("1:1", "2g.20gb", 5),
        ("1:2", "1g.10gb", 13),
    ]
    assert devices[2]["mig_devices"] == []
    # The caps nodes are under the driver root's dev folder, named as the container sees them.
    assert devices[1]["mig_devices"][0]["device_nodes"] == [
        "/dev/nvidia-caps/nvidia-cap147",
        "/dev/nvidia-caps/nvidia-cap148",
    ]
    # discover serves nothing, so it has nothing to warn about MIG: the serve plan does.
    assert "MIG" not in result.stderr


@pytest.mark.parametrize("fake_driver", ["dgx-a100"], indirect=True)
def test_a_gpu_lost_before_start_is_shown_and_not_served(fake_driver: FakeDriver) -> None:
    # On the C fake (as NVML may on a real node) a lost GPU answers GPU_IS_LOST even to
    # nvmlDeviceGetHandleByIndex: no UUID, so no id to serve it under. discover says so.
    fake_driver.lose(2)

    result = discover("--driver-root", str(fake_driver.root))
    table = subprocess.run(
        [*PLUGIN, "discover", "--discovery", "nvml", "--driver-root", str(fake_driver.root)],
        env=without_loader_path(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [d["index"] for d in report["devices"]] == [0, 1, 3, 4, 5, 6, 7]
    assert report["unidentified"] == [{"index": 2, "reason": "GPU is lost"}]
    assert "GPU 2 is lost and cannot be identified: not advertised" in result.stderr
    row = table.stdout.splitlines()[3]
    assert row.startswith("2 ")
    assert row.endswith("not served (GPU is lost)")
    assert "Healthy" not in row
    assert "0 MiB" not in row
