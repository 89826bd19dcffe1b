"""A small Kubernetes API server for tests: real HTTP on 127.0.0.1, spoken to by the real client.

It serves the few paths the plugin uses (Nodes: get, patch, list, watch; Pods:
list across namespaces; Events: create, patch) from in-memory objects, applies
JSON merge patches as the API server does, paginates lists with limit/continue,
filters pods by simple field selectors, and records every request. A watch of
Nodes (`?watch=true`, a field selector, `resourceVersion`, `timeoutSeconds`)
is a chunked stream of JSON lines, as the API server sends it; a version older
than the history kept is answered with a 410 Gone ERROR event. Faults are
injected per method and path: an HTTP status (403, 500, ...) or a dropped
connection, for the next N requests. Waits use a condition variable, never sleeps.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

DROP = 0  # a fault "status" that closes the connection without an answer


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a cancelled call, a process stopped mid-request) is not news;
        # anything else is a bug in this fake, and is printed.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class Fault:
    method: str
    path_prefix: str
    status: int
    times: int
    # True: the request takes effect, only its answer is replaced (a reply lost on the way back).
    applied: bool = False


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig with a bearer token for `server` (plain HTTP: the fakes speak no TLS)."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
                "current-context": "fake",
            }
        )
    )
    return path


def unreachable_kubeconfig(folder: Path, port: int | None = None) -> Path:
    """A kubeconfig for 127.0.0.1:port; by default a port that was free a moment ago."""
    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
    return write_kubeconfig(folder / "unreachable.kubeconfig", f"http://127.0.0.1:{port}")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _field(obj: dict[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def matches_fields(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if _field(obj, key) == value:
                return False
        else:
            key, value = term.split("=", 1)
            if _field(obj, key.rstrip("=")) != value:
                return False
    return True


def node(
    name: str, *, labels: dict[str, str] | None = None, uid: str | None = None, **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": uid or f"uid-{name}", "labels": dict(labels or {})},
        "status": status,
    }


def status(code: int, message: str) -> dict[str, Any]:
    reasons = {
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "AlreadyExists",
        500: "InternalError",
    }
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reasons.get(code, "Unknown"),
        "code": code,
    }


@dataclass
class FakeApiServer:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    # Every Node change, in order: (resourceVersion, watch event type, the Node after it).
    _node_history: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    _version: int = 1
    # Watches from a version below this get 410 Gone (the API server's compacted history).
    _oldest_version: int = 0
    _stopping: bool = False
    #: The port to listen on; 0: any free one (a test that starts the server late fixes it first).
    port: int = 0
    # Bumped by stop_watches(): every open watch ends, as when the API server restarts.
    _watch_epoch: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            assert self.port, "not started and no port fixed"
            return f"http://127.0.0.1:{self.port}"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeApiServer:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api._handle(self, "GET")

            def do_POST(self) -> None:
                api._handle(self, "POST")

            def do_PATCH(self) -> None:
                api._handle(self, "PATCH")

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path) -> Path:
        return write_kubeconfig(path, self.url)

    # ------------------------------------------------------------------- faults

    def fail(
        self, method: str, path_prefix: str, status: int, times: int = 1, *, applied: bool = False
    ) -> None:
        """The next `times` matching requests get `status` (DROP: the connection is closed);
        `applied`: they still take effect, only the answer is lost."""
        with self._changed:
            self.faults.append(Fault(method, path_prefix, status, times, applied))

    def heal(self) -> None:
        with self._changed:
            self.faults.clear()

    # ---------------------------------------------------------------- observing

    def calls(self, method: str | None = None, path_prefix: str = "") -> list[Request]:
        with self._changed:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and r.path.startswith(path_prefix)
            ]

    def event_objects(self) -> list[dict[str, Any]]:
        with self._changed:
            return copy.deepcopy(list(self.events.values()))

    def expire_events(self) -> None:
        """What the API server does to Events after an hour."""
        with self._changed:
            self.events.clear()

    def set_labels(self, name: str, labels: dict[str, str | None]) -> None:
        """Change the Node's labels (None removes one), as `kubectl label` does: watches see it."""
        with self._changed:
            self.nodes[name] = merge_patch(self.nodes[name], {"metadata": {"labels": labels}})
            self._node_changed(name, "MODIFIED")
            self._changed.notify_all()

    def compact(self) -> None:
        """Forget the Node history so far: a watch from an older version gets 410 Gone."""
        with self._changed:
            self._oldest_version = self._version + 1

    def stop_watches(self) -> None:
        """End every open watch (cleanly, as at its timeout): clients must resume them."""
        with self._changed:
            self._watch_epoch += 1
            self._changed.notify_all()

    def watches(self) -> list[Request]:
        return [r for r in self.calls("GET", "/api/v1/nodes") if r.query.get("watch") == "true"]

    def labels(self, name: str) -> dict[str, str]:
        with self._changed:
            return dict(self.nodes[name]["metadata"].get("labels") or {})

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise AssertionError(f"fake API server: {what} did not hold within {timeout} s")

    async def until(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        await asyncio.to_thread(self.wait_for, predicate, timeout, what)

    # ----------------------------------------------------------------- handling

    def _node_changed(self, name: str, kind: str) -> None:
        # Under the lock: a new resourceVersion, kept in the history watches replay.
        self._version += 1
        self.nodes[name]["metadata"]["resourceVersion"] = str(self._version)
        self._node_history.append((self._version, kind, copy.deepcopy(self.nodes[name])))

    def _versioned(self, name: str) -> dict[str, Any]:
        meta = self.nodes[name]["metadata"]
        if "resourceVersion" not in meta:  # a Node a test put in directly
            self._node_changed(name, "ADDED")
        return self.nodes[name]

    def _watch(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        since = int(query.get("resourceVersion") or 0)
        selector = query.get("fieldSelector", "")
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(event: dict[str, Any]) -> None:
            data = json.dumps(event).encode() + b"\n"
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        try:
            with self._changed:
                for name in self.nodes:
                    self._versioned(name)
                if since and since < self._oldest_version:
                    gone = status(410, f"too old resource version: {since} ({self._oldest_version})")
                    send({"type": "ERROR", "object": {**gone, "code": 410, "reason": "Expired"}})
                    pending: list[dict[str, Any]] = []
                    deadline = 0.0
                else:
                    pending = []
                epoch = self._watch_epoch
                while not self._stopping and epoch == self._watch_epoch and time.monotonic() < deadline:
                    fresh = [
                        (version, kind, obj)
                        for version, kind, obj in self._node_history
                        if version > since and matches_fields(obj, selector)
                    ]
                    if fresh:
                        since = fresh[-1][0]
                        pending = [{"type": kind, "object": obj} for _, kind, obj in fresh]
                        # Written outside the lock: a slow reader must not stall the fake.
                        self._changed.release()
                        try:
                            for event in pending:
                                send(event)
                        finally:
                            self._changed.acquire()
                        continue
                    self._changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            pass  # the client hung up: the watch is over
        handler.close_connection = True

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        request = Request(
            method,
            parts.path,
            query,
            handler.headers.get("Content-Type", ""),
            json.loads(raw) if raw else None,
        )
        if method == "GET" and parts.path == "/api/v1/nodes" and query.get("watch") == "true":
            with self._changed:
                self.requests.append(request)
                fault = next(
                    (f for f in self.faults if f.method == method and parts.path.startswith(f.path_prefix)),
                    None,
                )
                if fault is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                self._changed.notify_all()
            if fault is None:
                self._watch(handler, query)
                return
            code, body = fault.status, status(fault.status, "injected by the test")
            if code == DROP:
                handler.close_connection = True
                handler.connection.shutdown(2)
                return
            self._reply(handler, code, body)
            return
        with self._changed:
            self.requests.append(request)
            fault = next(
                (f for f in self.faults if f.method == method and parts.path.startswith(f.path_prefix)), None
            )
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                if fault.applied:
                    self._route(request)
                code, body = fault.status, status(fault.status, "injected by the test")
            else:
                code, body = self._route(request)
            self._changed.notify_all()
        if code == DROP:
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        self._reply(handler, code, body)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _route(self, request: Request) -> tuple[int, Any]:
        segments = request.path.strip("/").split("/")
        if segments[:2] != ["api", "v1"]:
            return 404, status(404, f"no route for {request.path}")
        rest = segments[2:]
        if rest == ["nodes"] and request.method == "GET":
            return 200, self._list("NodeList", list(self.nodes.values()), request.query)
        if len(rest) == 2 and rest[0] == "nodes":
            return self._node(request, rest[1])
        if rest == ["pods"] and request.method == "GET":
            selector = request.query.get("fieldSelector", "")
            return 200, self._list(
                "PodList", [p for p in self.pods if matches_fields(p, selector)], request.query
            )
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] == "events":
            return self._event(request, rest[1], rest[3] if len(rest) > 3 else None)
        return 404, status(404, f"no route for {request.method} {request.path}")

    def _node(self, request: Request, name: str) -> tuple[int, Any]:
        if name not in self.nodes:
            return 404, status(404, f'nodes "{name}" not found')
        self._versioned(name)
        if request.method == "PATCH":
            if request.content_type != "application/merge-patch+json":
                return 415, status(415, f"unsupported patch type {request.content_type}")
            self.nodes[name] = merge_patch(self.nodes[name], request.body)
            self._node_changed(name, "MODIFIED")
        return 200, self.nodes[name]

    def _event(self, request: Request, namespace: str, name: str | None) -> tuple[int, Any]:
        if request.method == "POST" and name is None:
            event = request.body
            key = (namespace, event["metadata"]["name"])
            if key in self.events:
                return 409, status(409, f'events "{key[1]}" already exists')
            self.events[key] = event
            return 201, event
        if request.method == "PATCH" and name is not None:
            if (namespace, name) not in self.events:
                return 404, status(404, f'events "{name}" not found')
            self.events[(namespace, name)] = merge_patch(self.events[(namespace, name)], request.body)
            return 200, self.events[(namespace, name)]
        return 405, status(405, "method not allowed")

    @staticmethod
    def _list(kind: str, items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or len(items)
        page = items[start : start + limit]
        following = start + limit
        return {
            "kind": kind,
            "apiVersion": "v1",
            "metadata": {
                "resourceVersion": "1",
                "continue": str(following) if following < len(items) else "",
            },
            "items": page,
        }


@contextmanager
def fake_api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as api:
        yield api
