"""Pure request shaping for Trakt: ids, bodies, batching and not_found matching."""

from __future__ import annotations

from watchbridge.ids import TRAKT
from watchbridge.model import Ids, MediaRef
from watchbridge.services.trakt import (
    TokenSet,
    can_send,
    media_body,
    not_found_refs,
    sync_body,
    trakt_ids,
)

MOVIE = MediaRef("movie", Ids(imdb="tt0111161", tmdb="278"))
EPISODE_BY_NUMBER = MediaRef("episode", show_ids=Ids(tvdb="81189"), season=5, number=16)
EPISODE_BY_ID = MediaRef("episode", Ids(tvdb="4245778", imdb="tt2301451"))
EPISODE_IMDB_ONLY = MediaRef("episode", Ids(imdb="tt2301451"))


def test_numeric_ids_are_numbers_and_text_ids_text() -> None:
    assert trakt_ids(Ids(trakt="1", imdb="tt1", tmdb="2", tvdb="3")) == {
        "trakt": 1,
        "tmdb": 2,
        "tvdb": 3,
        "imdb": "tt1",
    }


def test_movie_body_uses_its_ids() -> None:
    assert media_body(MOVIE) == {"movie": {"ids": {"tmdb": 278, "imdb": "tt0111161"}}}


def test_episode_with_its_own_tvdb_id_is_sent_by_id() -> None:
    assert media_body(EPISODE_BY_ID) == {"episode": {"ids": {"tvdb": 4245778}}}


def test_episode_without_usable_ids_is_sent_as_show_plus_numbers() -> None:
    assert media_body(EPISODE_BY_NUMBER) == {
        "show": {"ids": {"tvdb": 81189}},
        "episode": {"season": 5, "number": 16},
    }


def test_episode_known_only_by_imdb_needs_a_lookup() -> None:
    assert can_send(EPISODE_BY_NUMBER) and can_send(EPISODE_BY_ID)
    assert not can_send(EPISODE_IMDB_ONLY)


def test_a_movie_known_only_by_a_tvdb_id_needs_a_lookup() -> None:
    assert can_send(MOVIE) and can_send(MediaRef("movie", Ids(slug="arrival-2016")))
    assert not can_send(MediaRef("movie", Ids(tvdb="12345")))  # Trakt keys no movie by TVDB


def test_the_enricher_asks_for_trakt_ids_exactly_when_trakt_could_not_match() -> None:
    for item in (MOVIE, EPISODE_BY_NUMBER, EPISODE_BY_ID, EPISODE_IMDB_ONLY):
        assert TRAKT.met(item) == can_send(item)
    assert not TRAKT.met(MediaRef("movie", Ids(tvdb="12345")))


def test_sync_body_nests_numbered_episodes_under_their_show() -> None:
    other = MediaRef("episode", show_ids=Ids(tvdb="81189"), season=5, number=17)
    body = sync_body(
        [
            (MOVIE, {"watched_at": "a"}),
            (EPISODE_BY_NUMBER, {"watched_at": "b"}),
            (other, {"watched_at": "c"}),
            (EPISODE_BY_ID, {"watched_at": "d"}),
        ]
    )
    assert body == {
        "movies": [{"ids": {"tmdb": 278, "imdb": "tt0111161"}, "watched_at": "a"}],
        "episodes": [{"ids": {"tvdb": 4245778}, "watched_at": "d"}],
        "shows": [
            {
                "ids": {"tvdb": 81189},
                "seasons": [
                    {
                        "number": 5,
                        "episodes": [
                            {"number": 16, "watched_at": "b"},
                            {"number": 17, "watched_at": "c"},
                        ],
                    }
                ],
            }
        ],
    }


def test_not_found_entries_are_matched_back_to_what_was_sent() -> None:
    answer = {
        "added": {"movies": 0, "episodes": 1},
        "not_found": {"movies": [{"ids": {"imdb": "tt0111161"}}], "episodes": []},
    }
    assert not_found_refs(answer, [MOVIE, EPISODE_BY_ID]) == [MOVIE]


