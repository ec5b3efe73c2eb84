"""What the client makes of each answer, field by field: the pure functions of `send/answers`
(classification, rate headers, Retry-After, reason texts) and the client's cancel body, called
directly with exact expected values."""

from __future__ import annotations

import json

import pytest

from batch_cancel.model import Answer, CancelJob, Verdict
from batch_cancel.send.answers import (
    classify,
    invoice_state_from,
    parse_policy,
    quota,
    rate_headers,
    retry_after,
)
from batch_cancel.send.zuora import cancel_body


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def failure(code: int | str, message: str = "m") -> bytes:
    return body({"success": False, "reasons": [{"code": code, "message": message}]})


# --- statuses without a Zuora reason code ----------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_bare_gateway_or_server_error_is_retried_and_in_doubt_by_its_status_alone(
        status: int) -> None:
    """An empty 5xx of the retryable kind (a load balancer's) carries no category: the status
    alone makes it a retry after a check, with its plain status as the message."""
    assert classify(status, {}, b"") == Answer(
        Verdict.RETRY, http_status=status, error_message=f"HTTP {status}", in_doubt=True)


@pytest.mark.parametrize("status", [501, 505, 507, 520, 522, 524, 599])
def test_any_other_bare_5xx_is_in_doubt_too(status: int) -> None:
    """A 5xx without a Zuora code came from something between the client and Zuora (a
    proxy's 524 "origin timed out", a 501 page): the cancel may have been applied behind it,
    so it is read before anything is resent, never called final."""
    answer = classify(status, {}, b"<html>origin timed out</html>")
    assert answer.verdict is Verdict.RETRY and answer.in_doubt
    assert classify(status, {}, b"") == Answer(
        Verdict.RETRY, http_status=status, error_message=f"HTTP {status}", in_doubt=True)


def test_a_5xx_with_a_final_zuora_code_is_decided_by_its_category() -> None:
    """A Zuora body on a 5xx outside the retryable four keeps Zuora's word: category 40
    (not found) is final."""
    body = b'{"success": false, "reasons": [{"code": 59210040, "message": "not found"}]}'
    answer = classify(501, {}, body)
    assert answer.verdict is Verdict.FINAL and not answer.in_doubt


def test_a_bare_429_is_a_rate_limit_retried_without_doubt() -> None:
    """An empty 429 was refused before it was applied: retried, nothing in doubt."""
    assert classify(429, {}, b"") == Answer(
        Verdict.RETRY, http_status=429, error_message="HTTP 429", rate_limited=True)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 413, 414, 415, 422])
def test_a_known_refusal_status_without_a_body_is_final_and_not_in_doubt(status: int) -> None:
    """Each status that means "refused" is final and says the request was not applied."""
    assert classify(status, {}, b"") == Answer(
        Verdict.FINAL, http_status=status, error_message=f"HTTP {status}")


@pytest.mark.parametrize("status", [399, 402, 406, 408, 410, 412, 416, 421, 423, 428, 430, 499])
def test_a_status_next_to_a_known_refusal_is_unknown_and_in_doubt(status: int) -> None:
    """Only the listed statuses are known refusals; their neighbours (and nginx's 499) say
    nothing of the request's fate, so the cancel may have been applied."""
    assert classify(status, {}, b"") == Answer(
        Verdict.FINAL, http_status=status, in_doubt=True,
        error_message=f"unreadable answer, the cancel may have been applied: HTTP {status}")


# --- what a 2xx is --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 299])
def test_success_true_counts_in_every_2xx(status: int) -> None:
    """`"success": true` is success anywhere from 200 to 299."""
    assert classify(status, {}, body({"success": True})) == Answer(
        Verdict.SUCCEEDED, http_status=status)


@pytest.mark.parametrize("status", [199, 300, 304])
def test_success_true_outside_2xx_is_not_success(status: int) -> None:
    """A body saying success under a status that is not 2xx is not taken at its word."""
    assert classify(status, {}, body({"success": True})).verdict is not Verdict.SUCCEEDED


@pytest.mark.parametrize("flag", [1, "true", None, [True]])
def test_success_must_be_the_boolean_true(flag: object) -> None:
    """`"success": 1` or `"true"` is not Zuora's boolean: not success."""
    answer = classify(200, {}, body({"success": flag}))
    assert (answer.verdict, answer.in_doubt) == (Verdict.RETRY, True)


