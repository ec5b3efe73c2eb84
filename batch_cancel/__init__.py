"""batch-cancel: cancel Zuora e-invoices in bulk from a spreadsheet, safely and fast.

The library mirrors the command line: `run` (cancel), `verify` (follow accepted cancels to
the tax authority's answer); `preflight` lives in `batch_cancel.preflight`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batch-cancel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

from .api import RunOptions, exit_code, run
from .config import Settings, Target, resolve_target
from .loader import LoadOptions
from .model import Status, Summary
from .verify import VerifyOptions, VerifySummary, verify
from .zuora import Credentials

__all__ = [
    "Credentials",
    "LoadOptions",
    "RunOptions",
    "Settings",
    "Status",
    "Summary",
    "Target",
    "VerifyOptions",
    "VerifySummary",
    "__version__",
    "exit_code",
    "resolve_target",
    "run",
    "verify",
]