def test_an_episode_missing_under_its_show_is_the_only_one_not_found() -> None:
    # Trakt echoes the show narrowed to what it lacks; the episode it has was added.
    missing = MediaRef("episode", show_ids=Ids(tvdb="81189"), season=5, number=99)
    answer = {
        "added": {"movies": 0, "episodes": 1},
        "not_found": {
            "shows": [
                {"ids": {"tvdb": 81189}, "seasons": [{"number": 5, "episodes": [{"number": 99}]}]}
            ]
        },
    }
    assert not_found_refs(answer, [EPISODE_BY_NUMBER, missing]) == [missing]


def test_an_episode_missing_under_its_show_is_found_missing_in_the_episodes_group() -> None:
    # What Trakt sends (trakt-api#357): the narrowed show is filed under `episodes`.
    missing = MediaRef("episode", show_ids=Ids(tvdb="81189"), season=5, number=99)
    echo = {"ids": {"tvdb": 81189}, "seasons": [{"number": 5, "episodes": [{"number": 99}]}]}
    answer = {"not_found": {"movies": [], "shows": [], "seasons": [], "episodes": [echo]}}
    assert not_found_refs(answer, [EPISODE_BY_NUMBER, missing]) == [missing]
    # ... and wherever else it might come: only its shape says what it is
    assert not_found_refs({"not_found": {"seasons": [echo]}}, [EPISODE_BY_NUMBER, missing]) == [
        missing
    ]


def test_a_narrowed_show_echoed_under_episodes_is_no_episode_with_the_shows_id() -> None:
    # A TVDB number names a show and, apart, an episode: the echo is the show's.
    echo = {"ids": {"tvdb": 4245778}, "seasons": [{"number": 1, "episodes": [{"number": 9}]}]}
    assert not_found_refs({"not_found": {"episodes": [echo]}}, [EPISODE_BY_ID]) == []


def test_a_show_echoed_bare_means_all_of_its_episodes_are_missing() -> None:
    other = MediaRef("episode", show_ids=Ids(tvdb="81189"), season=1, number=1)
    answer = {"not_found": {"shows": [{"ids": {"tvdb": 81189}}]}}
    assert not_found_refs(answer, [EPISODE_BY_NUMBER, other]) == [EPISODE_BY_NUMBER, other]


def test_a_movie_echoed_missing_says_nothing_of_a_shows_episode_with_the_same_tmdb_number() -> None:
    # TMDB numbers movies and shows apart: movie 95396 and show 95396 are different titles.
    episode = MediaRef("episode", show_ids=Ids(tmdb="95396"), season=1, number=1)
    movie = MediaRef("movie", Ids(tmdb="95396"))
    answer = {"not_found": {"movies": [{"ids": {"tmdb": 95396}}]}}
    assert not_found_refs(answer, [episode, movie]) == [movie]


def test_an_episode_echoed_missing_by_its_own_id_is_not_a_movie_with_that_number() -> None:
    movie, episode = MediaRef("movie", Ids(trakt="123")), MediaRef("episode", Ids(trakt="123"))
    answer = {"not_found": {"episodes": [{"ids": {"trakt": 123}}], "movies": []}}
    assert not_found_refs(answer, [movie, episode]) == [episode]


def test_empty_not_found_means_everything_was_found() -> None:
    assert not_found_refs({"not_found": {"movies": []}}, [MOVIE]) == []


def test_tokens_refresh_at_three_quarters_of_their_lifetime() -> None:
    tokens = TokenSet("a", "r", created_at=1000.0, expires_in=400.0)
    assert not tokens.due_for_refresh(1299.0)
    assert tokens.due_for_refresh(1300.0)
    assert tokens.expires_at == 1400.0
