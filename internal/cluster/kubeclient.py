"""The `kubernetes` client behind our seams: NodeApi for the daemon, paginated lists for `report`.

The only module that imports `kubernetes` (about half a second and 30 MiB):
it is imported when node labels, node events or `report` are used, never by a
plain `serve`. Responses are read as raw JSON (`_preload_content=False`): we
need a few fields, and building the client's model objects for thousands of
pods costs more than the HTTP itself. The client's own retries are off: our
callers retry with their own backoff, so an outage is seen and logged once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from gpu_device_plugin.cluster.kubeconfig import yaml_problem
from gpu_device_plugin.cluster.nodeapi import ClusterApiError, Failure, NodeChange, NodeInfo
from gpu_device_plugin.errors import ConfigError

# (connect, read) seconds per request: a dead API server costs a bounded wait
# in a worker thread, never a hung task.
REQUEST_TIMEOUT_S = (5.0, 15.0)
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_KUBECONFIG = "~/.kube/config"
# What loading a kubeconfig raises: the client's own error, an unreadable file, broken YAML,
# and (for YAML that is not a kubeconfig's shape) whatever indexing it raised.
LOAD_ERRORS = (ConfigException, OSError, ValueError, yaml.YAMLError, TypeError, AttributeError, KeyError)
T = TypeVar("T")


def daemon_client(kubeconfig: Path | None) -> client.ApiClient:
    """The daemon's client: the kubeconfig when given (running outside a pod), else in-cluster."""
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
            )
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except LOAD_ERRORS as err:
        where = str(kubeconfig) if kubeconfig is not None else "in-cluster service account"
        hint = "" if kubeconfig is not None else " (not in a pod? give --kubeconfig)"
        raise ConfigError("kubeconfig", f"cannot load {where}: {_load_problem(err)}{hint}") from err
    _check_server(configuration, str(kubeconfig) if kubeconfig is not None else "in-cluster service account")
    return _client(configuration)


def user_client(kubeconfig: Path | None, context: str | None) -> client.ApiClient:
    """A person's client: --kubeconfig, else $KUBECONFIG or ~/.kube/config, as kubectl does."""
    configuration = client.Configuration()
    # $KUBECONFIG read now, not when the library was imported; a:b lists are merged as kubectl does.
    source = str(kubeconfig) if kubeconfig is not None else os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=source,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except LOAD_ERRORS as err:
        problem = _load_problem(err)
        raise ConfigError("kubeconfig", f"cannot load a kubeconfig from {source}: {problem}") from err
    _check_server(configuration, source)
    return _client(configuration)


def _load_problem(err: Exception) -> str:
    if isinstance(err, yaml.YAMLError):
        return f"not valid YAML: {yaml_problem(err)}"
    if isinstance(err, TypeError | AttributeError | KeyError):
        # The loader indexes the parsed YAML without checking its shape first.
        return f"not a kubeconfig (a mapping of clusters, contexts and users): {err}"
    return " ".join(str(err).split())


def _check_server(configuration: client.Configuration, source: str) -> None:
    # The loader accepts a cluster without a server and every request would then fail obscurely.
    if not configuration.host:
        raise ConfigError("kubeconfig", f"cannot load a kubeconfig from {source}: its cluster has no server")


def _client(configuration: client.Configuration) -> client.ApiClient:
    configuration.retries = False
    api = client.ApiClient(configuration)
    api.user_agent = "gpu-device-plugin"
    return api


def _detail(err: ApiException) -> str:
    try:
        message = json.loads(err.body or "")["message"]
    except (ValueError, KeyError, TypeError):
        message = (err.body or "").strip()[:200] or str(err.reason or "")
    return str(message)


def call(request: Callable[[], T]) -> T:
    """Run one request; every failure becomes a ClusterApiError."""
    try:
        return request()
    except ApiException as err:
        if not err.status:  # the client reports TLS failures as status 0
            raise ClusterApiError(Failure.UNREACHABLE, str(err.reason or err).strip()) from err
        raise ClusterApiError.from_status(int(err.status), _detail(err)) from err
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise ClusterApiError(Failure.UNREACHABLE, str(err)) from err


