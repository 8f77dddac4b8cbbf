"""Side readers: the cheap check, delta reads merged onto the baseline, expected plays."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.trakt import CLIENT_ID, FakeTrakt, iso, parse_iso
from tests.harness import loop_held, sign_in_trakt, statements_run, store_connections
from watchbridge.config import Link, TraktConfig
from watchbridge.http import Pacer, RateLimited
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.readers import SideRead
from watchbridge.readers.serializd import (
    UNLOGGED,
    carried,
    found_missing,
    merge_diary,
    missed_by,
    remember_unlogged,
    unanswered_copies,
    with_written,
)
from watchbridge.readers.trakt import (
    RECENT_EPISODES,
    RECONCILE_WINDOW,
    RELEASE_MARKS,
    VIEWINGS,
    Counted,
    TraktReader,
    counts_moved,
    delta_since,
    last_watched,
    media_types,
    merge_history,
    moved_types,
    stamps,
    unaccounted,
    watched_counts,
)
from watchbridge.reconcile import (
    EXPECTED,
    UNDATED,
    Action,
    Play,
    Rated,
    Side,
    carry_expected,
    expect,
    settle_expected,
)
from watchbridge.services.serializd import DiaryEntry, DiaryRead
from watchbridge.services.trakt import HistoryPlay, TraktClient
from watchbridge.sides import ref_for_key, trakt_side
from watchbridge.store import NewOutboxRow, Store

DAY = 86400.0
E1 = "episode:tmdb:1396:s1e1"
E2 = "episode:tmdb:1396:s1e2"
E3 = "episode:tmdb:1396:s1e3"

# --------------------------------------------------------------------------- pure parts


def test_a_tv_only_partner_means_trakt_reads_episodes_only() -> None:
    assert media_types(Link(["trakt", "serializd"])) == ("episodes",)
    assert media_types(Link(["plex", "trakt"])) == ("movies", "episodes")


def test_stamps_follow_watched_and_rated_activity_of_the_types_read() -> None:
    activities = {
        "all": "A",
        "episodes": {"watched_at": "W", "rated_at": "R1"},
        "shows": {"rated_at": "R2"},
        "seasons": {"rated_at": "R3"},
        "movies": {"watched_at": "MOVIE"},
    }
    assert stamps(activities, ("episodes",)) == {"all": "A", "watched": "W", "rated": "R2,R3,R1"}


def test_a_delta_reaches_back_a_week_or_to_the_last_read_if_older() -> None:
    now = 100 * DAY
    assert delta_since(now - 3600, now) == now - RECONCILE_WINDOW
    assert delta_since(now - 30 * DAY, now) < now - 30 * DAY


def test_a_delta_replaces_the_window_and_keeps_older_plays() -> None:
    old, in_window = Play(E1, 10.0, "1"), Play(E2, 500.0, "2")
    recent = Side((Play(E2, 600.0, "3"),))
    merged = merge_history(Side((old, in_window)), recent, since=100.0)
    assert merged == (old, Play(E2, 600.0, "3"))  # "2" was removed on Trakt


def test_a_delta_keeps_plays_we_queued_whatever_their_date() -> None:
    queued = Play(E2, 500.0, f"{EXPECTED}x")
    assert merge_history(Side((queued,)), Side(), since=100.0) == (queued,)


def test_a_delta_with_nothing_new_or_gone_leaves_a_change_of_history_unaccounted() -> None:
    """Trakt's history moved: a delta read accounts for it with a play new to the baseline
    or one of its window gone; else the change was further back (a backdated play, an old
    one removed), where the read does not look."""
    old, in_window = Play(E1, 10.0, "1"), Play(E2, 500.0, "2")
    queued = Play(E3, 20.0, f"{EXPECTED}x")
    baseline = Side((old, in_window, queued))
    assert unaccounted(baseline, merge_history(baseline, Side((in_window,)), 100.0), 100.0)
    assert not unaccounted(baseline, (old, in_window, queued, Play(E3, 600.0, "3")), 100.0)
    assert not unaccounted(baseline, (old, queued), 100.0)  # "2" removed on Trakt


def test_trakt_play_counts_move_for_plays_a_read_lacks_not_for_ours_landed() -> None:
    """Trakt's watched snapshot (the reference sample: Breaking Bad, TMDB 1396, 3 plays of
    its episodes) against a read's plays: one more there is a play the read lacks (its show
    is read), as is one fewer of those read; a play we wrote counts there once landed. A
    show the read holds plays of and the snapshot does not name cannot be told."""
    sample = Path(__file__).parent / "fixtures" / "trakt" / "sync_watched_shows.json"
    snapshot = watched_counts(json.loads(sample.read_text()))
    # Game of Thrones: a rewatch started, its own count (2) the plays since, not its episodes' 3
    reset = parse_iso("2026-09-06T19:00:00.000Z")
    assert snapshot["episode:tmdb:1399"] == Counted("shows", ("1390",), 2, reset)
    counted = {"episode:tmdb:1396": snapshot["episode:tmdb:1396"]}
    assert counted["episode:tmdb:1396"] == Counted("shows", ("1",), 3)
    two = (Play(E1, 10.0, "1"), Play(E2, 20.0, "2"))
    assert counts_moved(counted, two) == (["episode:tmdb:1396"], False)
    ours = (*two, Play(E3, 30.0, f"{EXPECTED}x"))
    assert counts_moved(counted, ours) == ([], False)  # landed, not read back yet
    assert counts_moved(counted, (*two, Play(E3, 30.0, "3"))) == ([], False)
    assert counts_moved(counted, (*ours, Play(E3, 30.0, "3"))) == ([], False)  # read back
    four = (*two, Play(E3, 30.0, "3"), Play(E3, 40.0, "4"))
    assert counts_moved(counted, four) == (["episode:tmdb:1396"], False)  # one removed there
    assert counts_moved({}, two) == ([], True)
    assert counts_moved({}, (Play(E3, 30.0, f"{EXPECTED}x"),)) == ([], False)


def test_a_show_s_count_agreeing_with_its_plays_as_trakt_may_count_them_moved_nothing() -> None:
    """A show's own count (the small snapshot, `extended=noseasons`) may or may not count its
    specials, and since a rewatch started (`reset_at`) may count the plays since then only
    (the reference sample) or all (trakt-api#661): either way it moved nothing, so the show is
    not read again at every change of history; a play more or fewer than every way is."""
    special = "episode:tmdb:1396:s0e1"
    plays = (Play(E1, 10.0, "1"), Play(E2, 20.0, "2"), Play(special, 30.0, "3"))
    for count in (3, 2):  # specials counted, or not
        assert counts_moved({"episode:tmdb:1396": Counted("shows", ("1",), count)}, plays) == (
            [],
            False,
        )
    for count in (4, 1):
        moved = counts_moved({"episode:tmdb:1396": Counted("shows", ("1",), count)}, plays)
        assert moved == (["episode:tmdb:1396"], False)
    for count in (3, 2, 1):  # all, or since the rewatch at 15 (with specials or not)
        rewatched = {"episode:tmdb:1396": Counted("shows", ("1",), count, 15.0)}
        assert counts_moved(rewatched, plays) == ([], False)
    rewatched = {"episode:tmdb:1396": Counted("shows", ("1",), 4, 15.0)}
    assert counts_moved(rewatched, plays) == (["episode:tmdb:1396"], False)
    undated = (*plays, Play(E3, UNDATED, "4"))  # before any rewatch: the date is unknown
    rewatched = {"episode:tmdb:1396": Counted("shows", ("1",), 2, 15.0)}
    assert counts_moved(rewatched, undated) == ([], False)


def test_only_the_play_counts_of_the_history_types_whose_stamp_moved_are_read() -> None:
    types = ("movies", "episodes")
    assert moved_types(types, "M1,E1", "M1,E2") == ("episodes",)
    assert moved_types(types, "M1,E1", "M2,E2") == types
    assert moved_types(types, "E1", "M1,E2") == types  # kept when only episodes were read


def test_history_last_changed_at_the_latest_watched_stamp_of_the_types_read() -> None:
    activities = {
        "episodes": {"watched_at": "2026-01-02T00:00:00.000Z"},
        "movies": {"watched_at": "2026-01-03T00:00:00.000Z"},
    }
    assert last_watched(activities, ("episodes",)) == parse_iso("2026-01-02T00:00:00.000Z")
    assert last_watched(activities, ("movies", "episodes")) == parse_iso("2026-01-03T00:00:00.000Z")
    assert last_watched({"episodes": {"watched_at": None}}, ("episodes",)) is None


def test_new_diary_entries_join_the_baseline_and_newer_ratings_win() -> None:
    baseline = Side((Play(E1, 10.0, "1"),), {E1: Rated(60, 10.0)})
    fresh = Side((Play(E2, 20.0, "2"), Play(E1, 10.0, "1")), {E1: Rated(80, 20.0)})
    merged = merge_diary(baseline, fresh)
    assert [p.record for p in merged.plays] == ["1", "2"]
    assert merged.ratings[E1] == Rated(80, 20.0)


def test_a_queued_play_is_expected_until_a_real_play_stands_for_it() -> None:
    side = expect(Side((Play(E1, 10.0, "1"),)), [Action("add_play", "trakt", E2, "new", 500.0)])
    assert [p.record.startswith(EXPECTED) for p in side.plays] == [False, True]
    assert settle_expected(side) == side  # not read back yet
    read_back = Side((*side.plays, Play(E2, 560.0, "99")))
    assert [p.record for p in settle_expected(read_back).plays] == ["1", "99"]


QUEUED = Play(E2, 500.0, f"{EXPECTED}{E2}@500")


def test_a_full_read_without_a_delivered_expected_play_makes_it_a_removal() -> None:
    baseline, read = carry_expected(Side((QUEUED,)), Side(), row_of=lambda play: "delivered")
    assert baseline.plays == (Play(E2, 500.0, f"{E2}@500"),) and read == Side()


def test_a_full_read_keeps_an_expected_play_that_waits_for_delivery_on_both() -> None:
    baseline, read = carry_expected(Side((QUEUED,)), Side(), row_of=lambda play: "waiting")
    assert baseline.plays == read.plays == (QUEUED,)


def test_a_full_read_without_an_expected_play_whose_row_is_gone_expects_it_no_more() -> None:
    # Its dead letter discarded (or its row pruned): never written, so no removal there, and
    # not expected either, on the baseline or on the read a reader carried it on (AniList).
    kept = Play(E1, 10.0, "1")
    carried = Side((QUEUED,))
    baseline, read = carry_expected(Side((kept, QUEUED)), carried, row_of=lambda play: "gone")
    assert baseline.plays == (kept,) and read == Side()


def test_a_full_read_showing_the_expected_play_changes_nothing() -> None:
    shown = Side((Play(E2, 530.0, "99"),))
    assert carry_expected(Side((QUEUED,)), shown, row_of=lambda play: "gone") == (
        Side((QUEUED,)),
        shown,
    )


@pytest.mark.parametrize(
    ("key", "ref"),
    [
        (E1, MediaRef("episode", show_ids=Ids(tmdb="1396"), season=1, number=1)),
        ("show:tmdb:1396", MediaRef("show", ids=Ids(tmdb="1396"))),
        ("show:tmdb:1396:s2", MediaRef("season", show_ids=Ids(tmdb="1396"), season=2)),
        ("movie:imdb:tt0372784", MediaRef("movie", ids=Ids(imdb="tt0372784"))),
        ("movie:tmdb:", None),
        ("episode:nope:1:s1e1", None),
        ("episode:tmdb:1:s1", None),
    ],
)
def test_every_item_key_names_its_media_ref(key: str, ref: MediaRef | None) -> None:
    assert ref_for_key(key) == ref


# --------------------------------------------------------------------------- against fake Trakt


@pytest.fixture
def trakt(start_fake: Callable[[Any], Any]) -> FakeTrakt:
    fake: FakeTrakt = start_fake(FakeTrakt())
    fake.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=81189, seasons={1: 7})
    return fake


@pytest.fixture
def client(trakt: FakeTrakt, store: Store) -> TraktClient:
    sign_in_trakt(store, trakt, "me", now=time.time())
    return TraktClient(
        TraktConfig(client_id=CLIENT_ID, api_url=trakt.url, auth_url=trakt.url), store
    )


def reader(client: TraktClient) -> TraktReader:
    return TraktReader(client, ("episodes",), time.time)


def episode(number: int) -> MediaRef:
    return MediaRef("episode", show_ids=Ids(tmdb="1396"), season=1, number=number)


async def add_play(client: TraktClient, number: int, at: float) -> None:
    await client.add_history("me", [HistoryPlay(episode(number), at)])


def history_requests(trakt: FakeTrakt) -> list[Any]:
    return [r for r in trakt.requests if r.path.startswith("/sync/history")]


@pytest.mark.anyio
async def test_a_delta_read_asks_trakt_only_for_the_recent_window(
    trakt: FakeTrakt, client: TraktClient
) -> None:
    await add_play(client, 1, time.time() - 30 * DAY)
    first = await reader(client).read("me", {}, None, full=True)
    await add_play(client, 2, time.time() - 60)
    trakt.requests.clear()
    second = await reader(client).read("me", first.cursors, first.side, full=False)
    assert sorted(p.item for p in second.side.plays) == [E1, E2]
    (request,) = history_requests(trakt)
    assert "start_at" in request.query


@pytest.mark.anyio
async def test_ratings_are_not_read_again_while_their_stamp_stands(
    trakt: FakeTrakt, client: TraktClient
) -> None:
    first = await reader(client).read("me", {}, None, full=True)
    await add_play(client, 2, time.time() - 60)
    trakt.requests.clear()
    await reader(client).read("me", first.cursors, first.side, full=False)
    assert not [r for r in trakt.requests if r.path.startswith("/sync/ratings")]


@pytest.mark.anyio
async def test_a_play_removed_on_trakt_this_week_is_gone_from_the_delta(
    trakt: FakeTrakt, client: TraktClient
) -> None:
    await add_play(client, 1, time.time() - 2 * DAY)
    first = await reader(client).read("me", {}, None, full=True)
    (play,) = first.side.plays
    await client.remove_history("me", [int(play.record)])
    second = await reader(client).read("me", first.cursors, first.side, full=False)
    assert second.side.plays == ()


@pytest.mark.anyio
async def test_nothing_moved_on_trakt_costs_one_request(
    trakt: FakeTrakt, client: TraktClient
) -> None:
    first = await reader(client).read("me", {}, None, full=True)
    trakt.requests.clear()
    assert await reader(client).unchanged("me", first.cursors)
    assert [r.path for r in trakt.requests] == ["/sync/last_activities"]


@pytest.mark.anyio
async def test_a_read_of_no_history_names_the_week_s_episodes_by_their_own_ids_as_before(
    trakt: FakeTrakt, client: TraktClient
) -> None:
    await add_play(client, 1, time.time() - 30 * DAY)
    await add_play(client, 2, time.time() - 2 * DAY)
    first = await reader(client).read("me", {}, None, full=True)
    assert set(first.aliases.values()) == {E2}  # by each own id the fake gives (trakt, tvdb)
    trakt.requests.clear()

    second = await reader(client).read("me", first.cursors, first.side, full=False)
    assert history_requests(trakt) == []  # Trakt unchanged: its history is not read
    assert second.aliases == first.aliases
    in_a_week = TraktReader(client, ("episodes",), lambda: time.time() + 6 * DAY)
    assert (await in_a_week.read("me", second.cursors, second.side, False)).aliases == {}


@pytest.mark.anyio
async def test_trakt_cursors_kept_without_the_week_s_episodes_still_read(
    trakt: FakeTrakt, client: TraktClient
) -> None:
    await add_play(client, 2, time.time() - 2 * DAY)
    first = await reader(client).read("me", {}, None, full=True)
    for kept in ("", "[1]", '{"v": 0, "episodes": {}}', '{"v": 1, "episodes": [[1]]}'):
        older = {**first.cursors, RECENT_EPISODES: kept}
        read = await reader(client).read("me", older, first.side, full=False)
        assert (read.side, read.aliases) == (first.side, {})  # found by the next history read
    older = {k: v for k, v in first.cursors.items() if k != RECENT_EPISODES}
    await add_play(client, 3, time.time() - 60)
    read = await reader(client).read("me", older, first.side, full=False)
    assert set(read.aliases.values()) == {E2, "episode:tmdb:1396:s1e3"}


def test_trakt_movies_are_keyed_by_tmdb_else_imdb() -> None:
    side = trakt_side(
        [
            {
                "id": 1,
                "type": "movie",
                "watched_at": "2024-01-01T00:00:00.000Z",
                "movie": {"ids": {"tmdb": 272, "imdb": "tt0372784"}},
            },
            {
                "id": 2,
                "type": "movie",
                "watched_at": "2024-01-01T00:00:00.000Z",
                "movie": {"ids": {"imdb": "tt1104001"}},
            },
        ],
        [],
    )
    assert [p.item for p in side.plays] == ["movie:tmdb:272", "movie:imdb:tt1104001"]


def test_a_delta_read_takes_the_diary_entries_our_deliveries_wrote_since_the_last_read() -> None:
    written = {"episode:tmdb:1396:s1e1@100": 7, "episode:tmdb:1396:s1e2@200": 8}
    side = with_written(Side(), written, accounted={7})  # 7 was there at the last read
    assert side.plays == (Play("episode:tmdb:1396:s1e2", 12000.0, "8"),)


@pytest.mark.parametrize("changed", [False, True])
def test_a_read_listing_none_the_baseline_relied_on_proves_them_gone_unless_it_saw_a_change(
    changed: bool,
) -> None:
    """A read listing none of the entries relied on reads another account's diary, or an
    emptied one: they are gone. Not from a read that saw the diary grow under it (taken all
    the same, `diary_read`'s `growing`): a row it moved onto a page already read may be the
    only one relied on. Missed once, it is read again by the next run."""
    read = DiaryRead([], listed=frozenset({5, 6}), changed=changed)
    gone, once = missed_by(read, {4}, frozenset(), known=frozenset({4, 5}))
    assert (gone, once) == (
        (frozenset(), frozenset({4})) if changed else (frozenset({4}), frozenset())
    )


@pytest.mark.parametrize("changed", [False, True])
def test_a_second_miss_proves_an_entry_gone_only_from_a_read_the_diary_did_not_change_under(
    changed: bool,
) -> None:
    """An entry missed by the read before and by this one is gone; not when this read saw
    the diary change under it (its pages shifted too, and may hide the same row again): it
    stays missed once, for the next run's read."""
    read = DiaryRead([], listed=frozenset({5}), changed=changed)
    gone, once = missed_by(read, {4, 5}, frozenset({4}), known=frozenset({4, 5}))
    assert (gone, once) == (
        (frozenset(), frozenset({4})) if changed else (frozenset({4}), frozenset())
    )


def kept_off(*minutes: int) -> set[str]:
    """Plays of s1e1 at these minutes: found missing by a whole read, and staying so."""
    return {f"episode:tmdb:1396:s1e1@{minute}" for minute in minutes}


def test_plays_found_missing_are_named_newest_first_up_to_the_cap_the_rest_fingerprinted() -> None:
    """Years of plays kept off for good: the newest three are named, the older ones one
    fingerprint, however many; all of them are still known missing, so no run reads the
    whole diary for them."""
    missing = kept_off(*range(100, 120))
    cursors = remember_unlogged(missing, most=3)
    assert json.loads(cursors[UNLOGGED]) == sorted(kept_off(117, 118, 119))
    assert len(json.dumps(cursors)) < 300
    assert found_missing(missing, cursors) == missing
    assert remember_unlogged(found_missing(missing, cursors), most=3) == cursors


@pytest.mark.parametrize(
    "now",
    [
        kept_off(*range(100, 120), 50),  # a new play older than those named (backdated)
        kept_off(*range(100, 120)) | {"episode:tmdb:1396:s1e2@110"},  # among those
        kept_off(*range(101, 120)),  # one fingerprinted play explained since
    ],
)
def test_a_play_the_cap_left_unnamed_is_read_for_again_not_taken_for_missing(now: set[str]) -> None:
    """The worst a capped-away play costs is one more read of the whole diary: once the
    older plays are not exactly those fingerprinted, none of them is known missing (each
    may be the viewing the user logged by hand), and the read that follows remembers them
    anew; the named ones stay known."""
    cursors = remember_unlogged(kept_off(*range(100, 120)), most=3)
    assert found_missing(now, cursors) == kept_off(117, 118, 119)
    assert found_missing(now, remember_unlogged(now, most=3)) == now


def test_a_play_a_webhook_row_is_taking_to_serializd_is_carried_as_the_plan_leaves_it_out() -> None:
    """A webhook's row to Serializd for s1e1 twenty minutes after the link's play of it
    (one viewing, two clocks) stands for that play, once: not for a second play of s1e1 an
    hour later, nor for one of s1e2; a row to Trakt stands for none."""
    plays = {"episode:tmdb:1396:s1e1@1000", "episode:tmdb:1396:s1e1@1060"}
    plays |= {"episode:tmdb:1396:s1e2@1000"}
    waiting = {("serializd", "episode:tmdb:1396:s1e1"): [1020 * 60.0]}
    assert carried(plays, "serializd", waiting) == {"episode:tmdb:1396:s1e1@1000"}
    assert carried(plays, "trakt", waiting) == set()


def test_an_entry_already_on_the_side_is_not_taken_twice() -> None:
    held = Side((Play("episode:tmdb:1396:s1e2", 12030.0, "8"),))
    assert with_written(held, {"episode:tmdb:1396:s1e2@200": 8}, accounted=set()) == held


def test_a_rating_sent_without_an_answer_is_known_in_the_diary_by_item_value_and_backdate() -> None:
    """Until its retry records it, the row our lost send made is taken for ours; the user's
    own rows are not: another value, another backdate, another item, or a log (a play)."""
    sent_at = 1_700_000_000.0
    landed = sent_at + 3600

    def row(review: int, number: int, stars: int, at: float, is_log: bool = False) -> DiaryEntry:
        return DiaryEntry(review, 1396, 3901, 1, number, at, stars, False, "", landed, is_log)

    diary = [
        row(1, 1, 8, sent_at + 60),  # ours: backdated to the rating it copied
        row(2, 1, 9, sent_at),  # another value
        row(3, 1, 8, landed),  # another backdate
        row(4, 2, 8, sent_at),  # another episode
        row(5, 1, 8, sent_at, is_log=True),  # a play with stars
    ]
    item = ref_to_dict(MediaRef("episode", show_ids=Ids(tmdb="1396"), season=1, number=1))
    assert unanswered_copies(diary, [(item, sent_at, 80)]) == {1}
    named_otherwise = ref_to_dict(
        MediaRef("episode", show_ids=Ids(tvdb="81189"), season=1, number=1)
    )
    assert unanswered_copies(diary, [(named_otherwise, sent_at, 80)]) == set()


@pytest.mark.anyio
async def test_a_big_history_is_read_without_holding_the_event_loop(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """The service reads a link's sides on the loop that answers webhooks: turning a whole
    history into a side (and, with a baseline, finding the plays gone) is CPU alone, ~15 us
    an entry, so it goes to a thread and a webhook is not kept waiting behind a first run or
    the daily full read. The pages' reads stay on the loop, a few ms each."""
    shows = [
        trakt.add_show(f"Show {s}", 2000, tmdb=900_000 + s, seasons={1: 20}) for s in range(500)
    ]
    now = time.time()
    for k in range(10_000):
        show = shows[k % 500]
        trakt.add_history(show.seasons[1].episodes[1 + k // 500], iso(now - k * 600))
    client.http.pacers["me"] = Pacer()  # Trakt's read pacing lifted: the pages back to back
    reading = TraktReader(client, ("episodes",), time.time, store)
    async with loop_held() as held:
        first = await reading.read("me", {}, None, full=True)
        daily = await reading.read("me", first.cursors, first.side, full=True)
    assert len(first.side.plays) == len(daily.side.plays) == 10_000
    # Before the work moved off the loop it was held ~0.05 s at once for the first read and
    # ~0.15 s for the daily one (10,000 entries); a page's JSON is still read on it (~2 ms).
    assert max(held) < 0.04, f"the loop was held {max(held):.3f} s at once"


@pytest.mark.anyio
async def test_a_play_marked_watched_on_release_date_stands_for_the_viewing_the_other_side_holds(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """Trakt dates a play added `released` at the episode's air date + runtime, years before
    the viewing the other side holds: read undated, it stands for that viewing (one request,
    the show's season list). A play there with nothing on the other side to pair with keeps
    its date (copied as any play), as does one the other side holds at its very time (watched
    live). Once taken for a mark, a play stays one, asking nothing; a dry run keeps none."""
    show = trakt.shows[0]
    aired = {1: "2008-01-20T02:00:00.000Z", 2: "2008-01-27T02:00:00.000Z"}
    aired[3] = "2008-02-10T02:00:00.000Z"
    for number, at in aired.items():
        show.seasons[1].episodes[number].first_aired = at
    live = parse_iso(aired[3]) + 47 * 60
    show.seasons[1].episodes[3].runtime = 47
    for number in (1, 2):
        trakt.add_history(show.seasons[1].episodes[number], "released")
    trakt.add_history(show.seasons[1].episodes[3], iso(live))
    now = time.time()
    other = Side((Play(E1, now - 400 * DAY, "q1"), Play(E3, live + 30, "q3")))

    async def refined(reading: TraktReader, other: Side) -> dict[str, float]:
        read = await reading.read("me", {}, None, full=True)
        side = await reading.refine("me", read.side, other)
        return {p.item: p.at for p in side.plays}

    trakt.requests.clear()
    dry = TraktReader(client, ("episodes",), time.time, store)
    dry.dry_run = True
    assert (await refined(dry, other))[E1] == UNDATED
    assert not store.mirror_get("trakt", "me", RELEASE_MARKS)
    assert [r.path for r in trakt.requests if r.path.startswith("/shows")] == [
        f"/shows/{show.trakt}/seasons"
    ]
    trakt.requests.clear()
    reading = TraktReader(client, ("episodes",), time.time, store)
    plays = await refined(reading, other)
    assert plays[E1] == UNDATED  # stands for the viewing on the other side
    assert plays[E2] == parse_iso(aired[2]) + 45 * 60  # nothing to pair with: copied
    assert plays[E3] == live  # watched live: paired by its time
    assert not [r for r in trakt.requests if r.path.startswith("/shows")]  # cached
    trakt.requests.clear()
    plays = await refined(reading, Side())  # its partner gone: still the mark it was
    assert plays[E1] == UNDATED
    assert not [r for r in trakt.requests if r.path.startswith(("/shows", "/search"))]


@pytest.mark.anyio
async def test_an_episode_the_cached_air_dates_lack_is_asked_about_again_once(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """The show's air dates are kept a week: a season that airs after they were asked for,
    and is marked "watched on release date" within that week, is not in them. Its episodes
    are asked about again, once: an episode the new answer lacks too (Trakt gives it no air
    date) is not asked about again at every run until the week is over."""
    show = trakt.shows[0]
    show.seasons[1].episodes[1].first_aired = "2008-01-20T02:00:00.000Z"
    show.seasons[1].episodes[1].runtime = 47
    trakt.add_history(show.seasons[1].episodes[1], "released")
    now = time.time()
    reading = TraktReader(client, ("episodes",), time.time, store)

    async def refined(other: Side) -> dict[str, float]:
        read = await reading.read("me", {}, None, full=True)
        side = await reading.refine("me", read.side, other)
        return {p.item: p.at for p in side.plays}

    def asked() -> list[str]:
        paths = [r.path for r in trakt.requests if r.path.startswith(("/shows", "/search"))]
        trakt.requests.clear()
        return paths

    viewings = [Play(E1, now - 400 * DAY, "q1")]
    assert (await refined(Side(tuple(viewings))))[E1] == UNDATED
    assert asked() == [f"/shows/{show.trakt}/seasons"]
    # Days later: season 2 has aired, its first episode is watched and marked on trakt.tv.
    new = trakt.add_episode(show, 2, 1, runtime=50, first_aired=iso(now - 3 * DAY))
    trakt.add_history(new, "released")
    s2e1 = "episode:tmdb:1396:s2e1"
    viewings.append(Play(s2e1, now - DAY, "q2"))
    assert (await refined(Side(tuple(viewings))))[s2e1] == UNDATED  # a mark, not a viewing
    assert asked() == [f"/shows/{show.trakt}/seasons"]
    assert (await refined(Side(tuple(viewings))))[s2e1] == UNDATED
    assert asked() == []  # in the answer kept
    # An episode Trakt lists with no air date: asked about once more, then no more.
    watched = (now - 100 * DAY) // 60 * 60
    trakt.add_history(show.seasons[1].episodes[2], iso(watched))
    viewings.append(Play(E2, now - 50 * DAY, "q3"))
    assert (await refined(Side(tuple(viewings))))[E2] == watched  # a viewing of its own
    assert asked() == [f"/shows/{show.trakt}/seasons"]
    assert (await refined(Side(tuple(viewings))))[E2] == watched
    assert asked() == []


def _library(trakt: FakeTrakt, now: float) -> tuple[list[Any], list[Any]]:
    """A long-kept Trakt history: 1,900 plays of 20 shows' episodes and 100 of movies, all
    more than a month old (where a delta read does not look); the shows and the movies."""
    shows = [
        trakt.add_show(f"Show {s}", 2000, tmdb=800_000 + s, seasons={1: 95}) for s in range(20)
    ]
    movies = [trakt.add_movie(f"Movie {m}", 2000, tmdb=700_000 + m) for m in range(100)]
    for k in range(1900):
        episode = shows[k % 20].seasons[1].episodes[1 + k // 20]
        trakt.add_history(episode, iso(now - 40 * DAY - k * 600))
    for m, movie in enumerate(movies):
        trakt.add_history(movie, iso(now - 40 * DAY - m * 3600))
    return shows, movies


async def _read_twice(
    trakt: FakeTrakt, client: TraktClient, store: Store, change: Callable[[], None]
) -> tuple[SideRead, SideRead]:
    """A full read of Trakt, `change` made on trakt.tv, and the next run's read (no full
    read due), the fake's requests counted from the change on."""
    client.http.pacers["me"] = Pacer()  # Trakt's read pacing lifted: the pages back to back
    types = ("movies", "episodes")
    first = await TraktReader(client, types, time.time, store).read("me", {}, None, full=True)
    change()
    trakt.requests.clear()
    second = await TraktReader(client, types, time.time, store).read(
        "me", first.cursors, first.side, full=False
    )
    return first, second


@pytest.mark.anyio
async def test_a_play_backdated_on_trakt_is_found_among_thousands_in_a_handful_of_requests(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """A play added on trakt.tv dated months back ("watched on release date", a date given
    by hand) among 2,000: where the recent plays a run reads do not show it, Trakt's play
    counts do. The show whose count rose is read, not the whole history (9 pages of 250)."""
    now = time.time()
    shows, _ = _library(trakt, now)
    episode = shows[7].seasons[1].episodes[3]
    added: list[Any] = []
    _, read = await _read_twice(
        trakt, client, store, lambda: added.append(trakt.log_play(episode, iso(now - 400 * DAY)))
    )
    key = f"episode:tmdb:{shows[7].tmdb}:s1e3"
    assert Play(key, parse_iso(added[0].watched_at), str(added[0].id)) in read.side.plays
    assert len(read.side.plays) == 2001
    assert not read.missed  # no full read follows
    assert len(trakt.requests) < 10, [r.path for r in trakt.requests]


@pytest.mark.anyio
async def test_a_backdated_play_is_found_beside_a_recent_one_made_in_the_same_window(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """A play backdated on trakt.tv and a new play there between the same two runs: the
    recent one, read as ever, does not hide the backdated one."""
    now = time.time()
    shows, movies = _library(trakt, now)
    added: list[Any] = []

    def both() -> None:
        added.append(trakt.log_play(movies[5], iso(now - 300 * DAY)))
        added.append(trakt.log_play(shows[2].seasons[1].episodes[90], iso(now - 3600)))

    _, read = await _read_twice(trakt, client, store, both)
    records = {p.record for p in read.side.plays}
    assert {str(added[0].id), str(added[1].id)} <= records
    assert len(read.side.plays) == 2002
    assert not read.missed
    assert len(trakt.requests) < 10, [r.path for r in trakt.requests]


@pytest.mark.anyio
async def test_an_old_play_removed_on_trakt_is_gone_from_the_next_read(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """A play months old removed on trakt.tv: gone from the next run's read (so the plan
    carries the removal across, as the full read did), by the show's count fallen."""
    now = time.time()
    shows, _ = _library(trakt, now)
    old = next(h for h in trakt.history() if h.item is shows[4].seasons[1].episodes[10])
    first, read = await _read_twice(trakt, client, store, lambda: trakt.unlog_play(old))
    assert {p.record for p in first.side.plays} - {p.record for p in read.side.plays} == {
        str(old.id)
    }
    assert len(read.side.plays) == 1999
    assert not read.missed
    assert len(trakt.requests) < 10, [r.path for r in trakt.requests]


def _counts_requests(trakt: FakeTrakt) -> list[Any]:
    return [r for r in trakt.requests if r.path.startswith("/sync/watched")]


@pytest.mark.anyio
async def test_the_play_counts_of_hundreds_of_shows_are_read_in_a_few_small_pages(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """300 shows of 20 episodes watched: the counts a run compares (a show's own) come in
    pages of 250 shows without their seasons (`extended=noseasons`), not pages of 100 shows
    with every episode's count (~130 kB each); the backdated play is found as before."""
    now = time.time()
    shows = [
        trakt.add_show(f"Show {s}", 2000, tmdb=900_000 + s, seasons={1: 20}) for s in range(300)
    ]
    for s, show in enumerate(shows):
        for number in range(1, 21):
            trakt.add_history(show.seasons[1].episodes[number], iso(now - 40 * DAY - s * DAY))
    added: list[Any] = []

    def both() -> None:
        added.append(trakt.log_play(shows[100].seasons[1].episodes[3], iso(now - 400 * DAY)))
        added.append(trakt.log_play(shows[5].seasons[1].episodes[7], iso(now - 3600)))

    _, read = await _read_twice(trakt, client, store, both)
    assert {str(added[0].id), str(added[1].id)} <= {p.record for p in read.side.plays}
    assert not read.missed
    assert [r.query.get("extended") for r in _counts_requests(trakt)] == ["noseasons"] * 2


@pytest.mark.anyio
async def test_a_show_rewatched_on_trakt_is_not_read_again_for_its_count(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """A show the user started a rewatch of on Trakt (`reset_at`: its own count, as the
    reference sample has it, the plays since then only) is not read whole at every run that
    finds another app's play; a play backdated into the rewatch is found by its count."""
    now = time.time()
    shows, _ = _library(trakt, now)
    trakt.rewatching[shows[3].trakt] = iso(now - 40 * DAY - 1000 * 600)  # half its plays after
    recent = shows[5].seasons[1].episodes[90]
    _, read = await _read_twice(trakt, client, store, lambda: trakt.log_play(recent, iso(now)))
    assert not read.missed
    assert not [r for r in trakt.requests if r.path.startswith("/sync/history/shows/")]
    added: list[Any] = []

    def both() -> None:
        added.append(trakt.log_play(shows[3].seasons[1].episodes[2], iso(now - 30 * DAY)))
        added.append(trakt.log_play(recent, iso(now - 60)))

    _, read = await _read_twice(trakt, client, store, both)
    assert str(added[0].id) in {p.record for p in read.side.plays}
    assert not read.missed
    assert [r.path for r in trakt.requests if r.path.startswith("/sync/history/shows/")] == [
        f"/sync/history/shows/{shows[3].trakt}"
    ]


@pytest.mark.anyio
async def test_a_run_where_nothing_of_trakt_s_history_moved_asks_for_no_play_counts(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """Read again with nothing moved on Trakt (the other side changed), or after a play of
    ours only: neither asks for Trakt's play counts."""
    now = time.time()
    _library(trakt, now)
    types = ("movies", "episodes")
    first = await TraktReader(client, types, time.time, store).read("me", {}, None, full=True)
    trakt.requests.clear()
    again = await TraktReader(client, types, time.time, store).read(
        "me", first.cursors, first.side, full=False
    )
    assert [r.path for r in trakt.requests] == ["/sync/last_activities"]
    assert again.side.plays == first.side.plays and not again.missed
    await add_play(client, 2, now - 200 * DAY)  # a write of ours (the store knows it below)
    store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "e2", "e2")], time.time())
    for row in store.claim("w", time.time()):
        store.complete(row.id, time.time())
    trakt.requests.clear()
    await TraktReader(client, types, time.time, store).read(
        "me", first.cursors, first.side, full=False
    )
    assert _counts_requests(trakt) == []


@pytest.mark.anyio
async def test_trakt_failing_on_its_play_counts_has_the_run_read_its_history_in_full(
    trakt: FakeTrakt, client: TraktClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The counts answered 502 at every try: the run reads Trakt's history in full instead
    (`missed`), saying why; nothing backdated is lost in between."""
    now = time.time()
    shows, _ = _library(trakt, now)

    def both() -> None:
        trakt.log_play(shows[1].seasons[1].episodes[1], iso(now - 400 * DAY))
        trakt.log_play(shows[2].seasons[1].episodes[90], iso(now - 3600))
        trakt.fail_next(20, 502, route="GET /sync/watched/{type}")

    _, read = await _read_twice(trakt, client, store, both)
    assert read.missed
    assert "play counts could not be read" in caplog.text


@pytest.mark.anyio
async def test_trakt_limiting_its_play_counts_ends_the_run_as_any_read_it_limits(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """A 429 with a long wait on the counts: the read stops (`RateLimited`, the run paused
    until Trakt's time as for any read), no full read of the history is tried meanwhile."""
    now = time.time()
    shows, _ = _library(trakt, now)

    def both() -> None:
        trakt.log_play(shows[2].seasons[1].episodes[90], iso(now - 3600))
        trakt.throttle_next(1, retry_after=600, route="GET /sync/watched/{type}")

    with pytest.raises(RateLimited):
        await _read_twice(trakt, client, store, both)
    assert [r.path for r in trakt.requests if r.path.startswith("/sync/history/")] == [
        "/sync/history/movies",
        "/sync/history/episodes",
    ]


@pytest.mark.anyio
async def test_the_runs_between_full_reads_look_up_only_the_live_viewings_they_ask_about(
    trakt: FakeTrakt, client: TraktClient, store: Store
) -> None:
    """An account whose plays are scrobbled has a live viewing remembered per play (tens of
    thousands): the runs between the daily full reads read, of those, only the records they
    ask about (the plays taken for marks, the candidates for one, a delta's scrobbles), never
    the whole collection; and a movie, never a mark, is not remembered."""
    show = trakt.shows[0]
    movie = trakt.add_movie("Heat", 1995, tmdb=949)
    now = time.time()
    for number in range(1, 6):
        played = trakt.add_history(show.seasons[1].episodes[number], iso(now - number * DAY))
        played.action = "scrobble"
    trakt.add_history(movie, iso(now - 7 * DAY), action="checkin")
    reading = TraktReader(client, ("episodes", "movies"), time.time, store)
    first = await reading.read("me", {}, None, full=True)
    assert len(store.mirror_get("trakt", "me", VIEWINGS)) == 5
    trakt.log_play(show.seasons[1].episodes[6], iso(now - 60)).action = "scrobble"
    whole = (  # the whole collection read (`Store.mirror_get`)
        "SELECT item_key, data FROM mirror"
        " WHERE service = 'trakt' AND profile = 'me' AND collection = 'live_viewings'"
    )
    reading = TraktReader(client, ("episodes", "movies"), time.time, store)  # the next run
    with statements_run("live_viewings", *store_connections(store)) as statements:
        read = await reading.read("me", first.cursors, first.side, full=False)
        await reading.refine("me", read.side, Side((Play(E1, now - 400 * DAY, "q1"),)))
    assert statements, "the delta's scrobble was looked up"
    assert whole not in statements, statements
    assert len(store.mirror_get("trakt", "me", VIEWINGS)) == 6
