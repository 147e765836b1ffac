"""`catscans evaluate-meta` (placeholder until issue 4 lands)."""

from __future__ import annotations

import typer

from recommender.cli._common import FormatOpt, handle_errors, not_built


def register(app: typer.Typer) -> None:
    @app.command("evaluate-meta", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    @handle_errors
    def evaluate_meta(fmt=FormatOpt) -> None:  # noqa: ANN001
        """Not built yet."""
        not_built("evaluate-meta", "issue 4")
