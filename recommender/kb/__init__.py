"""Knowledge bases: import the published studies, summarise them, attach features to them.

- ``importers``: the registry of studies (``IMPORTERS``) and ``import_kb``; one private
  ``_import_<study>`` module per study, sharing ``_import_common``.
- ``summary``: what ``kb list`` / ``kb show`` print (sizes, cell table, heatmap).
- ``attach``: write dataset profiles, similarities (``attach_to_kb``, ``attach_all``) and
  checkpoint transferability scores (``score_kb``, ``score_target``,
  ``score_transferability``) into a KB's tables.

``attach`` needs meta_features (and so torch, seconds to import); its names are loaded on
first use so that ``catscans kb list`` and the other light commands stay fast.
"""

from __future__ import annotations

from recommender.kb._import_common import KBImportError, read_study_csv
from recommender.kb.importers import IMPORTERS, import_kb
from recommender.kb.summary import kb_summary, list_summaries, plot_matrix, show_table

_ATTACH = ("attach_all", "attach_to_kb", "kb_meta_row", "score_kb", "score_target",
           "score_transferability")


def __getattr__(name: str):  # noqa: ANN202 - PEP 562 lazy re-export of the attach module
    if name in _ATTACH:
        from recommender.kb import attach

        return getattr(attach, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMPORTERS", "KBImportError", "import_kb", "kb_summary", "list_summaries", "plot_matrix",
    "read_study_csv", "show_table", *_ATTACH,
]
