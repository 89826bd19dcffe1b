"""Fixtures for the MPS tests: a short MPS root (unix socket paths are at most 107 bytes)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest

from gpu_device_plugin.mps.root import MpsRoot


@pytest.fixture
def mps_root() -> Iterator[MpsRoot]:
    folder = tempfile.mkdtemp(prefix="mps-", dir="/tmp")
    yield MpsRoot(PurePosixPath(folder))
    shutil.rmtree(folder, ignore_errors=True)
