"""Writes the e2e cluster's container images as OCI archives, with no registry and no engine.

Two images: the pod sandbox (our static pause program) and a workload image
that is Debian's static busybox with its applet links. Each is one
uncompressed layer, written deterministically (fixed times and owners), in the
OCI image-layout format that `ctr images import` reads. The image name travels
in the index's `io.containerd.image.name` annotation.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .build import goarch

PAUSE_IMAGE = "localhost/gpu-dp-e2e/pause:1"
BUSYBOX_IMAGE = "localhost/gpu-dp-e2e/busybox:1"


@dataclass
class _Layer:
    """An in-memory tar layer built entry by entry."""

    buffer: io.BytesIO = field(default_factory=io.BytesIO)

    def __post_init__(self) -> None:
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
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

    def finish(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def write_oci_archive(
    target: Path, *, name: str, layer: bytes, entrypoint: list[str], cmd: list[str]
) -> Path:
    """Write a one-layer image `name` as an OCI image-layout tar at `target`."""
    config = json.dumps(
        {
            "architecture": goarch(),
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
        },
        sort_keys=True,
    ).encode()
    manifest_descriptor = _descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
    manifest_descriptor["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
    }
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [manifest_descriptor],
        },
        sort_keys=True,
    ).encode()
    archive = _Layer()
    archive.file("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), 0o644)
    archive.file("index.json", index, 0o644)
    archive.directory("blobs")
    archive.directory("blobs/sha256")
    for blob in (layer, config, manifest):
        archive.file("blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob, 0o644)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(archive.finish())
    return target


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
