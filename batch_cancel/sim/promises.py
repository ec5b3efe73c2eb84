"""The promises every seeded run must keep, checked against what the world saw.

The report and exit code of each finished run, the requests the tenant received and what it
accepted, the token endpoint's answers, and everything the runs wrote or said: `judge` names
each broken promise as a sentence (rows once, statuses true to the tenant, no second cancel
without a read, limits and pauses kept, nothing sent after a stop, a stop for authentication
exactly when the token endpoint refused for good, and no secret or token in any output).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

from ..model import DONE, STOP_EXIT_CODES, Status, StopKind
from ..send.zuora import TOKEN_TRIES
from .feedback import FedBack, carried_rows, judge_feedback
from .inputs import row_numbers
from .readonly import Previewed, Verified, judge_preflight, judge_verify
from .records import Ledger, Request, TokenRequest
from .schedule import Schedule
from .world import DAY, World

__all__ = ["KNOWN", "NEVER_LEFT", "RESENT_AFTER_401", "is_known", "judge"]


def judge(schedule: Schedule, world: World, ledgers: list[Ledger],
          fed: FedBack | None = None, verified: Verified | None = None,
          previewed: Previewed | None = None) -> list[str]:
    """Every promise the report and the requests must keep; the broken ones, as sentences.
    `fed`: the last report fed back in as a new command's input; `verified`: `verify` of the
    chain's report; `previewed`: `preflight` of its input (each if the schedule had it)."""
    problems: list[str] = []
    finished = [ledger for ledger in ledgers if not ledger.crashed]
    if not finished:
        return ["no run of the chain finished"]
    legs = [(ledgers, row_numbers(schedule), set[str]())]
    if fed is not None and fed.plans:
        legs.append((fed.ledgers, [row["row"] for row in fed.rows], carried_rows(fed)))
    every = [ledger for leg, _, _ in legs for ledger in leg]
    for leg, expected, carried in legs:
        for ledger in leg:
            if not ledger.crashed:
                problems += _rows_once(expected, ledger)
                problems += _exit_code_matches(ledger, carried)
    problems += _truthful(world, finished[-1], {x.run for x in ledgers if x.crashed},
                          range(len(ledgers)))
    problems += _no_cancel_after_accept_without_read(world)
    problems += _no_resend_in_doubt_without_read(world)
    readers = [x.run for x in (previewed, verified) if x is not None]
    for run in [*range(len(every)), *readers]:
        problems += _limits_kept(schedule, world, run)
    problems += _nothing_sent_after_stop(world)
    for ledger in every:
        if not ledger.crashed:
            problems += _auth_stop_is_true(world, ledger)
    problems += _no_secret_in_outputs(world, every)
    return (problems + judge_feedback(world, fed) + judge_verify(world, verified)
            + judge_preflight(schedule, world, previewed))


#: Broken promises the search found that are not fixed yet: counted and printed, but a seed
#: that breaks only these passes `check_seed` (a strict xfail test keeps each one in view).
#: None today. Fixed ones count as violations again: a request started after the stop (seed
#: 535); a row marked in doubt though its request never left (seed 88); a request answered
#: 401 resent by the client the moment it had a new token, inside a 429 pause (seeds 3803,
#: 11778) or after the stop (seed 6726): the resend now goes through the limits.
NEVER_LEFT = "marked in doubt though no request of ours for it can have been applied"
RESENT_AFTER_401 = "resent after a 401"
KNOWN: tuple[str, ...] = ()


def is_known(violation: str) -> bool:
    """Whether a violation is one of KNOWN."""
    return any(known in violation for known in KNOWN)


def _nothing_sent_after_stop(world: World) -> Iterator[str]:
    """Once a run stops (Ctrl-C, outage, quota, auth), no request of it starts: a worker that
    was waiting for a place in the window when the stop came must not send either."""
    late = [r for r in world.requests if r.after_stop]
    resent = [r for r in late
              if _resends_a_401([q for q in world.requests if q.run == r.run], r)]
    for what, found in (("started", [r for r in late if r not in resent]),
                        (RESENT_AFTER_401, resent)):
        if found:
            first = found[0]
            yield (f"{len(found)} requests {what} after the run stopped (first: run "
                   f"{first.run} {first.kind} {first.key} at {first.arrived:.3f} s)")


def _rows_once(expected: list[str], ledger: Ledger) -> Iterator[str]:
    """The report has every row of its input once, in the input's order."""
    numbers = [row["row"] for row in ledger.rows]
    if numbers != expected:
        yield (f"run {ledger.run}: the report's rows are {numbers[:10]}..., not every input "
               f"row once in order ({len(numbers)} of {len(expected)})")


