"""The retry policy as a value: the backoff's ceilings, its full jitter, and when a row gives
up (attempts counted, or a time budget from the first request)."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from batch_cancel.send.retry import Backoff, RetryPolicy


class Fraction(random.Random):
    """Draws `share` of every range, and records the ranges asked for."""

    def __init__(self, share: float) -> None:
        super().__init__(0)
        self.share = share
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return a + (b - a) * self.share


def test_the_default_backoff_doubles_from_1_s_up_to_60_s() -> None:
    assert [Backoff().ceiling(n) for n in range(1, 9)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0,
                                                           60.0, 60.0]


def test_a_backoff_of_its_own_base_and_cap() -> None:
    assert [Backoff(0.5, 3.0).ceiling(n) for n in range(1, 5)] == [0.5, 1.0, 2.0, 3.0]


def test_each_wait_is_drawn_uniformly_from_zero_to_the_ceiling() -> None:
    rng = Fraction(0.3)
    assert [Backoff(1.0, 60.0).delay(n, rng) for n in (1, 2, 3)] == [0.3, 0.6, 1.2]
    assert rng.ranges == [(0.0, 1.0), (0.0, 2.0), (0.0, 4.0)]


def test_the_policy_waits_what_its_backoff_draws() -> None:
    rng = Fraction(0.25)
    assert RetryPolicy(5, Backoff(2.0, 60.0)).delay(3, rng) == 2.0
    assert rng.ranges == [(0.0, 8.0)]


def test_the_policy_by_default_backs_off_from_1_s_and_has_no_time_budget() -> None:
    policy = RetryPolicy(3)
    assert policy.delay(1, Fraction(1.0)) == 1.0
    assert policy.budget == math.inf
    assert not policy.exhausted(0, 1e12, 1e12)


@pytest.mark.parametrize(("counted", "gives_up"), [(0, False), (2, False), (3, True),
                                                   (4, True)])
def test_a_row_gives_up_once_its_counted_failures_reach_max_attempts(counted: int,
                                                                     gives_up: bool) -> None:
    assert RetryPolicy(3).exhausted(counted, 0.0) is gives_up


@pytest.mark.parametrize(("elapsed", "delay", "gives_up"), [
    (10.0, 0.0, False), (9.0, 1.0, False), (10.001, 0.0, True), (9.0, 1.001, True),
    (0.0, 10.5, True)])
def test_a_row_gives_up_when_the_next_wait_would_end_past_its_budget(
        elapsed: float, delay: float, gives_up: bool) -> None:
    """The budget is 10 s: a wait ending exactly at it is still allowed."""
    assert RetryPolicy(100, budget=10.0).exhausted(1, elapsed, delay) is gives_up


def test_without_a_delay_only_the_time_already_spent_counts() -> None:
    policy = RetryPolicy(100, budget=10.0)
    assert (policy.exhausted(1, 10.0), policy.exhausted(1, 10.5)) == (False, True)


@pytest.mark.parametrize("value", [Backoff(), RetryPolicy(3)])
def test_a_policy_is_one_frozen_value_without_an_instance_dict(value: object) -> None:
    """Shared by every row of a run: nobody can change it under another row's feet, and
    one per pool costs no per-instance dict."""
    field = dataclasses.fields(value)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, 2.0)
    assert not hasattr(value, "__dict__")
