"""Extended resource names: the kubelet's rule (k8s_names.py), refused as the resource-name field."""

from __future__ import annotations

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.k8s_names import check_extended_resource_name

DEFAULT_RESOURCE_NAME = "example.com/gpu"


def check_resource_name(name: str) -> str:
    try:
        return check_extended_resource_name(name)
    except ValueError as err:
        raise ConfigError("resource-name", str(err)) from err
