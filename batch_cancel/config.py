"""Settings for a run and the named Zuora environments.

A target is resolved once, here, so that no other module guesses which tenant it talks to.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import stat
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .send.zuora import Credentials

#: `--env` names → REST base URLs (Zuora's own SDK enum `ZuoraEnvironment`).
ENVIRONMENTS: dict[str, str] = {
    "sandbox": "https://rest.apisandbox.zuora.com",
    "sandbox-na": "https://rest.sandbox.na.zuora.com",
    "sandbox-eu": "https://rest.sandbox.eu.zuora.com",
    "central-sandbox": "https://rest.test.zuora.com",
    "central-sandbox-eu": "https://rest.test.eu.zuora.com",
    "central-sandbox-ap": "https://rest.test.ap.zuora.com",
    "production": "https://rest.zuora.com",
    "production-na": "https://rest.na.zuora.com",
    "production-eu": "https://rest.eu.zuora.com",
    "production-ap": "https://rest.ap.zuora.com",
}

#: Default starts per second, per environment family: a safe share of Zuora's published
#: per-minute API limits (API Sandbox 2,500/min, Developer/Central Sandbox 12,500/min,
#: Production 50,000/min), since failed and throttled calls count against them too.
DEFAULT_RATES: dict[str, float] = {
    "sandbox": 20.0,
    "central-sandbox": 100.0,
    "production": 400.0,
}

#: Zuora's Default concurrency limit is 40 in flight per tenant, shared with every other
#: integration of the tenant; half of it leaves the others their headroom.
DEFAULT_CONCURRENCY = 20
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT = 60.0
DEFAULT_OUTAGE_WINDOW = 1800.0
DEFAULT_GRACE = 30.0
DEFAULT_TENANT_SHARE = 0.5
#: What a concurrency 429 (code 50000070) does: "shrink" halves the window and retries the
#: refused row after a short backoff, pausing the pool for Retry-After only once the window
#: is down to one request; "pause" always pauses the whole pool for Retry-After (120 s).
CONCURRENCY_429_MODES = ("shrink", "pause")
#: How the number of requests in flight is learned: "window" (`send/flow.py`, AIMD on the
#: tenant's headers and 429s) or "gradient2" (`send/gradient.py`, Netflix's latency gradient),
#: kept selectable so the benchmark can compare them (issue 14).
CONCURRENCY_ALGORITHMS = ("window", "gradient2")
#: Rate used for a `--base-url` of unknown kind: the API Sandbox's (the strictest) share is too
#: timid for a proxy in front of production, so the Developer Sandbox share is used.
DEFAULT_CUSTOM_RATE = 100.0

_TRACK_PREFIX_RE = re.compile(r"^[\x21-\x7e]*$")
_TRACK_FORBIDDEN = set(":;\"'")


class ConfigError(ValueError):
    """A setting that cannot work; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Target:
    """The one tenant a run talks to."""

    base_url: str
    name: str  # the --env name, "custom" for a base URL, "simulator" for --simulate

    @property
    def is_production(self) -> bool:
        """Production tenants need a confirmation before cancelling."""
        return self.name.startswith("production")

    @property
    def default_rate(self) -> float | None:
        """A polite default for `--rate` on this target (None: not paced)."""
        if self.name == "simulator":
            return None
        for family, rate in DEFAULT_RATES.items():
            if self.name == family or self.name.startswith(family + "-"):
                return rate
        return DEFAULT_CUSTOM_RATE

    def start_rate(self, rate: float | None) -> float | None:
        """The starts per second to begin at: `--rate` when given, else this target's default
        (the one place a command picks between them)."""
        return rate if rate is not None else self.default_rate


def default_rates_text() -> str:
    """The default rate of each kind of target, in words for `--rate`'s help."""
    named = ", ".join(f"{family} {rate:g}" for family, rate in DEFAULT_RATES.items())
    return f"{named}, base URL {DEFAULT_CUSTOM_RATE:g}, simulator unpaced"


