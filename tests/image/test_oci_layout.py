"""The deterministic OCI writer (e2e/cluster/images.py) that packs the image bases.

What a user would notice: packing the same tree twice gives the same digest,
whatever the files' times are above the clamp, while a real change (content,
mode, a time below the clamp) changes it; archives name the image the way
`ctr images import` and `oci-layout://` references read it.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gdp_e2e.cluster import images

EPOCH = 1_700_000_000


def make_tree(root: Path) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "proc").mkdir()
    (root / "proc/self").write_text("not packed: runtimes mount /proc")
    (root / "usr/bin/python3.11").write_bytes(b"\x7fELF fake interpreter")
    (root / "usr/bin/python3.11").chmod(0o755)
    (root / "usr/bin/python3").symlink_to("python3.11")
    (root / "bin").symlink_to("usr/bin")
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    os.link(root / "usr/bin/python3.11", root / "usr/lib/hardlinked")
    os.mkfifo(root / "etc/fifo")
    set_times(root, EPOCH - 1000)
    return root


def set_times(root: Path, when: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.utime(path, (when, when), follow_symlinks=False)


def pack(root: Path, folder: Path) -> tuple[images.Blob, images.Blob]:
    layout = images.Layout(folder)
    layer = layout.add_layer(lambda tar: tar.add_tree(root, epoch=EPOCH, skip_contents=("proc",)))
    manifest = layout.add_image(
        layers=[layer], config=images.image_config(entrypoint=[], cmd=["/usr/bin/python3"], created="x")
    )
    layout.write_index(manifest, name="localhost/test/base:bookworm")
    return layer, manifest


def layer_members(folder: Path, layer: images.Blob) -> list[tarfile.TarInfo]:
    with tarfile.open(folder / "blobs/sha256" / layer.digest.removeprefix("sha256:")) as tar:
        return tar.getmembers()


def test_the_same_tree_packs_to_the_same_digests(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    first = pack(tree, tmp_path / "one")
    second = pack(tree, tmp_path / "two")
    assert first == second
    assert (tmp_path / "one/index.json").read_bytes() == (tmp_path / "two/index.json").read_bytes()


def test_times_after_the_epoch_are_clamped_and_do_not_change_the_digest(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    set_times(tree, EPOCH + 10)
    before = pack(tree, tmp_path / "one")
    set_times(tree, EPOCH + 99_999)  # "packed later": every time is newer still
    after = pack(tree, tmp_path / "two")
    assert before == after
    assert {member.mtime for member in layer_members(tmp_path / "one", before[0])} == {EPOCH}


def write_content(root: Path) -> None:
    (root / "etc/os-release").write_text("changed\n")


def narrow_mode(root: Path) -> None:
    (root / "etc/os-release").chmod(0o600)


def add_file(root: Path) -> None:
    (root / "etc/new").write_text("")


@pytest.mark.parametrize("change", [write_content, narrow_mode, add_file], ids=lambda change: change.__name__)
def test_a_real_change_changes_the_digest(tmp_path: Path, change: Callable[[Path], None]) -> None:
    tree = make_tree(tmp_path / "tree")
    before = pack(tree, tmp_path / "one")
    change(tree)
    set_times(tree, EPOCH - 1000)  # only the change itself differs
    after = pack(tree, tmp_path / "two")
    assert before[0].digest != after[0].digest


def test_a_time_below_the_clamp_is_kept_so_it_changes_the_digest(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    before = pack(tree, tmp_path / "one")
    os.utime(tree / "etc/os-release", (EPOCH - 5, EPOCH - 5))
    after = pack(tree, tmp_path / "two")
    assert before[0].digest != after[0].digest


def test_entries_are_sorted_numeric_owned_and_without_special_files(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    layer, _ = pack(tree, tmp_path / "out")
    members = {member.name: member for member in layer_members(tmp_path / "out", layer)}
    assert list(members) == [
        "bin",
        "etc",
        "etc/os-release",
        "proc",
        "usr",
        "usr/bin",
        "usr/bin/python3",
        "usr/bin/python3.11",
        "usr/lib",
        "usr/lib/hardlinked",
    ]
    assert {(m.uname, m.gname) for m in members.values()} == {("", "")}
    assert members["bin"].issym()
    assert members["bin"].linkname == "usr/bin"
    assert members["usr/lib/hardlinked"].islnk()
    assert members["usr/lib/hardlinked"].linkname == "usr/bin/python3.11"
    assert members["usr/bin/python3.11"].mode == 0o755


def test_the_index_names_the_image_for_ctr_and_oci_layout_references(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    layer, manifest = pack(tree, tmp_path / "out")
    index = json.loads((tmp_path / "out/index.json").read_text())
    descriptor = index["manifests"][0]
    assert descriptor["digest"] == manifest.digest
    assert descriptor["annotations"] == {
        "io.containerd.image.name": "localhost/test/base:bookworm",
        "org.opencontainers.image.ref.name": "bookworm",
    }
    stored = json.loads((tmp_path / "out/blobs/sha256" / manifest.digest.removeprefix("sha256:")).read_text())
    config = json.loads(
        (tmp_path / "out/blobs/sha256" / stored["config"]["digest"].removeprefix("sha256:")).read_text()
    )
    assert config["rootfs"]["diff_ids"] == [layer.digest]  # uncompressed: diff id == digest


def test_write_oci_archive_is_byte_for_byte_repeatable(tmp_path: Path) -> None:
    one = images.write_oci_archive(
        tmp_path / "one.tar", name="localhost/test/app:1", layer=b"x" * 1024, entrypoint=["/app"], cmd=[]
    )
    two = images.write_oci_archive(
        tmp_path / "two.tar", name="localhost/test/app:1", layer=b"x" * 1024, entrypoint=["/app"], cmd=[]
    )
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as archive:
        names = archive.getnames()
        index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
    assert {"oci-layout", "index.json"} <= set(names)
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "localhost/test/app:1"
