"""One item's rows to one target go out in order whoever queued them: a webhook or a link."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import FakeTrakt
from tests.ingest_samples import only_event, sample_json
from tests.test_delivery import webhook
from tests.test_household_holds import by_hand, posts
from tests.test_household_holds import trakt as trakt  # the household's fake Trakt (fixture)
from watchbridge.config import Link
from watchbridge.ingest import plex, tautulli
from watchbridge.model import Ids, MediaEvent, MediaRef, ref_to_dict
from watchbridge.playback import decide
from watchbridge.reconcile import Play, Rated, Side, plan
from watchbridge.store import (
    UNFOUND,
    NewOutboxRow,
    OutboxItem,
    Store,
    migrations,
    ordering_key,
)
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


def link_rows(
    item: str, source: str, target: str, at: float, name: str = "l"
) -> list[NewOutboxRow]:
    """The rows link `name` from `source` to `target` queues for a play of `item` on `source`."""
    link = Link(services=[source, target], direction="one-way")
    current = {source: Side(plays=(Play(item, at, "r1"),)), target: Side()}
    rows, skipped = outbox_rows(name, PROFILE, plan(link, current, {}).actions)
    assert skipped == 0 and rows
    return rows


def in_backoff(store: Store, rows: list[NewOutboxRow], now: float) -> OutboxItem:
    """A webhook's one row queued and tried: the target answered 503, it waits a minute."""
    assert store.enqueue(rows, now) == 1
    (first,) = store.claim("w", now)
    store.retry_later(first.id, now, next_attempt_at=now + 60, error="503")
    return first


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
    first = in_backoff(store, webhook_rows(plex_movie(), ["trakt"], now), now)
    assert store.enqueue(link_rows(f"movie:tmdb:{MOVIE_TMDB}", "plex", "trakt", 1000.0), now)
    assert store.claim("w", now + 1) == []  # the link's row waits its turn
    assert [row.id for row in store.claim("w", now + 60)] == [first.id]
    store.complete(first.id, now + 61)
    (linked,) = store.claim("w", now + 61)
    assert "link" in linked.payload


def test_a_link_s_play_waits_behind_a_webhook_s_play_of_the_same_episode(store: Store) -> None:
    now = time.time()
    in_backoff(store, webhook_rows(tautulli_episode(), ["serializd"], now), now)
    assert store.enqueue(link_rows(EPISODE, "trakt", "serializd", 1000.0), now)
    assert store.claim("w", now + 1) == []
    assert store.waiting_behind() == 1


# --------------------------------------------------------------------------- upgrade


OLD_RELEASE_LAST = "m028_outbox_ordered_as_links_key_items"  # the migration it lacks


def old_row(row: NewOutboxRow, ordering: str, status: str, at: float) -> dict[str, Any]:
    """`row` as the last release kept it in the outbox, keyed `ordering`."""
    return {
        "target": row.target,
        "profile": row.profile,
        "action": row.action,
        "payload": json.dumps(row.payload),
        "ordering_key": ordering,
        "idempotency_key": row.idempotency_key,
        "status": status,
        "attempts": 1,
        "next_attempt_at": at,
        "created_at": at - 60,
        "updated_at": at - 60,
    }


def test_rows_queued_before_the_upgrade_take_turns_with_new_rows_of_their_item(
    tmp_path: Path,
) -> None:
    # The last release keyed a webhook's row by the item's strongest id (IMDb here): its
    # play, in backoff through the upgrade, still goes before a link's play of the movie.
    now = time.time()
    (play,) = webhook_rows(plex_movie(), ["trakt"], now)
    old_key = ordering_key(PROFILE, "trakt", plex_movie().item.key(), "play")
    assert old_key != play.ordering_key
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before=OLD_RELEASE_LAST)
    old["outbox"].insert(old_row(play, old_key, "pending", now + 60))
    old.conn.commit()
    old.close()

    store = Store.open(path)
    try:
        assert store.enqueue(link_rows(f"movie:tmdb:{MOVIE_TMDB}", "plex", "trakt", 1000.0), now)
        assert store.claim("w", now + 1) == []
        (first,) = store.claim("w", now + 60)
        assert "link" not in first.payload
        store.complete(first.id, now + 61)
        (linked,) = store.claim("w", now + 61)
        assert "link" in linked.payload
    finally:
        store.close()