@pytest.mark.parametrize("status", [200, 201, 299])
def test_an_unreadable_2xx_is_retried_after_a_check(status: int) -> None:
    """An empty or HTML 2xx may be a cancel that took effect: retry, in doubt."""
    assert classify(status, {}, b"<html>OK</html>") == Answer(
        Verdict.RETRY, http_status=status, in_doubt=True,
        error_message="unreadable answer, the cancel may have been applied: "
                      f"HTTP {status} with a non-JSON body: OK")


@pytest.mark.parametrize("status", [199, 300])
def test_an_unreadable_answer_outside_2xx_is_in_doubt_but_not_retried(status: int) -> None:
    """Outside 2xx an unreadable answer is still in doubt (the invoice is read), but only a
    2xx or a retryable status makes it a retry."""
    assert classify(status, {}, b"<html>OK</html>") == Answer(
        Verdict.FINAL, http_status=status, in_doubt=True,
        error_message="unreadable answer, the cancel may have been applied: "
                      f"HTTP {status} with a non-JSON body: OK")


@pytest.mark.parametrize(("status", "in_doubt"), [(199, True), (200, False), (201, False),
                                                  (299, False), (300, True)])
def test_success_false_without_reasons_is_a_refusal_only_in_2xx(status: int,
                                                                in_doubt: bool) -> None:
    """`"success": false` is Zuora's own refusal in a 2xx; under any other status without a
    code it says nothing sure."""
    assert classify(status, {}, body({"success": False})).in_doubt is in_doubt


@pytest.mark.parametrize(("status", "message"), [
    (199, "HTTP 199"),
    (200, 'answer without "success": true; check the invoice in Zuora'),
    (201, 'answer without "success": true; check the invoice in Zuora'),
    (299, 'answer without "success": true; check the invoice in Zuora'),
    (300, "HTTP 300"),
    (301, "HTTP 301"),
])
def test_a_json_object_without_success_or_reasons_names_what_is_missing_in_2xx(
        status: int, message: str) -> None:
    """A 2xx JSON object without `success` tells the user to check the invoice."""
    answer = classify(status, {}, body({"id": "x"}))
    assert answer.error_message == f"unreadable answer, the cancel may have been applied: {message}"


# --- categories -----------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "verdict", "in_doubt"), [
    (59210050, Verdict.RETRY, False),
    (59210060, Verdict.RETRY, True),
    (59210061, Verdict.RETRY, False),
    (59210070, Verdict.RETRY, False),
    (59210099, Verdict.RETRY, True),
    (59210059, Verdict.FINAL, False),
    (59210098, Verdict.FINAL, False),
    (59210030, Verdict.FINAL, False),
])
def test_only_categories_60_and_99_leave_a_cancel_in_doubt(code: int, verdict: Verdict,
                                                           in_doubt: bool) -> None:
    """Internal (60) and unknown (99) errors may have applied the cancel; lock contention (50),
    temporary (61) and limit (70) errors refused it."""
    answer = classify(200, {}, failure(code))
    assert (answer.verdict, answer.in_doubt) == (verdict, in_doubt)


def test_a_category_70_refusal_is_a_rate_limit_with_its_pause() -> None:
    """Category 70 in a 200 body is a limit like a 429: rate-limited, Retry-After read."""
    answer = classify(200, {"Retry-After": "5"}, failure(59210070))
    assert (answer.rate_limited, answer.retry_after, answer.verdict) == (True, 5.0, Verdict.RETRY)


@pytest.mark.parametrize(("status", "code"), [(200, 59210060), (200, 59210099),
                                              (200, 59210071), (200, 59210069),
                                              (503, 59210060), (404, 59210040),
                                              (428, ""), (430, "")])
def test_retry_after_is_read_only_for_a_429_or_category_70(status: int, code: int | str) -> None:
    """Other answers (a 503 included) carry no pause and are no rate limit, whatever their
    headers say."""
    answer = classify(status, {"Retry-After": "5"}, failure(code) if code else b"")
    assert (answer.rate_limited, answer.retry_after) == (False, None)


