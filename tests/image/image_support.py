"""Puts hack/ (the image build driver) and e2e/ (the OCI writer it shares) on the import path.

Neither is an installed package: both are run as `PYTHONPATH=... python -m`,
so the image tests import them the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for folder in (REPO / "hack", REPO / "e2e"):
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