@contextlib.asynccontextmanager
async def open_target(target: Target, credentials: Credentials | None,
                      simulator_config: object | None = None
                      ) -> AsyncIterator[tuple[str, Credentials]]:
    """The base URL and credentials to use; for the simulator target, the built-in simulator
    started on loopback for the command's lifetime (imported only then: a run against a real
    tenant never loads it)."""
    if target.name != "simulator":
        if credentials is None:
            raise ConfigError("no credentials: set ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET")
        yield target.base_url, credentials
        return
    from .send.zuora import Credentials
    from .sim.server import Simulator, SimulatorConfig

    config = simulator_config if isinstance(simulator_config, SimulatorConfig) else None
    simulator = Simulator(config)
    base_url = await simulator.start("127.0.0.1", 0)
    try:
        yield base_url, Credentials(simulator.config.client_id, simulator.config.client_secret)
    finally:
        await simulator.stop()


def tenant_identity(target: Target, settings: Settings, client_id: str) -> dict[str, str]:
    """What names one tenant (and the slice of it a run acts on), for the journal's header.

    The OAuth client id is kept only as a hash: enough to tell two tenants apart, nothing a
    reader of the journal can use. The built-in simulator is one tenant per run, named so.
    """
    if target.name == "simulator":
        return {"env": "simulator"}
    return {"env": target.name, "base_url": target.base_url.rstrip("/"),
            "entity_ids": settings.entity_ids, "org_ids": settings.org_ids,
            "client_id_sha256": hashlib.sha256(client_id.encode()).hexdigest()[:16]}


def describe_tenant(identity: dict[str, str]) -> str:
    """A tenant identity in one line, for error messages."""
    if identity.get("env") == "simulator":
        return "the built-in simulator"
    parts = [f"{identity.get('env', '?')} {identity.get('base_url', '?')}"]
    for key, label in (("entity_ids", "entity"), ("org_ids", "org"),
                       ("client_id_sha256", "client id sha256")):
        if identity.get(key):
            parts.append(f"{label} {identity[key]}")
    return ", ".join(parts)


