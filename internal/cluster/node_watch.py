"""Following this Node's labels: a get, then a watch with a field selector on its name.

The labels are published into a SnapshotCell (None until the first read), so
a reader (the per-node config, issue 17) wakes on each change and only then.
One watch of one object: what RBAC's `nodes get/list/watch` allows, and the
API server's cheapest way to hear of a label change. The watch ends every
`timeout_s` (the server closes it) and is resumed from the last version seen;
a version the server has forgotten (410 Gone) starts again from a fresh get;
a failing API server is retried with a capped backoff and logged once per
outage. The blocking stream is read on a daemon thread (offloop.py), each
change handed to the loop; nothing here ever stops the devices being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from functools import partial

from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.cluster.nodeapi import ClusterApiError, NodeApi, NodeChange
from gpu_device_plugin.cluster.offloop import off_loop
from gpu_device_plugin.cluster.outage_log import OutageLog
from gpu_device_plugin.cluster.session import ClusterSession
from gpu_device_plugin.inventory import SnapshotCell

log = logging.getLogger(__name__)

#: Seconds the server keeps one watch open before we resume it (the API server's own cap is 30 min).
WATCH_TIMEOUT_S = 300
GONE = 410

Labels = Mapping[str, str]


class NodeLabelWatch:
    def __init__(
        self,
        *,
        session: ClusterSession,
        node_name: str,
        timeout_s: int = WATCH_TIMEOUT_S,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.session = session
        self.node_name = node_name
        self._timeout_s = timeout_s
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._outage = OutageLog(f"watch of node {node_name}", log)
        self.labels: SnapshotCell[Labels | None] = SnapshotCell(None)
        """The Node's labels; None until first read."""

    async def run(self) -> None:
        failures = 0
        version = ""
        while True:
            try:
                api = await self.session.api()
                if not version:
                    node = await off_loop(partial(api.get_node, self.node_name), name="node-get")
                    self.labels.publish(dict(node.labels))
                    version = node.resource_version
                version = await self._watch(api, version)
            except ClusterApiError as err:
                if err.status == GONE:
                    log.info(
                        "watch of node %s: version %s expired, reading it again", self.node_name, version
                    )
                    version = ""
                    continue
                delay = self._backoff.delay(failures)
                failures += 1
                self._outage.failed(err, delay)
                version = ""
                await self._sleep(delay)
            else:
                failures = 0
                self._outage.succeeded()

    async def _watch(self, api: NodeApi, version: str) -> str:
        """One watch until the server ends it; the last version seen."""
        loop = asyncio.get_running_loop()
        last = [version]
        abandoned = threading.Event()

        def seen(change: NodeChange) -> None:
            if change.kind == "DELETED":
                self.labels.publish({})
            else:
                self.labels.publish(dict(change.node.labels))

        def stream() -> None:
            for change in api.watch_node(self.node_name, last[0], self._timeout_s):
                if abandoned.is_set():
                    return  # the task awaiting us is gone: let the thread end
                if change.node.resource_version:
                    last[0] = change.node.resource_version
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(seen, change)

        try:
            await off_loop(stream, name="node-watch")
        finally:
            abandoned.set()
        return last[0]
