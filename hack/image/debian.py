"""The two Debian bookworm bases, made with debootstrap and packed as OCI layouts.

The Dockerfile pins real-world bases by digest (debian:bookworm-slim to build,
distroless python3-debian12 to run). Here there is no registry, so this module
makes equivalents from Debian's archive and hands them to BuildKit as named
contexts:

- build: `debootstrap --variant=minbase` plus python3, python3-venv and
  ca-certificates, brought up to date from bookworm-updates and
  bookworm-security, then pruned (docs but copyright files, man pages, locales,
  apt lists and caches, logs). It has a shell, dpkg and apt, as bookworm-slim has.
- runtime: distroless-style. Only the files of python3's dependency closure
  (plus libstdc++6 for the grpcio and protobuf wheels, and netbase), copied
  from the build tree by dpkg's own file lists, with each package's dpkg
  record in /var/lib/dpkg/status.d/ for scanners. No shell, no package
  manager: nothing in a running device plugin needs them, and they would be
  most of the image's budget.

Both are packed by the shared deterministic writer (e2e/cluster/images.py)
with times clamped to the Debian archive's Release date, so the same archive
state packs to the same digests. A base is cached under a key that hashes this
recipe and is reused until `base --refresh` (which picks up new Debian
security updates); `verify` never rebuilds it, so both of its builds start
from the same bases.

This module must never leave mounts behind: every mount it makes is undone in
a finally block, and the work folder is unmounted before it is removed.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gdp_e2e.cluster import cachefill
from gdp_e2e.cluster import images as oci

from . import tools

SUITE = "bookworm"
ENV_MIRROR = "GPU_DP_IMAGE_DEBIAN_MIRROR"
ENV_SECURITY_MIRROR = "GPU_DP_IMAGE_DEBIAN_SECURITY_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"

#: Names the bases carry in their layouts (`oci-layout://<store>:<TAG>`).
TAG = SUITE
BUILD_NAME = f"localhost/gpu-device-plugin-base/build:{TAG}"
RUNTIME_NAME = f"localhost/gpu-device-plugin-base/runtime:{TAG}"

BUILD_PACKAGES = ("python3", "python3-venv", "ca-certificates", "netbase")
#: The runtime's packages are the dependency closure of these.
RUNTIME_ROOTS = (
    "python3",
    "libstdc++6",  # grpcio's and protobuf's extension modules link it; python3 does not pull it in
    "netbase",  # /etc/services and /etc/protocols for getaddrinfo and socket.getservbyname
    "base-files",  # /etc/os-release: what scanners and people read to know the distribution
)
#: Left out of the runtime closure although something in it depends on them.
RUNTIME_LEAVE_OUT = {
    "dpkg": "the package manager: nothing installs packages into the runtime image",
    "debconf": "configures maintainer scripts, and none run in the runtime image",
    "perl-base": "only debconf and maintainer scripts use it",
    "tzdata": "the container runs in UTC and Python reads zones from the tzdata wheel",
    "mawk": "base-files' postinst needs an awk; nothing at run time does",
}
UNNEEDED_EVERYWHERE = (
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bug",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/cache/ldconfig/aux-cache",
    "etc/machine-id",
    "var/lib/dbus/machine-id",
)
#: Emptied, not removed: their owners expect the folder.
EMPTIED = ("var/log", "tmp", "var/tmp", "root")
UNNEEDED_AT_RUN_TIME = (
    "usr/lib/x86_64-linux-gnu/gconv",  # iconv modules: Python has its own codecs
    "usr/lib/aarch64-linux-gnu/gconv",
    "usr/lib/python3.11/pydoc_data",  # the interactive help() topics
    "usr/lib/python3.11/test",  # the regression tests' support package
)
RUNTIME_FOLDERS = {"tmp": 0o1777, "var/tmp": 0o1777, "root": 0o700, "proc": 0o555, "sys": 0o555, "dev": 0o755}
RUNTIME_PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
RUNTIME_GROUP = "root:x:0:\nnogroup:x:65534:\n"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SPECIAL_FOLDERS = ("dev", "proc", "sys", "run")


@dataclass(frozen=True)
class Bases:
    """The two cached base layouts and what they were made from."""

    folder: Path

    @property
    def build(self) -> Path:
        return self.folder / "build"

    @property
    def runtime(self) -> Path:
        return self.folder / "runtime"

    @property
    def packages(self) -> Path:
        """The runtime's packages and versions, one per line."""
        return self.folder / "runtime-packages.txt"

    @staticmethod
    def digest(layout: Path) -> str:
        """The manifest digest of the one image in `layout` (BuildKit wants references by digest)."""
        index = json.loads((layout / "index.json").read_text())
        digest: str = index["manifests"][0]["digest"]
        return digest

    def info(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.folder / "base.json").read_text())
        return loaded


