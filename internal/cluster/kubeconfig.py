"""A kubeconfig file read far enough to refuse a broken one at start, without the `kubernetes` client.

`serve` connects to the API server only after registering with the kubelet
(importing the client costs half a second of GIL): a file that is not YAML, or
that names no server for its current context, would otherwise be found then,
with the GPUs already advertised. This reads the same structure the client's
loader walks (current-context -> context -> cluster -> server) with PyYAML,
which is already loaded, and says in one line what is wrong. The client still
loads the file itself later; this never replaces it, it only moves the obvious
failures to the start. It never reads credentials' contents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gpu_device_plugin.errors import ConfigError

FIELD = "kubeconfig"


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{err.problem}{where}"
    return " ".join(str(err).split())


def _named(entries: Any, name: str, kind: str, source: Path) -> dict[str, Any]:
    if not isinstance(entries, list):
        raise ConfigError(FIELD, f"{source}: {kind} must be a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(kind.removesuffix("s"))
            if not isinstance(body, dict):
                raise ConfigError(FIELD, f"{source}: {kind} entry {name!r} has no {kind.removesuffix('s')}")
            return body
    raise ConfigError(FIELD, f"{source}: no entry named {name!r} in {kind}")


def check_kubeconfig(path: Path, context: str | None = None) -> None:
    """ConfigError naming `path` unless it is a kubeconfig whose context names a cluster with a server."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(FIELD, f"cannot read {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(FIELD, f"{path} is not text: {err.reason}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(FIELD, f"{path} is not valid YAML: {yaml_problem(err)}") from err
    if data is None:
        raise ConfigError(FIELD, f"{path} is empty")
    if not isinstance(data, dict):
        raise ConfigError(FIELD, f"{path} must be a mapping (apiVersion, clusters, contexts, users, ...)")
    name = context or data.get("current-context")
    if not name:
        raise ConfigError(FIELD, f"{path} has no current-context")
    chosen = _named(data.get("contexts"), str(name), "contexts", path)
    cluster_name = chosen.get("cluster")
    if not cluster_name:
        raise ConfigError(FIELD, f"{path}: context {name!r} names no cluster")
    cluster = _named(data.get("clusters"), str(cluster_name), "clusters", path)
    if not cluster.get("server"):
        raise ConfigError(FIELD, f"{path}: cluster {cluster_name!r} has no server")
    _check_files(path, f"cluster {cluster_name!r}", cluster, ("certificate-authority",))
    user_name = chosen.get("user")
    users = data.get("users")
    if user_name and isinstance(users, list):
        user = next(
            (u.get("user") for u in users if isinstance(u, dict) and u.get("name") == user_name), None
        )
        if isinstance(user, dict):
            _check_files(path, f"user {user_name!r}", user, ("client-certificate", "client-key", "tokenFile"))


def _check_files(path: Path, owner: str, entry: dict[str, Any], keys: tuple[str, ...]) -> None:
    # The files a kubeconfig points at, relative to its own folder as the client resolves them.
    for key in keys:
        named = entry.get(key)
        if isinstance(named, str) and named and not (path.parent / named).is_file():
            raise ConfigError(FIELD, f"{path}: {owner} {key} {named} does not exist")