def tenant_mismatch(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """The fields in which two tenant identities differ (only fields both recorded count,
    so a journal written before a field existed is judged on what it has)."""
    keys = [k for k in ("env", "base_url", "entity_ids", "org_ids", "client_id_sha256")
            if k in recorded or k in current]
    return [k for k in keys if recorded.get(k, current.get(k)) != current.get(k, recorded.get(k))]


@dataclass(frozen=True, slots=True)
class Settings:
    """How to send: limits, retries and Zuora's optional headers."""

    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT
    track_id_prefix: str = "bc"
    entity_ids: str = ""
    org_ids: str = ""
    zuora_version: str = ""
    #: seconds of Zuora outage to wait out (probing) before stopping the run cleanly
    outage_window: float = DEFAULT_OUTAGE_WINDOW
    #: share of the tenant's advertised concurrency limit this run may take
    tenant_share: float = DEFAULT_TENANT_SHARE
    #: one of CONCURRENCY_429_MODES
    concurrency_429: str = "shrink"
    #: one of CONCURRENCY_ALGORITHMS
    concurrency_algorithm: str = "window"

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("--rate must be a positive number of requests per second")
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1 (the first try counts)")
        if self.timeout <= 0:
            raise ConfigError("--timeout must be a positive number of seconds")
        if not 0 < self.tenant_share <= 1:
            raise ConfigError("--tenant-share must be more than 0 and at most 1")
        if self.outage_window < 0:
            raise ConfigError("--outage-window must be zero or more seconds")
        if self.concurrency_429 not in CONCURRENCY_429_MODES:
            raise ConfigError("--concurrency-429 must be one of "
                              + ", ".join(CONCURRENCY_429_MODES))
        if self.concurrency_algorithm not in CONCURRENCY_ALGORITHMS:
            raise ConfigError("--concurrency-algorithm must be one of "
                              + ", ".join(CONCURRENCY_ALGORITHMS))
        check_track_prefix(self.track_id_prefix)


def check_track_prefix(prefix: str) -> None:
    """Refuse a `Zuora-Track-Id` prefix Zuora would reject or that leaves no room for row ids."""
    if len(prefix) > 24:
        raise ConfigError("--track-id-prefix is longer than 24 characters")
    if not _TRACK_PREFIX_RE.match(prefix) or _TRACK_FORBIDDEN & set(prefix):
        raise ConfigError(
            "--track-id-prefix must be printable US-ASCII without spaces or any of : ; \" '"
        )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses, the only hosts allowed over plain http."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """Return the base URL without a trailing slash, or refuse one that is unsafe or malformed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL {url!r} is not an http(s) URL such as https://rest.zuora.com")
    if parts.username or parts.password:
        raise ConfigError("the base URL must not contain credentials; use ZUORA_CLIENT_ID/SECRET")
    if parts.query or parts.fragment:
        raise ConfigError(f"base URL {url!r} must not have a query or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing plain http:// to {parts.hostname}: credentials and tokens would travel "
            "unencrypted; use https:// (http is accepted only for loopback addresses)"
        )
    return url.rstrip("/")


def resolve_target(env: str | None, base_url: str | None, env_base_url: str | None,
                   simulate: bool) -> Target:
    """Pick exactly one target from `--env`, `--base-url`, `ZUORA_BASE_URL` and `--simulate`.

    Two at once are refused, the environment variable included (unless `--base-url` repeats
    it): a forgotten export must not silently lose to, or win over, a flag, since a wrong
    guess cancels invoices on the wrong tenant.
    """
    named = [flag for flag, value in (("--env", env), ("--base-url", base_url),
                                      ("--simulate", simulate)) if value]
    if env_base_url and not (base_url and base_url.rstrip("/") == env_base_url.rstrip("/")):
        named.append("ZUORA_BASE_URL")
    if len(named) > 1:
        raise ConfigError(
            f"name exactly one target; got {' and '.join(named)}"
            + (" (unset ZUORA_BASE_URL or drop the flag)" if "ZUORA_BASE_URL" in named else "")
        )
    if simulate:
        return Target(base_url="", name="simulator")
    if env:
        if env not in ENVIRONMENTS:
            raise ConfigError(f"unknown --env {env!r}; choose one of {', '.join(ENVIRONMENTS)}")
        return Target(base_url=ENVIRONMENTS[env], name=env)
    url = base_url or env_base_url
    if url:
        return Target(base_url=check_base_url(url), name="custom")
    raise ConfigError(
        "no target named: pass --env NAME (e.g. --env sandbox), --base-url URL, set "
        "ZUORA_BASE_URL, or use --simulate to try the built-in simulator"
    )


# --- profiles ---------------------------------------------------------------------------------

#: Profile keys and the command options they give defaults to.
PROFILE_KEYS = {
    "env": "env_name", "base_url": "base_url", "entity_ids": "entity_ids",
    "org_ids": "org_ids", "zuora_version": "zuora_version", "concurrency": "concurrency",
    "rate": "rate", "tenant_share": "tenant_share", "max_attempts": "max_attempts",
    "concurrency_429": "concurrency_429", "concurrency_algorithm": "concurrency_algorithm",
    "outage_window": "outage_window",
    "timeout": "timeout", "track_id_prefix": "track_id_prefix",
}
#: Profile keys that are not option defaults.
PROFILE_EXTRAS = {"report_folder", "secrets_file"}


def load_profile(path: Path, name: str | None) -> dict[str, object]:
    """One named profile (`[profiles.NAME]`) of a TOML config file, checked for unknown keys.

    With no name, the profile `default` if the file has one, else no values at all.
    """
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    profiles = data.get("profiles", {})
    if name is None:
        if "default" not in profiles:
            return {}
        name = "default"
    if name not in profiles:
        raise ConfigError(f"{path} has no profile {name!r}; it has: "
                          f"{', '.join(profiles) or '(none)'}")
    profile = dict(profiles[name])
    unknown = set(profile) - set(PROFILE_KEYS) - PROFILE_EXTRAS
    if unknown:
        raise ConfigError(f"profile {name!r} in {path}: unknown keys {', '.join(sorted(unknown))}"
                          f"; known: {', '.join(sorted({*PROFILE_KEYS, *PROFILE_EXTRAS}))}")
    return profile


def read_secrets_file(path: Path) -> tuple[str, str]:
    """ZUORA_CLIENT_ID / ZUORA_CLIENT_SECRET lines from a file only its owner can read."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"secrets file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"secrets file {path} is readable by others; run: chmod 600 {path}")
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[key.strip()] = value.strip().strip('"').strip("'")
    client_id = values.get("ZUORA_CLIENT_ID", "")
    secret = values.get("ZUORA_CLIENT_SECRET", "")
    if not client_id or not secret:
        raise ConfigError(f"secrets file {path} needs ZUORA_CLIENT_ID=... and "
                          "ZUORA_CLIENT_SECRET=... lines")
    return client_id, secret
