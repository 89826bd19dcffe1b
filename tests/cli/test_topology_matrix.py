"""`discover --topology`: the matrix nvidia-smi users expect, and JSON that a fake config accepts."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from gpu_device_plugin.backends.fake.spec import parse_fake_config, to_inventory
from gpu_device_plugin.cli.main import main


def discover(*args: str) -> str:
    result = CliRunner().invoke(main, ["discover", "--discovery", "fake", *args], env={})
    assert result.exit_code == 0, result.output
    return result.output


def write(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_dgx_1v_matrix(tmp_path: Path) -> None:
    path = write(tmp_path, {"count": 8, "topology": {"preset": "dgx-1v"}})
    lines = discover("--fake-config", str(path), "--topology").splitlines()
    cells = [line.split() for line in lines[:9]]
    assert cells[0] == [*(f"GPU{i}" for i in range(8)), "CPU", "Affinity", "NUMA", "Affinity"]
    assert cells[1] == ["GPU0", "X", "NV1", "NV1", "NV2", "NV2", "SYS", "SYS", "SYS", "0-19,40-59", "0"]
    assert cells[8] == ["GPU7", "SYS", "SYS", "SYS", "NV1", "NV2", "NV1", "NV2", "X", "20-39,60-79", "1"]
    assert "  NV#  = " in "\n".join(lines)


def test_pcie_matrix_and_unknown_pairs(tmp_path: Path) -> None:
    path = write(tmp_path, {"count": 3, "topology": {"links": [{"a": 0, "b": 1, "pcie": "PXB"}]}})
    lines = discover("--fake-config", str(path), "--topology").splitlines()
    assert lines[1].split() == ["GPU0", "X", "PXB", "?", "N/A", "0"]
    assert lines[3].split() == ["GPU2", "?", "?", "X", "N/A", "0"]


def test_no_topology_says_so() -> None:
    output = discover("--fake-devices", "2", "--topology")
    assert "No topology is known" in output


def test_json_links_paste_into_a_fake_config(tmp_path: Path) -> None:
    path = write(tmp_path, {"count": 8, "topology": {"preset": "dgx-a100"}})
    data = json.loads(discover("--fake-config", str(path), "--topology", "--json"))
    assert len(data["devices"]) == 8
    assert data["topology"]["links"][0] == {"a": 0, "b": 1, "nvlinks": 12, "nvswitch": True, "pcie": "PXB"}
    assert data["topology"]["cpu_affinity"]["7"] == "64-127,192-255"
    # The same pairs, given explicitly, describe the same topology.
    pasted = {"count": 8, "topology": {"links": data["topology"]["links"]}}
    original = to_inventory(parse_fake_config(path.read_text(), source="a"))
    again = to_inventory(parse_fake_config(yaml.safe_dump(pasted), source="b"))
    assert original.topology is not None
    assert again.topology is not None
    assert again.topology.links == original.topology.links


def test_json_without_the_flag_is_unchanged() -> None:
    data = json.loads(discover("--fake-devices", "2", "--json"))
    assert "topology" not in data
