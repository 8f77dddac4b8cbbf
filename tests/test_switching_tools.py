"""Switching to watchbridge from another tool (PlexTraktSync, the Jellyfin Trakt plugin,
Serializd logged by hand): both sides of a link already hold the household's history, not
identically. The first `sync --dry-run` and `--yes` through the real CLI against the fakes,
with histories from a small generator: a viewing held on both sides is never copied a second
time, whether its times differ by seconds, minutes or a time zone's hours, was logged on
Serializd by its date alone, was marked on Trakt "watched on release date" (Trakt dates such a
play at the episode's air date + runtime, years before the real viewing), or was recorded twice
on one side by the old tool (which is left as it is: not copied, not removed). A viewing on one
side only is copied, also one Trakt holds at that very minute (watched live, or marked so)."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, watchbridge, write_config
from tests.linkrig import link_config_file
from tests.unpaced import unpaced_while
from watchbridge.services.trakt import iso
from watchbridge.store import Store

DAY = 86400
# How the old tool left each viewing: on both sides (times apart by seconds, by the minutes
# between a scrobble and the end, by a time zone's hours; Serializd by its local midnight),
# twice on one side (posted again up to two minutes later), marked on Trakt "watched on release
# date" (`released`), logged on both at the episode's release moment (watched live), or on one
# side only (Trakt's play possibly at the release moment: marked so, or watched live).
BOTH = (
    "seconds",
    "minutes",
    "zone",
    "date only",
    "twice on trakt",
    "twice on the other",
    "released on trakt",
    "live",
)
TRAKT_ONLY = ("trakt only", "released on trakt only", "live on trakt only")
ONE_SIDE = (*TRAKT_ONLY, "other only")
RELEASED = "released"  # Trakt's `watched_at: "released"`: the episode's air date + runtime


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    with unpaced_while("trakt", "serializd"):
        yield


def runtime(show: int) -> int:
    """The minutes each episode of `show` runs (Trakt's `runtime`)."""
    return (22, 45, 60)[show % 3]


def history(seed: int, shows: int, episodes: int) -> list[Any]:
    """(show, episode, variant, Trakt's times, the other side's times, the episode's air time)
    for each episode; a Trakt time may be RELEASED."""
    rnd = random.Random(seed)
    now = int(time.time())
    rows: list[Any] = []
    for show in range(shows):
        for number in range(1, episodes + 1):
            at = now - int(rnd.uniform(40, 700) * DAY)
            aired = (at - int(rnd.uniform(400, 3000) * DAY)) // 3600 * 3600
            variant = rnd.choice(BOTH + ONE_SIDE)
            trakt, other = [at + rnd.randint(0, 59)], [at]
            if variant == "minutes":
                trakt = [at + rnd.randint(2, 50) * 60]
            elif variant == "zone":
                trakt = [at + rnd.choice([-10, -5, -1, 1, 2, 9]) * 3600]
            elif variant == "date only":
                other = [(at + 5 * 3600) // DAY * DAY - 5 * 3600]  # midnight in UTC+5
            elif variant == "twice on trakt":
                trakt = [at, at + rnd.randint(0, 2) * 60]
            elif variant == "twice on the other":
                other = [at, at]
            elif variant == "trakt only":
                other = []
            elif variant == "other only":
                trakt = []
            elif variant in ("released on trakt", "released on trakt only"):
                trakt = [RELEASED]
            elif variant in ("live", "live on trakt only"):
                released = aired + runtime(show) * 60
                trakt, other = [released], [released + rnd.randint(0, 59)]
            if variant.endswith("trakt only"):
                other = []
            rows.append((show, number, variant, trakt, other, aired))
    return rows


def expected(rows: list[Any]) -> Counter[str]:
    return Counter(variant for _, _, variant, *_ in rows)


def copied_from_trakt(counts: Counter[str]) -> int:
    return sum(counts[variant] for variant in TRAKT_ONLY)


def add_trakt_episodes(
    trakt: FakeTrakt, show: int, listed: Any, rows: list[Any], tvdb: int
) -> None:
    """The show's episodes on Trakt (TVDB ids from `tvdb` on), each aired as `rows` say."""
    for row_show, number, _, _, _, aired in rows:
        if row_show == show:
            trakt.add_episode(
                listed, 1, number, tvdb=tvdb + number, runtime=runtime(show), first_aired=iso(aired)
            )


def add_trakt_plays(trakt: FakeTrakt, episode: Any, times: list[Any]) -> None:
    for at in times:
        trakt.add_history(episode, RELEASED if at == RELEASED else iso(at))


def sync(path: Path, link: str, *args: str) -> str:
    result = watchbridge("sync", "--link", link, "--config", str(path), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def plan_line(out: str) -> str:
    return next(line for line in out.splitlines() if "plan:" in line)


def held_twice(count: int, side: str) -> str:
    """The review's line on the viewings the old tool recorded twice on `side`."""
    return (
        f"  {count} play(s) held twice on {side} (an old tool's duplicates, within two"
        " minutes): left as they are; remove them there if you like"
    )


def test_trakt_and_serializd_both_holding_the_history_get_each_viewing_once(
    tmp_path: Path, start_fake: Any
) -> None:
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    rows = history(62, 3, 20)
    for show in range(3):
        tmdb = 6000 + show
        listed = trakt.add_show(f"Show {show}", 2015, tmdb=tmdb, tvdb=9100 + show, seasons={})
        add_trakt_episodes(trakt, show, listed, rows, 200000 + show * 100)
        serializd.add_show(tmdb, f"Show {show}", seasons={1: 20})
    for show, number, _, trakt_times, other_times, _ in rows:
        episode = trakt.shows[show].seasons[1].episodes[number]
        add_trakt_plays(trakt, episode, trakt_times)
        for at in other_times:
            serializd.log_entry(None, 6000 + show, 1, number, backdate=iso(at))
    path = link_config_file(tmp_path, trakt, serializd)

    def held() -> tuple[Counter[tuple[int, int]], Counter[tuple[int, int]]]:
        plays = Counter((h.item.show.tmdb - 6000, h.item.number) for h in trakt.history())
        diary = Counter((r.show_id - 6000, r.episode_number) for r in serializd.diary())
        return plays, diary

    counts = expected(rows)
    review = sync(path, "trakt-serializd", "--dry-run")
    assert plan_line(review).endswith(
        f"plan: add {copied_from_trakt(counts)} play(s) to serializd (new on trakt), "
        f"add {counts['other only']} play(s) to trakt (new on serializd)"
    )
    # The old tool's second records, left alone, are said (the sides' sizes differ by them).
    lines = review.splitlines()
    assert held_twice(counts["twice on the other"], "serializd") in lines, review
    assert held_twice(counts["twice on trakt"], "trakt") in lines, review
    sync(path, "trakt-serializd", "--yes")
    plays, diary = held()
    for show, number, variant, trakt_times, other_times, _ in rows:
        on_trakt = max(1, len(trakt_times))  # the old tool's second play left as it is
        on_serializd = max(1, len(other_times))
        assert (plays[show, number], diary[show, number]) == (on_trakt, on_serializd), variant
    again = sync(path, "trakt-serializd")
    assert "plan: nothing to do" in again
    for side, variant in (("trakt", "twice on trakt"), ("serializd", "twice on the other")):
        assert held_twice(counts[variant], side) in again.splitlines(), again


def test_plex_and_trakt_both_holding_the_history_get_each_viewing_once(
    tmp_path: Path, start_fake: Any
) -> None:
    trakt, plex = start_fake(FakeTrakt()), start_fake(FakePlex())
    aired = history(63, 5, 30)
    rows = [r for r in aired if r[2] not in ("date only", "twice on the other")]
    for show in range(5):
        tmdb = 5000 + show
        listed = trakt.add_show(f"Show {show}", 2015, tmdb=tmdb, tvdb=9000 + show, seasons={})
        plex.add_show(
            f"{show}00", f"Show {show}", 2015, [f"tmdb://{tmdb}", f"tvdb://{9000 + show}"]
        )
        add_trakt_episodes(trakt, show, listed, aired, 100000 + show * 100)
        for number in range(1, 31):
            plex.add_episode(f"{show}{number:02d}", f"{show}00", 1, number)
    for show, number, _, trakt_times, other_times, _ in rows:
        episode = trakt.shows[show].seasons[1].episodes[number]
        add_trakt_plays(trakt, episode, trakt_times)
        for at in other_times:
            plex.watch(f"{show}{number:02d}", at)
    path = write_config(
        tmp_path,
        f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  alex:
    accounts:
      trakt: {{}}
      plex: {{}}
links:
  plex-trakt: {{services: [plex, trakt]}}
""",
    )
    store = Store.open(tmp_path / "watchbridge.db")
    sign_in_trakt(store, trakt, "alex", now=time.time())
    store.close()
    counts = expected(rows)
    review = sync(path, "plex-trakt", "--dry-run")
    assert plan_line(review).endswith(
        f"plan: add {copied_from_trakt(counts)} play(s) to plex (new on trakt), "
        f"add {counts['other only']} play(s) to trakt (new on plex)"
    )
    assert held_twice(counts["twice on trakt"], "trakt") in review.splitlines(), review
    assert "held twice on plex" not in review
    sync(path, "plex-trakt", "--yes")
    plays = Counter((h.item.show.tmdb - 5000, h.item.number) for h in trakt.history())
    for show, number, variant, trakt_times, *_ in rows:
        views = plex.user_state(f"{show}{number:02d}").get("viewCount")
        assert (plays[show, number], views) == (max(1, len(trakt_times)), 1), variant
    assert "plan: nothing to do" in sync(path, "plex-trakt")


def test_tidying_the_old_tools_duplicate_away_later_takes_nothing_from_the_other_side(
    tmp_path: Path, start_fake: Any
) -> None:
    """After the first sync, the user deletes one of the old tool's two records of a viewing
    (on Trakt, one episode; in the Serializd diary, another), the other side dating it hours
    away (Serializd by its date alone; Trakt at the scrobble's minute): the other side's one
    record of it stays, and nothing is copied back."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    listed = trakt.add_show("Show", 2015, tmdb=6000, tvdb=9100, seasons={})
    for number in (1, 2):
        trakt.add_episode(listed, 1, number, tvdb=200000 + number, runtime=45)
    serializd.add_show(6000, "Show", seasons={1: 2})
    at = int(time.time() - 100 * DAY) // 60 * 60
    midnight = (at + 5 * 3600) // DAY * DAY - 5 * 3600  # a log by its date, in UTC+5
    episodes = listed.seasons[1].episodes
    add_trakt_plays(trakt, episodes[1], [at, at + 60])  # the old tool's duplicate
    serializd.log_entry(None, 6000, 1, 1, backdate=iso(midnight), review_text="loved it")
    add_trakt_plays(trakt, episodes[2], [at])
    for _ in range(2):  # a migration's duplicate
        serializd.log_entry(None, 6000, 1, 2, backdate=iso(midnight))
    path = link_config_file(tmp_path, trakt, serializd)
    assert "plan: nothing to do" in sync(path, "trakt-serializd", "--yes")
    first = min(e.id for e in trakt.history() if e.item.number == 1)
    token = trakt.issue_token().access_token
    removed = httpx.post(  # on Trakt's website
        f"{trakt.url}/sync/history/remove",
        json={"ids": [first]},
        headers={
            "trakt-api-key": CLIENT_ID,
            "trakt-api-version": "2",
            "authorization": f"Bearer {token}",
            "user-agent": "trakt-website",
        },
    )
    assert removed.status_code == 200
    serializd.delete_entry(next(r for r in serializd.diary() if r.episode_number == 2))
    assert "plan: nothing to do" in sync(path, "trakt-serializd", "--full")
    assert "plan: nothing to do" in sync(path, "trakt-serializd", "--full")
    plays = Counter(e.item.number for e in trakt.history())
    diary = {r.episode_number: r for r in serializd.diary()}
    assert plays == {1: 1, 2: 1}
    assert len(serializd.diary()) == 2 and diary[1].review_text == "loved it"
