"""The registry of published studies, and importing one into the project's KB format.

Each importer transcribes one study's files (see ``../shared/data/kb/README.md``) into the
project's KB format (``experiments.knowledge_base``), so the recommender never reads the
studies' own layouts. Keeping the importer as code, not only the output, means the
transcription can be redone and checked: ``catscans kb import NAME DIR``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from experiments.knowledge_base import (
    KnowledgeBase,
    KnowledgeBaseError,
    kb_root,
    load_kb,
    save_kb,
)
from recommender.kb._import_common import KBImportError

__all__ = ["IMPORTERS", "import_kb"]


def _juodelyte(src: str | Path) -> KnowledgeBase:
    from recommender.kb._import_juodelyte import import_juodelyte2024

    return import_juodelyte2024(src)


def _cats(src: str | Path) -> KnowledgeBase:
    from recommender.kb._import_cats import import_cats_scans2021

    return import_cats_scans2021(src)


IMPORTERS: dict[str, Callable[[str | Path], KnowledgeBase]] = {
    "cats-scans2021": _cats,
    "juodelyte2024": _juodelyte,
}


def import_kb(study: str, src: str | Path, out: str | Path | None = None) -> KnowledgeBase:
    """Import a published study folder and write it as ``out`` (default ``artifacts/kb/<study>``)."""
    if study not in IMPORTERS:
        raise KBImportError(f"unknown study '{study}' (known: {', '.join(IMPORTERS)})")
    src = Path(src)
    if not src.is_dir():
        raise KBImportError(f"no such folder {src}")
    kb = IMPORTERS[study](src)
    dest = Path(out) if out is not None else kb_root() / kb.name
    _keep_computed(kb, dest)
    save_kb(kb, dest)
    return kb


def _keep_computed(kb: KnowledgeBase, dest: Path) -> None:
    """Re-importing must not drop what was computed onto the KB later (meta-features, pair
    features other than the study's own), since those come from other commands."""
    if not (dest / "manifest.json").exists():
        return
    try:
        old = load_kb(dest)
    except (KnowledgeBaseError, ValueError, KeyError):
        return
    if len(old.meta_features) and not len(kb.meta_features):
        kb.meta_features = old.meta_features
    study_features = set(kb.pair_features["feature"])
    extra = old.pair_features[~old.pair_features["feature"].isin(study_features)]
    if len(extra):
        kb.pair_features = pd.concat([kb.pair_features, extra], ignore_index=True)
