"""Keeping the Node's feature labels equal to what the inventory says: a consumer of the SnapshotCell.

Data flows one way: discovery -> inventory cell -> this task -> API server.
Nothing here ever publishes to the cell or is awaited by the kubelet side; when
the API server is unreachable or refuses, this task alone waits (capped
backoff), logs once per change of failure, and catches up with the newest
inventory when calls work again.

Only labels this plugin owns are touched (under the prefix, and GFD's MIG keys
beside it: feature_labels.owned_labels), by a JSON merge patch naming just
the keys that change (null removes one), so labels of other owners survive
and no resourceVersion conflict can occur. The labels last read or written are
remembered: an inventory change that changes no label costs no call at all, one
that does costs one patch. The Node is read at start, after a failure, and
every `resync_s`, so a label someone edited or a stale one of an older version
is put right without watching Nodes (which the RBAC does not allow).

The settings are followed like the inventory: given a cell of them (the
per-node config's applied settings, issue 17), a config applied live changes
the sharing, replicas and MIG labels with it; a config rejected publishes
nothing there, so it changes no label.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gpu_device_plugin import __version__
from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.cluster.feature_labels import feature_labels, label_patch, owned_labels
from gpu_device_plugin.cluster.nodeapi import ClusterApiError
from gpu_device_plugin.cluster.offloop import off_loop
from gpu_device_plugin.cluster.outage_log import OutageLog
from gpu_device_plugin.cluster.session import ClusterSession
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.inventory.cell import first_of
from gpu_device_plugin.resources.settings import ResourceSettings

log = logging.getLogger(__name__)

RESYNC_S = 300.0


class NodeLabeler:
    def __init__(
        self,
        *,
        cell: SnapshotCell[Inventory],
        session: ClusterSession,
        node_name: str,
        prefix: str,
        settings: ResourceSettings | SnapshotCell[ResourceSettings],
        plugin_version: str = __version__,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        resync_s: float | None = RESYNC_S,
    ) -> None:
        self._cell = cell
        self._session = session
        self._node = node_name
        self._prefix = prefix
        # A fixed value is a cell that never changes: one code path follows both.
        self._settings = settings if isinstance(settings, SnapshotCell) else SnapshotCell(settings)
        self._version = plugin_version
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._resync_s = resync_s
        # The node's labels under the prefix as last read or written; None: read before writing.
        self._known: dict[str, str] | None = None
        self._outage = OutageLog(f"node labels of {node_name}", log)
        self.applied = asyncio.Event()
        """Set whenever the node's labels match the newest inventory and settings (tests, benchmarks)."""

    def desired(self) -> dict[str, str]:
        # A pure function of (settings, inventory): what a config change (issue 17) gives
        # the labeler is only new settings.
        return feature_labels(
            self._cell.value, prefix=self._prefix, plugin_version=self._version, settings=self._settings.value
        )

    @property
    def settings(self) -> SnapshotCell[ResourceSettings]:
        """The settings the labels describe: publish into it to relabel (the live config does)."""
        return self._settings

    async def run(self) -> None:
        while True:
            seen = (self._cell.version, self._settings.version)
            await self._converge()
            if not await self._changed_since(seen):
                self._known = None  # resync: read the node again, in case someone edited it

    async def _changed_since(self, seen: tuple[int, int]) -> bool:
        """Wait for a newer inventory or settings (True), or for the resync period to pass (False)."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that arrives
        # just as the awaited value does, and the daemon could not stop this task.
        try:
            async with asyncio.timeout(self._resync_s):
                # Versions, not events alone: a change during _converge returns at once.
                while (self._cell.version, self._settings.version) == seen:
                    await first_of(self._cell.next_change(), self._settings.next_change())
        except TimeoutError:
            return False
        return True

    async def _converge(self) -> None:
        attempt = 0
        while True:
            # The newest inventory on every attempt: a change during a backoff is not lost.
            desired = self.desired()
            if desired == self._known:
                self.applied.set()
                return
            self.applied.clear()
            try:
                await self._apply(desired)
            except ClusterApiError as err:
                self._known = None  # the patch may or may not have landed: read first next time
                delay = self._backoff.delay(attempt)
                attempt += 1
                self._outage.failed(err, delay)
                await self._sleep(delay)
            else:
                # Done even if the server's answer differs from what was asked (a webhook may
                # rewrite labels): the next change compares with the answer, never a patch loop.
                self._outage.succeeded()
                self.applied.set()
                return

    async def _apply(self, desired: dict[str, str]) -> None:
        api = await self._session.api()
        if self._known is None:
            node = await off_loop(lambda: api.get_node(self._node))
            self._known = owned_labels(node.labels, self._prefix)
        patch = label_patch(self._known, desired)
        if not patch:
            return
        node = await off_loop(lambda: api.patch_node_labels(self._node, patch))
        self._known = owned_labels(node.labels, self._prefix)
        removed = sorted(k for k, v in patch.items() if v is None)
        log.info(
            "node %s: feature labels applied (%d set%s)",
            self._node,
            len(patch) - len(removed),
            f", removed {', '.join(removed)}" if removed else "",
        )
