"""Kubernetes' name syntax, defined once: DNS subdomains, qualified names, extended resource names.

Pure checks over strings, below every layer that names something the API
server or the kubelet will validate (resource names, label keys, NVIDIA's
config file). Problems are ValueErrors saying what is wrong; each caller says
which field it was.
"""

from __future__ import annotations

import re

# DNS-1123 subdomain: lower-case alphanumeric labels joined by dots, '-' inside a label.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_DNS_SUBDOMAIN = 253
# The name part of a qualified name (and a non-empty label value): [A-Za-z0-9_.-], alphanumeric ends.
QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
MAX_NAME = 63


def is_dns_subdomain(text: str) -> bool:
    return len(text) <= MAX_DNS_SUBDOMAIN and DNS_SUBDOMAIN.match(text) is not None


def is_qualified_name(text: str) -> bool:
    return len(text) <= MAX_NAME and QUALIFIED_NAME.match(text) is not None


def check_extended_resource_name(name: str) -> str:
    """`<domain>/<name>` as the kubelet accepts it (not in the kubernetes.io domain); ValueError if not."""
    domain, slash, short = name.partition("/")
    if not slash:
        raise ValueError(f"{name!r} must be <domain>/<name>, e.g. example.com/gpu")
    if not is_dns_subdomain(domain):
        raise ValueError(f"domain {domain!r} is not a valid DNS subdomain")
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io") or domain == "k8s.io":
        raise ValueError(f"domain {domain!r} is reserved for Kubernetes")
    if not is_qualified_name(short):
        raise ValueError(f"name {short!r} is not a valid qualified name")
    return name
