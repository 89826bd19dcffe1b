"""The kind overlay's promise: edits of the ConfigMap reach the running plugin, every time.

The kubelet updates a ConfigMap volume the way its atomic writer does: the
files live in a hidden timestamped folder, `..data` links to it, and each
visible name links through `..data`. An update writes a new timestamped folder,
swaps `..data` to it with a rename and deletes the old folder. Here that layout
and that swap are made on disk, with the overlay's own fake config, and the
real plugin is followed through the test kubelet across several updates (a
watch that followed the first timestamped folder would see only the first).
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import yaml

from gpu_device_plugin.server.kubelet_standin import StandinKubelet
from testsupport.manifests import only, render_overlay


class ConfigMapVolume:
    """A folder laid out and updated as the kubelet does for a ConfigMap volume."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._stamps = itertools.count()

    def write(self, data: dict[str, str]) -> None:
        stamped = self.folder / f"..2026_01_01_00_00_00.{next(self._stamps)}"
        stamped.mkdir()
        for key, text in data.items():
            (stamped / key).write_text(text)
        data_link = self.folder / "..data"
        previous = os.readlink(data_link) if data_link.is_symlink() else None
        scratch = self.folder / "..data_tmp"
        scratch.symlink_to(stamped.name)
        scratch.rename(data_link)  # the atomic swap
        for key in data:
            visible = self.folder / key
            if not visible.is_symlink():
                visible.symlink_to(f"..data/{key}")
        if previous is not None:
            shutil.rmtree(self.folder / previous)


def _with_unhealthy(base: dict[str, object], index: int | None) -> str:
    """The overlay's config with one device marked Unhealthy (None: all healthy)."""
    config = dict(base)
    count = int(str(config.pop("count")))
    config["devices"] = [
        {"index": i, "health": "Unhealthy" if i == index else "Healthy"} for i in range(count)
    ]
    return yaml.safe_dump(config)


async def test_every_configmap_update_reaches_the_plugin(
    tmp_path: Path, kubelet: StandinKubelet, start_plugin
) -> None:
    configmap = only(render_overlay("kind"), "ConfigMap")
    (key,) = configmap["data"]
    base = yaml.safe_load(configmap["data"][key])
    volume = ConfigMapVolume(tmp_path / "fake")
    volume.folder.mkdir()
    volume.write({key: configmap["data"][key]})

    start_plugin(volume.folder / key)
    registration = await kubelet.wait_registered()
    assert [d.health for d in registration.latest.devices] == ["Healthy"] * 8

    for step, unhealthy in enumerate([5, None, 2, None]):
        volume.write({key: _with_unhealthy(base, unhealthy)})

        def arrived(unhealthy: int | None = unhealthy) -> bool:
            health = [d.health for d in registration.latest.devices]
            return health == ["Unhealthy" if i == unhealthy else "Healthy" for i in range(8)]

        try:
            await kubelet.wait_for(arrived, 5)
        except TimeoutError:
            seen = [d.health for d in registration.latest.devices]
            raise AssertionError(
                f"ConfigMap update {step + 1} (unhealthy: {unhealthy}) never reached the kubelet; "
                f"it still sees {seen}"
            ) from None
        assert len(os.listdir(volume.folder)) == 3, f"step {step}: one stamped folder, ..data, {key}"
