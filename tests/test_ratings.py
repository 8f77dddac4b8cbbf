"""One ratings module converts every scale, both ways, at every value."""

from __future__ import annotations

import pytest

from watchbridge import ratings


@pytest.mark.parametrize("trakt", range(1, 11))
def test_trakt_round_trips(trakt: int) -> None:
    internal = ratings.from_ten(trakt)
    assert internal == trakt * 10
    assert ratings.to_trakt(internal) == trakt


@pytest.mark.parametrize("halves", range(1, 21))
def test_plex_half_stars_round_trip(halves: int) -> None:
    value = halves / 2
    internal = ratings.from_ten(value)
    assert internal is not None
    assert ratings.to_ten_halves(internal) == value


@pytest.mark.parametrize("serializd", range(1, 11))
def test_serializd_round_trips(serializd: int) -> None:
    internal = ratings.from_ten(serializd)
    assert internal is not None
    assert ratings.to_serializd(internal) == serializd


@pytest.mark.parametrize("point", range(1, 101))
def test_anilist_point_100_round_trips(point: int) -> None:
    internal = ratings.from_point_100(point)
    assert internal is not None
    assert ratings.to_point_100(internal) == point


@pytest.mark.parametrize("unrated", [0, -1, None])
def test_zero_or_missing_means_unrated(unrated: float | None) -> None:
    assert ratings.from_ten(unrated) is None


@pytest.mark.parametrize(("internal", "trakt"), [(75, 8), (74, 7), (5, 1), (100, 10), (1, 1)])
def test_trakt_rounds_halves_up_and_never_leaves_1_to_10(internal: int, trakt: int) -> None:
    assert ratings.to_trakt(internal) == trakt