@pytest.mark.parametrize(("code", "limited"), [("50000070", True), (50000070, True),
                                               ("59210070", False), ("50000060", False),
                                               ("40000070", False)])
def test_only_code_50000070_is_the_concurrency_limit(code: int | str, limited: bool) -> None:
    """Zuora's concurrency refusal is one exact code; other category-70 codes are the rate."""
    answer = classify(429, {}, failure(code))
    assert (answer.concurrency_limited, answer.rate_limited) == (limited, True)


# --- reason codes and messages --------------------------------------------------------------


def test_the_first_reason_decides_and_every_message_is_kept() -> None:
    """With several reasons the first code decides; the messages are joined."""
    data = body({"success": False, "processId": "P9",
                 "reasons": [{"code": 59210030, "message": "a"}, {"code": 59210050},
                             {"code": 59210060, "message": "c"}]})
    assert classify(200, {"Zuora-Request-Id": "R9"}, data) == Answer(
        Verdict.FINAL, http_status=200, error_code="59210030", error_message="a; c",
        zuora_request_id="R9", process_id="P9")


def test_a_malformed_later_reason_does_not_hide_the_first_code() -> None:
    """A reason that is not an object, after a good one, is skipped."""
    data = body({"success": False, "reasons": [{"code": 59210030, "message": "a"}, "junk"]})
    answer = classify(200, {}, data)
    assert (answer.error_code, answer.error_message) == ("59210030", "a")


def test_a_malformed_first_reason_gives_no_code() -> None:
    """A first reason that is not an object gives no code (the later messages still show)."""
    data = body({"success": False, "reasons": ["junk", {"code": 59210030, "message": "b"}]})
    answer = classify(200, {}, data)
    assert (answer.error_code, answer.error_message) == ("", "b")


@pytest.mark.parametrize(("data", "code", "message"), [
    ({"message": "slow down"}, "", "slow down"),
    ({"code": 90000011, "message": "no access"}, "90000011", "no access"),
    ({"code": None, "message": "m"}, "", "m"),
    ({"error": "invalid_client", "error_description": "Bad client"}, "", "Bad client"),
    ({"error": "invalid_client"}, "", "invalid_client"),
    ({"Errors": [{"Message": "x"}]}, "", "[{'Message': 'x'}]"),
    ({"reasons": "broken", "message": "m"}, "", "m"),
    ({"reasons": [], "message": "m"}, "", "m"),
    ({"message": "x" * 600}, "", "x" * 500),
])
def test_error_bodies_of_other_shapes_give_their_code_and_message(
        data: dict[str, object], code: str, message: str) -> None:
    """`message`, OAuth's `error_description`/`error` and `Errors` are read, in that order,
    with a top-level `code`; a long message is cut at 500 characters."""
    answer = classify(400, {}, body(data))
    assert (answer.error_code, answer.error_message) == (code, message)


def test_a_top_level_code_is_categorised_like_a_reason_code() -> None:
    """`{"code": ..., "message": ...}` without `reasons` still decides by its category."""
    answer = classify(500, {}, body({"code": "50000061", "message": "temporarily"}))
    assert (answer.verdict, answer.in_doubt, answer.error_code) == (Verdict.RETRY, True,
                                                                    "50000061")


def test_a_2xx_with_an_empty_reasons_list_asks_for_a_check() -> None:
    """`"reasons": []` in a 2xx names no code: the user is told to check the invoice."""
    answer = classify(200, {}, body({"success": False, "reasons": []}))
    assert answer.error_message == 'answer without "success": true; check the invoice in Zuora'


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "HTTP 502"),
    (b"  \n ", "HTTP 502"),
    (b"<html></html>", "HTTP 502 with a non-JSON body: (empty)"),
    (b"<html><body>\n  <h1>Bad   Gateway</h1>\n</body></html>",
     "HTTP 502 with a non-JSON body: Bad Gateway"),
    (b"x" * 300, "HTTP 502 with a non-JSON body: " + "x" * 200),
    (b" " * 3998 + b"abcdef", "HTTP 502 with a non-JSON body: ab"),
])
def test_a_non_json_body_is_quoted_as_one_short_line(raw: bytes, message: str) -> None:
    """Tags and runs of spaces go, at most 200 characters of the first 4000 bytes stay."""
    assert classify(502, {}, raw).error_message == message


