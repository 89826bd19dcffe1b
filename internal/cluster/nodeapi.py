"""The seam between the daemon's cluster tasks and the Kubernetes API: our interface, our errors.

The labeler and the event recorder see only `NodeApi` (plain dicts in, small
records out) and `ClusterApiError`; kubeclient.py implements it with the
`kubernetes` client, and is the only module that imports that library. The
calls block (HTTP): callers run them off the event loop (offloop.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpu_device_plugin.errors import PluginError


class Failure(enum.StrEnum):
    """Why a call failed, in the words an operator acts on."""

    UNREACHABLE = "unreachable"  # no connection, timeout, TLS: the network or the API server
    UNAUTHORIZED = "unauthorized"  # 401: credentials wrong or expired
    FORBIDDEN = "forbidden"  # 403: RBAC lacks a verb
    NOT_FOUND = "not found"  # 404: e.g. the Node is not registered (yet)
    SERVER = "server error"  # 5xx, 429
    REJECTED = "rejected"  # other 4xx: the request itself is wrong


class ClusterApiError(PluginError):
    """A call to the API server failed; `failure` classifies it, `status` is the HTTP status if any."""

    def __init__(self, failure: Failure, detail: str, status: int | None = None) -> None:
        super().__init__(
            f"{failure.value}: {detail}" if status is None else f"{failure.value} ({status}): {detail}"
        )
        self.failure = failure
        self.status = status
        self.detail = detail

    @classmethod
    def from_status(cls, status: int, detail: str) -> ClusterApiError:
        return cls(failure_of_status(status), detail, status)


def failure_of_status(status: int) -> Failure:
    if status == 401:
        return Failure.UNAUTHORIZED
    if status == 403:
        return Failure.FORBIDDEN
    if status == 404:
        return Failure.NOT_FOUND
    if status >= 500 or status == 429:
        return Failure.SERVER
    return Failure.REJECTED


@dataclass(frozen=True)
class NodeInfo:
    """What the daemon needs of its Node: identity for Events, labels for the labeler."""

    name: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # Where a watch of this Node starts from (empty when the answer had none).
    resource_version: str = field(default="", compare=False)

    @classmethod
    def from_json(cls, node: Mapping[str, Any]) -> NodeInfo:
        meta = node.get("metadata") or {}
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            labels=dict(meta.get("labels") or {}),
            resource_version=str(meta.get("resourceVersion") or ""),
        )


@dataclass(frozen=True)
class NodeChange:
    """One event of a watch of the Node: ADDED, MODIFIED or DELETED and the Node after it."""

    kind: str
    node: NodeInfo


class NodeApi(Protocol):
    """The calls the daemon makes; every failure is a ClusterApiError."""

    def get_node(self, name: str) -> NodeInfo: ...

    def patch_node_labels(self, name: str, labels: Mapping[str, str | None]) -> NodeInfo:
        """JSON merge patch of metadata.labels: a None value removes that label."""
        ...

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None: ...

    def watch_node(self, name: str, resource_version: str, timeout_s: int) -> Iterator[NodeChange]:
        """The Node's changes after `resource_version`, until the server ends the watch
        (about `timeout_s`); ClusterApiError with status 410 when that version is too old."""
        ...

    def patch_event(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """JSON merge patch of an Event (count, lastTimestamp, message)."""
        ...
