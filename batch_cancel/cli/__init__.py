"""The command line: parse, read env vars, confirm, call the library, map results to exit codes.

Exit codes: 0 every row succeeded (or is a duplicate of a row that did); 1 the run finished and
some rows failed, were invalid or not attempted; 2 bad input or usage, nothing sent;
3 authentication failed, run aborted; 4 stopped early by a Zuora outage or an exhausted daily
quota (resume later); 130 interrupted (`model.ExitCode` is the one table).

`options` declares every option once, in groups; `commands` holds `run`, `preflight` and
`verify`; `simulate` serves the built-in simulator.
"""

from __future__ import annotations

import click

from .. import __version__
from .commands import preflight_command, run_command, verify_command
from .options import profile_options
from .simulate import simulate_command

__all__ = ["main"]


class _RecordingGroup(click.Group):
    """Keeps the arguments as typed, so a message can give the exact command to run next."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["batch_cancel.argv"] = list(args)
        return super().parse_args(ctx, args)


@click.group(cls=_RecordingGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="batch-cancel")
@profile_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """Cancel Zuora e-invoices in bulk from a spreadsheet, with a per-invoice report."""
    ctx.ensure_object(dict)  # the profile's report folder and secrets file, once loaded


for _command in (run_command, preflight_command, verify_command, simulate_command):
    main.add_command(_command)
