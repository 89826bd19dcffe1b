"""NVIDIA's config-manager rules for which named config applies, and the folder of configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_device_plugin.errors import ConfigError
from gpu_device_plugin.live.config import LiveConfig
from gpu_device_plugin.live.folder import ConfigFolder
from gpu_device_plugin.live.selection import SelectionError, select_config
from testsupport.live import write_configmap

KEY = "nvidia.com/device-plugin.config"


@pytest.mark.parametrize(
    ("label", "available", "default", "chosen"),
    [
        pytest.param("a", {"a", "b"}, None, "a", id="label"),
        pytest.param("a", {"a", "default"}, "default", "a", id="label-beats-default"),
        pytest.param(None, {"a", "b"}, "b", "b", id="default-config"),
        pytest.param("", {"a", "b"}, "b", "b", id="empty-label-is-none"),
        pytest.param(None, {"a", "default"}, None, "default", id="named-default"),
        pytest.param(None, {"only"}, None, "only", id="the-only-one"),
        pytest.param(None, {"a", "b"}, None, None, id="flags-alone"),
        pytest.param(None, set(), None, None, id="empty-folder"),
    ],
)
def test_selection(label: str | None, available: set[str], default: str | None, chosen: str | None) -> None:
    assert select_config(label, available, label_key=KEY, default=default).name == chosen


@pytest.mark.parametrize(
    ("label", "default", "message"),
    [
        pytest.param(
            "c", None, "label nvidia.com/device-plugin.config=c names a config that is not", id="label"
        ),
        pytest.param(None, "c", "--default-config c is not in the folder", id="default"),
    ],
)
def test_a_name_that_is_not_there_is_refused(label: str | None, default: str | None, message: str) -> None:
    with pytest.raises(SelectionError, match=message) as refused:
        select_config(label, {"a", "b"}, label_key=KEY, default=default)
    assert "there: a, b" in str(refused.value)


def test_a_configmap_folder_lists_its_keys_not_its_machinery(tmp_path: Path) -> None:
    folder = tmp_path / "cm"
    write_configmap(folder, {"whole": "x", "timeslice-4": "y"})
    write_configmap(folder, {"whole": "x2"})
    assert ConfigFolder(folder).names() == {"whole"}
    assert ConfigFolder(folder).file("whole").read_text() == "x2"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"node_label": "not a label"}, "node-config-label", id="label"),
        pytest.param({"default_config": "../x"}, "default-config", id="default"),
    ],
)
def test_bad_live_flags_name_the_flag(tmp_path: Path, kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        LiveConfig(config_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert refused.value.field == field
