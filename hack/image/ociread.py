"""Reading an OCI image archive: its digest, name, config, sizes, and its files.

The archive is what BuildKit's oci exporter writes and `ctr images import`
reads: an OCI image layout in a tar. Only single-image archives are read (the
index's first manifest). Layers may be plain or gzip tars.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Image:
    """What an archive holds, as a user or a registry would see it."""

    archive: Path
    manifest_digest: str
    name: str | None
    config: dict[str, Any]
    layers: tuple[Layer, ...]

    @property
    def compressed_size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.config.get("config", {}).get("Labels") or {}
        return labels


def _blob_name(digest: str) -> str:
    algorithm, hexdigest = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexdigest}"


def _json(archive: tarfile.TarFile, name: str) -> dict[str, Any]:
    member = archive.extractfile(name)
    if member is None:
        raise ValueError(f"{name} is not a file in the archive")
    loaded: dict[str, Any] = json.load(member)
    return loaded


def read(path: Path) -> Image:
    with tarfile.open(path) as archive:
        index = _json(archive, "index.json")
        if not index.get("manifests"):
            raise ValueError(f"{path}: index.json names no image")
        descriptor = index["manifests"][0]
        manifest = _json(archive, _blob_name(descriptor["digest"]))
        config = _json(archive, _blob_name(manifest["config"]["digest"]))
    return Image(
        archive=path,
        manifest_digest=descriptor["digest"],
        name=(descriptor.get("annotations") or {}).get("io.containerd.image.name"),
        config=config,
        layers=tuple(Layer(item["digest"], item["mediaType"], item["size"]) for item in manifest["layers"]),
    )


@contextmanager
def _layer_stream(archive: tarfile.TarFile, layer: Layer) -> Iterator[IO[bytes] | gzip.GzipFile]:
    raw = archive.extractfile(_blob_name(layer.digest))
    if raw is None:
        raise ValueError(f"layer {layer.digest} is missing from the archive")
    if layer.media_type.endswith("+gzip") or layer.media_type.endswith(".tar.gzip"):
        with gzip.GzipFile(fileobj=raw) as unzipped:
            yield unzipped
    elif layer.media_type.endswith(".tar"):
        yield raw
    else:
        raise ValueError(f"layer {layer.digest}: cannot read media type {layer.media_type}")


def layer_members(image: Image) -> Iterator[tuple[int, tarfile.TarInfo, tarfile.TarFile]]:
    """Every entry of every layer, in order: (layer index, entry, the layer's tar)."""
    with tarfile.open(image.archive) as archive:
        for position, layer in enumerate(image.layers):
            with _layer_stream(archive, layer) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    yield position, member, tar


def uncompressed_size(image: Image) -> tuple[int, list[int]]:
    """(total, per layer) bytes of the layers' tars as a runtime unpacks them."""
    sizes = []
    with tarfile.open(image.archive) as archive:
        for layer in image.layers:
            total = 0
            with _layer_stream(archive, layer) as stream:
                while chunk := stream.read(1 << 20):
                    total += len(chunk)
            sizes.append(total)
    return sum(sizes), sizes


def contributors(image: Image, *, depth: int = 4, top: int = 15) -> list[tuple[str, int]]:
    """The biggest folders `depth` levels down (file bytes), across all layers."""
    sizes: collections.Counter[str] = collections.Counter()
    for _, member, _ in layer_members(image):
        if member.isfile():
            parts = member.name.lstrip("./").split("/")[:-1]
            # Installed Python packages are the unit people trim by.
            cut = parts.index("site-packages") + 2 if "site-packages" in parts else depth
            sizes["/" + "/".join(parts[:cut])] += member.size
    return sizes.most_common(top)


def unpack(image: Image, rootfs: Path) -> None:
    """Apply the layers in order into `rootfs`, honouring whiteouts, as a runtime would."""
    rootfs.mkdir(parents=True, exist_ok=True)
    for _, member, tar in layer_members(image):
        name = member.name.lstrip("./")
        folder, _, base = name.rpartition("/")
        target_folder = rootfs / folder
        if base == OPAQUE:
            if target_folder.is_dir():
                for child in target_folder.iterdir():
                    _delete(child)
            continue
        if base.startswith(WHITEOUT):
            _delete(target_folder / base.removeprefix(WHITEOUT))
            continue
        target = rootfs / name
        if (target.exists() or target.is_symlink()) and not (member.isdir() and target.is_dir()):
            _delete(target)
        # Our own image's layers, so every link (absolute ones included) is expected.
        tar.extract(member, rootfs, set_attrs=True, filter="fully_trusted")


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _delete(child)
        path.rmdir()
    elif path.exists() or path.is_symlink():
        os.unlink(path)
