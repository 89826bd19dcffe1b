"""The device-plugins folder is checked, never created: it is the kubelet's, and always exists."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from opentelemetry import trace

from gpu_device_plugin.allocator import AllocateOptions, topology_policy
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.resources.whole_gpu import WholeGpuManager
from gpu_device_plugin.server.service import DevicePluginService
from gpu_device_plugin.server.sockets import MAX_SOCKET_PATH, check_plugin_dir
from gpu_device_plugin.server.supervisor import PluginSupervisor

RESOURCE = "example.com/gpu"


def test_an_existing_writable_folder_passes_and_is_left_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "kubelet.sock").write_text("")

    check_plugin_dir(tmp_path, RESOURCE)

    assert [p.name for p in tmp_path.iterdir()] == ["kubelet.sock"]


def test_a_missing_folder_is_refused_and_not_created(tmp_path: Path) -> None:
    absent = tmp_path / "device-plugins"

    with pytest.raises(ConfigError) as caught:
        check_plugin_dir(absent, RESOURCE)

    assert caught.value.field == "device-plugin-dir"
    assert caught.value.reason.startswith(f"{absent} does not exist: it must be the kubelet's")
    assert not absent.exists()


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        check_plugin_dir(Path(__file__), RESOURCE)


def test_a_path_too_long_for_our_socket_names_is_refused(tmp_path: Path) -> None:
    # Just long enough that <folder>/<resource>-<stamp>-<n>.sock passes 107 bytes.
    room = MAX_SOCKET_PATH - len(os.fsencode(tmp_path)) - 30
    deep = tmp_path / ("d" * max(room, 1))
    deep.mkdir()

    with pytest.raises(ConfigError, match="107-byte limit of unix sockets"):
        check_plugin_dir(deep, RESOURCE)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through mode bits (the CLI test uses sysfs)")
def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match=r"is not writable \(Permission denied\)"):
            check_plugin_dir(tmp_path, RESOURCE)
    finally:
        tmp_path.chmod(0o755)


async def test_the_supervisor_refuses_a_missing_folder_instead_of_waiting_in_it(tmp_path: Path) -> None:
    absent = tmp_path / "device-plugins"
    service = DevicePluginService(
        manager=WholeGpuManager(RESOURCE, AllocateOptions(), topology_policy),
        cell=SnapshotCell(Inventory(devices=(), backend="fake")),
    )
    supervisor = PluginSupervisor(service=service, plugin_dir=absent, tracer=trace.NoOpTracer())

    with pytest.raises(ConfigError, match="does not exist"):
        await asyncio.wait_for(supervisor.run(), 5)

    assert not absent.exists()
