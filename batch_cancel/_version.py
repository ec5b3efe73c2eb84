"""The installed version, read from the package metadata (one place, no import cycle)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batch-cancel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
