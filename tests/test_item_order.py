"""One item's rows to one target go out in order whoever queued them: a webhook or a link."""

from __future__ import annotations

import time

from tests.ingest_samples import only_event, sample_json
from watchbridge.config import Link
from watchbridge.ingest import plex, tautulli
from watchbridge.model import Ids, MediaEvent, MediaRef
from watchbridge.playback import decide
from watchbridge.reconcile import Play, Rated, Side, plan
from watchbridge.store import NewOutboxRow, Store, ordering_key
from watchbridge.sync import outbox_rows
from watchbridge.webhooks import rows_for

PROFILE = "me"
# Plex's sample movie (Guids: IMDb, TMDB) and Tautulli's Plex episode (its show's Guids:
# IMDb, TMDB, TVDB): Breaking Bad S5E16, whose show is TMDB 1396.
MOVIE_TMDB = "329865"
EPISODE = "episode:tmdb:1396:s5e16"


def plex_movie() -> MediaEvent:
    event = only_event(plex.parse(sample_json("plex", "movie_media_scrobble.json")))
    assert event.item.ids.imdb and event.item.ids.tmdb == MOVIE_TMDB
    return event


def tautulli_episode() -> MediaEvent:
    event = only_event(tautulli.parse(sample_json("tautulli", "watched_episode.json")))
    assert event.item.show_ids.imdb and event.item.show_ids.tvdb
    assert event.item.show_ids.tmdb == "1396"
    return event


def webhook_rows(event: MediaEvent, targets: list[str], now: float) -> list[NewOutboxRow]:
    """The rows the webhook route queues for `event` (a finished play) at `now`."""
    _, intents = decide(None, event, 90.0, now)
    rows = rows_for(PROFILE, targets, event, intents)
    assert rows
    return rows


def link_rows(item: str, source: str, target: str, at: float) -> list[NewOutboxRow]:
    """The rows a link from `source` to `target` queues for a play of `item` on `source`."""
    link = Link(services=[source, target], direction="one-way")
    current = {source: Side(plays=(Play(item, at, "r1"),)), target: Side()}
    rows, skipped = outbox_rows("l", PROFILE, plan(link, current, {}).actions)
    assert skipped == 0 and rows
    return rows


def test_a_plex_movie_has_one_ordering_key_from_a_webhook_and_from_a_link() -> None:
    (webhook,) = webhook_rows(plex_movie(), ["trakt"], time.time())
    (linked,) = link_rows(f"movie:tmdb:{MOVIE_TMDB}", "plex", "trakt", 1000.0)
    assert webhook.ordering_key == linked.ordering_key


def test_a_plex_episode_has_one_ordering_key_from_a_webhook_and_from_a_link() -> None:
    event = tautulli_episode()
    for target in ("trakt", "serializd"):
        (webhook,) = webhook_rows(event, [target], time.time())
        (linked,) = link_rows(EPISODE, "plex", target, 1000.0)
        assert webhook.ordering_key == linked.ordering_key, target


def test_a_link_s_rating_shares_its_turns_with_a_webhook_s_rating_of_the_item() -> None:
    # Trakt's ratings take turns apart from plays, but one item's still together.
    rated = MediaRef("season", show_ids=Ids(imdb="tt0903747", tmdb="1396", tvdb="81189"), season=5)
    webhook = ordering_key(PROFILE, "trakt", rated.order_key(), "rating")
    link = Link(services=["serializd", "trakt"], direction="one-way")
    current = {"serializd": Side(ratings={"show:tmdb:1396:s5": Rated(80, 10.0)}), "trakt": Side()}
    (linked,), _ = outbox_rows("l", PROFILE, plan(link, current, {}).actions)
    assert linked.ordering_key == webhook


def test_items_a_link_cannot_key_keep_their_own_key() -> None:
    # Nothing TMDB or IMDb names: no link row can be of the same item, and the key stays.
    guid = MediaRef("movie", ids=Ids(plex_guid="plex://movie/5d7768a696b655001fdc0e5c"))
    legacy = MediaRef("episode", show_ids=Ids(tvdb="81189"), season=5, number=16)
    for item in (guid, legacy):
        assert item.order_key() == item.key()
    # A movie by IMDb alone is keyed so by a link too, even when a Trakt id is stronger.
    imdb = MediaRef("movie", ids=Ids(trakt="1", imdb="tt0113277"))
    assert imdb.order_key() == "movie:imdb:tt0113277"


def test_a_link_s_play_waits_behind_a_webhook_s_play_of_the_same_movie(store: Store) -> None:
    # The webhook's play went first and is in backoff (Trakt answered 503); a link run then
    # queues its own row of the movie (another play of it, read on Plex).
    now = time.time()
    (webhook,) = webhook_rows(plex_movie(), ["trakt"], now)
    assert store.enqueue([webhook], now) == 1
    (first,) = store.claim("w", now)
    store.retry_later(first.id, now, next_attempt_at=now + 60, error="503")
    assert store.enqueue(link_rows(f"movie:tmdb:{MOVIE_TMDB}", "plex", "trakt", 1000.0), now)
    assert store.claim("w", now + 1) == []  # the link's row waits its turn
    assert [row.id for row in store.claim("w", now + 60)] == [first.id]
    store.complete(first.id, now + 61)
    (linked,) = store.claim("w", now + 61)
    assert "link" in linked.payload


def test_a_link_s_play_waits_behind_a_webhook_s_play_of_the_same_episode(store: Store) -> None:
    now = time.time()
    (webhook,) = webhook_rows(tautulli_episode(), ["serializd"], now)
    assert store.enqueue([webhook], now) == 1
    (first,) = store.claim("w", now)
    store.retry_later(first.id, now, next_attempt_at=now + 60, error="503")
    assert store.enqueue(link_rows(EPISODE, "trakt", "serializd", 1000.0), now)
    assert store.claim("w", now + 1) == []
    assert store.waiting_behind() == 1
