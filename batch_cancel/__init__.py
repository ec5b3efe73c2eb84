"""batch-cancel: cancel Zuora e-invoices in bulk from a spreadsheet, safely and fast."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batch-cancel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
