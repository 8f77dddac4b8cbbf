"""Plex shows set to a TheTVDB episode ordering are linked by the other side's numbers.

Re:ZERO as the fakes hold it: TVDB (Plex's "aired" ordering) splits it in two seasons, Trakt
and Serializd (TMDB) number it as one. Plex's S2E1 is the other side's S1E3, found by the
episode's own TVDB id (Trakt) or TMDB id (Serializd).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.receiver import FakeClock
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, Rating, key_of
from tests.harness import sign_in_trakt, watchbridge, write_config
from tests.test_link_plex_serializd import link_config
from tests.unpaced import unpaced as unpaced_services
from watchbridge.config import Config, Link, parse_config
from watchbridge.episode_numbers import REFRESH_MISSING_AFTER, EpisodeNumbering, TraktNumbers
from watchbridge.http import Bucket, Pacer, RetryPolicy, ServiceError
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.readers.plex import (
    Library,
    Memory,
    PlexReader,
    Renumbering,
    Written,
    build_side,
    make_reader,
    numbered_apart_items,
    renumbering,
)
from watchbridge.reconcile import Play, Side, plan, without_waiting
from watchbridge.services.plex import HistoryEntry, LibraryItem
from watchbridge.services.trakt import TraktClient, iso
from watchbridge.store import IngestJob, NewOutboxRow, Store
from watchbridge.sync import _waiting as sync_waiting

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000
DAY = 86400.0
TMDB = 65942  # Re:ZERO
TVDB_IDS = {(1, 1): "5001", (1, 2): "5002", (2, 1): "5003"}  # TVDB's seasons -> episode ids
PLEX_S2E1 = "303"
KEY_S1E3 = f"episode:tmdb:{TMDB}:s1e3"  # the other side's numbers
KEY_S2E1 = f"episode:tmdb:{TMDB}:s2e1"  # Plex's numbers


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 + 30 * DAY)


@pytest.fixture
def plex(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlex:
    fake = start_fake(FakePlex())
    assert isinstance(fake, FakePlex)
    fake.add_show("300", "Re:ZERO", 2016, [f"tmdb://{TMDB}"], ordering="aired")
    for rating_key, ((season, number), tvdb) in zip(
        ("301", "302", PLEX_S2E1), TVDB_IDS.items(), strict=True
    ):
        fake.add_episode(rating_key, "300", season, number, [f"tvdb://{tvdb}"])
    fake.clock = lambda: T0 + 30 * DAY
    return fake


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    show = fake.add_show("Re:ZERO", 2016, tmdb=TMDB, tvdb=305089)
    for number, tvdb in enumerate(TVDB_IDS.values(), start=1):
        fake.add_episode(show, 1, number, tvdb=int(tvdb))
    return fake


def config(plex: FakePlex, other: str, url: str) -> Config:
    service = (
        f'trakt: {{client_id: {CLIENT_ID}, api_url: "{url}", auth_url: "{url}"}}'
        if other == "trakt"
        else f'serializd: {{api_url: "{url}"}}'
    )
    return parse_config(
        f"""services:
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
  {service}
