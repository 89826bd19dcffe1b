"""Writes container images as OCI image layouts and archives, with no registry and no engine.

The e2e cluster's two images are made here: the pod sandbox (our static pause
program) and a workload image that is Debian's static busybox with its applet
links. hack/image uses the same writer for the Debian base images it packs from
a debootstrap tree, so the deterministic tar rules live in one place:

- entries in a fixed order (a tree is walked sorted by name),
- numeric owners and no owner names,
- times fixed (0) or clamped to an epoch, never the time of packing,
- no device nodes, sockets or FIFOs (a runtime provides /dev).

Layers are uncompressed tars, so a layer's digest is also its diff id. The
image name travels in the index's `io.containerd.image.name` annotation (what
`ctr images import` reads) and its tag in `org.opencontainers.image.ref.name`
(what `oci-layout://` references resolve).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .build import goarch

PAUSE_IMAGE = "localhost/gpu-dp-e2e/pause:1"
BUSYBOX_IMAGE = "localhost/gpu-dp-e2e/busybox:1"

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
CONFIG_JSON = "application/vnd.oci.image.config.v1+json"
MANIFEST_JSON = "application/vnd.oci.image.manifest.v1+json"
INDEX_JSON = "application/vnd.oci.image.index.v1+json"


class _Digesting:
    """A write-only file wrapper that hashes what passes through (tarfile needs write and tell)."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._target.write(data)

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class TarWriter:
    """A deterministic tar stream, written entry by entry or from a folder tree."""

    def __init__(self, fileobj: BinaryIO | _Digesting) -> None:
        self.tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]  # noqa: SIM115

    @staticmethod
    def _info(
        name: str, kind: bytes, mode: int, *, uid: int = 0, gid: int = 0, mtime: int = 0
    ) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = mtime
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        return info

    def directory(self, name: str, mode: int = 0o755) -> None:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))

    def file(self, name: str, data: bytes, mode: int = 0o755) -> None:
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def add_tree(self, root: Path, *, epoch: int, skip_contents: Collection[str] = ()) -> None:
        """Add everything under `root` (not root itself), sorted, times clamped to `epoch`.

        Owners and modes are kept (numerically); hard links become link entries to the
        first path seen, so the order decides which copy carries the data. Folders named
        in `skip_contents` (relative paths such as "proc") are added empty.
        """
        first_path: dict[tuple[int, int], str] = {}
        self._add_folder(root, "", epoch, frozenset(skip_contents), first_path)

    def _add_folder(
        self,
        folder: Path,
        prefix: str,
        epoch: int,
        skip: frozenset[str],
        first_path: dict[tuple[int, int], str],
    ) -> None:
        """Each entry in name order, a folder's contents right after it (as `tar --sort=name`)."""
        for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
            name = prefix + entry.name
            status = entry.stat(follow_symlinks=False)
            common = {"uid": status.st_uid, "gid": status.st_gid, "mtime": min(int(status.st_mtime), epoch)}
            mode = stat.S_IMODE(status.st_mode)
            if stat.S_ISDIR(status.st_mode):
                self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, **common))
                if name not in skip:
                    self._add_folder(Path(entry.path), name + "/", epoch, skip, first_path)
            elif stat.S_ISLNK(status.st_mode):
                info = self._info(name, tarfile.SYMTYPE, 0o777, **common)
                info.linkname = os.readlink(entry.path)
                self.tar.addfile(info)
            elif stat.S_ISREG(status.st_mode):
                inode = (status.st_dev, status.st_ino)
                if status.st_nlink > 1 and inode in first_path:
                    info = self._info(name, tarfile.LNKTYPE, mode, **common)
                    info.linkname = first_path[inode]
                    self.tar.addfile(info)
                    continue
                first_path[inode] = name
                info = self._info(name, tarfile.REGTYPE, mode, **common)
                info.size = status.st_size
                with open(entry.path, "rb") as content:
                    self.tar.addfile(info, content)

    def close(self) -> None:
        self.tar.close()


