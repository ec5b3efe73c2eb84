"""batch-cancel: cancel Zuora e-invoices in bulk from a spreadsheet, safely and fast.

The library mirrors the command line with one keyword call per command: `cancel` (a file or
a DataFrame in, a `CommandResult` with the report as a DataFrame out), `preflight` (the plan,
nothing cancelled) and `verify` (follow accepted cancels to the tax authority's answer);
`read_report` reads any report as text columns; nothing is logged until
`configure_logging` is called. The 0.1 API (`run` with `RunOptions`, `verify` with
`VerifyOptions`) keeps working.
"""

from ._version import __version__
from .api import run
from .config import Settings, Target, resolve_target
from .library import CommandResult, CommandSummary, UsageError, cancel, preflight, verify
from .logs import configure_logging
from .model import ExitCode, Status, Summary, exit_code
from .plan import RunOptions
from .read.frames import read_report
from .read.loader import LoadOptions
from .send.zuora import Credentials
from .verify import VerifyOptions, VerifySummary

__all__ = [
    "CommandResult",
    "CommandSummary",
    "Credentials",
    "ExitCode",
    "LoadOptions",
    "RunOptions",
    "Settings",
    "Status",
    "Summary",
    "Target",
    "UsageError",
    "VerifyOptions",
    "VerifySummary",
    "__version__",
    "cancel",
    "configure_logging",
    "exit_code",
    "preflight",
    "read_report",
    "resolve_target",
    "run",
    "verify",
]
