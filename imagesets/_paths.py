"""Where catscans' shipped artifacts live (shared by every package, so it sits at the base)."""

from __future__ import annotations

import os
from pathlib import Path


def artifacts_dir() -> Path:
    """``$CATSCANS_ARTIFACTS`` or the repository's ``artifacts/`` folder."""
    env = os.environ.get("CATSCANS_ARTIFACTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "artifacts"
