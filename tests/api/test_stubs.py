"""The committed stubs match the .proto, and the wire names are the kubelet's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gpu_device_plugin.api.v1beta1 import api_pb2 as pb

REPO = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_not_stale() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gdp_hack.genproto", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_method_paths_are_the_kubelets() -> None:
    plugin = pb.DESCRIPTOR.services_by_name["DevicePlugin"]
    assert [m.full_name for m in plugin.methods] == [
        "v1beta1.DevicePlugin.GetDevicePluginOptions",
        "v1beta1.DevicePlugin.ListAndWatch",
        "v1beta1.DevicePlugin.GetPreferredAllocation",
        "v1beta1.DevicePlugin.Allocate",
        "v1beta1.DevicePlugin.PreStartContainer",
    ]
    assert pb.DESCRIPTOR.services_by_name["Registration"].methods[0].full_name == (
        "v1beta1.Registration.Register"
    )


def test_field_numbers_match_the_kubelets() -> None:
    expected = {
        "RegisterRequest": {"version": 1, "endpoint": 2, "resource_name": 3, "options": 4},
        "Device": {"ID": 1, "health": 2, "topology": 3},
        "ContainerPreferredAllocationRequest": {
            "available_deviceIDs": 1,
            "must_include_deviceIDs": 2,
            "allocation_size": 3,
        },
        "ContainerAllocateResponse": {
            "envs": 1,
            "mounts": 2,
            "devices": 3,
            "annotations": 4,
            "cdi_devices": 5,
        },
        "DeviceSpec": {"container_path": 1, "host_path": 2, "permissions": 3},
        "DevicePluginOptions": {"pre_start_required": 1, "get_preferred_allocation_available": 2},
    }
    for message, fields in expected.items():
        descriptor = pb.DESCRIPTOR.message_types_by_name[message]
        assert {f.name: f.number for f in descriptor.fields} == fields, message
