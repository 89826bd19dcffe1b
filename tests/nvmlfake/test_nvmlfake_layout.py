"""The driver root, the profile model's errors, the CLI, and the build cache."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gdp_hack.nvmlfake import LIBRARY, FakeDriver, ProfileError, build, ci_cap_minor, gi_cap_minor, load
from gdp_hack.nvmlfake.profile import PROFILES_DIR, parse


@pytest.mark.parametrize("fake_driver", ["mig-a100"], indirect=True)
def test_the_root_has_device_nodes_and_mig_capabilities(fake_driver: FakeDriver) -> None:
    root = fake_driver.root
    names = {p.name for p in (root / "dev").iterdir()}
    assert {"nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"} <= names
    assert (root / "usr/lib/x86_64-linux-gnu" / LIBRARY).is_file()
    assert fake_driver.env() == {
        "LD_LIBRARY_PATH": str(root / "usr/lib/x86_64-linux-gnu"),
        "FAKE_NVML_STATE": str(root / "usr/lib/x86_64-linux-gnu/fake-nvml.state"),
    }
    caps = root / "proc/driver/nvidia/capabilities"
    # GPU 1 (minor 1), its 2g.20gb in GPU instance 5: the minors /proc/driver/nvidia-caps/mig-minors lists.
    gi = (caps / "gpu1/mig/gi5/access").read_text()
    ci = (caps / "gpu1/mig/gi5/ci0/access").read_text()
    assert gi.splitlines()[0] == f"DeviceFileMinor: {gi_cap_minor(1, 5)}" == "DeviceFileMinor: 183"
    assert ci.splitlines()[0] == f"DeviceFileMinor: {ci_cap_minor(1, 5, 0)}" == "DeviceFileMinor: 184"
    assert (root / "dev/nvidia-caps/nvidia-cap183").exists()
    assert (root / "dev/nvidia-caps/nvidia-cap184").exists()
    minors = (root / "proc/driver/nvidia-caps/mig-minors").read_text().splitlines()
    assert minors[:4] == ["config 1", "monitor 2", "gpu0/gi0/access 3", "gpu0/gi0/ci0/access 4"]
    assert "gpu1/gi5/ci0/access 184" in minors
    assert not (caps / "gpu2").exists()  # MIG off: no instances


def _raw(name: str) -> dict[str, Any]:
    data = yaml.safe_load((PROFILES_DIR / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _set(key: str, value: object, device: int) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw["devices"][device].update({key: value})


def _add(key: str, item: object) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw[key].append(item)


BAD_PROFILES = {
    "bad-bus-id": (_set("pci_bus_id", "07:00", 0), "devices[0].pci_bus_id: not a PCI bus id"),
    "unknown-key": (_set("colour", "red", 2), "devices[2].colour: Extra inputs are not permitted"),
    "duplicate-uuid": (
        _set("uuid", "GPU-c1000000-0000-4000-8000-000000000000", 1),
        "devices: two devices share a uuid",
    ),
    "unknown-event": (_set("events", ["xid", "fire"], 0), "devices[0].events: unknown event types ['fire']"),
    "pair-out-of-range": (
        _add("nvlink_pairs", {"gpus": [0, 9], "links": 1}),
        "nvlink_pairs[16].gpus: no GPU with index 9",
    ),
    "too-many-links": (
        _add("nvlink_pairs", {"gpus": [0, 1], "links": 1}),
        "devices[0].nvlinks: the topology gives it 7 NVLinks, it has 6",
    ),
}


@pytest.mark.parametrize(("change", "message"), BAD_PROFILES.values(), ids=BAD_PROFILES.keys())
def test_a_bad_profile_names_the_key(change: Callable[[dict[str, Any]], None], message: str) -> None:
    raw = _raw("dgx1-v100")
    change(raw)
    with pytest.raises(ProfileError) as err:
        parse(raw, source="p.yaml")
    assert str(err.value).startswith(f"p.yaml: {message}")


def test_mig_errors_name_the_instance() -> None:
    raw = _raw("mig-a100")
    raw["devices"][0]["mig"]["instances"][3]["profile"] = "5g.50gb"
    with pytest.raises(
        ProfileError, match=r"devices\[0\]\.mig\.instances\[3\]\.profile: '5g.50gb' is not in"
    ):
        parse(raw, source="p.yaml")
    raw = _raw("mig-a100")
    raw["devices"][1]["mig"]["current"] = False
    with pytest.raises(ProfileError, match=r"devices\[1\]\.mig: instances: MIG devices exist only"):
        parse(raw, source="p.yaml")


def test_every_shipped_profile_loads() -> None:
    for path in PROFILES_DIR.glob("*.yaml"):
        assert load(path).devices


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gdp_hack.nvmlfake", *args],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_installs_and_injects(tmp_path: Path, nvml_fake_lib: Path) -> None:
    root = tmp_path / "root"
    done = _cli("install", "--root", str(root), "--profile", "dgx1-v100")
    assert done.returncode == 0, done.stderr
    assert f"LD_LIBRARY_PATH={root}/usr/lib/x86_64-linux-gnu" in done.stdout.splitlines()
    assert _cli("inject", "--root", str(root), "xid", "3", "79").stdout.strip() == "event sequence number 1"
    assert _cli("inject", "--root", str(root), "lose", "5").returncode == 0
    assert _cli("inject", "--root", str(root), "mig", "0", "1g.10gb:7").returncode == 2  # V100: no MIG
    driver = FakeDriver.attach(root)
    assert driver.faults.lost == {5}
    assert [(e.gpu, e.data) for e in driver.faults.events] == [(3, 79)]
    assert _cli("inject", "--root", str(root), "heal").returncode == 0
    assert FakeDriver.attach(root).faults.lost == set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["inject", "--root", "/nonexistent", "heal"],
            "nvmlfake: /nonexistent: no fake driver installed here",
        ),
        (
            ["install", "--root", "/tmp/x", "--profile", "nope"],
            "nvmlfake: nope: no such file, and no shipped profile",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    done = _cli(*args)
    assert done.returncode == 2
    assert done.stderr.startswith(message)
    assert len(done.stderr.strip().splitlines()) == 1


def test_concurrent_builders_share_one_result(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = f"from gdp_hack.nvmlfake import build; print(build(__import__('pathlib').Path({str(cache)!r})))"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env={"PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = {child.communicate(timeout=120)[0].strip() for child in children}
    assert all(child.returncode == 0 for child in children)
    assert len(outputs) == 1
    built = Path(outputs.pop())
    assert (built / LIBRARY).is_file()
    # Only the finished folder and the lock remain: no half-built leftovers.
    assert sorted(p.name for p in cache.iterdir()) == sorted([built.name, f"{built.name}.lock"])
    assert build(cache) == built  # cached


def test_a_different_header_is_a_different_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gdp_hack.nvmlfake.build import nvml_header

    header = tmp_path / "include/nvml.h"
    header.parent.mkdir()
    header.write_text(nvml_header().read_text() + "\n/* another release */\n")
    first = build(tmp_path / "cache")
    monkeypatch.setenv("NVMLFAKE_NVML_H", str(header))
    assert build(tmp_path / "cache") != first
