"""Lenient whole numbers: the one reader every adapter and dataset parser uses."""

from __future__ import annotations

from typing import Any

import pytest

from watchbridge.loose import whole


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(7, 7), ("7", 7), (" 12 ", 12), ("-3", -3), (4.0, 4)],
        *[(4.5, None), ("4.5", None), (True, None), (None, None), ("", None), ("abc", None)],
    ],
)
def test_whole_reads_numbers_and_numeric_strings_only(value: Any, expected: int | None) -> None:
    assert whole(value) == expected
