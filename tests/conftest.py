"""Test-wide fixtures. Tests that need ../shared/data skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The same order as imagesets.default_data_dir: $CATSCANS_DATA, then its alias
# $CATSCANS_SHARED_DATA, else ../shared/data beside the repository.
SHARED_DATA = Path(
    os.environ.get("CATSCANS_DATA") or os.environ.get("CATSCANS_SHARED_DATA") or (REPO.parent / "shared" / "data")
)

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test when it is not there."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs shared data: {p} is absent")
    return p


@pytest.fixture
def shared_data() -> Path:
    return shared_path()
