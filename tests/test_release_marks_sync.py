"""Trakt plays marked "watched on release date" through a Trakt ⇄ Serializd link, by the real
CLI against the fakes: a mark added on trakt.tv after the link's first run, and a mark of an
episode Trakt knows no runtime of, are neither copied as viewings nor make the viewing they
stand for be copied back. What the fakes hold is what is asserted."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, watchbridge, write_config
from tests.unpaced import unpaced_while
from watchbridge.services.trakt import iso
from watchbridge.store import Store

DAY = 86400
TMDB = 7100


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    with unpaced_while("trakt", "serializd"):
        yield


def _sync(path: Path, *args: str) -> str:
    result = watchbridge("sync", "--link", "trakt-serializd", "--config", str(path), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _linked(tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd) -> Path:
    path = write_config(
        tmp_path,
        f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me:
    accounts:
      trakt: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
  trakt-serializd: {{services: [trakt, serializd]}}
""",
    )
    store = Store.open(tmp_path / "watchbridge.db")
    sign_in_trakt(store, trakt, "me", now=time.time())
    store.close()
    return path


def _held(trakt: FakeTrakt, serializd: FakeSerializd) -> tuple[Counter[Any], Counter[Any]]:
    plays = Counter((h.item.season, h.item.number) for h in trakt.history())
    diary = Counter(
        (serializd.shows[r.show_id].season_by_id(r.season_id).number, r.episode_number)  # type: ignore[union-attr]
        for r in serializd.diary()
    )
    return plays, diary


def test_a_mark_added_on_trakt_after_the_first_run_is_not_copied_as_a_viewing(
    tmp_path: Path, start_fake: Any
) -> None:
    """The user logs an episode on Serializd and marks it on trakt.tv "watched on release
    date" weeks after the link's first run: Trakt dates the mark years back, where a read of
    Trakt's recent history does not look."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    now = int(time.time())
    aired = now - 2000 * DAY // 3600 * 3600
    show = trakt.add_show("Later", 2015, tmdb=TMDB, tvdb=TMDB + 1, seasons={})
    for season in (1, 2):
        for number in (1, 2):
            trakt.add_episode(
                show,
                season,
                number,
                tvdb=TMDB * 100 + season * 10 + number,
                runtime=45,
                first_aired=iso(aired + season * 365 * DAY + number * 7 * DAY),
            )
    serializd.add_show(TMDB, "Later", seasons={1: 2, 2: 2})
    trakt.add_history(show.seasons[1].episodes[1], "released")  # a mark of the viewing below
    serializd.log_entry(None, TMDB, 1, 1, backdate=iso(now - 300 * DAY))
    path = _linked(tmp_path, trakt, serializd)
    _sync(path, "--yes")
    assert _held(trakt, serializd) == (Counter({(1, 1): 1}), Counter({(1, 1): 1}))
    # Weeks later: watched on Serializd, marked on trakt.tv "watched on release date".
    serializd.log_entry(None, TMDB, 2, 1, backdate=iso(now - DAY))
    trakt.log_play(show.seasons[2].episodes[1], "released")
    out = _sync(path, "--yes")
    out += _sync(path, "--yes", "--full")  # the daily full read
    out += _sync(path, "--yes")
    plays, diary = _held(trakt, serializd)
    # The run before the full read copied the viewing to Trakt (the mark unread yet): Trakt
    # holds that copy and the mark, a second record of it left as it is; Serializd the
    # viewing once, no play at the release date.
    assert plays == Counter({(1, 1): 1, (2, 1): 2}), out
    assert diary == Counter({(1, 1): 1, (2, 1): 1}), out
    assert "add_play serializd" not in out, out


@pytest.mark.parametrize("unknown", [0, 60], ids=["air date alone", "show's runtime"])
@pytest.mark.parametrize("runtime", [None, 0], ids=["runtime null", "runtime 0"])
def test_a_mark_of_an_episode_trakt_knows_no_runtime_of_is_told_by_its_air_date(
    tmp_path: Path, start_fake: Any, runtime: int | None, unknown: int
) -> None:
    """Trakt lists the episode's air date and no runtime (null, or 0): where it dates the
    mark then is not documented, so it is told by its air date with a margin."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    trakt.runtime_when_unknown = unknown
    now = int(time.time())
    aired = now - 2000 * DAY // 3600 * 3600
    show = trakt.add_show("Unknown runtime", 2015, tmdb=TMDB, tvdb=TMDB + 1, seasons={})
    for number in (1, 2):
        trakt.add_episode(
            show, 1, number, tvdb=TMDB * 10 + number, runtime=runtime, first_aired=iso(aired)
        )
    serializd.add_show(TMDB, "Unknown runtime", seasons={1: 2})
    trakt.add_history(show.seasons[1].episodes[1], "released")  # a mark of the viewing below
    serializd.log_entry(None, TMDB, 1, 1, backdate=iso(now - 300 * DAY))
    path = _linked(tmp_path, trakt, serializd)
    out = _sync(path, "--yes")
    out += _sync(path, "--yes", "--full")
    assert _held(trakt, serializd) == (Counter({(1, 1): 1}), Counter({(1, 1): 1})), out