def test_the_upgrade_rekeys_the_rows_it_can_read(tmp_path: Path) -> None:
    now = time.time()
    movie = plex_movie().item
    (play,) = webhook_rows(plex_movie(), ["trakt"], now)
    rating = NewOutboxRow(
        "trakt", PROFILE, "rating", {"item": ref_to_dict(movie), "rating": 80}, "", "rated"
    )
    strongest = movie.key()
    rows = [
        old_row(play, ordering_key(PROFILE, "trakt", strongest, "play"), "dead", now),
        old_row(rating, ordering_key(PROFILE, "trakt", strongest, "rating"), "pending", now),
        old_row(replace(play, idempotency_key="sent"), "me:trakt:as-it-was", "done", now),
        old_row(replace(play, payload={}, idempotency_key="unread"), "unread-key", "dead", now),
    ]
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before=OLD_RELEASE_LAST)
    old["outbox"].insert_all(rows)
    old.conn.commit()
    old.close()

    store = Store.open(path)
    try:
        keys = {
            str(r["idempotency_key"]): str(r["ordering_key"])
            for r in store.db.query("SELECT idempotency_key, ordering_key FROM outbox")
        }
    finally:
        store.close()
    by_tmdb = f"movie:tmdb:{MOVIE_TMDB}"
    assert keys == {
        play.idempotency_key: ordering_key(PROFILE, "trakt", by_tmdb, "play"),
        "rated": ordering_key(PROFILE, "trakt", by_tmdb, "rating"),  # Trakt's: apart
        # Delivered: a waiting row of its item looks at it by its key.
        "sent": ordering_key(PROFILE, "trakt", by_tmdb, "play"),
        "unread": "unread-key",  # its delivery makes a dead letter of it, saying why
    }


# --------------------------------------------------------------------------- turns held


@pytest.mark.anyio
async def test_a_links_row_trakt_cannot_place_does_not_hold_the_live_scrobbles_of_the_item(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    # Trakt knows Arrival by its IMDb id, not (yet) by its TMDB id: the link's copy of a play
    # (TMDB id only) is unmatched and tried again hourly, for days. My Plex webhook names the
    # film by both ids, which Trakt places: my start and stop go out now, not after it.
    trakt.add_movie("Arrival", 2016, imdb="tt2543164")
    async with by_hand(tmp_path, trakt, receiver, clock) as (runtime, worker):
        now = clock()
        copy = link_rows(f"movie:tmdb:{MOVIE_TMDB}", "plex", "trakt", now - 86400, "plex-trakt")
        runtime.store.enqueue(copy, now)
        await worker.pass_once(runtime)
        assert runtime.store.outbox_counts()["pending"] == 1  # unmatched: again in an hour
        webhook(runtime, "movie_media_play.json", profile="me")
        await worker.pass_once(runtime)
        assert "/scrobble/start" in posts(trakt)
        clock.advance(600)
        webhook(runtime, "movie_media_scrobble.json", profile="me")
        await worker.pass_once(runtime)
        assert "/scrobble/stop" in posts(trakt)
        assert runtime.store.waiting_behind() == 0


def test_the_upgrade_rekeys_the_delivered_ratings_a_waiting_rating_of_the_item_looks_at(
    tmp_path: Path,
) -> None:
    # A waiting rating looks at the item's ratings queued before it by its ordering key: those
    # sent since it was given (its target's newer rating may be one of ours), and a Serializd
    # one settled before its landing was looked for (UNFOUND). Done before the upgrade, they
    # must be found under the key the waiting rating has after it.
    now = time.time()
    episode = replace(tautulli_episode().item, ids=Ids())  # a generic webhook's S5E16
    old_key = ordering_key(PROFILE, "serializd", episode.key(), "rating")
    assert old_key != ordering_key(PROFILE, "serializd", episode.order_key(), "rating")
    item = ref_to_dict(episode)

    def rating(value: int, name: str) -> NewOutboxRow:
        payload = {"item": item, "rating": value, "at": now - 3600, "source": "generic"}
        return NewOutboxRow("serializd", PROFILE, "rating", payload, old_key, name)

    sent = old_row(rating(80, "sent"), old_key, "done", now - 600)
    unfound = old_row(rating(70, "unfound"), old_key, "done", now - 600) | {"last_error": UNFOUND}
    waiting = old_row(rating(60, "waiting"), old_key, "pending", now)
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before=OLD_RELEASE_LAST)
    old["outbox"].insert_all([sent, unfound, waiting])
    old.conn.commit()
    old.close()

    store = Store.open(path)
    try:
        (row,) = store.claim("w", now)
        assert row.idempotency_key == "waiting"
        assert store.ratings_sent_since(row, now - 3600) == [80]
        assert [payload["rating"] for _, payload in store.unfound_ratings(row)] == [70]
    finally:
        store.close()
