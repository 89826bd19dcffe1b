"""The build and verify flows: bases, BuildKit, the build, and the checks after it.

build:  bases (made once) -> BuildKit (built once) -> a buildkitd with the
        persistent cache -> build/image/gpu-device-plugin.oci.tar.
verify: two builds, each with a fresh, empty BuildKit state (so nothing of the
        first can make the second equal), then: same manifest digest, within
        the size budget, and the smoke checks pass. The verified archive
        becomes build/image/gpu-device-plugin.oci.tar.

SOURCE_DATE_EPOCH is the commit time of HEAD (or the caller's
SOURCE_DATE_EPOCH), so every build of one commit carries the same times.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import buildkit, debian, ociread, paths, smoke, tools

#: What the Dockerfile copies: a change here without a commit marks the revision dirty.
CONTEXT_PATHS = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "requirements/runtime.lock",
    "hack/image/build-tools.lock",
    "hack/image/trim.py",
    "internal",
    "cmd",
)


class VerifyError(RuntimeError):
    """The image is not reproducible, too big, or does not work; the message says which."""


@dataclass(frozen=True)
class Source:
    """What the image is built from, and the values its labels and times take."""

    revision: str
    epoch: int
    version: str
    url: str

    def build_args(self) -> dict[str, str]:
        return {
            "SOURCE_DATE_EPOCH": str(self.epoch),
            "CREATED": datetime.fromtimestamp(self.epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "REVISION": self.revision,
            "VERSION": self.version,
            "SOURCE": self.url,
        }


@dataclass(frozen=True)
class Built:
    image: ociread.Image
    seconds: float
    uncompressed: int
    layer_sizes: list[int]


def _git(*args: str) -> str:
    done = subprocess.run(
        [str(tools.program("git")), "-C", str(paths.REPO), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def source() -> Source:
    """Revision, time, version and URL of this checkout (a tarball gets 'unknown' and time 0)."""
    version = tomllib.loads((paths.REPO / "pyproject.toml").read_text())["project"]["version"]
    revision = _git("rev-parse", "HEAD") or "unknown"
    if revision != "unknown" and _git("status", "--porcelain", "--", *CONTEXT_PATHS):
        revision += "-dirty"
    configured = os.environ.get("SOURCE_DATE_EPOCH")
    epoch = int(configured) if configured else int(_git("log", "-1", "--format=%ct") or 0)
    url = _git("config", "--get", "remote.origin.url")
    # The label says where the source is published; a clone of a local folder is not that.
    if not url.startswith(("https://", "http://", "git@", "ssh://")):
        url = ""
    return Source(revision=revision, epoch=epoch, version=version, url=url)


def _secrets() -> dict[str, Path]:
    """A TLS-inspecting proxy's CA bundle for pip in the build, if this machine uses one."""
    bundle = os.environ.get("PIP_CERT")
    return {"pip-cert": Path(bundle)} if bundle and Path(bundle).is_file() else {}