# --- rate headers ---------------------------------------------------------------------------


POLICY = "2250000, 50000;w=60, 2250000;w=3600"


def test_a_zuora_policy_gives_remaining_the_closest_window_reset_and_every_window() -> None:
    """The window counted by Remaining is the one whose quota is the policy's first number."""
    headers = {"RateLimit-Limit": POLICY, "RateLimit-Remaining": "1200",
               "RateLimit-Reset": "17.5"}
    windows = ((50000, 60.0), (2250000, 3600.0))
    assert rate_headers(headers) == (1200, 3600, 17.5, windows)
    assert quota(headers) == (1200, 3600)
    answer = classify(200, headers, body({"success": True}))
    assert (answer.quota_remaining, answer.quota_window, answer.quota_reset,
            answer.rate_windows) == (1200, 3600, 17.5, windows)


def test_the_closest_window_is_the_first_with_exactly_the_first_quota() -> None:
    """Neither a larger nor a smaller quota's window is taken for the counted one."""
    headers = {"RateLimit-Limit": "300, 500;w=60, 100;w=5, 300;w=1, 300;w=9",
               "RateLimit-Remaining": "7"}
    assert quota(headers) == (7, 1)


@pytest.mark.parametrize(("policy", "reset", "window"), [
    ("1, 1;w=60, 1;w=86400", "86400", 86400),  # seed 34798: the day counts down, not a minute
    ("1, 1;w=60, 1;w=86400", "5", 60),
    ("1, 1;w=60, 1;w=86400", "60", 60),
    ("1, 1;w=86400, 1;w=60", "30", 60),        # whatever the order the windows come in
    ("300, 300;w=1, 300;w=9", "5", 9),
    ("300, 300;w=1, 300;w=9", "12", 9),        # a Reset no window fits: the longest
])
def test_windows_of_the_same_quota_are_told_apart_by_reset(policy: str, reset: str,
                                                           window: int) -> None:
    """When the counted quota is the quota of several windows, Reset names the one: it
    cannot count down more seconds than its window is long. Read as a minute, a used-up daily
    quota of 1 made a run wait day after day instead of stopping for the quota."""
    headers = {"RateLimit-Limit": policy, "RateLimit-Remaining": "0", "RateLimit-Reset": reset}
    assert quota(headers) == (0, window)


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, (None, None, None, ())),
    ({"RateLimit-Remaining": "5"}, (5, None, None, ())),
    ({"RateLimit-Remaining": "many", "RateLimit-Limit": "10;w=1"}, (None, None, None,
                                                                    ((10, 1.0),))),
    ({"RateLimit-Remaining": "5", "RateLimit-Reset": "soon"}, (5, None, None, ())),
    ({"RateLimit-Remaining": "5", "RateLimit-Limit": "10, 20;w=1"}, (5, None, None,
                                                                     ((20, 1.0),))),
])
def test_missing_or_unreadable_rate_headers_give_none(
        headers: dict[str, str], expected: tuple[object, ...]) -> None:
    """Absent or non-numeric headers are unknown, never an error."""
    assert rate_headers(headers) == expected


@pytest.mark.parametrize(("policy", "expected"), [
    (POLICY, (2250000, ((50000, 60.0), (2250000, 3600.0)))),
    ("100, junk;w=5, 50;w=60", (100, ((50, 60.0),))),
    ("junk, 50;w=60", (None, ((50, 60.0),))),
    ("100;q=5;w=60;x=7;a=9", (100, ((100, 60.0),))),
    ("10;w=0, 20;w=-5, 30;w=0.5, 40;w=abc, 50;w", (10, ((30, 0.5),))),
    ("0;w=60, -1;w=60", (0, ((0, 60.0),))),
    ("", (None, ())),
])
def test_a_policy_keeps_the_windows_it_understands(
        policy: str, expected: tuple[object, ...]) -> None:
    """Only `w=` names a window, of positive length and a quota not below zero; items that do
    not parse are skipped and those after them kept."""
    assert parse_policy(policy) == expected


def test_a_policy_string_is_parsed_once() -> None:
    """A tenant sends the same policy on every answer: the parse is reused, not redone."""
    policy = "77, 77;w=1, 88;w=2"
    assert parse_policy(policy) is parse_policy(policy)


