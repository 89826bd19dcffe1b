"""The daemon's cluster tasks, built from the config: node labels and health Events.

Imported by `serve` only when one of them is on; importing this module does
not import `kubernetes` (the session does, on a worker thread, when a task
first needs the API server).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from gpu_device_plugin.backoff import Backoff
from gpu_device_plugin.cluster.config import ClusterConfig
from gpu_device_plugin.cluster.events import HealthEventRecorder
from gpu_device_plugin.cluster.label_sync import NodeLabeler
from gpu_device_plugin.cluster.nodeapi import NodeApi
from gpu_device_plugin.cluster.session import ClusterSession
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from gpu_device_plugin.resources.settings import ResourceSettings

log = logging.getLogger(__name__)


def connect(kubeconfig: Path | None) -> NodeApi:
    """Blocking: import the client, load the kubeconfig (or the pod's service account)."""
    from gpu_device_plugin.cluster.kubeclient import KubeNodeApi, daemon_client

    return KubeNodeApi(daemon_client(kubeconfig))


def cluster_tasks(
    config: ClusterConfig,
    cell: SnapshotCell[Inventory],
    *,
    settings: ResourceSettings | SnapshotCell[ResourceSettings],
    not_before: asyncio.Event | None = None,
    session: ClusterSession | None = None,
) -> dict[str, Coroutine[Any, Any, None]]:
    """Root tasks for what is switched on (none when nothing is).

    `settings`: the resources as served (the labels say how they are shared and
    partitioned); a cell of them when they change live (the per-node config), so the
    labels follow. `not_before`: set once the plugin has registered; the client is
    loaded after it (or after a short grace). `session`: tests pass their own.
    """
    if not config.enabled:
        return {}
    assert config.node_name is not None  # ClusterConfig refuses to be enabled without it
    session = session or ClusterSession(lambda: connect(config.kubeconfig), not_before=not_before)
    tasks: dict[str, Coroutine[Any, Any, None]] = {}
    if config.node_labels:
        labeler = NodeLabeler(
            cell=cell,
            session=session,
            node_name=config.node_name,
            prefix=config.label_prefix,
            settings=settings,
        )
        tasks["node-labels"] = contained("node labels", labeler.run)
    if config.node_events:
        recorder = HealthEventRecorder(cell=cell, session=session, node_name=config.node_name)
        tasks["node-events"] = contained("node events", recorder.run)
    return tasks


async def contained(
    what: str,
    run: Callable[[], Awaitable[None]],
    *,
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run `run` again, after a capped backoff, whenever it fails unexpectedly.

    The kubelet side is what the node needs; a bug met while labelling must not
    end the process (a root task ending stops the daemon) and take the GPUs out
    of service with it. A bad kubeconfig still does: that is configuration.
    """
    backoff = backoff or Backoff()
    failures = 0
    while True:
        try:
            await run()
            return
        except ConfigError:
            raise
        except Exception:
            delay = backoff.delay(failures)
            failures += 1
            log.exception(
                "%s: unexpected failure; starting over in %.1f s, devices are still served", what, delay
            )
            await sleep(delay)
