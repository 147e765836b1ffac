"""Usage errors (unknown option, missing argument, bad value) as one line on stderr, exit 2.

Typer draws click's usage errors as a six-line box (usage, hint, framed message). The
house rule is one line for every bad input, so the root group catches them where they
are raised (parsing in ``make_context``, sub-commands in ``invoke``) and prints
``error: <message> (see 'catscans <cmd> --help')``. A bare group call that shows its help
(``no_args_is_help``) is left alone.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

__all__ = ["OneLineUsageGroup", "usage_line"]


def _is_click_error(exc: BaseException) -> bool:
    """A click error, whether from ``click`` or the copy typer >= 0.24 vendors (same API)."""
    return any(c.__name__ == "ClickException" for c in type(exc).__mro__) \
        and type(exc).__name__ != "NoArgsIsHelpError"  # a bare group call: typer shows its help


def usage_line(exc: Any) -> str:
    """The one line printed for a click error (message + where to read the usage)."""
    msg = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        msg += f" (see '{ctx.command_path} {ctx.help_option_names[0]}')"
    return msg


def _one_line(exc: Any) -> typer.Exit:
    from recommender.cli._common import err

    err.print(f"[bold red]error:[/] {usage_line(exc)}", markup=True, highlight=False,
              soft_wrap=True)
    return typer.Exit(exc.exit_code)


class OneLineUsageGroup(TyperGroup):
    """The ``catscans`` root group: click usage errors become one stderr line + exit 2."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except Exception as exc:
            if not _is_click_error(exc):
                raise
            raise _one_line(exc) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if not _is_click_error(exc):
                raise
            raise _one_line(exc) from None
