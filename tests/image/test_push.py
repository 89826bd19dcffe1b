"""`task image:push REGISTRY=...`: what is pushed where, that the digest is checked, and what gets pinned.

There is no registry here, so crane and kustomize are stand-ins that record
what they were asked and answer as the real ones do (crane prints
<ref>@<digest> of what it pushed). The archive is a real OCI archive from the
project's own writer. The command line's refusals are run for real.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gdp_e2e.cluster import images
from gdp_hack.image import push

REPO = Path(__file__).resolve().parents[2]

_CRANE = """#!{python}
import json, sys
from pathlib import Path
Path({calls!r}).write_text(" ".join(sys.argv[1:]))
verb, layout, target = sys.argv[1:]
index = json.loads((Path(layout) / "index.json").read_text())
assert (Path(layout) / "oci-layout").is_file(), "not an OCI layout"
# As crane does: print what it pushed, by digest.
print(target.rsplit(":", 1)[0] + "@" + ({digest!r} or index["manifests"][0]["digest"]))
"""
_KUSTOMIZE = """#!/bin/sh
echo "$(pwd) $*" > "{calls}"
"""


def _archive(tmp_path: Path) -> tuple[Path, str]:
    layout = images.Layout(tmp_path / "layout")
    layer = layout.add_layer(lambda tar: tar.file("hello", b"hello\n"))
    manifest = layout.add_image(
        layers=[layer], config=images.image_config(entrypoint=[], cmd=["/hello"], created="x")
    )
    layout.write_index(manifest, name="localhost/gpu-device-plugin:dev")
    return images.archive(tmp_path / "layout", tmp_path / "image.oci.tar"), manifest.digest


def _tool(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(0o755)
    return path


def test_pushes_the_archive_and_pins_its_digest_in_the_overlay(tmp_path: Path) -> None:
    archive, digest = _archive(tmp_path)
    crane = _tool(
        tmp_path / "crane",
        _CRANE.format(python=sys.executable, calls=str(tmp_path / "crane.calls"), digest=""),
    )
    kustomize = _tool(tmp_path / "kustomize", _KUSTOMIZE.format(calls=tmp_path / "kustomize.calls"))
    overlay = tmp_path / "prod"
    overlay.mkdir()
    pushed = push.push(
        archive, "registry.example.com:5000/team/gpu", crane=crane, kustomize=kustomize, overlay=overlay
    )
    reference = f"registry.example.com:5000/team/gpu/gpu-device-plugin@{digest}"
    assert pushed.reference == reference
    assert pushed.tag == f"registry.example.com:5000/team/gpu/gpu-device-plugin:{push.version()}"
    verb, layout, target = (tmp_path / "crane.calls").read_text().split()
    assert (verb, target) == ("push", pushed.tag)
    assert not Path(layout).exists()  # the unpacked layout is removed afterwards
    assert (tmp_path / "kustomize.calls").read_text().split() == [
        str(overlay),
        "edit",
        "set",
        "image",
        f"ghcr.io/example/gpu-device-plugin={reference}",
    ]


def test_a_registry_serving_another_digest_is_an_error_and_nothing_is_pinned(tmp_path: Path) -> None:
    archive, _ = _archive(tmp_path)
    other = "sha256:" + "1" * 64
    crane = _tool(
        tmp_path / "crane",
        _CRANE.format(python=sys.executable, calls=str(tmp_path / "crane.calls"), digest=other),
    )
    kustomize = _tool(tmp_path / "kustomize", _KUSTOMIZE.format(calls=tmp_path / "kustomize.calls"))
    with pytest.raises(push.PushError, match="not the archive's"):
        push.push(archive, "registry.example.com/gpu", crane=crane, kustomize=kustomize, overlay=tmp_path)
    assert not (tmp_path / "kustomize.calls").exists()


def test_a_failed_push_says_so_and_how_to_log_in(tmp_path: Path) -> None:
    archive, _ = _archive(tmp_path)
    crane = _tool(tmp_path / "crane", "#!/bin/sh\necho 'UNAUTHORIZED: authentication required' >&2\nexit 1\n")
    kustomize = _tool(tmp_path / "kustomize", _KUSTOMIZE.format(calls=tmp_path / "kustomize.calls"))
    with pytest.raises(push.PushError, match=r"UNAUTHORIZED(.|\n)*docker login"):
        push.push(archive, "registry.example.com/gpu", crane=crane, kustomize=kustomize, overlay=tmp_path)
    assert not (tmp_path / "kustomize.calls").exists()


@pytest.mark.parametrize(
    "registry",
    [
        "registry.example.com",
        "registry.example.com/team/gpu",
        "127.0.0.1:5000/gpu",
        "localhost:5000",
        "ghcr.io/acme",
    ],
)
def test_registries_that_are_accepted(registry: str) -> None:
    assert push.check_registry(registry + "/") == registry


@pytest.mark.parametrize(
    ("registry", "reason"),
    [
        ("", "empty"),
        ("https://registry.example.com/gpu", "scheme"),
        ("registry.example.com/gpu:1.0", "tag or digest"),
        ("registry.example.com/gpu@sha256:" + "0" * 64, "tag or digest"),
        ("registry.example.com/Team", "lower case"),
        ("registry example.com", "not host"),
    ],
)
def test_a_bad_registry_exits_2_naming_it(registry: str, reason: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gdp_hack.image", "push", "--registry", registry],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: REGISTRY: ")
    assert reason in line


def test_the_pinned_clients_are_the_go_mod_s() -> None:
    go_mod = push.PUSH_BUILD_DIR / "go.mod"
    assert push.required_version_of(go_mod, "github.com/google/go-containerregistry").startswith("v0.")
    # The kustomize kubectl 1.32 embeds: `edit` writes what kubectl's kustomize reads.
    assert push.required_version_of(go_mod, "sigs.k8s.io/kustomize/kustomize/v5") == "v5.5.0"
    assert "sigs.k8s.io/kustomize/kustomize/v5 v5.5.0 h1:" in (push.PUSH_BUILD_DIR / "go.sum").read_text()