def _exit_code_matches(ledger: Ledger, carried: set[str]) -> Iterator[str]:
    """The exit code the report stands for; rows carried over from a report fed back in
    (`carried`, by row number) keep their status but never change the exit code."""
    statuses = [row["status"] for row in ledger.rows]
    if ledger.stop_kind:
        expected = int(STOP_EXIT_CODES[StopKind(ledger.stop_kind)])
    else:
        if Status.NOT_ATTEMPTED in statuses:
            yield f"run {ledger.run}: rows not_attempted although the run did not stop"
        by_row = {row["row"]: row["status"] for row in ledger.rows}
        done = all(
            status in DONE or (status == Status.DUPLICATE and _owner_done(row, by_row))
            for row, status in zip(ledger.rows, statuses, strict=True)
            if row["row"] not in carried)
        expected = 0 if done else 1
    if ledger.exit_code != expected:
        yield (f"run {ledger.run}: exit code {ledger.exit_code}, but the report "
               f"({_count(statuses)}, stop {ledger.stop_kind or 'none'}) means {expected}")


def _owner_done(row: dict[str, str], by_row: dict[str, str]) -> bool:
    words = row["error_message"].split()
    owner = words[3] if len(words) > 3 else ""
    return by_row.get(owner) in DONE


def _truthful(world: World, ledger: Ledger, crashed: set[int], runs: range) -> Iterator[str]:
    """Each row's status against what the tenant really did over the whole chain (its
    `runs`: a report fed back in later is judged on its own)."""
    accepted: dict[str, list[Any]] = {}
    for acceptance in world.accepted:
        if acceptance.run in runs:
            accepted.setdefault(acceptance.key, []).append(acceptance)
    doubted = {r.key for r in world.requests if r.kind == "cancel" and r.run in runs and (
        r.answer is None or r.answer.in_doubt or r.run in crashed)}
    for row in ledger.rows:
        key, status, doubt = row["invoice_key"], row["status"], row["in_doubt"] == "yes"
        ours = accepted.get(key, [])
        where = f"row {row['row']} ({key or 'no key'}) {status}"
        if status == Status.INVALID and any(r.key == key for r in world.requests):
            yield f"{where}, but a request was sent for it"
        if status == Status.SUCCEEDED and not ours and not (
                "CANCELLED" in key and (key in doubted or (crashed and "verified after resume"
                                        in row["error_message"]))):
            # allowed: cancelled before the run, then a request of ours went unanswered (or its
            # answer died with the process, or the process died between journaling it and
            # sending it): the read that follows cannot tell whose cancel it sees
            if "CANCELLED" in key:  # and no request of ours for it can have been applied
                yield (f"{where}, but no cancel of ours was accepted: it was {NEVER_LEFT} "
                       "and later read as cancelled")
            else:
                yield f"{where}, but no cancel of ours was ever accepted for it"
        elif status == Status.SKIPPED and (ours or "CANCELLED" not in key):
            yield (f"{where}, but it was {'cancelled by this run' if ours else 'not cancelled'}"
                   " before")
        elif status in (Status.FAILED, Status.NOT_ATTEMPTED) and not doubt:
            # a refusal by the tax authority makes a failure true only when the row says so
            refused = "CancelFailed" in row["error_message"]
            landed = [a for a in ours if not (a.will_fail and refused) and not a.late]
            if landed:
                yield (f"{where} and not in doubt, but our cancel was accepted at "
                       f"{landed[0].at:.3f} s (run {landed[0].run})")


def _no_cancel_after_accept_without_read(world: World) -> Iterator[str]:
    """The double-cancel risk: once a cancel of ours was accepted, no other cancel request
    for that invoice unless a read of it came between the two requests."""
    accepted: dict[str, list[Any]] = {}
    for acceptance in world.accepted:
        accepted.setdefault(acceptance.key, []).append(acceptance)
    reads: dict[str, list[float]] = {}
    for request in world.requests:  # in arrival order
        if request.kind == "read":
            reads.setdefault(request.key, []).append(request.arrived)
            continue
        for acceptance in accepted.get(request.key, ()):
            if acceptance.at < request.arrived and not any(
                    acceptance.sent_at < read < request.arrived
                    for read in reads.get(request.key, ())):
                yield (f"cancel of {request.key} sent at {request.arrived:.3f} s (run "
                       f"{request.run}) after ours sent at {acceptance.sent_at:.3f} s was "
                       f"accepted at {acceptance.at:.3f} s, with no read between")
                break


def _no_resend_in_doubt_without_read(world: World) -> Iterator[str]:
    """A cancel whose answer left it in doubt (or that got none: timeout, dropped, lost with
    the process) is never followed by another cancel of that invoice before a read."""
    doubt: dict[str, float] = {}
    events: list[tuple[float, int, Any]] = []
    for n, request in enumerate(world.requests):
        events.append((request.arrived, n, request))
        if request.kind == "cancel" and (request.answer is None or request.answer.in_doubt):
            events.append((request.answered or request.arrived, n, None))
    for at, n, request in sorted(events, key=lambda e: (e[0], e[1], e[2] is None)):
        original = world.requests[n]
        if request is None:  # the in-doubt answer (or its absence) reaches the client
            doubt[original.key] = at
        elif request.kind == "read":
            doubt.pop(request.key, None)
        elif request.key in doubt:
            yield (f"cancel of {request.key} resent at {request.arrived:.3f} s (run "
                   f"{request.run}) after an in-doubt answer at {doubt[request.key]:.3f} s, "
                   "with no read between")
            doubt.pop(request.key)


