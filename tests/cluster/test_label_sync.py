"""The node labeler against a fake API server, through the real kubernetes client.

What a user would notice: the labels appear, stale ones of ours go, other
owners' labels stay, an inventory change costs exactly one patch (a health
change none), and an API server that refuses or is gone is logged once per
kind of failure, retried with capped backoff, and caught up with afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest
from cluster_support import (
    EXACT_BACKOFF,
    NODE,
    PREFIX,
    Sleeps,
    fake_inventory,
    mig_inventory,
    running,
    session_for,
)

from gpu_device_plugin.cluster.label_sync import NodeLabeler
from gpu_device_plugin.cluster.nodeapi import NodeApi
from gpu_device_plugin.cluster.session import ClusterSession
from gpu_device_plugin.cluster.tasks import connect
from gpu_device_plugin.inventory import Health, Inventory, SnapshotCell
from gpu_device_plugin.resources.settings import (
    MigStrategy,
    ResourceSettings,
    SharedResource,
    Sharing,
    SharingStrategy,
)
from testsupport.fakeapi import DROP, FakeApiServer, node
from testsupport.waiting import eventually

FOREIGN = {"kubernetes.io/hostname": NODE, "team": "ml", "example.com/gpu": "not-ours-no-dot"}


@pytest.fixture
def api() -> FakeApiServer:
    with FakeApiServer() as server:
        server.nodes[NODE] = node(NODE, labels=FOREIGN | {PREFIX + "stale": "from-an-old-version"})
        yield server


def labeler(
    cell: SnapshotCell[Inventory], session: ClusterSession, sleeps: Sleeps | None = None, **kwargs: object
) -> NodeLabeler:
    return NodeLabeler(
        cell=cell,
        session=session,
        node_name=NODE,
        prefix=PREFIX,
        settings=kwargs.pop("settings", ResourceSettings()),  # type: ignore[arg-type]
        plugin_version="9.9.9",
        backoff=EXACT_BACKOFF,
        sleep=sleeps or Sleeps(),
        **kwargs,  # type: ignore[arg-type]
    )


def ours(api: FakeApiServer) -> dict[str, str]:
    return {k: v for k, v in api.labels(NODE).items() if k.startswith(PREFIX)}


async def test_labels_appear_stale_ones_go_and_foreign_ones_stay(api: FakeApiServer, tmp_path: Path) -> None:
    cell = SnapshotCell(fake_inventory(count=8, topology={"preset": "dgx-a100"}))
    async with running(labeler(cell, session_for(api, tmp_path)).run()):
        await api.until(lambda: PREFIX + "count" in api.labels(NODE), what="labels applied")
    labels = api.labels(NODE)
    assert labels[PREFIX + "count"] == "8"
    assert labels[PREFIX + "product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels[PREFIX + "interconnect"] == "nvswitch"
    assert labels[PREFIX + "plugin.version"] == "9.9.9"
    assert PREFIX + "stale" not in labels
    assert {k: labels[k] for k in FOREIGN} == FOREIGN
    # One read, one merge patch naming only our keys (the stale one as null).
    assert [r.method for r in api.requests] == ["GET", "PATCH"]
    patch = api.calls("PATCH")[0]
    assert patch.content_type == "application/merge-patch+json"
    sent = patch.body["metadata"]["labels"]
    assert all(k.startswith(PREFIX) for k in sent)
    assert sent[PREFIX + "stale"] is None
    assert list(patch.body) == ["metadata"]
    assert list(patch.body["metadata"]) == ["labels"]


async def test_sharing_and_mig_labels_follow_the_settings_and_other_owners_keep_theirs(
    api: FakeApiServer, tmp_path: Path
) -> None:
    gfd = "nvidia.com/gpu."
    mig_manager = {"nvidia.com/mig.config": "all-balanced", "nvidia.com/mig.config.state": "success"}
    # A profile gone since the last run left its labels behind.
    api.nodes[NODE] = node(NODE, labels=FOREIGN | mig_manager | {"nvidia.com/mig-7g.80gb.count": "1"})
    cell = SnapshotCell(mig_inventory({0: ["1g.10gb"] * 7, 1: ["3g.40gb", "3g.40gb"]}, whole=1))

    def on(settings: ResourceSettings) -> NodeLabeler:
        return NodeLabeler(
            cell=cell, session=session_for(api, tmp_path), node_name=NODE, prefix=gfd, settings=settings
        )

    mixed = on(ResourceSettings("nvidia.com/gpu", mig_strategy=MigStrategy.MIXED))
    async with running(mixed.run()):
        await mixed.applied.wait()
    labels = api.labels(NODE)
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    assert labels["nvidia.com/mig-1g.10gb.count"] == "7"
    assert labels["nvidia.com/mig-3g.40gb.count"] == "2"
    assert labels["nvidia.com/mig-3g.40gb.memory"] == "40192"
    assert "nvidia.com/mig-7g.80gb.count" not in labels
    # A config change (issue 17) is new settings over the same inventory: the MIG labels go,
    # the sharing ones come, in one patch; the MIG manager's and other owners' labels stay.
    patches = len(api.calls("PATCH"))
    shared = Sharing(SharingStrategy.TIME_SLICING, (SharedResource("nvidia.com/gpu", 4),))
    plain = on(ResourceSettings("nvidia.com/gpu", sharing=shared))
    async with running(plain.run()):
        await plain.applied.wait()
    labels = api.labels(NODE)
    assert not [k for k in labels if k.startswith("nvidia.com/mig-") or k == "nvidia.com/mig.strategy"]
    assert {k: labels[k] for k in (gfd + "replicas", gfd + "sharing-strategy", gfd + "product")} == {
        gfd + "replicas": "4",
        gfd + "sharing-strategy": "time-slicing",
        gfd + "product": "NVIDIA-A100-SXM4-80GB-SHARED",
    }
    assert {k: labels[k] for k in FOREIGN | mig_manager} == FOREIGN | mig_manager
    assert len(api.calls("PATCH")) == patches + 1


async def test_settings_published_into_its_cell_relabel_the_running_labeler(
    api: FakeApiServer, tmp_path: Path
) -> None:
    gfd = "nvidia.com/gpu."
    inventory = SnapshotCell(mig_inventory({}, whole=2))
    settings = SnapshotCell(ResourceSettings("nvidia.com/gpu"))
    worker = NodeLabeler(
        cell=inventory, session=session_for(api, tmp_path), node_name=NODE, prefix=gfd, settings=settings
    )
    assert worker.settings is settings
    async with running(worker.run()):
        await api.until(lambda: api.labels(NODE).get(gfd + "sharing-strategy") == "none")
        patches = len(api.calls("PATCH"))
        # A config applied live (issue 17): the same labeler, the same inventory, new settings.
        shared = Sharing(SharingStrategy.TIME_SLICING, (SharedResource("nvidia.com/gpu", 4),))
        settings.publish(ResourceSettings("nvidia.com/gpu", sharing=shared))
        await api.until(lambda: api.labels(NODE).get(gfd + "replicas") == "4")
        assert api.labels(NODE)[gfd + "sharing-strategy"] == "time-slicing"
        assert len(api.calls("PATCH")) == patches + 1
        await worker.applied.wait()


async def test_nothing_to_change_costs_no_patch(api: FakeApiServer, tmp_path: Path) -> None:
    cell = SnapshotCell(fake_inventory(count=2))
    first = labeler(cell, session_for(api, tmp_path))
    async with running(first.run()):
        await first.applied.wait()
    assert len(api.calls("PATCH")) == 1
    # A restarted plugin with the same devices reads the node and finds it right.
    second = labeler(cell, session_for(api, tmp_path))
    async with running(second.run()):
        await second.applied.wait()
    assert [r.method for r in api.requests] == ["GET", "PATCH", "GET"]


async def test_one_patch_per_change_and_none_for_health(api: FakeApiServer, tmp_path: Path) -> None:
    cell = SnapshotCell(fake_inventory(count=4))
    worker = labeler(cell, session_for(api, tmp_path))
    async with running(worker.run()):
        await api.until(lambda: len(api.calls("PATCH")) == 1)
        device = cell.value.devices[0].id
        # Health changes never change a label: no call at all.
        cell.publish(
            cell.value.with_health({device: (Health.UNHEALTHY, "XID 79 (GPU has fallen off the bus)")})
        )
        cell.publish(cell.value.with_health({device: (Health.HEALTHY, "")}))
        # A new driver does: exactly one patch, with just that key.
        cell.publish(fake_inventory(count=4, driver_version="555.42.02"))
        await api.until(lambda: len(api.calls("PATCH")) == 2)
        await worker.applied.wait()
        # Two more GPUs and a new model: one patch for both keys.
        cell.publish(fake_inventory(count=6, driver_version="555.42.02", model="NVIDIA H200"))
        await api.until(lambda: len(api.calls("PATCH")) == 3)
        await worker.applied.wait()
    patches = [r.body["metadata"]["labels"] for r in api.calls("PATCH")]
    assert patches[1] == {PREFIX + "driver.version": "555.42.02"}
    assert patches[2] == {PREFIX + "count": "6", PREFIX + "product": "NVIDIA-H200"}
    assert len(api.calls("GET")) == 1  # the labels were remembered, never re-read
    assert ours(api)[PREFIX + "count"] == "6"


async def test_resync_puts_right_what_someone_edited(api: FakeApiServer, tmp_path: Path) -> None:
    cell = SnapshotCell(fake_inventory(count=4))
    worker = labeler(cell, session_for(api, tmp_path), resync_s=0.05)
    async with running(worker.run()):
        await api.until(lambda: len(api.calls("PATCH")) == 1)
        api.nodes[NODE]["metadata"]["labels"][PREFIX + "count"] = "400"
        api.nodes[NODE]["metadata"]["labels"][PREFIX + "added-by-hand"] = "x"
        await api.until(lambda: ours(api).get(PREFIX + "count") == "4", what="resync repaired the label")
        assert PREFIX + "added-by-hand" not in ours(api)
        gets = len(api.calls("GET"))
        await api.until(lambda: len(api.calls("GET")) >= gets + 2, what="two more resyncs")
    # Resyncs that find the labels right only read.
    assert len(api.calls("PATCH")) == 2


@pytest.mark.parametrize(
    ("method", "status", "logged"),
    [
        pytest.param("PATCH", 403, "forbidden (403)", id="forbidden"),
        pytest.param("GET", 500, "server error (500)", id="server-error"),
        pytest.param("GET", 401, "unauthorized (401)", id="unauthorized"),
        pytest.param("GET", DROP, "unreachable", id="connection-dropped"),
    ],
)
async def test_failures_are_retried_with_backoff_and_logged_once(
    api: FakeApiServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    method: str,
    status: int,
    logged: str,
) -> None:
    api.fail(method, f"/api/v1/nodes/{NODE}", status, times=5)
    sleeps = Sleeps()
    cell = SnapshotCell(fake_inventory(count=4))
    worker = labeler(cell, session_for(api, tmp_path), sleeps)
    with caplog.at_level(logging.INFO, logger="gpu_device_plugin.cluster"):
        async with running(worker.run()):
            await api.until(lambda: ours(api).get(PREFIX + "count") == "4", what="labels after the outage")
            await worker.applied.wait()
    assert sleeps.delays == [1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert logged in warnings[0]
    assert "devices are still served" in warnings[0]
    assert any("work again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    # After a failed try the node is read again before writing: never a blind second patch.
    assert len(api.calls("PATCH")) == (6 if method == "PATCH" else 1)
    assert all(
        r.body["metadata"]["labels"] == api.calls("PATCH")[0].body["metadata"]["labels"]
        for r in api.calls("PATCH")
    )


async def test_a_change_of_failure_is_logged_again(
    api: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api.fail("GET", f"/api/v1/nodes/{NODE}", 403, times=2)
    api.fail("GET", f"/api/v1/nodes/{NODE}", 500, times=2)
    worker = labeler(SnapshotCell(fake_inventory(count=1)), session_for(api, tmp_path))
    with caplog.at_level(logging.WARNING, logger="gpu_device_plugin.cluster"):
        async with running(worker.run()):
            await worker.applied.wait()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "forbidden (403)" in warnings[0]
    assert "server error (500)" in warnings[1]


async def test_newest_inventory_wins_after_an_outage(api: FakeApiServer, tmp_path: Path) -> None:
    """Changes made while the API server was down end in one patch with the latest labels."""
    api.fail("GET", f"/api/v1/nodes/{NODE}", 503, times=1000)
    cell = SnapshotCell(fake_inventory(count=1))
    worker = labeler(cell, session_for(api, tmp_path))
    async with running(worker.run()):
        await api.until(lambda: len(api.calls("GET")) >= 3)
        for count in (2, 3, 5):
            cell.publish(fake_inventory(count=count))
        await api.until(lambda: len(api.calls("GET")) >= 6)
        api.heal()
        await api.until(lambda: len(api.calls("PATCH")) == 1)
        await worker.applied.wait()
    assert ours(api)[PREFIX + "count"] == "5"


async def test_a_node_not_registered_yet_is_waited_for(api: FakeApiServer, tmp_path: Path) -> None:
    del api.nodes[NODE]
    sleeps = Sleeps()
    worker = labeler(SnapshotCell(fake_inventory(count=2)), session_for(api, tmp_path), sleeps)
    async with running(worker.run()):
        await api.until(lambda: len(api.calls("GET")) >= 2, what="retries on 404")
        api.nodes[NODE] = node(NODE)
        await worker.applied.wait()
        await api.until(lambda: ours(api).get(PREFIX + "count") == "2")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_api_server_keeps_retrying_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{closed_port()}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    sleeps = Sleeps()
    worker = labeler(
        SnapshotCell(fake_inventory(count=2)), ClusterSession(lambda: connect(kubeconfig)), sleeps
    )
    with caplog.at_level(logging.WARNING, logger="gpu_device_plugin.cluster"):
        async with running(worker.run()):
            await eventually(lambda: len(sleeps.delays) >= 6, timeout=10, what="six retries")
    assert sleeps.delays[:6] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert len(caplog.records) == 1
    assert "unreachable" in caplog.records[0].getMessage()
    assert not worker.applied.is_set()


async def test_the_client_is_loaded_once_the_plugin_has_registered(
    api: FakeApiServer, tmp_path: Path
) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    connects: list[float] = []

    def counting_connect() -> NodeApi:
        connects.append(time.monotonic())
        return connect(kubeconfig)

    registered = asyncio.Event()
    session = ClusterSession(counting_connect, not_before=registered, grace_s=60)
    worker = labeler(SnapshotCell(fake_inventory(count=2)), session)
    async with running(worker.run()):
        for _ in range(50):  # many turns of the loop: nothing may happen before registration
            await asyncio.sleep(0)
        assert connects == []
        assert api.requests == []
        registered.set()
        await worker.applied.wait()
    assert len(connects) == 1


async def test_without_a_kubelet_the_labels_still_come_after_a_grace(
    api: FakeApiServer, tmp_path: Path
) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    session = ClusterSession(lambda: connect(kubeconfig), not_before=asyncio.Event(), grace_s=0.05)
    worker = labeler(SnapshotCell(fake_inventory(count=2)), session)
    async with running(worker.run()):
        await asyncio.wait_for(worker.applied.wait(), 10)
    assert ours(api)[PREFIX + "count"] == "2"
