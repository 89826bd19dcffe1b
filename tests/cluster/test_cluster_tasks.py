"""The cluster tasks as `serve` runs them: an unexpected failure is contained, configuration is not."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cluster_support import EXACT_BACKOFF, NODE, PREFIX, Sleeps, fake_inventory, running

from gpu_device_plugin.cluster.config import ClusterConfig
from gpu_device_plugin.cluster.label_sync import NodeLabeler
from gpu_device_plugin.cluster.nodeapi import NodeApi, NodeInfo
from gpu_device_plugin.cluster.session import ClusterSession
from gpu_device_plugin.cluster.tasks import cluster_tasks, connect, contained
from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.inventory import SnapshotCell
from gpu_device_plugin.resources.settings import ResourceSettings
from testsupport.fakeapi import FakeApiServer, node


class BuggyOnce:
    """Our NodeApi over the real one, whose first read fails in a way nobody planned for."""

    def __init__(self, real: NodeApi) -> None:
        self.real = real
        self.failed = False

    def get_node(self, name: str) -> NodeInfo:
        if not self.failed:
            self.failed = True
            raise KeyError("metadata")
        return self.real.get_node(name)

    def patch_node_labels(self, name: str, labels: Mapping[str, str | None]) -> NodeInfo:
        return self.real.patch_node_labels(name, labels)

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        self.real.create_event(namespace, event)

    def patch_event(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.real.patch_event(namespace, name, patch)


async def test_an_unexpected_failure_is_logged_and_the_task_starts_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeApiServer() as api:
        api.nodes[NODE] = node(NODE)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        session = ClusterSession(lambda: BuggyOnce(connect(kubeconfig)))
        labeler = NodeLabeler(
            cell=SnapshotCell(fake_inventory(count=3)),
            session=session,
            node_name=NODE,
            prefix=PREFIX,
            settings=ResourceSettings(),
        )
        sleeps = Sleeps()
        with caplog.at_level(logging.ERROR, logger="gpu_device_plugin.cluster"):
            async with running(contained("node labels", labeler.run, backoff=EXACT_BACKOFF, sleep=sleeps)):
                await labeler.applied.wait()
        assert api.labels(NODE)[PREFIX + "count"] == "3"
    assert sleeps.delays == [1.0]
    (record,) = caplog.records
    assert "node labels: unexpected failure" in record.getMessage()
    assert record.exc_info is not None  # the traceback is in the log, for the bug report


async def test_configuration_errors_are_not_contained() -> None:
    async def misconfigured() -> None:
        raise ConfigError("kubeconfig", "cannot load it")

    with pytest.raises(ConfigError, match="kubeconfig"):
        await contained("node labels", misconfigured, sleep=Sleeps())


def test_only_what_is_switched_on_runs() -> None:
    cell = SnapshotCell(fake_inventory(count=1))
    settings = ResourceSettings()
    assert cluster_tasks(ClusterConfig(), cell, settings=settings) == {}
    tasks = cluster_tasks(ClusterConfig(node_events=True, node_name=NODE), cell, settings=settings)
    assert list(tasks) == ["node-events"]
    for coro in tasks.values():
        coro.close()
    tasks = cluster_tasks(
        ClusterConfig(node_labels=True, node_events=True, node_name=NODE), cell, settings=settings
    )
    assert sorted(tasks) == ["node-events", "node-labels"]
    for coro in tasks.values():
        coro.close()