def _limits_kept(schedule: Schedule, world: World, run: int) -> Iterator[str]:
    """No request during a pool-wide pause; never more in flight than the settings allow."""
    settings = schedule.settings
    mine = [r for r in world.requests if r.run == run]
    advertised: float | None = None
    ceiling = max(1, math.floor(settings.tenant_share * schedule.concurrency_limit))
    for request in mine:
        if request.ours > settings.concurrency:
            yield (f"run {run}: {request.ours} requests in flight at {request.arrived:.3f} s, "
                   f"past --concurrency {settings.concurrency}")
        if advertised is not None and request.arrived > advertised and request.ours > ceiling:
            yield (f"run {run}: {request.ours} requests in flight at {request.arrived:.3f} s, "
                   f"past --tenant-share of the advertised limit ({ceiling})")
        answer = request.answer
        if answer is not None and answer.concurrency_limit is not None and advertised is None:
            advertised = request.answered
    pause_all = settings.concurrency_429 == "pause"
    for request in mine:
        answer = request.answer
        if answer is None or request.answered is None or not answer.rate_limited:
            continue
        if answer.concurrency_limited and not pause_all:
            continue  # the window shrinks instead (documented)
        if answer.quota_window is not None and answer.quota_window >= DAY:
            continue  # the daily quota is gone: the run stops instead of pausing
        until = request.answered + (answer.retry_after if answer.retry_after is not None
                                    else 5.0)
        early = [r for r in mine
                 if request.answered < r.arrived < until - 1e-9 and not r.after_stop]
        resent = [r for r in early if _resends_a_401(mine, r)]
        for what, found in (("started", [r for r in early if r not in resent]),
                            (RESENT_AFTER_401, resent)):
            if found:
                yield (f"run {run}: {len(found)} requests {what} during the pause from "
                       f"{request.answered:.3f} s to {until:.3f} s after a 429 "
                       f"(first: {found[0].kind} {found[0].key} at {found[0].arrived:.3f} s)")


def _resends_a_401(mine: list[Request], request: Request) -> bool:
    """Whether `request` is the client's own resend of a request answered 401 (the client
    fetches a token and sends again at once; a row's second try is never after a 401)."""
    before = [r for r in mine if r.key == request.key and r.kind == request.kind
              and r.arrived < request.arrived]
    last = before[-1] if before else None
    return last is not None and last.answer is not None and last.answer.http_status == 401


def _count(statuses: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))




def _auth_stop_is_true(world: World, ledger: Ledger) -> Iterator[str]:
    """A run stops for authentication exactly when the token endpoint refused it for good:
    401 invalid_client, or TOKEN_TRIES refusals in a row (a 401 of an expired token is met
    with a refresh, never with a stop)."""
    fatal = _fatal_refusal([t for t in world.token_requests if t.run == ledger.run])
    if ledger.stop_kind == StopKind.AUTH and fatal is None:
        yield (f"run {ledger.run} stopped for authentication, but the token endpoint never "
               "refused it for good")
    elif fatal is not None and not ledger.stop_kind:
        yield (f"run {ledger.run}: the token endpoint refused for good at {fatal:.3f} s "
               f"({_count(t.result for t in world.token_requests if t.run == ledger.run)}), "
               "but the run did not stop")


def _fatal_refusal(requests: list[TokenRequest]) -> float | None:
    """When the client had to give up on a token (None: it never had to)."""
    in_a_row = 0
    for request in requests:
        if request.result == "invalid_client":
            return request.at
        in_a_row = 0 if request.result == "granted" else in_a_row + 1
        if in_a_row >= TOKEN_TRIES:
            return request.at
    return None


def _no_secret_in_outputs(world: World, ledgers: list[Ledger]) -> Iterator[str]:
    """Neither the client secret nor any token issued appears in a report, journal, log event,
    stop reason or error of any run."""
    tokens = set(world.tokens.issued())
    for ledger in ledgers:
        if world.secret in ledger.outputs:
            yield f"run {ledger.run}: the client secret appears in what the run wrote or said"
        leaked = tokens.intersection(_hex_windows(ledger.outputs, _TOKEN_LENGTH))
        if leaked:
            yield (f"run {ledger.run}: {len(leaked)} access tokens appear in what the run "
                   "wrote or said")


#: Characters in a token the world issues (hex; see `World`).
_TOKEN_LENGTH = 32
_HEX_RUN = re.compile(rf"[0-9a-f]{{{_TOKEN_LENGTH},}}")


def _hex_windows(text: str, length: int) -> Iterator[str]:
    """Every `length`-character stretch of hex digits in `text`: one pass finds a token
    wherever it sits, where looking for each of thousands of tokens would take one each."""
    for match in _HEX_RUN.finditer(text):
        run = match.group()
        for start in range(len(run) - length + 1):
            yield run[start:start + length]
