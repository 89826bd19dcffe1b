"""`task traces`: a local Jaeger v2 to send the plugin's spans to, until Ctrl-C.

The same Jaeger the e2e suite runs (e2e/cluster/jaeger.py: built from the Go
module proxy on first use, then cached), on 127.0.0.1 only, with in-memory
storage. By default it takes the standard ports (OTLP 4317/4318, query 16686),
so a plugin with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 finds it;
--free-ports picks free ones instead. It prints what to set for the plugin
and where to read the traces.

Usage: python -m gdp_hack.traces [--free-ports] [--logs DIR]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from gdp_e2e.cluster.build import PrerequisiteError
from gdp_e2e.cluster.jaeger import Jaeger, jaeger_binary, jaeger_version

STANDARD_PORTS = {"otlp_grpc_port": 4317, "otlp_http_port": 4318, "query_port": 16686}


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gdp_hack.traces", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--free-ports", action="store_true", help="pick free ports, not 4317/4318/16686")
    parser.add_argument("--logs", type=Path, help="folder for its config and log (default: a new temp one)")
    args = parser.parse_args()
    try:
        binary = jaeger_binary()
    except PrerequisiteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    logs = args.logs or Path(tempfile.mkdtemp(prefix="gpu-dp-traces-"))
    ports = {} if args.free_ports else STANDARD_PORTS
    # SIGTERM ends it like Ctrl-C: the context manager stops Jaeger either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with Jaeger(binary, logs, **ports) as jaeger:
            query = jaeger.query_url
            print(
                f"Jaeger {jaeger_version().release} is up (log: {jaeger.log_path}).\n\n"
                "Point the plugin at it:\n"
                f"  export OTEL_EXPORTER_OTLP_ENDPOINT={jaeger.otlp_grpc_endpoint}\n"
                "  export OTEL_SERVICE_NAME=gpu-device-plugin\n"
                "  (OTLP over HTTP: OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and "
                f"{jaeger.otlp_http_endpoint})\n\n"
                "Read the traces with the query API (the module carries no built UI; "
                f"{query}/ is a placeholder page):\n"
                f"  {query}/api/traces?service=gpu-device-plugin&limit=20   (newest traces, JSON)\n"
                f"  {query}/api/v3/services\n"
                f"  {query}/api/v3/operations?service=gpu-device-plugin\n"
                f"  {query}/api/v3/traces?query.service_name=gpu-device-plugin"
                "&query.start_time_min=2000-01-01T00:00:00Z&query.start_time_max=2100-01-01T00:00:00Z\n"
                f"  {query}/api/v3/traces/<trace id>\n\n"
                "Ctrl-C stops it.",
                flush=True,
            )
            signal.pause()
    except KeyboardInterrupt:
        pass
    except RuntimeError as error:  # a build that failed, a port taken: the message and log say which
        hint = "" if args.free_ports else " (if a port is taken: --free-ports)"
        print(f"error: {error}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
