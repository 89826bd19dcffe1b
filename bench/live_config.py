"""Per-node config benchmark (issue 17): a Node label switch to the new allocatable, and no dip.

`serve --config-dir` (in-process, the CLI's own loader) on 8 fake GPUs, beside
the stand-in kubelet over real sockets and the tests' fake API server (real
HTTP on 127.0.0.1, spoken to by the real kubernetes client, the Node followed
by a real watch). Two resources: `example.com/even` (GPUs 0, 2, 4, 6), which no
config changes, and the odd GPUs under the config's resource name, which the
label switches between `example.com/gpu` (config `whole`) and
`example.com/renamed` (config `renamed`), 20 times.

Measured per switch: from the label patch at the API server to the new
resource's 4 GPUs being allocatable as the kubelet sees them. There is no real
kubelet here, so "allocatable at the API" is the stand-in kubelet's view
written onto the fake Node's status the moment a device list arrives, as a
kubelet would (minus its node-status sync period, which is the kubelet's, not
ours: e2e/tests/test_live_config.py measures against the real one). And over
all switches: the least allocatable the unchanged resource ever had (a stream
that ended counts as 0, as the kubelet counts it) and its registrations.

Usage: python -m gdp_bench.live_config [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from pathlib import Path
from typing import Any

import yaml

from gdp_bench.common import emit, percentiles, progress, scratch_folder
from gpu_device_plugin.api.v1beta1 import api_pb2 as pb
from gpu_device_plugin.server.kubelet_standin import Registration, StandinKubelet

# The unit tests' fakes and helpers: one fake API server for both.
from testsupport.fakeapi import FakeApiServer, node
from testsupport.live import LABEL, NODE, RENAMED, WHOLE, live_plugin, write_configs
from testsupport.parity import EVEN, even_and_odd

CONFIG_RESOURCE = {"whole": "example.com/gpu", "renamed": "example.com/renamed"}
EXPECTED = 4  # GPUs per resource


class AllocatableMirror:
    """The stand-in kubelet's view of each resource, written onto the fake Node's status."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api
        self.even_min = EXPECTED
        self.even_updates = 0
        self._by_resource: dict[str, int] = {}

    def update(self, registration: Registration, update: pb.ListAndWatchResponse) -> None:
        name = registration.request.resource_name
        healthy = sum(1 for d in update.devices if d.health == "Healthy")
        if name == EVEN:
            self.even_min = min(self.even_min, healthy)
            self.even_updates += 1
        self._by_resource[name] = healthy
        self._publish()

    def ended(self, name: str) -> None:
        # A stream that ends: the kubelet marks every device of it unhealthy (allocatable 0).
        if name == EVEN:
            self.even_min = 0
        self._by_resource[name] = 0
        self._publish()

    def forget(self, name: str) -> None:
        """The resource is not allocatable (yet): a switch must bring its devices anew."""
        self._by_resource.pop(name, None)
        self._publish()

    def _publish(self) -> None:
        with self.api._changed:
            status = self.api.nodes[NODE].setdefault("status", {})
            status["allocatable"] = {k: str(v) for k, v in self._by_resource.items()}
            self.api._changed.notify_all()

    def allocatable(self, name: str) -> int:
        with self.api._changed:
            value = (self.api.nodes[NODE].get("status") or {}).get("allocatable", {}).get(name, "0")
        return int(value)


async def switches(count: int) -> dict[str, Any]:
    with scratch_folder() as scratch, FakeApiServer() as api:
        root = Path(scratch)
        api.nodes[NODE] = node(NODE, labels={LABEL: "whole"})
        plugin_dir = root / "dp"
        plugin_dir.mkdir()
        configs = root / "configs"
        write_configs(configs, {"whole": WHOLE, "renamed": RENAMED})
        gpus = root / "gpus.yaml"
        gpus.write_text(yaml.safe_dump({"devices": [{"index": i} for i in range(8)]}))
        mirror = AllocatableMirror(api)
        kubelet = StandinKubelet(plugin_dir, on_update=mirror.update)
        await kubelet.start()
        try:
            async with live_plugin(
                api=api,
                plugin_dir=plugin_dir,
                config_dir=configs,
                fake_config=gpus,
                plan=even_and_odd,
                args=("--log-level", "WARNING"),
            ):
                await kubelet.wait_for(
                    lambda: (
                        mirror.allocatable(EVEN) == EXPECTED
                        and mirror.allocatable(CONFIG_RESOURCE["whole"]) == EXPECTED
                    ),
                    timeout=15,
                )
                even = next(r for r in kubelet.registrations if r.request.resource_name == EVEN)
                assert even.stream_task is not None
                even.stream_task.add_done_callback(lambda _task: mirror.ended(EVEN))
                samples: list[float] = []
                current = "whole"
                for n in range(count):
                    target = "renamed" if current == "whole" else "whole"
                    resource = CONFIG_RESOURCE[target]
                    # The new resource starts from 0 in the kubelet's view, as after a real switch.
                    mirror.forget(resource)
                    started = time.perf_counter()
                    await asyncio.to_thread(api.set_labels, NODE, {LABEL: target})
                    await asyncio.to_thread(
                        api.wait_for,
                        lambda r=resource: mirror.allocatable(r) == EXPECTED,
                        15.0,
                        "allocatable",
                    )
                    samples.append(time.perf_counter() - started)
                    current = target
                    if n % 5 == 4:
                        progress(f"{n + 1}/{count} switches")
                # Read before the plugin stops: its stop ends every stream, this one's too.
                even_registrations = sum(1 for r in kubelet.registrations if r.request.resource_name == EVEN)
                even_min, even_updates = mirror.even_min, mirror.even_updates
        finally:
            await kubelet.stop()
    return {
        "switches": count,
        "label_to_allocatable": percentiles(samples),
        "unchanged_resource": {
            "name": EVEN,
            "count": EXPECTED,
            "min_allocatable": even_min,
            "registrations": even_registrations,
            "device_lists_received": even_updates,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="fewer switches (smoke run)")
    args = parser.parse_args()
    result: dict[str, Any] = asyncio.run(switches(4 if args.quick else 20))
    result["api"] = "tests' fake API server (real HTTP, real client, real watch); stand-in kubelet"
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    emit(result, args.out)


if __name__ == "__main__":
    main()