def _json(response: Any) -> dict[str, Any]:
    # Something between us and the API server (a proxy, a load balancer) may answer with HTML.
    try:
        data = json.loads(response.data)
    except ValueError as err:
        raise ClusterApiError(Failure.SERVER, f"the answer is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise ClusterApiError(Failure.SERVER, f"the answer is not a JSON object: {str(data)[:100]}")
    return data


class KubeNodeApi:
    """NodeApi over the `kubernetes` client."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    def get_node(self, name: str) -> NodeInfo:
        response = call(
            lambda: self._core.read_node(name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)
        )
        return NodeInfo.from_json(_json(response))

    def patch_node_labels(self, name: str, labels: Mapping[str, str | None]) -> NodeInfo:
        body = {"metadata": {"labels": dict(labels)}}
        response = call(
            lambda: self._core.patch_node(
                name,
                body,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        )
        return NodeInfo.from_json(_json(response))

    def watch_node(self, name: str, resource_version: str, timeout_s: int) -> Iterator[NodeChange]:
        # A watch of the one Node (a field selector on its name): what `nodes watch` allows,
        # read line by line as raw JSON, ended by the server after timeout_s.
        response: Any = call(
            lambda: self._core.list_node(
                field_selector=f"metadata.name={name}",
                watch=True,
                resource_version=resource_version or None,
                timeout_seconds=timeout_s,
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT_S[0], timeout_s + REQUEST_TIMEOUT_S[1]),
            )
        )
        try:
            for line in _guarded_lines(response):
                yield _node_change(line)
        finally:
            response.release_conn()

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        call(
            lambda: self._core.create_namespaced_event(
                # A plain dict is sent as it is; the model class would only be converted back.
                namespace,
                cast("Any", dict(event)),
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        )

    def patch_event(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        call(
            lambda: self._core.patch_namespaced_event(
                name,
                namespace,
                dict(patch),
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        )


def _guarded_lines(response: Any) -> Iterator[bytes]:
    """The watch's lines; a connection lost mid-stream is a ClusterApiError like any other."""
    buffer = b""
    try:
        for chunk in response.stream(amt=None, decode_content=True):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            yield from (line for line in lines if line.strip())
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise ClusterApiError(Failure.UNREACHABLE, f"the watch ended: {err}") from err
    if buffer.strip():
        yield buffer


def _node_change(line: bytes) -> NodeChange:
    try:
        event = json.loads(line)
        kind = str(event["type"])
        obj = event["object"]
    except (ValueError, KeyError, TypeError) as err:
        raise ClusterApiError(Failure.SERVER, f"a watch event is not JSON of a known shape: {err}") from err
    if kind == "ERROR":
        # The API server's Status inside the stream: 410 Gone when the version expired.
        code = int(obj.get("code") or 500) if isinstance(obj, dict) else 500
        message = str(obj.get("message") or "") if isinstance(obj, dict) else str(obj)
        raise ClusterApiError.from_status(code, message)
    if not isinstance(obj, dict):
        raise ClusterApiError(Failure.SERVER, "a watch event's object is not a JSON object")
    return NodeChange(kind, NodeInfo.from_json(obj))


def list_all(
    api: client.ApiClient,
    kind: Literal["nodes", "pods"],
    *,
    field_selector: str | None = None,
    page_size: int = 500,
) -> Iterator[dict[str, Any]]:
    """Every object of one kind, cluster-wide: one list, read page by page (limit/continue)."""
    core = client.CoreV1Api(api)
    lister = core.list_node if kind == "nodes" else core.list_pod_for_all_namespaces
    token: str | None = None
    while True:
        request = partial(
            lister,
            limit=page_size,
            _continue=token,
            field_selector=field_selector,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
        page = _json(call(request))
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return