class _Layer(TarWriter):
    """An in-memory layer (the small e2e images)."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        super().__init__(self.buffer)

    def finish(self) -> bytes:
        self.close()
        return self.buffer.getvalue()


@dataclass(frozen=True)
class Blob:
    """A content-addressed file of an OCI layout."""

    media_type: str
    digest: str
    size: int

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    """An OCI image-layout folder being written: blobs, then the index naming one image."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.blobs = folder / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (folder / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))

    def add(self, media_type: str, data: bytes) -> Blob:
        blob = Blob(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
        (self.blobs / blob.digest.removeprefix("sha256:")).write_bytes(data)
        return blob

    def add_layer(self, fill: Callable[[TarWriter], None]) -> Blob:
        """Stream a layer tar to its blob file: `fill` adds the entries."""
        with tempfile.NamedTemporaryFile(dir=self.blobs, prefix=".layer-", delete=False) as raw:
            partial = Path(raw.name)
            digesting = _Digesting(raw)  # type: ignore[arg-type]
            writer = TarWriter(digesting)
            try:
                fill(writer)
                writer.close()
            except BaseException:
                partial.unlink()
                raise
        blob = Blob(LAYER_TAR, digesting.digest, digesting.size)
        partial.chmod(0o644)  # NamedTemporaryFile makes 0600; the other blobs are 0644
        partial.rename(self.blobs / blob.digest.removeprefix("sha256:"))
        return blob

    def add_image(self, *, layers: Sequence[Blob], config: dict[str, object]) -> Blob:
        """Store the image config (rootfs filled in from `layers`) and its manifest."""
        document = dict(config)
        document["rootfs"] = {"type": "layers", "diff_ids": [layer.digest for layer in layers]}
        config_blob = self.add(CONFIG_JSON, _canonical(document))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_JSON,
            "config": config_blob.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
        return self.add(MANIFEST_JSON, _canonical(manifest))

    def write_index(self, manifest: Blob, *, name: str) -> None:
        """Name the image `name` (registry/path:tag) in index.json."""
        descriptor = manifest.descriptor()
        descriptor["annotations"] = {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
        }
        index = {"schemaVersion": 2, "mediaType": INDEX_JSON, "manifests": [descriptor]}
        (self.folder / "index.json").write_bytes(_canonical(index))


def image_config(
    *,
    entrypoint: list[str],
    cmd: list[str],
    env: Sequence[str] = ("PATH=/bin",),
    created: str | None = None,
    history: str | None = None,
) -> dict[str, object]:
    """An image config for this machine's architecture; rootfs is added by Layout.add_image."""
    config: dict[str, object] = {
        "architecture": goarch(),
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": list(env), "WorkingDir": "/"},
    }
    if created is not None:
        config["created"] = created
    if history is not None:
        entry = {"created_by": history} | ({"created": created} if created else {})
        config["history"] = [entry]
    return config


def archive(folder: Path, target: Path) -> Path:
    """Pack an OCI layout folder into a tar at `target` (what `ctr images import` reads)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:
        writer = TarWriter(out)
        writer.add_tree(folder, epoch=0)
        writer.close()
    partial.rename(target)
    return target


def write_oci_archive(
    target: Path, *, name: str, layer: bytes, entrypoint: list[str], cmd: list[str]
) -> Path:
    """Write a one-layer image `name` as an OCI image-layout tar at `target`."""
    with tempfile.TemporaryDirectory(prefix="oci-") as scratch:
        layout = Layout(Path(scratch))
        blob = layout.add(LAYER_TAR, layer)
        manifest = layout.add_image(layers=[blob], config=image_config(entrypoint=entrypoint, cmd=cmd))
        layout.write_index(manifest, name=name)
        return archive(layout.folder, target)


def pause_image(pause_binary: Path, target: Path) -> Path:
    layer = _Layer()
    layer.file("pause", pause_binary.read_bytes())
    return write_oci_archive(target, name=PAUSE_IMAGE, layer=layer.finish(), entrypoint=["/pause"], cmd=[])


def busybox_image(busybox: Path, target: Path) -> Path:
    """The workload image: static busybox at /bin/busybox plus a link per applet."""
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    layer = _Layer()
    for directory in ("bin", "etc", "tmp", "proc", "sys", "dev"):
        layer.directory(directory, 0o1777 if directory == "tmp" else 0o755)
    layer.file("bin/busybox", busybox.read_bytes())
    for applet in sorted(set(applets) - {"busybox"}):
        layer.symlink(f"bin/{applet}", "busybox")
    layer.file("etc/passwd", b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644)
    layer.file("etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644)
    return write_oci_archive(target, name=BUSYBOX_IMAGE, layer=layer.finish(), entrypoint=[], cmd=["/bin/sh"])
