"""The image recipe's pure parts: venv trimming, the build context, the runtime package set.

What a user would notice: the trimmed image still has every kubernetes API the
daemon calls; what the Dockerfile copies is in the build context (and marks
the revision dirty when uncommitted); the runtime base holds python3's
dependencies as dpkg would resolve them, minus the documented leave-outs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gdp_hack.image import debian, steps, tools, trim

REPO = Path(__file__).resolve().parents[2]


def used_kubernetes_api_classes() -> set[str]:
    """`client.XxxApi` and `from kubernetes.client import XxxApi` names in internal/ and cmd/."""
    used: set[str] = set()
    for source in [*REPO.joinpath("internal").rglob("*.py"), *REPO.joinpath("cmd").rglob("*.py")]:
        text = source.read_text()
        used.update(re.findall(r"\bclient\.(\w+Api)\b", text))
        for names in re.findall(r"from kubernetes\.client import \(?([\w\s,]+)\)?", text):
            used.update(name for name in re.split(r"[\s,]+", names) if name.endswith("Api"))
    return used - {"ApiClient"}


def test_every_kubernetes_api_the_daemon_calls_survives_trimming() -> None:
    import kubernetes.client

    used = used_kubernetes_api_classes()
    assert "CoreV1Api" in used  # the scan finds what internal/cluster/kubeclient.py calls
    modules = {name: getattr(kubernetes.client, name).__module__.rsplit(".", 1)[1] for name in used}
    missing = {name: module for name, module in modules.items() if module not in trim.KEPT_API_MODULES}
    assert not missing, f"add these modules to hack/image/trim.py KEPT_API_MODULES: {missing}"


def fake_site_packages(root: Path) -> Path:
    files = {
        "kubernetes/client/api/__init__.py": "",
        "kubernetes/client/api/core_v1_api.py": "core" * 100,
        "kubernetes/client/api/__pycache__/core_v1_api.cpython-311.pyc": "c" * 50,
        "kubernetes/client/api/apps_v1_api.py": "apps" * 100,
        "kubernetes/client/api/__pycache__/apps_v1_api.cpython-311.pyc": "a" * 50,
        "kubernetes/client/models/v1_node.py": "model",
        "kubernetes/aio/client/api_client.py": "async" * 10,
        "kubernetes/leaderelection/leaderelection_test.py": "test",
        "kubernetes/leaderelection/leaderelection.py": "keep",
        "websocket/tests/test_app.py": "t",
        "grpc/__init__.py": "keep",
    }
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def test_trim_removes_unused_parts_and_keeps_the_client(tmp_path: Path) -> None:
    site = fake_site_packages(tmp_path)
    before = {path for path in site.rglob("*") if path.is_file()}
    freed = trim.trim(site)
    after = {path for path in site.rglob("*") if path.is_file()}
    removed = {str(path.relative_to(site)) for path in before - after}
    assert removed == {
        "kubernetes/client/api/apps_v1_api.py",
        "kubernetes/client/api/__pycache__/apps_v1_api.cpython-311.pyc",
        "kubernetes/aio/client/api_client.py",
        "kubernetes/leaderelection/leaderelection_test.py",
        "websocket/tests/test_app.py",
    }
    assert freed == 400 + 50 + 50 + 4 + 1
    assert not (site / "kubernetes/aio").exists()


def test_trim_refuses_a_folder_without_the_kubernetes_client(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"core_v1_api\.py"):
        trim.trim(tmp_path)


def dockerfile_copy_sources() -> set[str]:
    sources = set()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources.update(line.split()[1:-1])
    return sources


def test_what_the_dockerfile_copies_is_in_the_context_and_tracked_for_the_revision() -> None:
    sources = dockerfile_copy_sources()
    assert {"requirements/runtime.lock", "internal", "cmd"} <= sources
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert sources <= allowed, f"let these through .dockerignore: {sources - allowed}"
    assert sources <= set(steps.CONTEXT_PATHS), (
        f"add to steps.CONTEXT_PATHS: {sources - set(steps.CONTEXT_PATHS)}"
    )


STATUS = """\
Package: python3
Status: install ok installed
Version: 3.11.2-1+b1
Depends: python3.11 (>= 3.11.2-1~), libpython3-stdlib (= 3.11.2-1+b1)

Package: python3.11
Status: install ok installed
Version: 3.11.2-6
Depends: libc6, debconf (>= 0.5) | debconf-2.0, media-types | mime-support
Description: an interpreter
 with a continuation line

Package: libpython3-stdlib
Status: install ok installed
Version: 3.11.2-1+b1
Pre-Depends: libc6:amd64

Package: libc6
Status: install ok installed
Version: 2.36-9

Package: debconf
Status: install ok installed
Version: 1.5.82
Depends: perl-base

Package: perl-base
Status: install ok installed
Version: 5.36.0-7

Package: mime-support
Status: install ok installed
Version: 3.66
Provides: media-types

Package: old-thing
Status: deinstall ok config-files
Version: 1
"""


def test_closure_follows_depends_like_dpkg_and_leaves_out_what_is_named(tmp_path: Path) -> None:
    status_file = tmp_path / "status"
    status_file.write_text(STATUS)
    status = debian.read_status(status_file)
    assert "old-thing" not in status  # only installed packages count
    assert status["python3.11"]["Description"] == "an interpreter\n with a continuation line"
    found = debian.closure(status, ["python3"], {"debconf": "no maintainer scripts run"})
    # debconf is left out (and so perl-base, only it needs); media-types comes from a Provides.
    assert found == ["libc6", "libpython3-stdlib", "mime-support", "python3", "python3.11"]


def test_closure_names_a_dependency_that_is_not_installed(tmp_path: Path) -> None:
    status_file = tmp_path / "status"
    status_file.write_text(STATUS.replace("Depends: perl-base", "Depends: perl-base, libmissing1"))
    with pytest.raises(tools.StepError, match="debconf depends on 'libmissing1'"):
        debian.closure(debian.read_status(status_file), ["python3"], {})


def test_dpkg_paths_resolve_through_the_merged_usr_links(tmp_path: Path) -> None:
    (tmp_path / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    (tmp_path / "usr/lib/x86_64-linux-gnu/libc.so.6").write_text("")
    (tmp_path / "usr/lib/x86_64-linux-gnu/libc.link").symlink_to("/etc/elsewhere")
    assert debian._inside(tmp_path, "/lib/x86_64-linux-gnu/libc.so.6") == (
        tmp_path / "usr/lib/x86_64-linux-gnu/libc.so.6"
    )
    # The last part is not followed: a listed symlink is copied as a symlink.
    assert debian._inside(tmp_path, "/lib/x86_64-linux-gnu/libc.link") == (
        tmp_path / "usr/lib/x86_64-linux-gnu/libc.link"
    )


def test_a_missing_program_is_named_with_its_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name, path=None: None)
    with pytest.raises(
        tools.PrerequisiteError, match="'debootstrap' is not installed: apt-get install debootstrap"
    ):
        tools.program("debootstrap")
    with pytest.raises(tools.PrerequisiteError, match="'ctr' is not installed: apt-get install containerd"):
        tools.program("ctr")
    with pytest.raises(tools.PrerequisiteError, match="Go toolchain"):
        tools.program("go")