@pytest.mark.parametrize(("headers", "limit", "free"), [
    ({"Concurrency-Limit-Limit": "40", "Concurrency-Limit-Remaining": "3"}, 40, 3),
    ({"Concurrency-Limit-Limit": "lots", "Concurrency-Limit-Remaining": "3"}, None, 3),
    ({}, None, None),
])
def test_concurrency_limit_headers_are_read_as_numbers(headers: dict[str, str],
                                                       limit: int | None,
                                                       free: int | None) -> None:
    """The tenant's concurrency limit and what is left of it, or None when not a number."""
    answer = classify(200, headers, body({"success": True}))
    assert (answer.concurrency_limit, answer.concurrency_remaining) == (limit, free)


# --- Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"Retry-After": "0"}, 0.0),
    ({"Retry-After": "0.5"}, 0.5),
    ({"Retry-After": "", "RateLimit-Reset": "4"}, 4.0),
    ({"Retry-After": "soon", "RateLimit-Reset": "4"}, 4.0),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000", "RateLimit-Reset": "4"}, 4.0),
    ({"RateLimit-Reset": "7"}, 7.0),
    ({"RateLimit-Reset": "0"}, 0.0),
    ({"RateLimit-Remaining": " 0 ", "RateLimit-Reset": "7"}, 7.0),
    ({"RateLimit-Remaining": "5", "RateLimit-Reset": "7"}, None),
    ({"RateLimit-Remaining": "", "RateLimit-Reset": "7"}, None),
    ({"RateLimit-Remaining": "0", "RateLimit-Reset": "soon"}, None),
    ({"RateLimit-Remaining": "0"}, None),
    ({"RateLimit-Remaining": "5"}, None),
    ({}, None),
])
def test_the_pause_comes_from_retry_after_else_from_reset_when_nothing_is_left(
        headers: dict[str, str], seconds: float | None) -> None:
    """Retry-After in seconds or as a zoned HTTP date; otherwise RateLimit-Reset, but only
    when Remaining is 0 or absent. A date without a zone (`-0000`) is not trusted."""
    assert retry_after(headers) == seconds


# --- what is sent, and what a read says ------------------------------------------------------


@pytest.mark.parametrize(("reason", "reference", "sent"), [
    ("01", "DM1", {"reason": "01", "documentReferenceID": "DM1"}),
    ("".join(["0", "1"]), "DM1", {"reason": "01", "documentReferenceID": "DM1"}),
    ("01", "", {"reason": "01"}),
    ("00", "DM1", {"reason": "00"}),
    ("02", "DM1", {"reason": "02"}),
    ("04", "", {"reason": "04"}),
])
def test_the_cancel_body_carries_the_reference_only_with_reason_01(
        reason: str, reference: str, sent: dict[str, str]) -> None:
    """The replacing document goes with reason 01 alone (a reason read from a file, a fresh
    string, included), and nothing else goes at all."""
    assert json.loads(cancel_body(CancelJob(2, "INV1", reason, reference))) == sent


@pytest.mark.parametrize(("data", "status", "code", "message"), [
    ({"eInvoiceStatus": "Failed", "eInvoiceErrorCode": "E7",
      "eInvoiceErrorMessage": "rejected"}, "Failed", "E7", "rejected"),
    ({"eInvoiceStatus": "Success"}, "Success", "", ""),
    ({"eInvoiceStatus": "Failed", "eInvoiceErrorCode": None,
      "eInvoiceErrorMessage": None}, "Failed", "", ""),
    ({"eInvoiceStatus": 3, "eInvoiceErrorCode": 42}, None, "42", ""),
    ([{"eInvoiceStatus": "Success"}], None, "", ""),
    (None, None, "", ""),
])
def test_an_invoice_read_gives_its_status_and_error_fields(
        data: object, status: str | None, code: str, message: str) -> None:
    """The e-invoice status when it is a string, the error fields as text ("" when absent)."""
    answer = Answer(Verdict.SUCCEEDED, http_status=200)
    state = invoice_state_from(answer, data)
    assert (state.einvoice_status, state.einvoice_error_code, state.einvoice_error_message,
            state.answer) == (status, code, message, answer)
