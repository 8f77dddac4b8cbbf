"""A Plex profile whose plays come from the watched state alone (its token cannot read the
server's history, or its account id is not known) while its account check waits: a run with
nothing new must stay cheap, and the check must still happen once Plex holds a play."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.plex import FakePlex
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, write_config
from tests.unpaced import unpaced_while
from watchbridge.accounts import READ_EMPTY, check_owed
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.store import Store
from watchbridge.sync import RunResult, run_link
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio

LINK, PROFILE = "plex-trakt", "jamie"
JAMIE, JAMIE_TOKEN = 48151623, "managed-user-token-5d4c3b2a"
KID, KID_TOKEN = 77, "another-managed-user-token-9f8e"
HISTORY = "/sync/history/episodes"  # Trakt's, read by a full read
# The server's identity, then per library a count of views since and one of watched items.
IDLE_PLEX = ["/identity", *["/library/sections/1/all"] * 2, *["/library/sections/2/all"] * 2]


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    """Trakt's pacing lifted (fourteen runs' reads waited ~6 s on it): these tests count
    the requests a run makes, not how fast they go."""
    with unpaced_while("trakt"):
        yield


def plex_with_jamies_plays(start_fake: Callable[[Any], Any]) -> FakePlex:
    """Breaking Bad S1, five episodes watched by jamie (a managed user)."""
    plex = start_fake(FakePlex())
    plex.add_show("200", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    for number in range(1, 8):
        plex.add_episode(str(200 + number), "200", 1, number)
    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    plex.add_user(KID_TOKEN, KID, "kid")
    for number in range(1, 6):
        plex.watch(str(200 + number), time.time() - 30 * 86400 + number * 3600, JAMIE)
    return plex


def config_file(tmp_path: Path, trakt: FakeTrakt, plex: FakePlex, token: str) -> Path:
    """Jamie's plex-trakt link with `token` pasted, and no server token: the server serves
    its history to the owner only, so jamie's plays come from the watched state."""
    return write_config(
        tmp_path,
        f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}"}}
profiles:
  jamie:
    users: {{plex: ["{JAMIE}"]}}
    accounts: {{trakt: {{}}, plex: {{token: "{token}"}}}}
links:
  plex-trakt: {{services: [plex, trakt], first_run: apply, max_removal_share: 1.0}}
""",
    )


class Runs:
    """The link's runs, half an hour apart, each followed by its deliveries."""

    def __init__(self, path: Path, trakt: FakeTrakt, plex: FakePlex) -> None:
        self.trakt, self.plex = trakt, plex
        self.now = time.time() - 8 * 3600  # (in the past: the deliveries go at the real time)
        self.open(path)

    def open(self, path: Path) -> None:
        self.config = load_config(path, {})
        self.runtime = build_runtime(self.config)
        self.runtime.open()
        self.store = Store.open(Path(self.config.storage.path))
        self.worker = DeliveryWorker(make_targets, self.config.delivery)
        self.worker.targets = {t.name: t for t in make_targets(self.runtime)}

    async def close(self) -> None:
        for target in self.worker.targets.values():
            await target.aclose()
        self.runtime.close()
        self.store.close()

    async def run(self, full: bool = False) -> tuple[RunResult, list[str], list[str]]:
        """One run; the paths it asked of Plex and of Trakt."""
        asked = len(self.plex.requests), len(self.trakt.requests)
        result = await run_link(
            self.config, self.store, LINK, yes=True, full=full, clock=lambda: self.now
        )
        await self.worker.pass_once(self.runtime)
        self.now += 1800
        return (
            result,
            [r.path for r in self.plex.requests[asked[0] :]],
            [r.path for r in self.trakt.requests[asked[1] :]],
        )


async def test_an_empty_plex_profile_without_history_is_not_read_in_full_every_run(
    tmp_path: Path, start_fake: Callable[[Any], Any]
) -> None:
    """Upgraded from a release that kept no account, and jamie's pasted token is now a
    new managed user's who has watched nothing: Plex reads empty, and the check waits for a
    play there. Plex's cheap check cannot ask the history (the owner's only): it must still
    tell an idle server from a changed one, so that runs with nothing new cost a question
    to each side, not a full read of both; a play in Plex is still seen by the next run, which
    checks the account and starts over."""
    trakt, plex = start_fake(FakeTrakt()), plex_with_jamies_plays(start_fake)
    trakt.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=81189, seasons={1: 7})
    path = config_file(tmp_path, trakt, plex, JAMIE_TOKEN)
    store = Store.open(tmp_path / "watchbridge.db")
    sign_in_trakt(store, trakt, PROFILE, now=time.time(), user=trakt.add_user("jamie"))
    store.close()
    runs = Runs(path, trakt, plex)
    try:
        await runs.run()
        assert len(trakt.history("jamie")) == 5
        with runs.store.transaction() as conn:  # what an older release's database lacks
            conn.execute("DELETE FROM cursors WHERE name = 'account'")
        await runs.close()
        runs.open(config_file(tmp_path, trakt, plex, KID_TOKEN))

        idle = [await runs.run() for _ in range(12)]  # six hours

        full_reads = [n for n, (_, _, to_trakt) in enumerate(idle) if HISTORY in to_trakt]
        assert full_reads == [0, 1, 7]  # the first, the hold's own, then three hours on
        for n, (result, to_plex, to_trakt) in enumerate(idle):
            assert "plex read empty" in result.held[0]
            if n not in full_reads:
                assert to_trakt == ["/sync/last_activities"]
                assert to_plex == IDLE_PLEX  # a count of each library's views: no listing
        assert runs.store.get_cursor("plex", PROFILE, check_owed(LINK)) == READ_EMPTY
        assert len(trakt.history("jamie")) == 5

        plex.watch("207", runs.now - 600, KID)  # no full read due next run
        started, _, to_trakt = await runs.run()

        assert HISTORY in to_trakt
        assert "holds none of the plays watchbridge kept for it" in started.plans[0].restarted
        assert runs.store.get_cursor("plex", PROFILE, check_owed(LINK)) is None
    finally:
        await runs.close()
