"""Cluster view benchmark (issue 8): what node labels and events cost, and `report` at scale.

1. The real `serve` process on 8 fake GPUs against the stand-in kubelet, with
   --node-labels/--node-events off and on (on: against the tests' fake API
   server, a real HTTP server on 127.0.0.1 spoken to by the real client):
   process start to Register received, start to labels applied (on), a
   fake-file health edit to its Event at the API server (on), and peak RSS.
2. `report --json` on a fake cluster of 300 nodes and 3000 pods: the whole
   command as a process, the list-and-build step in-process, and the same two
   lists read through the client's model objects, the road not taken.

Usage: python -m gdp_bench.cluster [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import CoreV1Api

from gdp_bench.common import emit, percentiles, progress, scratch_folder, serve_argv
from gdp_bench.core import peak_rss_mib
from gpu_device_plugin.cluster.kubeclient import list_all, user_client
from gpu_device_plugin.cluster.report import DEFAULT_PLUGIN_SELECTOR, LIVE_PODS, build_report
from gpu_device_plugin.cluster.selector import LabelSelector
from gpu_device_plugin.server.kubelet_standin import StandinKubelet

# The fake API server is the unit tests' (tests/testsupport/fakeapi.py): one fake for both.
from testsupport.fakeapi import FakeApiServer, node

NODE = "bench-node"
DEVICES = 8
RESOURCE = "example.com/gpu"


def gpus_yaml(unhealthy: int | None = None) -> str:
    devices = [{"index": i, "health": "Unhealthy" if i == unhealthy else "Healthy"} for i in range(DEVICES)]
    return yaml.safe_dump({"devices": devices, "topology": {"preset": "dgx-h100"}})


async def one_start(folder: Path, api: FakeApiServer | None) -> dict[str, float]:
    config = folder / "gpus.yaml"
    config.write_text(gpus_yaml())
    extra: list[str] = []
    if api is not None:
        api.requests.clear()
        api.events.clear()
        api.nodes[NODE] = node(NODE)
        kubeconfig = api.write_kubeconfig(folder / "kubeconfig")
        extra = ["--node-labels", "--node-events", "--kubeconfig", str(kubeconfig), "--node-name", NODE]
    result: dict[str, float] = {}
    async with StandinKubelet(folder, follow=False) as kubelet:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *serve_argv(config, folder, *extra), env={**os.environ, "OTEL_SDK_DISABLED": "true"}
        )
        try:
            await kubelet.wait_registered(timeout=30)
            result["registered_s"] = time.perf_counter() - started
            if api is not None:
                await api.until(lambda: bool(api.calls("PATCH", f"/api/v1/nodes/{NODE}")), timeout=30)
                result["labels_applied_s"] = time.perf_counter() - started
                edited = time.perf_counter()
                config.write_text(gpus_yaml(unhealthy=3))
                await api.until(lambda: len(api.events) == 1, timeout=30)
                result["edit_to_event_s"] = time.perf_counter() - edited
            result["peak_rss_mib"] = peak_rss_mib(process.pid)
        finally:
            process.terminate()
            await process.wait()
    return result


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        digits = 1 if key == "peak_rss_mib" else 3
        out[key] = {"median": round(statistics.median(values), digits), "max": round(max(values), digits)}
    out["n"] = len(runs)
    return out


async def serve_cost(trials: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with scratch_folder("gdp-bench-") as scratch:
        folder = Path(scratch)
        progress(f"serve start-up cost without and with labels and Events, {trials} starts each")
        result["labels_events_off"] = summarise([await one_start(folder, None) for _ in range(trials)])
        with FakeApiServer() as api:
            result["labels_events_on"] = summarise([await one_start(folder, api) for _ in range(trials)])
    return result


def fake_cluster(api: FakeApiServer, nodes: int, pods: int) -> None:
    for i in range(nodes):
        name = f"gpu-{i:04d}"
        api.nodes[name] = node(
            name,
            labels={"example.com/gpu.count": "8", "kubernetes.io/hostname": name},
            capacity={RESOURCE: "8", "cpu": "96", "memory": "1Ti"},
            allocatable={RESOURCE: "8" if i % 50 else "7", "cpu": "95", "memory": "1000Gi"},
        )
        api.pods.append(
            {
                "metadata": {
                    "name": f"gpu-device-plugin-{i:04d}",
                    "namespace": "gpu-device-plugin",
                    "labels": {"app.kubernetes.io/name": "gpu-device-plugin"},
                },
                "spec": {"nodeName": name, "containers": [{"name": "plugin", "image": "gdp:1"}]},
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {
                            "name": "plugin",
                            "restartCount": 0,
                            "ready": True,
                            "image": "gdp:1",
                            "imageID": "sha256:0",
                        }
                    ],
                },
            }
        )
    for j in range(pods - nodes):
        gpus = str(1 + j % 2)
        api.pods.append(
            {
                "metadata": {"name": f"job-{j}", "namespace": f"team-{j % 7}", "labels": {"app": "train"}},
                "spec": {
                    "nodeName": f"gpu-{j % nodes:04d}",
                    "containers": [
                        {
                            "name": "main",
                            "image": "train:1",
                            "resources": {"requests": {RESOURCE: gpus}, "limits": {RESOURCE: gpus}},
                        }
                    ],
                },
                "status": {"phase": "Running"},
            }
        )


def report_at_scale(trials: int, nodes: int, pods: int) -> dict[str, Any]:
    progress(f"report on {nodes} nodes and {pods} pods, {trials} trials")
    with FakeApiServer() as api, scratch_folder("gdp-bench-") as scratch:
        fake_cluster(api, nodes, pods)
        kubeconfig = api.write_kubeconfig(Path(scratch) / "kubeconfig")
        command = [
            sys.executable,
            "-m",
            "gpu_device_plugin.cli",
            "report",
            "--json",
            "--kubeconfig",
            str(kubeconfig),
        ]
        process_s, requests = [], 0
        for _ in range(trials):
            api.requests.clear()
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            process_s.append(time.perf_counter() - started)
            assert done.returncode == 1, done.stderr  # six nodes have an unhealthy GPU
            requests = len(api.requests)

        client = user_client(kubeconfig, None)
        selector = LabelSelector.parse(DEFAULT_PLUGIN_SELECTOR)
        in_process, models = [], []
        for _ in range(trials):
            started = time.perf_counter()
            report = build_report(
                list_all(client, "nodes"),
                list_all(client, "pods", field_selector=LIVE_PODS),
                resource=RESOURCE,
                plugin_selector=selector,
                label_prefix="example.com/gpu.",
            )
            in_process.append(time.perf_counter() - started)
            assert len(report.nodes) == nodes
            started = time.perf_counter()
            core = CoreV1Api(client)
            token = None
            while True:
                page = core.list_pod_for_all_namespaces(limit=500, _continue=token, field_selector=LIVE_PODS)
                token = page.metadata._continue
                if not token:
                    break
            core.list_node(limit=500)
            models.append(time.perf_counter() - started)
        client.close()
    return {
        "nodes": nodes,
        "pods": pods,
        "requests_per_report": requests,
        "report_process": percentiles(process_s),
        "list_and_build_in_process": percentiles(in_process),
        "same_lists_as_client_models": percentiles(models),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    args = parser.parse_args()
    trials = 2 if args.quick else 5
    result: dict[str, Any] = {"devices": DEVICES, "serve": asyncio.run(serve_cost(trials))}
    result["report"] = report_at_scale(trials, nodes=300, pods=3000)
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    emit(result, args.out)


if __name__ == "__main__":
    main()
