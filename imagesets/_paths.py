"""Where catscans' shipped artifacts and the shared data sets live (one answer for every package)."""

from __future__ import annotations

import os
from pathlib import Path


def artifacts_dir() -> Path:
    """``$CATSCANS_ARTIFACTS`` or the repository's ``artifacts/`` folder."""
    env = os.environ.get("CATSCANS_ARTIFACTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "artifacts"


def default_data_dir() -> Path:
    """Where ``<name>.npz`` data sets live: ``$CATSCANS_DATA`` (or its alias
    ``$CATSCANS_SHARED_DATA``), else ``../shared/data`` beside the repository."""
    env = os.environ.get("CATSCANS_DATA") or os.environ.get("CATSCANS_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