@contextmanager
def _lock(cache: Path) -> Iterator[None]:
    """One build per cache at a time: they would share buildkitd state and the output file."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            tools.log(f"another image build holds {cache / 'lock'}; waiting")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def snapshot(target: Path) -> Path:
    """Copy what the Dockerfile copies into `target`, so builds from it see one state of the tree."""
    for relative in CONTEXT_PATHS:
        origin = paths.REPO / relative
        if origin.is_dir():
            shutil.copytree(
                origin, target / relative, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]")
            )
        else:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target / relative)
    return target


def build_once(*, cache: Path, output: Path, state: Path, label: str, context: Path, origin: Source) -> Built:
    bases = debian.bases(cache=cache)
    buildkitd, buildctl = buildkit.binaries(cache=cache)
    runc = tools.program("runc")
    partial = output.with_name(output.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    log_file = output.parent / f"{output.stem}.build.log"
    tools.log(f"{label}: revision {origin.revision}, SOURCE_DATE_EPOCH {origin.epoch}; log: {log_file}")
    started = time.monotonic()
    with buildkit.Buildkitd(buildkitd=buildkitd, buildctl=buildctl, state=state, runc=runc) as daemon:
        daemon.build(
            context=context,
            bases=bases,
            output=partial,
            build_args=origin.build_args(),
            secrets=_secrets(),
            log_file=log_file,
        )
    seconds = time.monotonic() - started
    partial.chmod(0o644)
    partial.rename(output)
    image = ociread.read(output)
    total, per_layer = ociread.uncompressed_size(image)
    tools.log(f"{label}: built in {seconds:.0f} s")
    return Built(image=image, seconds=seconds, uncompressed=total, layer_sizes=per_layer)


def report(built: Built) -> None:
    image = built.image
    print(f"image:         {image.name}")
    print(f"archive:       {image.archive}")
    print(f"manifest:      {image.manifest_digest}")
    print(
        f"uncompressed:  {built.uncompressed / 1e6:.1f} MB "
        f"(layers: {', '.join(f'{size / 1e6:.1f}' for size in built.layer_sizes)} MB; "
        f"budget {paths.SIZE_LIMIT / 1e6:.0f} MB)"
    )
    print(f"compressed:    {image.compressed_size / 1e6:.1f} MB")
    print(f"build time:    {built.seconds:.0f} s")
    for key in ("version", "revision", "created", "source"):
        print(f"label {key + ':':10} {image.labels.get(f'org.opencontainers.image.{key}', '')!r}")


def build(*, cache: Path) -> Built:
    tools.require_root("building the image")
    with _lock(cache):
        built = build_once(
            cache=cache,
            output=paths.OUTPUT,
            state=cache / "buildkitd-state",
            label="build",
            context=paths.REPO,
            origin=source(),
        )
    report(built)
    return built


def verify(*, cache: Path) -> None:
    tools.require_root("verifying the image")
    runc, containerd, ctr = (tools.program(name) for name in ("runc", "containerd", "ctr"))
    folder = paths.OUTPUT.parent
    with _lock(cache), tempfile.TemporaryDirectory(prefix="context-", dir=cache) as scratch:
        # Both builds read one copy of the tree: an edit made meanwhile cannot tell them apart.
        origin = source()
        context = snapshot(Path(scratch))
        builds = []
        for number in (1, 2):
            state = cache / f"verify-state-{number}"
            tools.remove(state)
            try:
                builds.append(
                    build_once(
                        cache=cache,
                        output=folder / f"verify-{number}.oci.tar",
                        state=state,
                        label=f"verify build {number} of 2 (empty BuildKit state)",
                        context=context,
                        origin=origin,
                    )
                )
            finally:
                tools.remove(state)
        first, second = builds
        report(second)
        print(f"first build:   {first.image.manifest_digest} in {first.seconds:.0f} s")
        print(f"second build:  {second.image.manifest_digest} in {second.seconds:.0f} s")
        if first.image.manifest_digest != second.image.manifest_digest:
            raise VerifyError(
                "not reproducible: two builds of the same source differ\n"
                + describe_difference(first, second)
            )
        print("reproducible:  yes (same manifest digest from two empty BuildKit states)")
        if second.uncompressed > paths.SIZE_LIMIT:
            raise VerifyError(
                f"too big: {second.uncompressed / 1e6:.1f} MB uncompressed, "
                f"budget {paths.SIZE_LIMIT / 1e6:.0f} MB"
            )
        print("biggest folders:")
        for name, size in ociread.contributors(second.image):
            print(f"  {size / 1e6:7.1f} MB  {name}")
        for line in smoke.check(second.image, runc=runc):
            print(f"smoke ok:      {line}")
        imported = smoke.containerd_import(second.image, containerd=containerd, ctr=ctr)
        print(f"smoke ok:      {imported}")
        second.image.archive.replace(paths.OUTPUT)
        first.image.archive.unlink()
        print(f"verified image: {paths.OUTPUT}")


def describe_difference(first: Built, second: Built) -> str:
    """Which config or layer differs, and the first differing files in it."""
    lines = []
    if first.image.config != second.image.config:
        lines.append("image configs differ:")
        for key in sorted(set(first.image.config) | set(second.image.config)):
            if first.image.config.get(key) != second.image.config.get(key):
                lines.append(
                    f"  {key}: {first.image.config.get(key)!r:.200} != {second.image.config.get(key)!r:.200}"
                )
    for number, (one, two) in enumerate(zip(first.image.layers, second.image.layers, strict=False)):
        if one.digest == two.digest:
            continue
        lines.append(f"layer {number} differs ({one.digest} != {two.digest}):")
        entries = (_entries(first.image, number), _entries(second.image, number))
        names = sorted(set(entries[0]) | set(entries[1]))
        changed = [name for name in names if entries[0].get(name) != entries[1].get(name)]
        for name in changed[:25]:
            lines.append(f"  {name}: {entries[0].get(name)} != {entries[1].get(name)}")
        if len(changed) > 25:
            lines.append(f"  ... and {len(changed) - 25} more")
    return "\n".join(lines)


def _entries(image: ociread.Image, layer: int) -> dict[str, tuple[object, ...]]:
    found: dict[str, tuple[object, ...]] = {}
    for position, member, tar in ociread.layer_members(image):
        if position != layer:
            continue
        digest = ""
        if member.isfile():
            content = tar.extractfile(member)
            digest = hashlib.sha256(content.read()).hexdigest()[:12] if content else ""
        found[member.name] = (
            member.type,
            oct(member.mode),
            member.uid,
            member.gid,
            member.mtime,
            member.size,
            digest,
        )
    return found
