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


@pytest.mark.parametrize("unrated", [0, -1, None])
def test_zero_or_missing_means_unrated(unrated: float | None) -> None:
    assert ratings.from_ten(unrated) is None


@pytest.mark.parametrize(("internal", "trakt"), [(75, 8), (74, 7), (5, 1), (100, 10), (1, 1)])
def test_trakt_rounds_halves_up_and_never_leaves_1_to_10(internal: int, trakt: int) -> None:
    assert ratings.to_trakt(internal) == trakt


def test_a_rating_above_ten_reads_as_the_top_of_the_scale() -> None:
    assert ratings.from_ten(12) == 100


def test_the_smallest_rating_stays_a_rating_on_every_scale() -> None:
    # Never 0: every service reads 0 as "not rated".
    assert ratings.from_ten(0.01) == 1
    assert ratings.to_ten_halves(1) == 0.5
    assert ratings.to_serializd(1) == 1


def test_a_rating_given_after_its_change_was_queued_is_overtaken_only_after_it() -> None:
    assert ratings.overtaken_after(given_at=200.0, planned_from=100.0) == 200.0
    assert ratings.overtaken_after(given_at=100.0, planned_from=200.0) == 200.0


@pytest.mark.parametrize(
    ("service", "internal", "kept"),
    [
        ("trakt", 75, 80),
        ("serializd", 75, 80),
        ("plex", 75, 75),
        ("plex", 73, 75),
        ("anilist", 73, 73),
    ],
)
def test_each_service_keeps_what_its_scale_can_hold(service: str, internal: int, kept: int) -> None:
    assert ratings.kept_by(service, internal) == kept


def test_a_rating_and_what_it_became_on_a_coarser_side_are_one_rating() -> None:
    assert ratings.same_on_both("plex", 75, "trakt", 80)  # Plex's 7.5 is 8 on Trakt
    assert ratings.same_on_both("trakt", 80, "plex", 75)
    assert not ratings.same_on_both("plex", 85, "trakt", 80)


@pytest.mark.parametrize(
    ("coarse", "fine", "rounded"),
    [
        (80, 75, True),  # AniList's 75 (or Plex's 7.5) as Trakt keeps it
        (40, 35, True),
        (10, 1, True),
        (80, 80, False),  # the same rating, not a rounding
        (70, 75, False),
        (75, 80, False),
    ],
)
def test_a_whole_point_is_known_as_the_rounding_of_a_finer_rating(
    coarse: int, fine: int, rounded: bool
) -> None:
    assert ratings.rounded_from(coarse, fine) is rounded
