"""The OpenTelemetry Resource every span of this process carries: who sent it, from where.

Our defaults come first: service.name and service.version, the host name, and
the Kubernetes node, pod and namespace that the DaemonSet hands us through the
downward API (NODE_NAME, POD_NAME, POD_NAMESPACE; each only when set). What the
standard variables say (OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME) is
merged over them, so an operator can always override any of ours.

Imported only when tracing is on: it pulls in the SDK.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.util.types import AttributeValue

from gpu_device_plugin import __version__

SERVICE_NAME = "gpu-device-plugin"

#: Downward-API variables and the semantic-convention attribute each one fills.
DOWNWARD_API = {
    "NODE_NAME": "k8s.node.name",
    "POD_NAME": "k8s.pod.name",
    "POD_NAMESPACE": "k8s.namespace.name",
}


def default_attributes(env: Mapping[str, str], hostname: str) -> dict[str, AttributeValue]:
    """Our own resource attributes, before the OTEL_* variables are merged over them."""
    attributes: dict[str, AttributeValue] = {
        "service.name": SERVICE_NAME,
        "service.version": __version__,
        "host.name": hostname,
    }
    attributes.update({key: env[var] for var, key in DOWNWARD_API.items() if env.get(var)})
    return attributes


def build_resource(env: Mapping[str, str]) -> Resource:
    """Defaults from `env`, with the SDK's reading of OTEL_RESOURCE_ATTRIBUTES and
    OTEL_SERVICE_NAME (from the process environment, as every OTel SDK reads them) winning."""
    ours = Resource.create(default_attributes(env, socket.gethostname()))
    return ours.merge(OTELResourceDetector().detect())
