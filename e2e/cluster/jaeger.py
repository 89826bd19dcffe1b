"""Jaeger v2 as the tracing backend of the e2e run and of `task traces`.

Built from the Go module proxy through e2e/jaeger-build/go.mod (cmd/jaeger of
github.com/jaegertracing/jaeger) and cached under <cache>/jaeger-<release>/bin
like the Kubernetes binaries (build.py). It runs on 127.0.0.1 only, on ports
picked free at start (or given), with in-memory storage and a config file of
our own written at start; its log goes into the folder it is given.

The module carries no built UI assets (they are a separate npm build), so
Jaeger serves its placeholder page at the UI address; the query API, which is
what the suite and a developer's `curl` read, is complete.

`JaegerQuery` is a small client for the query API v3 (OTLP JSON): find traces
by service and operation, get one trace. Jaeger offers nothing to watch, so
waiting for a trace to be stored polls the API, briefly and with a deadline.
Standard library only, like the rest of e2e/cluster.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import paths
from .build import go_build
from .lifecycle import StartedInWith
from .local import free_port

JAEGER_BUILD_DIR = paths.E2E_DIR / "jaeger-build"
MODULE = "github.com/jaegertracing/jaeger"
#: The go.mod line that pins it: module version, then the Jaeger release it is.
_REQUIRE = re.compile(rf"^require {re.escape(MODULE)} (v\S+) // jaeger (v2\S+)$", re.MULTILINE)
HOST = "127.0.0.1"
#: A span's status code in OTLP: 0 unset, 1 ok, 2 error.
STATUS_ERROR = 2
SPAN_KIND_SERVER = 2


def _log(message: str) -> None:
    print(f"[e2e-jaeger] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- build


@dataclass(frozen=True)
class JaegerVersion:
    module: str  # the Go module version, v1.x.y
    release: str  # the Jaeger v2 release it is, v2.z.w


def jaeger_version() -> JaegerVersion:
    text = (JAEGER_BUILD_DIR / "go.mod").read_text()
    match = _REQUIRE.search(text)
    if match is None:
        raise RuntimeError(f"no 'require {MODULE} v1.x.y // jaeger v2.z.w' line in {JAEGER_BUILD_DIR}/go.mod")
    return JaegerVersion(module=match.group(1), release=match.group(2))


def jaeger_binary(*, cache: Path | None = None) -> Path:
    """The pinned `jaeger` command, built on first use and cached by release."""
    version = jaeger_version()
    bindir = (cache or paths.cache_dir()) / f"jaeger-{version.release}" / "bin"
    binary = bindir / "jaeger"
    if binary.is_file():
        return binary
    # The release's own build stamps its version here; `jaeger version` then says which it is.
    go_build(
        what=f"Jaeger {version.release} (module {version.module})",
        module_dir=JAEGER_BUILD_DIR,
        packages=[f"{MODULE}/cmd/jaeger"],
        ldflags=f"-s -w -X {MODULE}/internal/version.latestVersion={version.release}",
        bindir=bindir,
    )
    return binary


# ---------------------------------------------------------------------- server


def config(*, otlp_grpc: int, otlp_http: int, query_http: int, query_grpc: int) -> dict[str, Any]:
    """The collector pipeline OTLP -> memory, and the query service; loopback only, no self-telemetry."""
    store = "memstore"
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            # The collector's own metrics endpoint would listen on :8888 of every address.
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {store: {"memory": {"max_traces": 100_000}}}},
            "jaeger_query": {
                "storage": {"traces": store},
                # Its own spans would land in the store beside the plugin's.
                "enable_tracing": False,
                "http": {"endpoint": f"{HOST}:{query_http}"},
                "grpc": {"endpoint": f"{HOST}:{query_grpc}"},
            },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{HOST}:{otlp_grpc}"},
                    "http": {"endpoint": f"{HOST}:{otlp_http}"},
                }
            }
        },
        # Spans reach the store within a fifth of a second.
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": store}},
    }


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


class Jaeger(StartedInWith):
    """One Jaeger process. Use as a context manager, or call start() then close().

    Ports left at 0 are picked free at start.
    """

    def __init__(
        self,
        binary: Path,
        logs: Path,
        *,
        otlp_grpc_port: int = 0,
        otlp_http_port: int = 0,
        query_port: int = 0,
    ) -> None:
        self.binary = binary
        self.logs = logs
        self.ports = {
            "otlp-grpc": otlp_grpc_port or free_port(),
            "otlp-http": otlp_http_port or free_port(),
            "query-http": query_port or free_port(),
            "query-grpc": free_port(),
        }
        self.config_path = logs / "jaeger.yaml"
        self.log_path = logs / "jaeger.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def otlp_grpc_endpoint(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT is set to for OTLP over gRPC (the default protocol)."""
        return f"http://{HOST}:{self.ports['otlp-grpc']}"

    @property
    def otlp_http_endpoint(self) -> str:
        """... and for OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf."""
        return f"http://{HOST}:{self.ports['otlp-http']}"

    @property
    def query_url(self) -> str:
        """The query service: the API under /api/v3/, and the UI (a placeholder page) at /."""
        return f"http://{HOST}:{self.ports['query-http']}"

    def query(self) -> JaegerQuery:
        return JaegerQuery(self.query_url)

    def start(self, *, timeout: float = 60) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: the config is written with the standard library.
        document = config(
            otlp_grpc=self.ports["otlp-grpc"],
            otlp_http=self.ports["otlp-http"],
            query_http=self.ports["query-http"],
            query_grpc=self.ports["query-grpc"],
        )
        self.config_path.write_text(json.dumps(document, indent=2) + "\n")
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(
                [str(self.binary), f"--config={self.config_path}"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self._process.poll() is not None:
                raise RuntimeError(f"jaeger exited with {self._process.returncode}; log: {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"jaeger not ready after {timeout:.0f} s; log: {self.log_path}")
            time.sleep(0.1)  # a host process: nothing to watch but its ports
        _log(f"jaeger up: OTLP {self.otlp_grpc_endpoint}, query {self.query_url}; log {self.log_path}")

    def ready(self) -> bool:
        """Receivers accept connections and the query API answers."""
        if not all(_port_open(self.ports[name]) for name in ("otlp-grpc", "otlp-http")):
            return False
        try:
            self.query().services()
        except (OSError, urllib.error.URLError):
            return False
        return True

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# ----------------------------------------------------------------- query API


def _plain(value: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as a Python value (intValue comes as a string in JSON)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_plain(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attributes(pairs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {pair["key"]: _plain(pair.get("value", {})) for pair in pairs or []}


def _enum(value: Any) -> int:
    # OTLP/JSON writes enums as integers; tolerate their names too.
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    names = {"SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3, "SPAN_KIND_INTERNAL": 1, "STATUS_CODE_ERROR": 2}
    return names.get(str(value), 0)


@dataclass(frozen=True)
class StoredSpan:
    """One span as Jaeger stored it, flattened with its resource's attributes."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    status_code: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    events: tuple[tuple[str, dict[str, Any]], ...] = field(default=())


def spans_of(document: dict[str, Any]) -> list[StoredSpan]:
    """The spans of a query API v3 answer ({"result": {"resourceSpans": [...]}})."""
    out: list[StoredSpan] = []
    for resource_spans in document.get("result", {}).get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                out.append(
                    StoredSpan(
                        trace_id=span.get("traceId", ""),
                        span_id=span.get("spanId", ""),
                        parent_span_id=span.get("parentSpanId", ""),
                        name=span.get("name", ""),
                        kind=_enum(span.get("kind", 0)),
                        status_code=_enum(span.get("status", {}).get("code", 0)),
                        attributes=_attributes(span.get("attributes")),
                        resource=resource,
                        events=tuple(
                            (event.get("name", ""), _attributes(event.get("attributes")))
                            for event in span.get("events", [])
                        ),
                    )
                )
    return out


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class JaegerQuery:
    """The query API v3 of one Jaeger (http://host:port)."""

    url: str
    timeout: float = 10.0

    def _get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
        """The JSON answer, or None for 404 (what Jaeger says when no trace matches)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=self.timeout) as response:
                answer: dict[str, Any] = json.load(response)
                return answer
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def services(self) -> list[str]:
        answer = self._get("/api/v3/services") or {}
        return [str(name) for name in answer.get("services", [])]

    def find_spans(
        self,
        service: str,
        operation: str = "",
        *,
        since: float,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[StoredSpan]:
        """Every span of the traces that have a span of `service` (named `operation`) started
        between `since` and `until` (epoch seconds; until defaults to now plus a minute)."""
        params = {
            "query.service_name": service,
            "query.start_time_min": _rfc3339(since),
            "query.start_time_max": _rfc3339(until if until is not None else time.time() + 60),
            "query.num_traces": str(limit),
        }
        if operation:
            params["query.operation_name"] = operation
        answer = self._get("/api/v3/traces", params)
        return spans_of(answer) if answer is not None else []

    def trace(self, trace_id: str) -> list[StoredSpan]:
        """All spans of one trace (hex id); empty when Jaeger has none."""
        answer = self._get(f"/api/v3/traces/{trace_id}")
        return spans_of(answer) if answer is not None else []

    def wait_for_span(
        self,
        service: str,
        operation: str,
        predicate: Callable[[StoredSpan], bool],
        *,
        since: float,
        timeout: float = 30,
    ) -> StoredSpan:
        """The first stored span of `operation` for which `predicate` holds, polling until `timeout`."""
        deadline = time.monotonic() + timeout
        seen: list[StoredSpan] = []
        while True:
            seen = [s for s in self.find_spans(service, operation, since=since) if s.name == operation]
            for span in seen:
                if predicate(span):
                    return span
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {operation!r} span of {service!r} matched in {timeout:.0f} s; "
                    f"saw {len(seen)}: {[s.attributes for s in seen][:5]}"
                )
            time.sleep(0.25)  # Jaeger has no watch API; export and batching take ~0.5 s anyway