profiles:
  alex: {{accounts: {{plex: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )


def fast_trakt(trakt: FakeTrakt, store: Store) -> TraktClient:
    yaml = f'services: {{trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}"}}}}'
    services = parse_config(yaml, Path("watchbridge.yaml"), {}).services
    assert services.trakt is not None
    return unpaced(TraktClient(services.trakt, store))


def unpaced(client: TraktClient) -> TraktClient:
    """No pacing (the fake needs none) and no retries (failures are the point)."""
    client.http.retry = RetryPolicy(attempts=1)
    client.http.pacers[""] = Pacer({"read": Bucket(1000.0, 1000.0)})
    return client


@pytest.fixture
async def reader(
    plex: FakePlex, trakt: FakeTrakt, store: Store, clock: FakeClock
) -> AsyncIterator[PlexReader]:
    made = make_reader(config(plex, "trakt", trakt.url), store, Link(["plex", "trakt"]), [], clock)
    assert made.numbering is not None
    unpaced(made.numbering.source.client)  # type: ignore[attr-defined]
    yield made
    await made.aclose()


async def items(reader: PlexReader) -> list[str]:
    result = await reader.read("alex", {}, None, True)
    return sorted(p.item for p in result.side.plays)


async def test_an_episode_is_keyed_by_the_number_trakt_gives_its_tvdb_id(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.watch(PLEX_S2E1, T0)
    assert await items(reader) == [KEY_S1E3]


async def test_an_episode_of_a_show_in_tmdb_order_keeps_plexs_numbers_and_asks_trakt_nothing(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt
) -> None:
    del plex.items["300"]["showOrdering"]
    plex.watch(PLEX_S2E1, T0)
    assert await items(reader) == [KEY_S2E1]
    assert trakt.requests == []


async def test_an_episode_trakt_does_not_list_keeps_plexs_numbers(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.add_episode("304", "300", 2, 2, ["tvdb://5999"])
    plex.watch("304", T0)
    assert await items(reader) == [f"episode:tmdb:{TMDB}:s2e2"]


async def test_writes_to_plex_go_to_the_episode_the_other_sides_numbers_name(
    reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await items(reader)
    keys = store.mirror_get("plex", "alex", "keys")
    assert keys[KEY_S1E3]["rating_keys"] == [PLEX_S2E1]


async def test_a_shows_numbers_are_read_from_trakt_once_a_day(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt, clock: FakeClock
) -> None:
    plex.watch(PLEX_S2E1, T0)
    await items(reader)
    await items(reader)
    assert trakt.count("GET", "/shows/{id}/seasons") == 1
    clock.advance(DAY)
    await items(reader)
    assert trakt.count("GET", "/shows/{id}/seasons") == 2


async def test_a_newly_watched_episode_missing_from_the_numbers_reads_them_again_once_an_hour(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt, clock: FakeClock
) -> None:
    await items(reader)
    plex.add_episode("304", "300", 2, 2, ["tvdb://5004"])
    plex.watch("304", T0)
    await items(reader)  # read a moment ago: not yet
    clock.advance(REFRESH_MISSING_AFTER)
    trakt.add_episode(trakt.shows[0], 1, 4, tvdb=5004)  # Trakt has it now
    assert await items(reader) == [f"episode:tmdb:{TMDB}:s1e4"]
    clock.advance(REFRESH_MISSING_AFTER)
    await items(reader)  # found: no further read
    assert trakt.count("GET", "/shows/{id}/seasons") == 2


async def test_a_watched_episode_trakt_lacks_is_asked_for_hourly_on_its_first_day_then_daily(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt, clock: FakeClock
) -> None:
    plex.add_episode("304", "300", 0, 1, ["tvdb://5999"])  # a special only TVDB has
    plex.watch("304", T0)
    for hours in (1,) * 24 + (6,) * 5:  # hourly for a day, then six-hourly to 48 hours
        await items(reader)
        clock.advance(hours * REFRESH_MISSING_AFTER)
    assert trakt.count("GET", "/shows/{id}/seasons") == 24 + 1


async def test_episodes_two_profiles_miss_are_both_remembered_as_missing(
    trakt: FakeTrakt, store: Store, clock: FakeClock
) -> None:
    numbering = EpisodeNumbering(TraktNumbers(fast_trakt(trakt, store)), store, clock)
    show, alex, sam = Ids(tmdb=str(TMDB)), [Ids(tvdb="5998")], [Ids(tvdb="5999")]
    for hours in (1,) * 24 + (6,) * 5:
        await numbering.numbers(show, alex)
        await numbering.numbers(show, sam)
        clock.advance(hours * REFRESH_MISSING_AFTER)
    await numbering.aclose()
    assert trakt.count("GET", "/shows/{id}/seasons") == 24 + 1


async def test_an_episode_found_once_keeps_its_numbers_when_trakts_listing_lacks_it(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt, clock: FakeClock
) -> None:
    plex.watch(PLEX_S2E1, T0)
    await items(reader)
    trakt.shows[0].seasons[1].episodes[3].tvdb = None  # an id edited away on Trakt
    clock.advance(DAY)
    assert await items(reader) == [KEY_S1E3]
    assert trakt.count("GET", "/shows/{id}/seasons") == 2


async def test_trakt_no_longer_finding_the_show_keeps_the_last_numbers_read(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt, clock: FakeClock
) -> None:
    plex.watch(PLEX_S2E1, T0)
    await items(reader)
    trakt.shows[0].tmdb = None  # the id search finds nothing (404 on the listing alike)
    clock.advance(DAY)
    assert await items(reader) == [KEY_S1E3]


async def test_an_episode_trakt_lacks_whose_plex_numbers_name_another_episode_is_not_linked(
    reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    plex.add_episode("304", "300", 1, 3, ["tvdb://5999"])  # TVDB's recap; Trakt's S1E3 is 303
    plex.watch("304", T0)
    assert await items(reader) == []
    assert store.mirror_get("plex", "alex", "keys")[KEY_S1E3]["rating_keys"] == [PLEX_S2E1]


async def test_when_trakt_cannot_answer_the_last_numbers_read_stand(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt, clock: FakeClock
) -> None:
    plex.watch(PLEX_S2E1, T0)
    await items(reader)
    clock.advance(DAY)
    trakt.fail_next(1, 503, route="/shows/{id}/seasons")
    assert await items(reader) == [KEY_S1E3]
    assert trakt.count("GET", "/shows/{id}/seasons") == 2


async def test_without_numbers_ever_read_a_failing_trakt_fails_the_read(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt
) -> None:
    trakt.fail_next(1, 503, route="/shows/{id}/seasons")
    with pytest.raises(ServiceError):
        await items(reader)


async def test_a_full_read_says_which_shows_it_numbered_as_trakt_does(
    reader: PlexReader, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="watchbridge.readers.plex"):
        await items(reader)
    (record,) = [r for r in caplog.records if "TheTVDB episode ordering" in r.getMessage()]
    assert record.levelno == logging.INFO and "Trakt" in record.getMessage()
    assert record.shows == "Re:ZERO"  # type: ignore[attr-defined]


async def test_the_collection_run_gets_episodes_as_trakt_numbers_them(
    plex: FakePlex, trakt: FakeTrakt, store: Store, clock: FakeClock
) -> None:
    plex.add_episode("304", "300", 1, 3, ["tvdb://5999"])  # withheld: Trakt's S1E3 is 303
    link = Link(["plex", "trakt"], kinds=["history", "collection"])
    reader = make_reader(config(plex, "trakt", trakt.url), store, link, [], clock)
    try:
        listings = (await reader.read("alex", {}, None, True)).listings
    finally:
        await reader.aclose()
    assert listings is not None
    numbered = {row["ratingKey"]: (row["parentIndex"], row["index"]) for row in listings["episode"]}
    assert numbered == {"301": (1, 1), "302": (1, 2), PLEX_S2E1: (1, 3)}


async def test_serializd_numbers_an_episode_by_its_tmdb_id(
    plex: FakePlex, store: Store, clock: FakeClock, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    serializd = start_fake(FakeSerializd())
    assert isinstance(serializd, FakeSerializd)
    show = serializd.add_show(TMDB, "Re:ZERO", {1: 3})
    tmdb_id = show.seasons[1].first_episode_id + 3
    plex.items[PLEX_S2E1]["Guid"].append({"id": f"tmdb://{tmdb_id}"})
    plex.watch(PLEX_S2E1, T0)
    link = Link(["plex", "serializd"])
    reader = make_reader(config(plex, "serializd", serializd.url), store, link, [], clock)
    try:
        assert await items(reader) == [KEY_S1E3]
    finally:
        await reader.aclose()


# --------------------------------------------------------------------------- our past writes


EPISODE_303 = LibraryItem(
    PLEX_S2E1, "episode", ids=Ids(tvdb="5003"), season=2, number=1,
    grandparent_rating_key="300", view_count=1, last_viewed_at=T0,
)  # fmt: skip
S1E3_FOR_303 = Renumbering({PLEX_S2E1: (1, 3)})


def renumbered_library() -> Library:
    show = LibraryItem("300", "show", "Re:ZERO", ids=Ids(tmdb=str(TMDB)), ordering="aired")
    return Library(shows=[show], episodes=[EPISODE_303])


def test_an_episode_keeps_numbers_found_before_though_another_show_has_an_episode_there() -> None:
    other_show = LibraryItem("400", "show", "Other", ids=Ids(tmdb="999"), ordering="aired")
    other = LibraryItem("403", "episode", ids=Ids(tvdb="7003"), season=2, number=1,
                        grandparent_rating_key="400")  # fmt: skip
    library = Library(
        shows=[*renumbered_library().shows, other_show], episodes=[EPISODE_303, other]
    )
    numbers = {"300": {("tvdb", "5003"): (1, 3)}, "400": {("tvdb", "7999"): (2, 1)}}
    found = renumbering(library, numbers, {"403": (1, 3, T0)}, T0 + DAY)
    assert found.numbers == {PLEX_S2E1: (1, 3), "403": (1, 3)}


def test_a_write_made_to_an_episode_under_plexs_numbers_before_it_was_renumbered_is_forgotten() -> (
    None
):
    # Before renumbering, the other side's S2E1 was written to Plex's S2E1 (the wrong episode).
    written = Written(PLEX_S2E1, KEY_S2E1, T0, (T0 + 60,))
    memory = Memory({"written:303:1": written})
    built = build_side(renumbered_library(), [], memory, False, None, S1E3_FOR_303)
    assert built.side.plays == ()
    assert built.side.forgotten == (Play(KEY_S2E1, T0, "written:303:1"),)


def test_a_forgotten_write_stays_forgotten_when_the_show_is_back_in_tmdb_order() -> None:
    written = Written(PLEX_S2E1, KEY_S2E1, T0, (T0 + 60,))
    memory = Memory({"written:303:1": written})
    first = build_side(renumbered_library(), [], memory, False, None, S1E3_FOR_303)
    plex_ordered = replace(
        renumbered_library(), episodes=[replace(EPISODE_303, season=1, number=3)]
    )
    assert build_side(plex_ordered, [], first.memory, False).side.plays == ()


def test_a_rating_given_before_its_episode_was_renumbered_is_left_out_not_removed() -> None:
    rated = replace(EPISODE_303, user_rating=8.0, last_rated_at=T0)
    library = replace(renumbered_library(), episodes=[rated])
    since = Renumbering({PLEX_S2E1: (1, 3)}, {PLEX_S2E1: T0 + 60})
    side = build_side(library, [], Memory(), True, None, since).side
    assert side.ratings == {} and side.renumbered_ratings == {KEY_S2E1, KEY_S1E3}


def test_a_rating_given_after_its_episode_was_renumbered_is_linked_by_the_new_key() -> None:
    rated = replace(EPISODE_303, user_rating=8.0, last_rated_at=T0 + 120)
    library = replace(renumbered_library(), episodes=[rated])
    since = Renumbering({PLEX_S2E1: (1, 3)}, {PLEX_S2E1: T0 + 60})
    assert list(build_side(library, [], Memory(), True, None, since).side.ratings) == [KEY_S1E3]


def test_a_write_made_under_the_other_sides_numbers_follows_the_episodes_key() -> None:
    written = Written(PLEX_S2E1, KEY_S1E3, T0, (T0 + 60,))
    memory = Memory({"written:303:1": written})
    built = build_side(renumbered_library(), [], memory, False, None, S1E3_FOR_303)
    assert built.side.plays == (Play(KEY_S1E3, T0, "written:303:1"),)


# --------------------------------------------------------------------------- a link, end to end


def link_setup(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], plex_watched: bool = True
) -> LinkRig:
    """Trakt's S1E3 was watched an hour ago: on Plex, as its S2E1 (with `plex_watched`), and
    the viewing reached Trakt (a webhook). Trakt's S2E1 is another episode, Plex's S2E2."""
    plex, trakt = start_fake(FakePlex()), start_fake(FakeTrakt())
    assert isinstance(plex, FakePlex) and isinstance(trakt, FakeTrakt)
    show = trakt.add_show("Re:ZERO", 2016, tmdb=TMDB, tvdb=305089)
    for number, tvdb in enumerate(TVDB_IDS.values(), start=1):
        trakt.add_episode(show, 1, number, tvdb=int(tvdb))
    trakt.add_episode(show, 2, 1, tvdb=6001)
    seen = time.time() - 3600
    trakt.add_history(show.episode(1, 3), iso(seen))
    plex.add_show("300", "Re:ZERO", 2016, [f"tmdb://{TMDB}"])
    for rating_key, ((season, number), tvdb) in zip(
        ("301", "302", PLEX_S2E1), TVDB_IDS.items(), strict=True
    ):
        plex.add_episode(rating_key, "300", season, number, [f"tvdb://{tvdb}"])
    plex.add_episode("304", "300", 2, 2, ["tvdb://6001"])  # Trakt's S2E1
    if plex_watched:
        plex.watch(PLEX_S2E1, seen)
    path = write_config(
        tmp_path,
        f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  alex: {{accounts: {{trakt: {{}}, plex: {{}}}}}}
links:
  plex-trakt: {{services: [plex, trakt], first_run: apply, max_removal_share: 1}}
""",
    )
    store = Store.open(tmp_path / "watchbridge.db")
    sign_in_trakt(store, trakt, "alex", now=time.time())
    store.close()
    return LinkRig(path, plex, trakt)


@dataclass
class LinkRig:
    path: Path
    plex: FakePlex
    trakt: FakeTrakt
    link: str = "plex-trakt"

    def sync(self, *args: str) -> str:
        """`watchbridge sync --full` as cron runs it: the real command, in this process."""
        argv = ["sync", "--link", self.link, "--config", str(self.path), "--full", *args]
        result = watchbridge(*argv)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def set_tvdb_order(self) -> None:
        """The show set to TheTVDB (Aired) in Plex, or watchbridge upgraded to renumber it."""
        self.plex.items["300"]["showOrdering"] = "aired"

    def trakt_play_of_its_s2e1(self) -> None:
        """The user's own Trakt play of its S2E1 (Plex's S2E2, 304), ten days ago."""
        self.trakt.add_history(self.trakt.shows[0].episode(2, 1), iso(time.time() - 10 * DAY))

    def trakt_episodes(self) -> list[tuple[int, int]]:
        return sorted((h.item.season, h.item.number) for h in self.trakt.history())  # type: ignore[union-attr]


def test_a_linked_show_in_tvdb_order_gets_no_copy_on_another_episode(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    rig = link_setup(tmp_path, start_fake)
    rig.set_tvdb_order()
    rig.sync()
    rig.sync()
    assert rig.trakt_episodes() == [(1, 3)]
    assert rig.plex.user_state("301") == {} and rig.plex.user_state("302") == {}


def renumbered_kept(rig: LinkRig) -> dict[str, object]:
    """The numbers kept for Plex's episodes found in Trakt's numbering (`_renumbered`)."""
    store = Store.open(rig.path.parent / "watchbridge.db")
    try:
        return store.mirror_get("plex", "alex", "renumbered:trakt")
    finally:
        store.close()


def test_a_dry_run_keeps_no_numbers_of_a_show_in_tvdb_order(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    """Numbers kept stand once the other side no longer gives them: a dry run keeps none."""
    rig = link_setup(tmp_path, start_fake)
    rig.set_tvdb_order()
    rig.sync("--dry-run")
    assert renumbered_kept(rig) == {}
    rig.sync()
    assert set(renumbered_kept(rig)) == {"301", "302", PLEX_S2E1, "304"}


def test_a_trakt_play_marks_the_plex_episode_its_numbers_name_in_tvdb_order(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    rig = link_setup(tmp_path, start_fake)
    rig.set_tvdb_order()
    rig.trakt.add_history(rig.trakt.shows[0].episode(1, 1), iso(time.time() - 7200))
    rig.sync()
    assert rig.plex.user_state("301")["viewCount"] == 1
    assert rig.trakt_episodes() == [(1, 1), (1, 3)]


def test_upgrading_takes_back_the_copy_made_under_plexs_numbers_and_copies_nothing_again(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Linked before shows in TVDB order were renumbered (as if the ordering were unknown):
    # Plex's S2E1 went to Trakt's S2E1, another episode.
    rig = link_setup(tmp_path, start_fake)
    rig.sync()
    assert rig.trakt_episodes() == [(1, 3), (2, 1)]
    rig.set_tvdb_order()
    rig.sync()
    rig.sync()
    assert rig.trakt_episodes() == [(1, 3)]
    assert rig.plex.user_state(PLEX_S2E1)["viewCount"] == 1
    assert rig.plex.user_state("301") == {} and rig.plex.user_state("302") == {}


def test_a_trakt_play_written_to_plex_before_upgrading_and_removed_leaves_the_episodes_own_play(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Before upgrading, Trakt's own S2E1 (another episode) was written to Plex's S2E1 (303),
    # which the user had watched: after upgrading that write is read back as Trakt's S2E1 and
    # 303's own play as Trakt's S1E3. Removing Trakt's S2E1 must not unwatch 303.
    rig = link_setup(tmp_path, start_fake)
    other = rig.trakt.shows[0].episode(2, 1)
    rig.trakt.add_history(other, iso(time.time() - 10 * DAY))
    rig.sync()
    rig.sync()  # the write read back
    rig.set_tvdb_order()
    rig.sync()
    rig.trakt.user.history = [h for h in rig.trakt.user.history if h.item is not other]
    rig.sync()
    rig.sync()
    assert rig.plex.user_state(PLEX_S2E1)["viewCount"] >= 1
    assert rig.trakt_episodes() == [(1, 3)]


def test_a_webhook_play_waiting_under_plexs_numbers_stands_for_the_links_add(store: Store) -> None:
    # Plex's webhook for 303 (its ids, Plex's numbers S2E1) is queued for Trakt, not landed.
    ref = MediaRef(
        "episode", Ids(tvdb="5003"), show_ids=Ids(tmdb=str(TMDB)), season=2, number=1,
        source_key=PLEX_S2E1,
    )  # fmt: skip
    row = NewOutboxRow("trakt", "alex", "play", {"item": ref_to_dict(ref), "at": T0}, "o", "i")
    assert store.ingest(IngestJob("plex", "played", "alex", {}, T0, "s", lambda *_: (None, [row])))
    built = build_side(renumbered_library(), [HistoryEntry("9", PLEX_S2E1, T0, "1")], Memory(),
                       False, None, S1E3_FOR_303)  # fmt: skip
    current = {"plex": built.side, "trakt": Side()}
    waiting = sync_waiting(store, "alex", built.aliases, T0)
    assert without_waiting(plan(Link(["plex", "trakt"]), current, {}), waiting).actions == ()


def test_a_webhook_play_naming_only_the_episode_stands_for_the_links_add(store: Store) -> None:
    # Plex's current agent names an episode by its own ids and guid; the show's ids are looked
    # up when it is delivered, so while it waits for Trakt only the guid ties it to the link's.
    guid = "plex://episode/5d9c0874ffd9ef001e99607a"
    show = LibraryItem("500", "show", "Severance", ids=Ids(tmdb="95396"))
    episode = LibraryItem("501", "episode", ids=Ids(tvdb="6001", plex_guid=guid), season=1,
                          number=2, grandparent_rating_key="500", view_count=1)  # fmt: skip
    ref = MediaRef("episode", Ids(tvdb="6001", plex_guid=guid), season=1, number=2,
                   show_ids=Ids(plex_guid="plex://show/5d9c0874"), source_key="501")  # fmt: skip
    row = NewOutboxRow("trakt", "alex", "play", {"item": ref_to_dict(ref), "at": T0}, "o", "i")
    assert store.ingest(IngestJob("plex", "played", "alex", {}, T0, "s", lambda *_: (None, [row])))
    library = Library(shows=[show], episodes=[episode])
    built = build_side(library, [HistoryEntry("9", "501", T0 + 600, "1")], Memory(), False)
    current = {"plex": built.side, "trakt": Side()}
    waiting = sync_waiting(store, "alex", built.aliases, T0)
    assert without_waiting(plan(Link(["plex", "trakt"]), current, {}), waiting).actions == ()


def test_a_write_made_before_upgrading_copies_nothing_when_the_show_goes_back_to_tmdb_order(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    rig = link_setup(tmp_path, start_fake)
    rig.trakt_play_of_its_s2e1()
    rig.sync()  # before upgrading: Trakt's S2E1 written to Plex's S2E1 (303)
    rig.sync()
    rig.set_tvdb_order()
    rig.sync()
    del rig.plex.items["300"]["showOrdering"]  # back to TMDB order: 303 is S1E3 in Plex too
    rig.plex.items[PLEX_S2E1] |= {"parentIndex": 1, "index": 3}
    rig.sync()
    rig.sync()
    assert rig.trakt_episodes() == [(1, 3), (2, 1)]


def test_unwatching_in_plex_an_episode_written_to_before_upgrading_leaves_trakts_play_of_it(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    rig = link_setup(tmp_path, start_fake)
    rig.trakt_play_of_its_s2e1()
    rig.sync()  # Trakt's S2E1 written to Plex's S2E1 (303), which the user had watched
    rig.sync()
    rig.set_tvdb_order()
    rig.sync()
    rig.plex.state[(1, PLEX_S2E1)] = {}  # the user unwatches 303 (Trakt's S1E3)
    rig.sync()
    rig.sync()
    assert rig.trakt_episodes() == [(2, 1)]


def test_a_trakt_season_marked_in_one_minute_keeps_every_play_after_upgrading(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Trakt's S1E3 and S2E1 at one minute: before upgrading S2E1 went to Plex's S2E1 (303);
    # after, S1E3 is 303 too, and its write takes the record of the old one.
    rig = link_setup(tmp_path, start_fake, plex_watched=False)
    seen = rig.trakt.history()[0].watched_at
    rig.trakt.add_history(rig.trakt.shows[0].episode(2, 1), seen)
    rig.sync()
    rig.set_tvdb_order()
    for _ in range(3):
        rig.sync()
    assert rig.trakt_episodes() == [(1, 3), (2, 1)]


def test_a_trakt_rating_written_to_plex_before_upgrading_stays_on_trakt_and_goes_nowhere_else(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    rig = link_setup(tmp_path, start_fake)
    other = rig.trakt.shows[0].episode(2, 1)
    rig.trakt.user.ratings[key_of(other)] = Rating(other, 8, iso(time.time() - 10 * DAY))
    rig.sync()  # Trakt's S2E1 rating written to Plex's S2E1 (303)
    assert rig.plex.user_state(PLEX_S2E1)["userRating"] == 8.0
    rig.sync()
    rig.set_tvdb_order()
    rig.sync()
    rig.sync()
    assert [(r.item.season, r.item.number) for r in rig.trakt.ratings()] == [(2, 1)]  # type: ignore[union-attr]


async def test_episodes_watched_together_keep_the_linked_ones_play_beside_a_withheld_one(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.add_episode("299", "300", 1, 3, ["tvdb://5999"])  # TVDB's recap: Trakt's S1E3 is 303
    plex.watch("299", T0, history=False)  # the show marked watched at once
    plex.watch(PLEX_S2E1, T0, history=False)
    assert await items(reader) == [KEY_S1E3]


async def test_an_unfound_episode_whose_plex_numbers_trakt_lists_without_comparable_ids_is_linked(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt
) -> None:
    s1e1 = trakt.shows[0].seasons[1].episodes[1]
    s1e1.tvdb, s1e1.tmdb = None, 777  # Trakt knows its TMDB id only; Plex its TVDB id only
    plex.watch("301", T0)
    assert await items(reader) == [f"episode:tmdb:{TMDB}:s1e1"]


async def test_numbers_found_before_yield_to_another_episode_found_there_now(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt, store: Store, clock: FakeClock
) -> None:
    await items(reader)  # 303 is Trakt's S1E3
    plex.add_episode("304", "300", 2, 2, ["tvdb://5998"])
    trakt.shows[0].seasons[1].episodes[3].tvdb = 5998  # Trakt's S1E3 turns out to be 304
    clock.advance(DAY)
    await items(reader)
    assert store.mirror_get("plex", "alex", "keys")[KEY_S1E3]["rating_keys"] == ["304"]


def test_a_trakt_play_written_to_the_wrong_plex_episode_before_upgrading_goes_to_the_right_one(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    rig = link_setup(tmp_path, start_fake)
    rig.trakt_play_of_its_s2e1()
    rig.sync()  # Trakt's S2E1 written to Plex's S2E1 (303); it is Plex's S2E2 (304)
    rig.sync()
    rig.set_tvdb_order()
    rig.sync()
    rig.sync()
    assert rig.plex.user_state("304")["viewCount"] == 1
    assert rig.trakt_episodes() == [(1, 3), (2, 1)]


def test_a_trakt_rating_of_a_renumbered_episode_reaches_the_plex_episode_it_names(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    rig = link_setup(tmp_path, start_fake)
    rig.set_tvdb_order()
    rig.sync()
    for (season, number), value in (((1, 3), 8), ((2, 1), 6)):  # Plex's 303 and 304
        episode = rig.trakt.shows[0].episode(season, number)
        rig.trakt.user.ratings[key_of(episode)] = Rating(episode, value, iso(time.time()))
    rig.sync()
    assert rig.plex.user_state(PLEX_S2E1)["userRating"] == 8.0
    assert rig.plex.user_state("304")["userRating"] == 6.0


def test_a_rating_cleared_in_plex_on_a_renumbered_episode_is_cleared_on_trakt(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    rig = link_setup(tmp_path, start_fake)
    rig.set_tvdb_order()
    rig.sync()
    rig.plex.rate("304", 6.0, time.time() + 2)  # Trakt's S2E1, rated after renumbering
    rig.sync()
    assert [(r.item.season, r.item.number) for r in rig.trakt.ratings()] == [(2, 1)]  # type: ignore[union-attr]
    rig.plex.rate("304", None, time.time())
    rig.sync()
    assert rig.trakt.ratings() == []


def test_upgrading_as_plexs_own_numbers_change_too_copies_nothing_twice(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    rig = link_setup(tmp_path, start_fake)
    rig.trakt_play_of_its_s2e1()
    rig.sync()  # Trakt's S2E1 written to Plex's S2E1 (303); Plex's 303 copied as S2E1
    rig.sync()
    rig.plex.items["300"]["showOrdering"] = "absolute"  # 303 is Plex's S1E3 now, 304 S1E4
    rig.plex.items[PLEX_S2E1] |= {"parentIndex": 1, "index": 3}
    rig.plex.items["304"] |= {"parentIndex": 1, "index": 4}
    rig.sync()
    rig.sync()
    assert rig.trakt_episodes() == [(1, 3), (2, 1)]
    assert rig.plex.user_state("304")["viewCount"] == 1


def test_a_write_to_an_episode_withheld_then_found_at_its_numbers_is_its_play_again(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    rig = link_setup(tmp_path, start_fake)
    s1e1 = rig.trakt.shows[0].episode(1, 1)
    rig.trakt.add_history(s1e1, iso(time.time() - 10 * DAY))
    rig.sync()  # Trakt's S1E1 written to Plex's S1E1 (301): the right episode
    rig.sync()
    s1e1.tvdb = 7001  # Trakt lists another episode at S1E1 for a while: 301 is withheld
    rig.set_tvdb_order()
    rig.sync()
    s1e1.tvdb = 5001  # fixed: 301 is found at S1E1 again, once the listing is read again
    store = Store.open(tmp_path / "watchbridge.db")
    store.cache_put("episode-numbers", f"trakt:tmdb:{TMDB}", None, 0.0, 0.0)  # expired
    store.close()
    rig.sync()
    assert "add_play plex" not in rig.sync("--dry-run")
    assert rig.trakt_episodes() == [(1, 1), (1, 3)]


# --------------------------------------------------------------------------- a Serializd link


def test_upgrading_a_plex_serializd_link_moves_the_copy_to_the_episode_tmdb_numbers(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    assert isinstance(plex, FakePlex) and isinstance(serializd, FakeSerializd)
    show = serializd.add_show(TMDB, "Re:ZERO", {1: 3, 2: 2})  # TMDB's S2E1: another episode
    first = show.seasons[1].first_episode_id
    plex.add_show("300", "Re:ZERO", 2016, [f"tmdb://{TMDB}"])
    for rating_key, ((season, number), tvdb) in zip(
        ("301", "302", PLEX_S2E1), TVDB_IDS.items(), strict=True
    ):
        tmdb = first + int(rating_key) - 300  # Plex's S2E1 is TMDB's S1E3
        plex.add_episode(rating_key, "300", season, number, [f"tvdb://{tvdb}", f"tmdb://{tmdb}"])
    plex.watch(PLEX_S2E1, time.time() - 3600)
    path = link_config(tmp_path, plex, serializd, ", max_removal_share: 1")
    rig = LinkRig(path, plex, FakeTrakt(), link="plex-serializd")  # FakeTrakt: not started
    # Serializd unpaced: three syncs at 2 requests a second spent ~8 s waiting on it.
    unpaced_services(monkeypatch, "serializd")

    def logged() -> list[tuple[int, int]]:
        return sorted(
            (season.number, entry.episode_number)
            for entry in serializd.diary()
            if (season := show.season_by_id(entry.season_id or 0)) and entry.episode_number
        )

    rig.sync()
    assert logged() == [(2, 1)]  # before upgrading: the wrong episode
    rig.set_tvdb_order()
    rig.sync()
    rig.sync()
    assert logged() == [(1, 3)]
    assert plex.user_state("301") == {} and plex.user_state("302") == {}


async def test_an_imdb_id_trakt_gives_two_episodes_names_neither(
    reader: PlexReader, plex: FakePlex, trakt: FakeTrakt
) -> None:
    # A two-part episode IMDb lists once: Trakt has both parts with the one IMDb id (and no
    # TVDB id), as Plex does. Part one is not Trakt's part two: Plex's numbers stand.
    show = trakt.add_show("Lost", 2004, tmdb=4607)
    trakt.add_episode(show, 1, 1, imdb="tt0636289")
    trakt.add_episode(show, 1, 2, imdb="tt0636289")
    plex.add_show("400", "Lost", 2004, ["tmdb://4607"], ordering="dvd")
    plex.add_episode("401", "400", 1, 1, ["imdb://tt0636289", "tvdb://127131"])
    plex.add_episode("402", "400", 1, 2, ["imdb://tt0636289", "tvdb://127132"])
    plex.watch("401", T0)
    assert await items(reader) == ["episode:tmdb:4607:s1e1"]


def test_with_nothing_to_renumber_by_only_numbers_known_alike_are_linked() -> None:
    """An AniList link with no Trakt or Serializd: absolute order's season 1 counts episodes
    as TMDB's season 1 does; aired order where the mapping says both numbers are one
    episode (and the show has both ids); DVD order, and seasons other than aired ones whose
    every episode is alike, never."""
    alike = {(TMDB, 305089, 1, 1)}  # the mapping: TMDB S1E1 is TheTVDB's aired S1E1

    def same(tmdb: int, tvdb: int, season: int, number: int) -> bool:
        return (tmdb, tvdb, season, number) in alike

    def show(rk: str, ordering: str, tvdb: str | None = "305089") -> LibraryItem:
        return LibraryItem(rk, "show", rk, ids=Ids(tmdb=str(TMDB), tvdb=tvdb), ordering=ordering)

    shows = [show("1", "absolute"), show("2", "aired"), show("3", "dvd"), show("4", "aired", None)]
    episodes = [
        LibraryItem(
            f"{s.rating_key}{n}",
            "episode",
            season=season,
            number=number,
            parent_rating_key=f"{s.rating_key}s{season}",
            grandparent_rating_key=s.rating_key,
        )
        for s in shows
        for n, (season, number) in enumerate(((1, 1), (1, 2), (2, 1)))
    ]
    seasons = [
        LibraryItem(f"{s.rating_key}s{n}", "season", season=n, parent_rating_key=s.rating_key)
        for s in shows
        for n in (1, 2)
    ]
    library = Library(shows=shows, seasons=seasons, episodes=episodes)

    apart = numbered_apart_items(library, same)

    linked = {e.rating_key for e in episodes + seasons} - apart
    assert linked == {"10", "11", "20"}


@pytest.mark.parametrize(
    ("source", "server"),
    [("emby", "e1b2c3d4e5f60718293a4b5c6d7e8f90"), ("plex", "b" * 40)],
    ids=["an-emby-item", "another-plex-servers-item"],
)
def test_a_waiting_play_of_another_servers_item_with_the_same_key_holds_back_no_copy(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], source: str, server: str
) -> None:
    # Plex's 303 (S2E1 by Plex, Trakt's S1E3) was watched an hour ago and is not on Trakt yet.
    # A play waits for Trakt (unmatched) of another server's item whose own key is "303" too:
    # an Emby item id, or a ratingKey of the owner's second Plex server (or a friend's). It is
    # another episode, and must not stand for the link's copy of 303's play.
    rig = link_setup(tmp_path, start_fake)
    rig.trakt.user.history.clear()
    rig.set_tvdb_order()
    ref = MediaRef("episode", Ids(tvdb="7777001"), show_ids=Ids(tvdb="7777"), season=1,
                   number=1, source_key=PLEX_S2E1, show_source_key="300")  # fmt: skip
    payload = {"item": ref_to_dict(ref), "at": time.time(), "source": source, "server": server}
    row = NewOutboxRow("trakt", "alex", "play", payload, "o", "waiting-elsewhere")
    store = Store.open(rig.path.parent / "watchbridge.db")
    try:
        job = IngestJob(source, "stop", "alex", {}, time.time(), "s", lambda *_: (None, [row]))
        assert store.ingest(job)
    finally:
        store.close()
    rig.sync()
    assert rig.trakt_episodes() == [(1, 3)]
