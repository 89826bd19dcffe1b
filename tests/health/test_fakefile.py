"""The fake-file watcher: woken only by its own file (and a ConfigMap's `..data` swap),
one warning per distinct bad content, and a fixed file applied.

Set up as the issue found it: the plugin's log is a file in the config's folder,
so every warning was a change in the folder that woke the reader to warn again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from gpu_device_plugin.backends.fake.health import FakeFileReader, follow_fake_file
from gpu_device_plugin.backends.fake.spec import FakeConfig, fake_uuid, to_inventory
from gpu_device_plugin.fswatch import FolderWatch
from gpu_device_plugin.health.xid import IgnoredXids
from gpu_device_plugin.inventory import Inventory, SnapshotCell
from testsupport.fakegpus import write_fake_config

LOGGER = "gpu_device_plugin.backends.fake.health"


class Warnings(logging.Handler):
    """The reader's warnings, with a way to wait for the n-th (no sleeping)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[str]:
        async def until() -> list[str]:
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
            return self.messages

        return await asyncio.wait_for(until(), timeout)


def write(path: Path, text: str) -> None:
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(text)
    scratch.replace(path)


@pytest.fixture
async def following(fake_config: Path) -> AsyncIterator[tuple[SnapshotCell[Inventory], Warnings, Path]]:
    cell = SnapshotCell(to_inventory(FakeConfig(count=8)))
    warnings = Warnings()
    # The log beside the config, as in the field.
    log_file = logging.FileHandler(fake_config.parent / "plugin.log")
    logger = logging.getLogger(LOGGER)
    logger.addHandler(warnings)
    logger.addHandler(log_file)
    ready = asyncio.Event()
    task = asyncio.create_task(follow_fake_file(fake_config, cell, ready=ready))
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield cell, warnings, fake_config.parent / "plugin.log"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logger.removeHandler(warnings)
        logger.removeHandler(log_file)
        log_file.close()


async def test_one_warning_per_distinct_bad_content_then_the_fix_applies(
    fake_config: Path, following: tuple[SnapshotCell[Inventory], Warnings, Path]
) -> None:
    cell, warnings, log_path = following
    write(fake_config, "devices: [{uuid: GPU-a, health: Sick}]\n")
    [first] = await warnings.wait_for(1)
    assert "devices.0.health" in first

    neighbour = fake_config.parent / "notes.txt"
    for n in range(100):
        neighbour.write_text(f"write {n}\n")
    for _ in range(3):
        write(fake_config, "devices: [{uuid: GPU-a, health: Sick}]\n")  # the same bad content again

    # A second, different mistake: the one warning that must come next.
    write(fake_config, "count: -3\n")
    messages = await warnings.wait_for(2)
    assert len(messages) == 2
    assert "count" in messages[1]

    version = cell.version
    write_fake_config(fake_config, unhealthy=(3,))
    fixed = await asyncio.wait_for(cell.wait_for_version(version + 1), 5)
    assert [d.id for d in fixed.devices if not d.healthy] == [fake_uuid(3)]
    assert len(warnings.messages) == 2
    assert sum("ignoring an edit" in line for line in log_path.read_text().splitlines()) == 2


async def test_a_configmap_data_swap_is_followed(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    stamped = volume / "..2026_01_01.1"
    stamped.mkdir()
    write_fake_config(stamped / "gpus.yaml")
    (volume / "..data").symlink_to(stamped.name)
    (volume / "gpus.yaml").symlink_to("..data/gpus.yaml")
    cell = SnapshotCell(to_inventory(FakeConfig(count=8)))
    ready = asyncio.Event()
    task = asyncio.create_task(follow_fake_file(volume / "gpus.yaml", cell, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        version = cell.version
        newer = volume / "..2026_01_01.2"
        newer.mkdir()
        write_fake_config(newer / "gpus.yaml", unhealthy=(5,))
        (volume / "..data_tmp").symlink_to(newer.name)
        (volume / "..data_tmp").rename(volume / "..data")
        updated = await asyncio.wait_for(cell.wait_for_version(version + 1), 5)
        assert [d.id for d in updated.devices if not d.healthy] == [fake_uuid(5)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_folder_watch_reports_only_the_names_it_watches(tmp_path: Path) -> None:
    with FolderWatch(tmp_path, names={"gpus.yaml"}) as watcher:
        for n in range(100):
            (tmp_path / "plugin.log").write_text(f"line {n}\n")
        (tmp_path / "gpus.yaml").write_text(yaml.safe_dump({"count": 1}))
        changes = await asyncio.wait_for(watcher.next_changes(), 5)
    assert {path.name for _, path in changes} == {"gpus.yaml"}


def test_the_reader_warns_once_per_distinct_content(
    fake_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cell = SnapshotCell(to_inventory(FakeConfig(count=8)))
    reader = FakeFileReader(fake_config, cell, IgnoredXids())
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def warnings() -> int:
        return sum("ignoring an edit" in r.getMessage() for r in caplog.records)

    write(fake_config, "count: nine\n")
    for _ in range(100):
        reader.reread()  # what each wake-up did: the same bad content, over and over
    assert warnings() == 1
    write(fake_config, "count: -1\n")
    reader.reread()
    reader.reread()
    assert warnings() == 2
    fake_config.unlink()
    reader.reread()
    reader.reread()
    assert warnings() == 3
    assert "cannot read" in caplog.records[-1].getMessage()
    write(fake_config, "count: nine\n")  # bad again after something else: worth saying again
    reader.reread()
    assert warnings() == 4
    write_fake_config(fake_config, unhealthy=(1,))
    reader.reread()
    assert [d.id for d in cell.value.devices if not d.healthy] == [fake_uuid(1)]