def recipe_key() -> str:
    """A digest of what decides the bases' content: this module and the layout writer."""
    digest = hashlib.sha256()
    for source in (Path(__file__).resolve(), Path(oci.__file__).resolve()):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def bases(*, cache: Path, refresh: bool = False) -> Bases:
    """The cached bases for this recipe, made first if missing (or when `refresh`)."""
    made = Bases(cache / "base" / recipe_key())
    if (made.folder / "base.json").is_file() and not refresh:
        return made
    tools.require_root("making the Debian bases")
    debootstrap = tools.program("debootstrap")
    for name in ("chroot", "mount", "umount"):
        tools.program(name)

    def make_into(partial: Path) -> None:
        work = Path(tempfile.mkdtemp(prefix="work-", dir=partial))
        try:
            _make(partial, work, debootstrap)
        finally:
            tools.remove(work)

    # Under the folder's lock, into a private folder renamed into place (cluster.cachefill).
    cachefill.fill_once(
        made.folder,
        make_into,
        complete=lambda folder: (folder / "base.json").is_file(),
        what="the Debian bases",
        log=tools.log,
        refresh=refresh,
        remove=tools.remove,
    )
    # Bases of earlier recipes are never read again (the key changes with the recipe);
    # one another run is making or using (its lock is held) stays.
    for stale in made.folder.parent.iterdir():
        if stale.name.startswith(".") or stale.suffix == ".lock" or stale == made.folder:
            continue
        if cachefill.try_remove(stale, remove=tools.remove):
            tools.log(f"removed the bases of an earlier recipe: {stale}")
    return made


def _make(target: Path, work: Path, debootstrap: Path) -> None:
    mirror = os.environ.get(ENV_MIRROR, DEFAULT_MIRROR)
    security = os.environ.get(ENV_SECURITY_MIRROR, DEFAULT_SECURITY_MIRROR)
    root = work / "build-root"
    tools.log(f"debootstrap {SUITE} (minbase + {', '.join(BUILD_PACKAGES)}) from {mirror}")
    tools.run(
        [
            debootstrap,
            "--variant=minbase",
            "--include=" + ",".join(BUILD_PACKAGES),
            "--components=main",
            SUITE,
            root,
            mirror,
        ],
        what="debootstrap",
        log_file=target / "debootstrap.log",
    )
    _upgrade(root, mirror, security, log_file=target / "upgrade.log")
    epoch = release_epoch(root)
    status = read_status(root / "var/lib/dpkg/status")
    packages = closure(status, RUNTIME_ROOTS, RUNTIME_LEAVE_OUT)
    runtime = work / "runtime-root"
    tools.log(f"runtime base: {len(packages)} packages ({', '.join(packages)})")
    assemble_runtime(root, runtime, packages, status)
    for tree in (root, runtime):
        prune(tree, UNNEEDED_EVERYWHERE, emptied=EMPTIED)
    prune(runtime, UNNEEDED_AT_RUN_TIME)
    _compile_stdlib(runtime, epoch)
    created = _iso(epoch)
    _pack(
        root,
        target / "build",
        name=BUILD_NAME,
        epoch=epoch,
        config=oci.image_config(
            entrypoint=[],
            cmd=["/bin/bash"],
            env=[PATH_ENV],
            created=created,
            history=f"hack/image: debootstrap --variant=minbase {SUITE} + {' '.join(BUILD_PACKAGES)}, pruned",
        ),
    )
    _pack(
        runtime,
        target / "runtime",
        name=RUNTIME_NAME,
        epoch=epoch,
        config=oci.image_config(
            entrypoint=[],
            cmd=["/usr/bin/python3"],
            env=[PATH_ENV],
            created=created,
            history=f"hack/image: files of {' '.join(RUNTIME_ROOTS)} and their dependencies, {SUITE}",
        ),
    )
    (target / "runtime-packages.txt").write_text(
        "".join(f"{name} {status[name]['Version']}\n" for name in packages)
    )
    (target / "base.json").write_text(
        json.dumps({"suite": SUITE, "epoch": epoch, "created": created, "recipe": recipe_key()}, indent=2)
        + "\n"
    )


