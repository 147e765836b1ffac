"""The `catscans` command line: thin typer app that parses, calls the library, renders.

Each command lives in its own module with a ``register(app)`` function, so
commands can grow independently.
"""

from __future__ import annotations

import typer

from recommender import __version__
from recommender.cli._usage import OneLineUsageGroup

app = typer.Typer(
    name="catscans",
    cls=OneLineUsageGroup,  # usage errors: one stderr line, exit 2 (not a six-line box)
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    help="Recommend a source dataset / pretrained model for transfer to a new 2D medical-imaging target.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"catscans {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """catscans: which source to start from before fine-tuning on a new 2D target."""
    from recommender.cli._common import configure_output

    configure_output()


from recommender.cli import (  # noqa: E402  (commands register themselves on `app`)
    _build_matrix,
    _evaluate,
    _inspect,
    _kb,
    _recommend,
    _verify,
)

for _mod in (_recommend, _build_matrix, _evaluate, _inspect, _kb, _verify):
    _mod.register(app)

__all__ = ["app"]
