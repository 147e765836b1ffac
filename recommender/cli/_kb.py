"""`catscans kb ...` (placeholder until issue 3 lands)."""

from __future__ import annotations

import typer

from recommender.cli._common import FormatOpt, handle_errors, not_built

kb_app = typer.Typer(help="Knowledge bases: list, show, import.", no_args_is_help=True)


@kb_app.command("list")
@handle_errors
def kb_list(fmt=FormatOpt) -> None:  # noqa: ANN001
    """List knowledge bases."""
    not_built("kb list", "issue 3")


def register(app: typer.Typer) -> None:
    app.add_typer(kb_app, name="kb")
