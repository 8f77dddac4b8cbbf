"""AniList score formats <-> the internal 0-100 scale, both ways, at every value."""

from __future__ import annotations

import pytest

from watchbridge import ratings

FORMATS = ratings.ANILIST_SCORE_FORMATS
EVERY_FORMAT_VALUE = [(f, v) for f in FORMATS for v in ratings.anilist_values(f)]


@pytest.mark.parametrize(("score_format", "score"), EVERY_FORMAT_VALUE)
def test_every_anilist_score_survives_a_trip_through_the_internal_scale(
    score_format: str, score: float
) -> None:
    internal = ratings.from_anilist(score, score_format)
    assert internal is not None and 1 <= internal <= 100
    assert ratings.to_anilist(internal, score_format) == score


@pytest.mark.parametrize("score_format", FORMATS)
@pytest.mark.parametrize("internal", range(1, 101))
def test_every_internal_value_lands_in_a_stable_bucket(score_format: str, internal: int) -> None:
    shown = ratings.to_anilist(internal, score_format)
    assert shown in ratings.anilist_values(score_format)
    back = ratings.from_anilist(shown, score_format)
    assert ratings.to_anilist(back or 0, score_format) == shown


@pytest.mark.parametrize("internal", range(1, 101))
def test_point_100_and_decimal_lose_nothing(internal: int) -> None:
    assert ratings.from_anilist(ratings.to_anilist(internal, "POINT_100"), "POINT_100") == internal
    decimal = ratings.to_anilist(internal, "POINT_10_DECIMAL")
    assert ratings.from_anilist(decimal, "POINT_10_DECIMAL") == internal


@pytest.mark.parametrize(
    ("score_format", "internal", "shown"),
    [
        ("POINT_10", 75, 7),  # as AniList shows a raw 75 to a POINT_10 user (§8)
        ("POINT_10", 80, 8),
        ("POINT_10", 5, 1),  # a tiny score is still a score
        ("POINT_5", 75, 4),  # PlexAniSync: raw 75 shows as 4 stars
        ("POINT_5", 70, 4),
        ("POINT_5", 69, 3),
        ("POINT_5", 10, 1),
        ("POINT_3", 35, 1),  # Mihon's cut-offs: <= 35 sad, <= 60 neutral, else happy
        ("POINT_3", 36, 2),
        ("POINT_3", 60, 2),
        ("POINT_3", 61, 3),
        ("POINT_10_DECIMAL", 75, 7.5),
    ],
)
def test_visible_values_follow_the_reference_table(
    score_format: str, internal: int, shown: float
) -> None:
    assert ratings.to_anilist(internal, score_format) == shown


@pytest.mark.parametrize(
    ("score_format", "score", "internal"),
    [
        ("POINT_5", 3, 60),
        ("POINT_3", 1, 30),
        ("POINT_3", 2, 60),
        ("POINT_3", 3, 90),
        ("POINT_10", 7, 70),
    ],
)
def test_format_scores_read_as_the_reference_table_says(
    score_format: str, score: float, internal: int
) -> None:
    assert ratings.from_anilist(score, score_format) == internal


@pytest.mark.parametrize("score_format", FORMATS)
@pytest.mark.parametrize("unrated", [0, 0.0, None])
def test_zero_means_unrated_in_every_format(score_format: str, unrated: float | None) -> None:
    assert ratings.from_anilist(unrated, score_format) is None


def test_ratings_in_one_visible_bucket_count_as_the_same() -> None:
    assert ratings.anilist_same(70, 80, "POINT_5")  # both 4 stars: no write
    assert not ratings.anilist_same(70, 80, "POINT_100")
    assert not ratings.anilist_same(70, None, "POINT_5")
    assert ratings.anilist_same(None, None, "POINT_3")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="POINT_7"):
        ratings.to_anilist(50, "POINT_7")
