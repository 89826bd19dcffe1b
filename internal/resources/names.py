"""Extended resource names as the kubelet validates them: <domain>/<name>."""

from __future__ import annotations

import re

from gpu_device_plugin.errors import ConfigError

DEFAULT_RESOURCE_NAME = "example.com/gpu"

# A DNS-1123 subdomain prefix, a slash, and a qualified name; kubernetes.io domains are reserved.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def check_resource_name(name: str) -> str:
    domain, slash, short = name.partition("/")
    if not slash:
        raise ConfigError("resource-name", f"{name!r} must be <domain>/<name>, e.g. example.com/gpu")
    if len(domain) > 253 or not _DNS_SUBDOMAIN.match(domain):
        raise ConfigError("resource-name", f"domain {domain!r} is not a valid DNS subdomain")
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io") or domain == "k8s.io":
        raise ConfigError("resource-name", f"domain {domain!r} is reserved for Kubernetes")
    if len(short) > 63 or not _QUALIFIED_NAME.match(short):
        raise ConfigError("resource-name", f"name {short!r} is not a valid qualified name")
    return name
