"""Waits that double with every failure in a row."""

from __future__ import annotations

from watchbridge.backoff import doubled


def test_a_wait_doubles_with_each_failure() -> None:
    assert [doubled(5.0, times) for times in range(4)] == [5.0, 10.0, 20.0, 40.0]


def test_no_failure_yet_is_the_base_wait() -> None:
    assert doubled(5.0, -1) == 5.0


def test_thousands_of_failures_in_a_row_stay_a_number() -> None:
    assert doubled(5.0, 5000) == doubled(5.0, 64)  # 2 ** 1024 is too large for a float