def _upgrade(root: Path, mirror: str, security: str, *, log_file: Path) -> None:
    """Bring the tree up to date: debootstrap only reads the release suite itself."""
    (root / "etc/apt/sources.list").write_text(
        f"deb {mirror} {SUITE} main\n"
        f"deb {mirror} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )
    env = {"PATH": PATH_ENV.removeprefix("PATH="), "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    proc = root / "proc"
    tools.run([tools.program("mount"), "-t", "proc", "proc", proc], what="mounting /proc in the build tree")
    try:
        tools.log(f"apt-get upgrade from {SUITE}-updates and {SUITE}-security")
        tools.run(
            [tools.program("chroot"), root, "apt-get", "-q", "update"],
            what="apt-get update",
            log_file=log_file,
            env=env,
        )
        tools.run(
            [tools.program("chroot"), root, "apt-get", "-q", "-y", "--no-install-recommends", "upgrade"],
            what="apt-get upgrade",
            log_file=log_file.with_name("upgrade-packages.log"),
            env=env,
        )
    finally:
        tools.run([tools.program("umount"), proc], what="unmounting /proc in the build tree")


def release_epoch(root: Path) -> int:
    """The newest Date of the suites' Release files: the clamp for every time in the bases."""
    dates = []
    for release in (root / "var/lib/apt/lists").glob("*Release"):
        for line in release.read_text(errors="replace").splitlines():
            if line.startswith("Date:"):
                dates.append(int(email.utils.parsedate_to_datetime(line[5:].strip()).timestamp()))
                break
    if not dates:
        raise tools.StepError(f"no Release file with a Date under {root / 'var/lib/apt/lists'}")
    return max(dates)


def read_status(path: Path) -> dict[str, dict[str, str]]:
    """dpkg's status file: installed package name -> its fields (with the raw stanza as '_stanza')."""
    packages: dict[str, dict[str, str]] = {}
    for stanza in path.read_text().strip().split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed"):
            fields["_stanza"] = stanza.strip() + "\n"
            packages[fields["Package"]] = fields
    return packages


def closure(
    status: Mapping[str, Mapping[str, str]], roots: Iterable[str], leave_out: Mapping[str, str]
) -> list[str]:
    """Installed packages reachable from `roots` by Depends/Pre-Depends, minus `leave_out`, sorted.

    Of alternatives (a | b) the first installed one counts, as dpkg would have chosen.
    """
    provided: dict[str, str] = {}
    for name, fields in status.items():
        for entry in fields.get("Provides", "").split(","):
            if entry.strip():
                provided.setdefault(entry.split()[0], name)
    found: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in found or name in leave_out:
            continue
        if name not in status:
            raise tools.StepError(f"package {name} is not installed in the build tree")
        found.add(name)
        for field in ("Pre-Depends", "Depends"):
            for clause in status[name].get(field, "").split(","):
                if not clause.strip():
                    continue
                choices = [alt.split()[0].split(":")[0] for alt in clause.split("|")]
                chosen = next((c for c in choices if c in status), None) or next(
                    (provided[c] for c in choices if c in provided), None
                )
                if chosen is None:
                    raise tools.StepError(f"{name} depends on '{clause.strip()}', which is not installed")
                pending.append(chosen)
    return sorted(found)


def _inside(root: Path, path: str) -> Path:
    """Resolve `path` as the tree at `root` would, following links in its parents but not the last part."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    resolved = root
    hops = 0
    while len(parts) > 1:
        candidate = resolved / parts.pop(0)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise tools.StepError(f"too many links resolving {path} in {root}")
            link = os.readlink(candidate)
            base = root if link.startswith("/") else resolved
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            resolved = base
            while parts and parts[0] == "..":
                parts.pop(0)
                resolved = resolved.parent if resolved != root else root
        else:
            resolved = candidate
    return resolved / parts[0] if parts else resolved


def _package_list(root: Path, name: str, arch: str) -> Path:
    for candidate in (f"{name}:{arch}.list", f"{name}.list"):
        path = root / "var/lib/dpkg/info" / candidate
        if path.is_file():
            return path
    raise tools.StepError(f"dpkg has no file list for {name} in {root}")


def assemble_runtime(
    source: Path, target: Path, packages: Iterable[str], status: Mapping[str, Mapping[str, str]]
) -> None:
    """Copy the files of `packages` from the installed tree `source` into `target` (merged /usr)."""
    for folder in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (target / link).symlink_to(f"usr/{link}")
    folders: list[tuple[Path, Path]] = []
    records = target / "var/lib/dpkg/status.d"
    records.mkdir(parents=True)
    for name in packages:
        fields = status[name]
        (records / name).write_text(fields["_stanza"])
        for line in _package_list(source, name, fields.get("Architecture", "")).read_text().splitlines():
            if line in ("", "/."):
                continue
            origin = _inside(source, line)
            copy = target / origin.relative_to(source)
            if origin.is_symlink():
                if not copy.is_symlink():
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    copy.symlink_to(os.readlink(origin))
                    _copy_times(origin, copy)
            elif origin.is_dir():
                copy.mkdir(parents=True, exist_ok=True)
                folders.append((origin, copy))
            elif origin.is_file():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, copy)
                _copy_owner(origin, copy)
            else:
                raise tools.StepError(f"{name} lists {line}, which is missing from the build tree")
    # Made-up files every image needs, and the certificate bundle the build tree generated.
    for folder, mode in RUNTIME_FOLDERS.items():
        (target / folder).mkdir(parents=True, exist_ok=True)
        (target / folder).chmod(mode)
    (target / "etc/passwd").write_text(RUNTIME_PASSWD)
    (target / "etc/group").write_text(RUNTIME_GROUP)
    bundle = Path("etc/ssl/certs/ca-certificates.crt")
    (target / bundle.parent).mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / bundle, target / bundle)
    # Folder modes and owners last: creating files inside changed their times anyway (clamped at packing).
    for origin, copy in folders:
        shutil.copystat(origin, copy)
        _copy_owner(origin, copy)


def _copy_owner(origin: Path, copy: Path) -> None:
    info = origin.lstat()
    os.chown(copy, info.st_uid, info.st_gid, follow_symlinks=False)


def _copy_times(origin: Path, copy: Path) -> None:
    info = origin.lstat()
    os.utime(copy, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
    _copy_owner(origin, copy)


def prune(root: Path, paths: Iterable[str], *, emptied: Iterable[str] = ()) -> None:
    """Remove `paths` under `root`, empty the `emptied` folders, and keep only copyright in docs."""
    for relative in paths:
        tools.remove(root / relative)
    for relative in emptied:
        folder = root / relative
        if folder.is_dir() and not folder.is_symlink():
            for child in folder.iterdir():
                tools.remove(child)
    docs = root / "usr/share/doc"
    if docs.is_dir():
        for package in docs.iterdir():
            if package.is_dir() and not package.is_symlink():
                for child in package.iterdir():
                    if child.name != "copyright":
                        tools.remove(child)


def _compile_stdlib(runtime: Path, epoch: int) -> None:
    """Byte-compile the standard library inside the runtime tree, hash-based (no mtimes in .pyc).

    Without this Python would compile at every start (the root filesystem is read-only in the
    DaemonSet), and Debian's own postinst compilation never ran for these copied files.
    """
    env = {"PATH": "/usr/bin", "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"}
    tools.run(
        [
            tools.program("chroot"),
            runtime,
            "/usr/bin/python3",
            "-m",
            "compileall",
            "-q",
            "-f",
            "--invalidation-mode",
            "checked-hash",
            "/usr/lib/python3.11",
            "/usr/lib/python3/dist-packages",
        ],
        what="compiling the runtime's standard library",
        env=env,
    )


def _pack(root: Path, folder: Path, *, name: str, epoch: int, config: dict[str, object]) -> None:
    layout = oci.Layout(folder)
    layer = layout.add_layer(lambda tar: tar.add_tree(root, epoch=epoch, skip_contents=SPECIAL_FOLDERS))
    manifest = layout.add_image(layers=[layer], config=config)
    layout.write_index(manifest, name=name)
    tools.log(f"packed {name}: {layer.size / 1e6:.1f} MB, {manifest.digest}")


def _iso(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
