"""Plex behind a reverse proxy (Traefik, nginx, Caddy): while the Plex container restarts, the
proxy answers 404 "404 page not found" for every path, `/identity` too. That is an outage, never
"this item is gone": a write waits (no try spent, no dead letter) and lands once Plex answers,
a removal is not taken as done, and a lookup caches no miss. A 404 is Plex's own only when
`/identity` then names the server (one answer vouches for a minute); Plex's own 404 is still
"gone", as before."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN, FakePlex
from tests.test_link_plex_serializd import entry_of
from tests.test_plex_enrichment import YUMA_GUID, YUMA_GUIDS, yuma
from tests.test_plex_unlanded_writes import Rig, plex_serializd_rig
from tests.test_unnamed_items import BCS
from watchbridge.config import PlexConfig, Secret
from watchbridge.http import IDENTITY_VOUCHES, RetryPolicy, Unavailable
from watchbridge.ids import PlexEnricher
from watchbridge.services.plex import PlexClient, PlexItemError
from watchbridge.store import Store

pytestmark = pytest.mark.anyio

NOT_PLEX = "not the Plex server answering"
S1E2 = "302"  # Better Call Saul S1E2, unwatched in Plex
S2E3 = "103"  # Breaking Bad S2E3, watched in Plex


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def plex(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlex:
    fake = start_fake(FakePlex())
    assert isinstance(fake, FakePlex)
    fake.add_movie("8372", "3:10 to Yuma", 1957, YUMA_GUIDS, guid=YUMA_GUID)
    fake.watch("8372", 1_700_000_000)
    return fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(plex: FakePlex, clock: Clock) -> AsyncIterator[PlexClient]:
    client = PlexClient(PlexConfig(url=plex.url, token=Secret(TOKEN)), clock=clock)
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    yield client
    await client.aclose()


# Every call that reads a 404 as "gone" (or answers it at all), as the deliverer, the reader,
# the lookups and the collection make them.
CALLS: dict[str, Callable[[PlexClient], Awaitable[object]]] = {
    "metadata": lambda c: c.metadata("8372"),
    "details": lambda c: c.details(["8372", "999"]),
    "viewed_since": lambda c: c.viewed_since("1", "movie", 1_600_000_000),
    "watched_count": lambda c: c.watched_count("1", "movie"),
    "delete_history": lambda c: c.delete_history("1"),
    "scrobble": lambda c: c.scrobble("8372"),
    "unscrobble": lambda c: c.unscrobble("8372"),
    "rate": lambda c: c.rate("8372", 8.0),
    "identity": lambda c: c.identity(),
    "sections": lambda c: c.sections(),
    "history": lambda c: c.history("1"),
}


@pytest.mark.parametrize("call", CALLS)
async def test_a_proxys_404_in_plexs_place_is_an_outage_not_an_item_gone(
    client: PlexClient, plex: FakePlex, call: str
) -> None:
    plex.proxy_lost_plex()
    with pytest.raises(Unavailable) as raised:
        await CALLS[call](client)
    assert NOT_PLEX in raised.value.message
    assert raised.value.status is None  # no answer of Plex's: an outage, not this request's
    assert not raised.value.answered  # no write's own failure: nothing spends a try
    plex.proxy_found_plex()
    await CALLS[call](client)  # Plex again: the same call goes through


async def test_plexs_own_404_is_still_an_item_gone_and_one_identity_vouches_for_a_minute(
    client: PlexClient, plex: FakePlex, clock: Clock
) -> None:
    assert await client.metadata("998") is None
    assert await client.metadata("999") is None
    assert set(await client.details(["998", "8372", "999"])) == {"8372"}
    assert await client.delete_history("999") is False
    with pytest.raises(PlexItemError):
        await client.scrobble("999")
    assert plex.count("GET", "/identity") == 1  # asked once for all those 404s
    clock.now += IDENTITY_VOUCHES + 1
    assert await client.metadata("999") is None
    assert plex.count("GET", "/identity") == 2


async def test_a_proxys_404_a_minute_after_plex_vouched_is_asked_about_again(
    client: PlexClient, plex: FakePlex, clock: Clock
) -> None:
    assert await client.metadata("999") is None  # Plex's own, vouched for
    clock.now += IDENTITY_VOUCHES + 1
    plex.proxy_lost_plex()
    with pytest.raises(Unavailable, match=NOT_PLEX):
        await client.metadata("8372")


async def test_a_404_while_identity_names_another_server_is_an_outage(
    client: PlexClient, plex: FakePlex
) -> None:
    assert await client.identity() == plex.machine_id
    plex.machine_id = "f" * 40  # another PMS answers at the address (a proxy's other route)
    with pytest.raises(Unavailable, match="names another server"):
        await client.metadata("999")


@pytest.mark.parametrize(
    "identity",
    [
        {"status": 200, "body": "<html><body>Sign in to your proxy</body></html>"},
        {"status": 200, "body": {"MediaContainer": {"size": 0}}},
        {"status": 502, "body": "<html>502 Bad Gateway</html>"},
    ],
    ids=["a login page", "no machineIdentifier", "a gateway error"],
)
async def test_a_404_while_identity_is_no_plex_servers_answer_is_an_outage(
    client: PlexClient, plex: FakePlex, identity: dict[str, Any]
) -> None:
    plex.fail_next(5, route="/identity", **identity)
    with pytest.raises(Unavailable):
        await client.metadata("999")


async def test_a_404_while_identity_cannot_be_reached_is_an_outage(
    client: PlexClient, plex: FakePlex
) -> None:
    plex.drop_next(5, "/identity")
    with pytest.raises(Unavailable, match="asking /identity"):
        await client.metadata("999")


async def test_a_lookup_met_by_a_proxys_404_caches_no_miss(
    client: PlexClient, plex: FakePlex, store: Store, clock: Clock
) -> None:
    # A webhook's play whose ids Plex must name: a miss cached would leave it unmatched for
    # an hour (and its show's plays with it) after Plex is back.
    enricher = PlexEnricher(client.metadata, store, clock)
    plex.proxy_lost_plex()
    item, failed = await enricher.lookup(yuma())
    assert item == yuma() and isinstance(failed, Unavailable)
    plex.proxy_found_plex()
    assert (await enricher.enrich(yuma())).ids.imdb == "tt0050086"


# --------------------------------------------------------------------------- a link's writes


@pytest.fixture
async def rig(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    extra = "delivery: {max_attempts: 1}\n"  # a try spent is a dead letter at once
    async with plex_serializd_rig(tmp_path, start_fake, monkeypatch, config_extra=extra) as made:
        yield made


def waiting(rig: Rig) -> list[tuple[str, int]]:
    rows = rig.runtime.store.db.execute(
        "SELECT action, attempts FROM outbox WHERE status = 'pending' AND target = 'plex'"
    ).fetchall()
    return [(action, attempts) for action, attempts in rows]


@pytest.mark.parametrize("since", [None, "/:/scrobble"], ids=["from the start", "mid-batch"])
async def test_a_play_the_link_writes_while_the_proxy_answers_404_waits_and_lands_once(
    rig: Rig, since: str | None
) -> None:
    await rig.run()
    rig.serializd.log_entry(None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z")
    assert await rig.run(deliver=False) == 1
    rig.plex.proxy_lost_plex(since)  # the Plex container restarts
    await rig.drain()

    assert rig.dead_letters() == []
    assert waiting(rig) == [("play", 0)]  # held: no try spent
    assert rig.plex.user_state(S1E2) == {}

    rig.plex.proxy_found_plex()
    rig.at(10)
    await rig.drain()
    assert waiting(rig) == []
    rig.at(30)
    queued = [await rig.run()]
    rig.at(24 * 60)
    queued.append(await rig.run())

    assert queued == [0, 0]
    assert rig.plex.user_state(S1E2)["viewCount"] == 1  # written once
    assert len(rig.plex.history_of(S1E2)) == 1
    assert rig.dead_letters() == []
    assert len(rig.s1e2_entries()) == 1  # the user's, not copied back


async def test_a_removal_the_link_writes_while_the_proxy_answers_404_is_not_taken_as_done(
    rig: Rig,
) -> None:
    # S2E3's diary entry deleted on Serializd: the link unwatches it in Plex. The proxy's 404
    # to the unwatch was read as "the item left the library", the removal as done, and S2E3
    # stayed watched in Plex for good.
    await rig.run()
    rig.serializd.delete_entry(entry_of(rig.serializd, 2, 3))
    left = len(rig.serializd.diary())
    assert await rig.run(deliver=False) == 1
    rig.plex.proxy_lost_plex("/:/unscrobble")
    await rig.drain()

    assert rig.dead_letters() == []
    assert waiting(rig) == [("remove_play", 0)]
    assert rig.plex.user_state(S2E3)["viewCount"] == 1

    rig.plex.proxy_found_plex()
    rig.at(10)
    await rig.drain()
    assert waiting(rig) == []
    rig.at(30)
    assert await rig.run() == 0

    assert not rig.plex.user_state(S2E3).get("viewCount")
    assert rig.plex.history_of(S2E3) == []
    assert len(rig.serializd.diary()) == left  # not copied back


async def test_a_page_answering_in_plexs_place_is_no_sign_plex_is_up(
    client: PlexClient, plex: FakePlex
) -> None:
    # The enricher's "are you there" after a lookup got no answer: a proxy's sign-in page (a
    # 200) said yes, and the outage was taken for that item's failure (its play spent tries).
    plex.fail_next(1, 200, route="/identity", body="<html><body>Sign in</body></html>")
    assert not await client.answers()
    plex.proxy_lost_plex()
    assert not await client.answers()
    plex.proxy_found_plex()
    assert await client.answers()
