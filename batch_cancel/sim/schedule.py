"""What one seed decides about a simulated run and the world it runs against.

A `Schedule` is drawn from one seed: rows, latency, the tenant's limits, other clients holding
places, every fault, outages, the daily quota, the OAuth tokens' lives and the token endpoint's
refusals, and crash points. Token draws come from their own generator, so adding them left the
rest of every schedule as it was; so do the user paths drawn later (the input as a DataFrame or
a Parquet file, the last report fed back in as a new run's input, `verify` after the chain)
and `--concurrency-algorithm`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from ..config import Settings

__all__ = ["ALGORITHMS", "CANCEL_FAULTS", "FEEDBACK", "INPUT_FORMS", "OUTAGE_MODES",
           "TOKEN_REFUSALS", "Schedule"]

#: Faults a cancel PUT can meet, in the fixed order they are drawn in.
CANCEL_FAULTS: Final = (
    "fail_500", "fail_503", "html_502", "drop", "retryable_false",  # nothing applied
    "drop_after_apply", "truncated_after_apply", "html_504_after_apply",
    "timeout_after_apply",  # applied, then no answer within the client's timeout
    "timeout_before_apply",  # no answer in time; the cancel lands after the client gave up
)
#: How /v1 fails during an outage: Zuora's JSON 503, a dropped connection, the proxy's HTML
#: 502, or no answer at all until the client's timeout.
OUTAGE_MODES: Final = ("503", "drop", "html_502", "hang")
#: How the token endpoint refuses for a while: a 503, a 429, a dropped connection (all worth
#: another try to the client), or 401 invalid_client (fatal to the client at once).
TOKEN_REFUSALS: Final = ("503", "429", "drop", "invalid_client")
#: How the input reaches the run: the CSV file, a pandas DataFrame (the library's face), or a
#: Parquet file.
INPUT_FORMS: Final = ("csv", "frame", "parquet")
#: Whether the chain's last report is fed back in as a new run's input: no, with the default
#: rows (final failures left out), or with --include-final.
FEEDBACK: Final = ("", "rerun", "include_final")
#: How the client sizes its window of requests in flight (`--concurrency-algorithm`).
ALGORITHMS: Final = ("window", "gradient2")


@dataclass(frozen=True, slots=True)
class Schedule:
    """Everything one seed decides about a run and the world it runs against."""

    seed: int
    keys: tuple[str, ...]
    reasons: tuple[str, ...]
    references: tuple[str, ...]
    latency: float
    jitter: float
    concurrency_limit: int
    sampled_remaining: bool
    others_peak: int
    others_period: float
    rate_limit: int | None
    rate_retry_after: bool
    daily_quota: int | None
    faults: tuple[tuple[str, float], ...]
    read_faults: float
    storm: float
    storm_retry_after: int | None
    storm_reset: int
    outages: tuple[tuple[float, float, str], ...]
    cancel_delay: float
    cancel_failed_rate: float
    settings: Settings
    #: per run of the chain, where the process dies: ("request", n) as its n-th request
    #: arrives, or ("time", t) t seconds after it started, wherever it is then
    crashes: tuple[tuple[str, float], ...]
    #: whether the request the process dies on (a "request" crash) still reaches Zuora
    crash_delivers: bool
    #: Ctrl-C in the first run: (seconds after it started, --grace); None: no interrupt
    interrupt: tuple[float, float] | None = None
    #: the token lifetime the token endpoint announces (`expires_in`)
    token_ttl: float = 3600.0
    #: how long a token really works: shorter than announced when the tenant revokes it early
    #: (the client then meets a 401 mid-run and refreshes)
    token_lifetime: float = 3600.0
    #: (start, seconds, mode) of each time the token endpoint refuses (see TOKEN_REFUSALS)
    token_refusals: tuple[tuple[float, float, str], ...] = ()
    #: how the input reaches the run (see INPUT_FORMS)
    input_form: str = "csv"
    #: the last report fed back in after the chain (see FEEDBACK; "" for not)
    feedback: str = ""
    #: `verify` reads the final report's accepted cancels after the chain
    verify: bool = False
    #: `preflight --check-invoices` reads the input's invoices after the chain
    preflight: bool = False

    @property
    def rows(self) -> int:
        """Input rows."""
        return len(self.keys)

    @classmethod
    def draw(cls, seed: int) -> Schedule:
        """The schedule of `seed`: a mix of faults, limits and sizes, most of them modest."""
        rng = random.Random(f"schedule|{seed}")
        rows = rng.choice((1, 3, 8, 15, 25, 40)) if rng.random() < 0.9 else rng.randint(41, 120)
        keys: list[str] = []
        reasons: list[str] = []
        refs: list[str] = []
        for n in range(rows):
            kind = rng.random()
            key = f"INV{n:05d}"
            if kind < 0.08:
                key += "CANCELLED"  # cancelled before the run
            elif kind < 0.12:
                key += "NOTFOUND"
            elif kind < 0.15 and keys:
                key = rng.choice(keys)  # a duplicate row
            elif kind < 0.17:
                key = ""  # an invalid row
            keys.append(key)
            reason = rng.choice(("01", "02", "03", "04"))
            reasons.append(reason)
            refs.append(f"REF{n}" if reason == "01" and rng.random() < 0.7 else "")
        latency = rng.choice((0.005, 0.05, 0.2, 0.8, 2.0))
        limit = rng.choice((1, 2, 4, 10, 40))
        chosen = [name for name in CANCEL_FAULTS if rng.random() < 0.3]
        total = rng.choice((0.05, 0.2, 0.5)) if chosen else 0.0
        weights = [rng.random() + 0.1 for _ in chosen]
        faults = tuple((name, total * w / sum(weights)) for name, w in zip(chosen, weights,
                                                                           strict=True))
        timeout = rng.choice((1.0, 10.0, 60.0))
        outages = tuple(
            (rng.uniform(0, 60), rng.choice((0.5, 5.0, 40.0, 400.0, 4000.0)),
             rng.choice(OUTAGE_MODES))
            for _ in range(rng.choice((0, 0, 0, 1, 2))))
        settings = Settings(
            concurrency=rng.choice((1, 2, 4, 8, 20)),
            rate=rng.choice((None, None, 2.0, 20.0, 400.0)),
            max_attempts=rng.choice((1, 2, 3, 5, 8)),
            timeout=timeout,
            outage_window=rng.choice((30.0, 300.0, 1800.0)),
            tenant_share=rng.choice((0.5, 0.5, 1.0)),
            concurrency_429=rng.choice(("shrink", "shrink", "pause")),
            concurrency_algorithm=_draw_algorithm(seed),
        )
        crashes: list[tuple[str, float]] = []
        while rng.random() < (0.3 if not crashes else 0.35) and len(crashes) < 3:
            if rng.random() < 0.5:
                crashes.append(("request", rng.randint(1, max(2, int(rows * 1.5)))))
            else:
                crashes.append(("time", rng.uniform(0.0, max(0.05, rows * latency))))
        ttl, lifetime, refusals = _draw_tokens(seed)
        form, feedback, verify, preflight = _draw_paths(seed)
        return cls(
            seed=seed, keys=tuple(keys), reasons=tuple(reasons), references=tuple(refs),
            latency=latency, jitter=rng.choice((0.0, 0.5, 0.9)),
            concurrency_limit=limit, sampled_remaining=rng.random() < 0.5,
            others_peak=rng.randint(0, limit), others_period=rng.choice((0.5, 3.0, 20.0)),
            rate_limit=rng.choice((None, None, None, max(1, rows // 2), rows * 3)),
            rate_retry_after=rng.random() < 0.5,
            daily_quota=rng.choice((None,) * 6 + (max(1, rows // 2), rows + 5)),
            faults=faults,
            read_faults=rng.choice((0.0, 0.0, 0.1, 0.4)),
            storm=rng.choice((0.0, 0.0, 0.0, 0.1, 0.4)),
            storm_retry_after=rng.choice((None, 0, 1, 3)),
            storm_reset=rng.choice((0, 1, 5)),
            outages=outages,
            cancel_delay=rng.choice((0.0, 1.0, 30.0)),
            cancel_failed_rate=rng.choice((0.0, 0.0, 0.2, 1.0)),
            settings=settings,
            crashes=tuple(crashes),
            crash_delivers=rng.random() < 0.5,
            interrupt=(rng.uniform(0.0, max(0.05, rows * latency)), rng.choice((0.0, 1.0, 30.0)))
            if rng.random() < 0.15 else None,
            token_ttl=ttl, token_lifetime=lifetime, token_refusals=refusals,
            input_form=form, feedback=feedback, verify=verify, preflight=preflight,
        )

    def _interrupt_text(self) -> str:
        if self.interrupt is None:
            return "none"
        at, grace = self.interrupt
        return f"at +{at:.3f} s of the first run, --grace {grace:g}"

    def _refusals_text(self) -> str:
        return ", ".join(f"{m} at {a:.1f} s for {d:g} s"
                         for a, d, m in self.token_refusals) or "never"

    def _paths_text(self) -> str:
        form = {"csv": "a CSV file", "frame": "a pandas DataFrame",
                "parquet": "a Parquet file"}[self.input_form]
        feedback = {"": "not fed back", "rerun": "fed back in as a new run's input",
                    "include_final": "fed back in with --include-final"}[self.feedback]
        after = " and ".join(name for name, on in (("preflight", self.preflight),
                                                   ("verify", self.verify)) if on)
        return (f"input: {form}; the last report {feedback}; after the chain: {after or 'none'}"
                f"; --concurrency-algorithm {self.settings.concurrency_algorithm}")

    def describe(self) -> str:
        """A few lines a person can read: what this schedule throws at the run."""
        faults = ", ".join(f"{n} {s:.0%}" for n, s in self.faults) or "none"
        outages = ", ".join(f"{m} at {a:.1f} s for {d:g} s" for a, d, m in self.outages)
        s = self.settings
        crashes = ", ".join(f"at request {int(v)}" if k == "request" else f"at +{v:.3f} s"
                            for k, v in self.crashes)
        return "\n".join((
            f"seed {self.seed}: {self.rows} rows; latency {self.latency:g} s "
            f"(jitter {self.jitter:.0%}); tenant limit {self.concurrency_limit} "
            f"(others up to {self.others_peak}, "
            f"{'sampled' if self.sampled_remaining else 'exact'} Remaining)",
            f"  rate limit {self.rate_limit}/min (Retry-After {self.rate_retry_after}); "
            f"daily quota {self.daily_quota}; storm {self.storm:.0%} "
            f"(Retry-After {self.storm_retry_after}, reset {self.storm_reset})",
            f"  cancel faults: {faults}; read faults {self.read_faults:.0%}; "
            f"outages: {outages or 'none'}",
            f"  cancel settles after {self.cancel_delay:g} s, CancelFailed share "
            f"{self.cancel_failed_rate:.0%}; crashes: {crashes or 'none'} "
            f"(the request it dies on {'reaches' if self.crash_delivers else 'never reaches'} "
            "Zuora)",
            f"  Ctrl-C: {self._interrupt_text()}",
            f"  tokens: expires_in {self.token_ttl:g} s, revoked after {self.token_lifetime:g} s;"
            f" token endpoint refuses: {self._refusals_text()}",
            f"  {self._paths_text()}",
            f"  client: --concurrency {s.concurrency} --rate {s.rate} --max-attempts "
            f"{s.max_attempts} --timeout {s.timeout:g} --outage-window {s.outage_window:g} "
            f"--tenant-share {s.tenant_share:g} --concurrency-429 {s.concurrency_429}",
        ))


def _draw_tokens(seed: int) -> tuple[float, float, tuple[tuple[float, float, str], ...]]:
    """The tokens' lives and the token endpoint's refusals, from their own generator."""
    rng = random.Random(f"tokens|{seed}")
    ttl = rng.choice((3600.0, 3600.0, 3600.0, 600.0, 30.0))
    lifetime = ttl * rng.choice((1.0, 1.0, 0.5, 0.25))
    refusals = tuple(
        (rng.choice((0.0, rng.uniform(0.0, 30.0))), rng.choice((0.5, 2.5, 20.0, 600.0)),
         rng.choice(TOKEN_REFUSALS))
        for _ in range(1 if rng.random() < 0.15 else 0))
    return ttl, lifetime, refusals


def _draw_algorithm(seed: int) -> str:
    """`--concurrency-algorithm`, from its own generator (every earlier draw stays as it was,
    and is described on the paths line): Gradient2 in a fifth of the seeds, so the promises
    are checked under both ways of sizing the window."""
    return ALGORITHMS[1] if random.Random(f"{seed}-algorithm").random() < 0.2 else ALGORITHMS[0]


def _draw_paths(seed: int) -> tuple[str, str, bool, bool]:
    """The user paths a seed takes, from their own generator: the input's form (a CSV file in
    most seeds), whether the last report is fed back in (about a quarter, half of those with
    --include-final), whether `verify` follows (a fifth), and `preflight` (a sixth)."""
    rng = random.Random(f"{seed}-paths")
    draw = rng.random()
    form = "frame" if draw < 0.1 else "parquet" if draw < 0.2 else "csv"
    feedback = rng.choice(FEEDBACK[1:]) if rng.random() < 0.25 else ""
    return form, feedback, rng.random() < 0.2, rng.random() < 0.17
