"""`catscans inspect` (placeholder until issue 2 lands)."""

from __future__ import annotations

import typer

from recommender.cli._common import FormatOpt, handle_errors, not_built


def register(app: typer.Typer) -> None:
    @app.command("inspect", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    @handle_errors
    def inspect(fmt=FormatOpt) -> None:  # noqa: ANN001
        """Not built yet."""
        not_built("inspect", "issue 2")
