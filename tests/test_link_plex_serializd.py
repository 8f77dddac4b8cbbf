"""Plex ⇄ Serializd without Trakt. Serializd is TV only: the link carries episodes, and a
movie watched in Plex stays where it is."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.plex import MODERN_VERSION, OLD_VERSION, TOKEN, FakePlex
from tests.fakes.serializd import ALICE, FakeSerializd, iso
from tests.harness import AppThread, until, watchbridge, write_config
from tests.unpaced import unpaced
from watchbridge import readers, statuspage
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime, create_app
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker, dead_letter_alert
from watchbridge.metrics import Metrics
from watchbridge.model import Account, Ids, MediaEvent, MediaRef
from watchbridge.services import serializd as services_serializd
from watchbridge.services.serializd import REQUESTS_PER_SECOND
from watchbridge.store import Store
from watchbridge.sync import run_link
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_runtime, make_targets

HOUR = 3600.0


@pytest.fixture(autouse=True)
def unpaced_serializd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serializd's pacing lifted (2 requests a second: ten seconds a run of ten plays): these
    tests are about what the link copies, not how fast."""
    unpaced(monkeypatch, "serializd")


def setup(tmp_path: Path, start_fake: Any) -> tuple[Path, FakePlex, FakeSerializd]:
    """Ten episodes watched in Plex, and a movie in its library (1 play of 11 once watched:
    under the default removal guard)."""
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    plex.add_movie("10", "Heat", 1995, ["imdb://tt0113277", "tmdb://949"])
    plex.add_show("20", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    for n in range(1, 11):
        plex.add_episode(str(100 + n), "20", 2, n)
        plex.watch(str(100 + n), time.time() - 40 * HOUR + n * HOUR)
    return link_config(tmp_path, plex, serializd), plex, serializd


def link_config(
    tmp_path: Path, plex: FakePlex, serializd: FakeSerializd, options: str = ""
) -> Path:
    """Profile alex's plex-serializd link (`first_run: apply`, and `options`)."""
    return write_config(
        tmp_path,
        f"""services:
  serializd: {{api_url: "{serializd.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  alex:
    accounts:
      plex: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
  plex-serializd: {{services: [plex, serializd], first_run: apply{options}}}
""",
    )


def sync(path: Path) -> str:
    result = watchbridge("sync", "--link", "plex-serializd", "--config", str(path), "--full")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_movie_watched_in_plex_stays_watched_there(tmp_path: Path, start_fake: Any) -> None:
    path, plex, serializd = setup(tmp_path, start_fake)
    sync(path)
    assert len(serializd.diary()) == 10
    plex.watch("10", time.time() - 2 * HOUR)

    said = [sync(path) for _ in range(2)]

    assert plex.user_state("10").get("viewCount") == 1
    assert "movie" not in "".join(said)  # nothing planned for it, either way


# --------------------------------------------------------------------------- "mark played"
# in Plex: no history row, each item viewed "now". Marked together (a season), ticks; alone, a
# diary entry dated as Plex dates it


def test_a_season_marked_played_in_plex_is_ticked_on_serializd_with_no_diary_entries(
    tmp_path: Path, start_fake: Any
) -> None:
    # A season marked played is no viewing of that day: 13 diary entries dated today would
    # say so. Ticks say "watched, date unknown", as Serializd's own season mark does.
    plex, serializd = plex_and_serializd(start_fake)  # S1E1 watched in Plex 40 hours ago
    path = link_config(tmp_path, plex, serializd)
    sync(path)
    marked = time.time() - HOUR
    for number in range(1, 14):
        if number > 1:
            plex.add_episode(f"{110 + number}", "20", 2, number)
        plex.watch(f"{110 + number}", marked + number % 2, history=False)  # within a second

    said = sync(path)

    assert said.count("add_play serializd episode:tmdb:1396:s2e") == 13, said
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 1)]
    assert serializd.ticks() >= {(1396, 3573, n) for n in range(1, 14)}
    assert serializd.season_marks() == set()  # (not set: Plex cannot take it back)
    hourly = watchbridge("sync", "--link", "plex-serializd", "--config", str(path))
    assert "0 change(s) queued" in hourly.stdout, hourly.stdout + hourly.stderr
    for _ in range(2):  # read back as the ticks they are: nothing added again, either way
        assert "plan: nothing to do" in sync(path)
    assert len(serializd.diary()) == 1
    assert [plex.user_state(f"{110 + n}")["viewCount"] for n in range(1, 14)] == [1] * 13


def test_an_episode_marked_played_alone_in_plex_is_logged_dated_as_plex_dates_it(
    tmp_path: Path, start_fake: Any
) -> None:
    plex, serializd = plex_and_serializd(start_fake)
    path = link_config(tmp_path, plex, serializd)
    sync(path)
    marked = time.time() - HOUR
    plex.watch("111", marked, history=False)

    said = sync(path)

    assert "add_play serializd episode:tmdb:1396:s2e1" in said, said
    (entry,) = [r for r in serializd.diary() if r.season_id == 3573]
    assert entry.episode_number == 1 and entry.backdate == iso(int(marked)), entry
    assert "plan: nothing to do" in sync(path)
    assert len(serializd.diary()) == 2


def mark_season_two(plex: FakePlex) -> None:
    """Thirteen episodes of season 2 marked played in Plex at once, an hour ago (no history)."""
    marked = time.time() - HOUR
    for number in range(1, 14):
        if number > 1:
            plex.add_episode(f"{110 + number}", "20", 2, number)
        plex.watch(f"{110 + number}", marked + number % 2, history=False)


def test_a_season_marked_then_unmarked_in_plex_is_unticked_on_serializd_once_confirmed(
    tmp_path: Path, start_fake: Any
) -> None:
    # Marked by mistake and unmarked: the ticks the mark made must come off too; 13 of 14
    # plays gone is a removal the guard holds until confirmed, as README says.
    plex, serializd = plex_and_serializd(start_fake)
    path = link_config(tmp_path, plex, serializd)
    sync(path)
    mark_season_two(plex)
    sync(path)
    assert serializd.ticks() >= {(1396, 3573, n) for n in range(1, 14)}
    for number in range(1, 14):
        plex.unwatch(f"{110 + number}")

    held = sync(path)

    assert "--confirm-removals" in held, held
    assert serializd.ticks() >= {(1396, 3573, n) for n in range(1, 14)}  # held, none gone
    confirmed = watchbridge(
        "sync", "--link", "plex-serializd", "--config", str(path), "--confirm-removals"
    )
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert not {t for t in serializd.ticks() if t[1] == 3573}, confirmed.stdout
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 1)]
    assert "plan: nothing to do" in sync(path)
    assert all(not plex.user_state(f"{110 + n}").get("viewCount") for n in range(1, 14))


def test_one_episode_of_a_marked_season_unmarked_in_plex_is_unticked_on_serializd(
    tmp_path: Path, start_fake: Any
) -> None:
    plex, serializd = plex_and_serializd(start_fake)
    path = link_config(tmp_path, plex, serializd, ", max_removal_share: 0.1")
    sync(path)
    mark_season_two(plex)
    sync(path)
    plex.unwatch("113")  # S2E3: 1 play of 14, under the guard

    said = sync(path)

    assert "remove_play serializd episode:tmdb:1396:s2e3" in said, said
    assert {t for t in serializd.ticks() if t[1] == 3573} == {
        (1396, 3573, n) for n in range(1, 14) if n != 3
    }
    assert "plan: nothing to do" in sync(path)
    assert "viewCount" not in plex.user_state("113")


def test_a_season_partly_marked_in_plex_ticks_the_marked_episodes_only(
    tmp_path: Path, start_fake: Any
) -> None:
    # Episodes 1-5 marked together, the rest unwatched: five ticks, no diary entry, nothing
    # for the others.
    plex, serializd = plex_and_serializd(start_fake)
    path = link_config(tmp_path, plex, serializd)
    sync(path)
    marked = time.time() - HOUR
    for number in range(1, 14):
        if number > 1:
            plex.add_episode(f"{110 + number}", "20", 2, number)
        if number <= 5:
            plex.watch(f"{110 + number}", marked + number % 2, history=False)

    said = sync(path)

    assert said.count("add_play serializd episode:tmdb:1396:s2e") == 5, said
    assert {t for t in serializd.ticks() if t[1] == 3573} == {(1396, 3573, n) for n in range(1, 6)}
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 1)]
    assert "plan: nothing to do" in sync(path)


# --------------------------------------------------------------------------- a webhook's play
# landing while a run reads: the run's copy must not become a second diary entry


TICKS = "GET /mobile/page/show/{id}/season_v2_part_3/{number}"
DIARY = "GET /api/user/{username}/diary"


async def race_a_webhook_play_against_a_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plex: FakePlex,
    serializd: FakeSerializd,
    held: str = TICKS,
) -> list[int]:
    """S2E1 watched in Plex (the server stamps it by its clock), its webhook landing only as
    the link's run reads Serializd: the webhook's play is queued and delivered while the run
    waits for the `held` answer (by default the ticks it reads last; DIARY: the diary, read
    before the ticks). The rows queued by that run and the next one."""
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    # The run is a `watchbridge sync` beside the service: another process, whose Serializd
    # lane is not the service's (here the reader's rate is the tests' and the service's its own).
    monkeypatch.setattr(services_serializd, "REQUESTS_PER_SECOND", REQUESTS_PER_SECOND)
    path = link_config(tmp_path, plex, serializd)
    config = load_config(path, {})
    runtime = build_runtime(config)
    runtime.open()
    run_store = Store.open(Path(config.storage.path))
    worker = DeliveryWorker(make_targets, config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    try:
        await run_link(config, run_store, "plex-serializd", yes=True)  # S1E1 (the baseline)
        await worker.pass_once(runtime)
        assert len(serializd.diary()) == 1
        plex.watch("111", plex.clock())  # the server marks it watched as the viewing ends
        method, _, route = held.partition(" ")
        asked = serializd.count(method, route)
        serializd.delay_next(1, 3.0, route=held)
        run = asyncio.create_task(run_link(config, run_store, "plex-serializd", yes=True))
        await until(lambda: serializd.count(method, route) > asked)
        item = MediaRef("episode", show_ids=Ids(tmdb="1396"), season=2, number=1)
        event = MediaEvent("generic", "played", item, account=Account("alex"), played=True)
        assert runtime.store.ingest(ingest_job(runtime, "alex", event))
        await worker.pass_once(runtime)  # the webhook's play: a diary entry and its tick
        assert len(serializd.diary()) == 2
        assert not run.done()  # still waiting for the answer held back
        queued = [(await run).queued]
        await worker.pass_once(runtime)
        queued.append((await run_link(config, run_store, "plex-serializd", yes=True)).queued)
        await worker.pass_once(runtime)
        return queued
    finally:
        for target in worker.targets.values():
            await target.aclose()
        run_store.close()
        runtime.close()


def giving_up_at_once(tmp_path: Path, start_fake: Any) -> tuple[FakePlex, FakeSerializd, Path]:
    """`plex_and_serializd` and alex's link between them, each delivery giving up (a dead
    letter) at its first failure."""
    plex, serializd = plex_and_serializd(start_fake)
    path = link_config(tmp_path, plex, serializd)
    path.write_text(path.read_text() + "delivery: {max_attempts: 1}\n", encoding="utf-8")
    return plex, serializd, path


def plex_and_serializd(start_fake: Any) -> tuple[FakePlex, FakeSerializd]:
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    plex.add_show("20", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    plex.add_episode("101", "20", 1, 1)
    plex.add_episode("111", "20", 2, 1)
    plex.watch("101", time.time() - 40 * HOUR)
    return plex, serializd


@pytest.mark.anyio
async def test_a_webhook_play_landing_while_a_run_reads_stays_one_diary_entry(
    tmp_path: Path, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plex, serializd = plex_and_serializd(start_fake)
    # The run read the diary and the season's ticks before the play landed; it looks at the
    # delivery ledger after the ticks read and finds the webhook's entry there: no copy.
    assert await race_a_webhook_play_against_a_run(tmp_path, monkeypatch, plex, serializd) == [
        0,
        0,
    ]
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 1), (3573, 1)]


@pytest.mark.anyio
async def test_a_webhook_play_landing_while_a_run_reads_stays_one_entry_with_plex_clock_off(
    tmp_path: Path, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Plex server's clock five minutes ahead of ours: it dates the play by it, the
    # webhook's play is dated by ours. The run's copy is the same play all the same.
    plex, serializd = plex_and_serializd(start_fake)
    plex.clock = lambda: time.time() + 5 * 60
    await race_a_webhook_play_against_a_run(tmp_path, monkeypatch, plex, serializd)
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 1), (3573, 1)]


@pytest.mark.anyio
async def test_a_webhook_play_landing_between_the_diary_and_the_ticks_read_is_one_play(
    tmp_path: Path, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The diary was read before the webhook's entry landed, the season's ticks after: the tick
    # is the entry's, not a play of its own (watched, date unknown) beside it, which the next
    # run would copy to Plex as a second, undated play.
    plex, serializd = plex_and_serializd(start_fake)
    race = race_a_webhook_play_against_a_run(tmp_path, monkeypatch, plex, serializd, DIARY)
    assert await race == [0, 0]
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 1), (3573, 1)]
    assert plex.user_state("111")["viewCount"] == 1


# --------------------------------------------------------------------------- a first run: one
# viewing logged on Serializd days after Plex recorded it


def test_a_first_run_takes_a_viewing_logged_days_later_on_serializd_for_one(
    tmp_path: Path, start_fake: Any
) -> None:
    plex, serializd = plex_and_serializd(start_fake)  # S1E1 watched in Plex 40 hours ago
    plex.watch("111", time.time() - 4 * 24 * HOUR)  # S2E1 four days ago...
    serializd.log_entry(None, 1396, 2, 1)  # ...logged on Serializd today, not backdated
    serializd.tick(None, 1396, 2, 1)
    path = link_config(tmp_path, plex, serializd)
    path.write_text(path.read_text().replace("first_run: apply", "first_run: dry-run"))
    config = str(path)

    review = watchbridge("sync", "--link", "plex-serializd", "--config", config, "--dry-run")
    applied = watchbridge("sync", "--link", "plex-serializd", "--config", config, "--yes")
    again = watchbridge("sync", "--link", "plex-serializd", "--config", config, "--full")

    assert review.returncode == applied.returncode == again.returncode == 0, applied.stderr
    said = "taken as the same viewing: episode:tmdb:1396:s2e1 plex "
    assert said in review.stdout and said in applied.stdout, review.stdout
    assert "add_play serializd episode:tmdb:1396:s1e1" in applied.stdout  # the other, copied
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3573, 1), (3572, 1)]
    assert plex.user_state("111")["viewCount"] == 1
    assert "plan: nothing to do" in again.stdout and "same viewing" not in again.stdout
    assert len(serializd.diary()) == 2 and plex.user_state("111")["viewCount"] == 1
    store = Store.open(tmp_path / "watchbridge.db")  # the run history (status page, API)
    counts = [run.counts for run in reversed(store.recent_runs("plex-serializd", 3))]
    store.close()
    assert [c.get("same_viewing") for c in counts] == [1, 1, None]


def test_a_first_run_that_only_takes_plays_days_apart_for_one_viewing_waits_for_review(
    tmp_path: Path, start_fake: Any
) -> None:
    # Nothing to write, but a decision about the person's history all the same.
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    plex.add_show("20", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    plex.add_episode("111", "20", 2, 1)
    plex.watch("111", time.time() - 4 * 24 * HOUR)
    serializd.log_entry(None, 1396, 2, 1)
    serializd.tick(None, 1396, 2, 1)
    path = link_config(tmp_path, plex, serializd)
    path.write_text(path.read_text().replace("first_run: apply", "first_run: dry-run"))

    result = watchbridge("sync", "--link", "plex-serializd", "--config", str(path))

    assert result.returncode != 0 and "this is the first sync" in result.stderr, result.stdout
    assert len(serializd.diary()) == 1 and plex.user_state("111")["viewCount"] == 1


# --------------------------------------------------------------------------- a dead letter of
# the link's add discarded: "do not send this row", not "never sync this play"

REVIEWS_ADD = "POST /api/show/reviews/add"


def without_links(path: Path) -> str:
    """The config as it was, and as it is with its links taken out."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text.partition("links:\n")[0], encoding="utf-8")
    return text


async def give_up_unconfigured(path: Path) -> None:
    """What the service's start (or a cron `watchbridge sync`) does with the rows the config
    no longer asks for: dead letters."""
    config = load_config(path, {})
    runtime = build_runtime(config)
    runtime.open()
    worker = DeliveryWorker(make_targets, config.delivery, judge_config=True)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    try:
        await worker.pass_once(runtime)
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()


def dead_letters(tmp_path: Path) -> list[str]:
    with Store.open(tmp_path / "watchbridge.db") as store:
        return [row.last_error or "" for row in store.dead_letters()]


def test_a_link_taken_out_and_back_copies_the_plays_whose_dead_letters_were_discarded(
    tmp_path: Path, start_fake: Any
) -> None:
    plex, serializd = plex_and_serializd(start_fake)  # S1E1 watched in Plex 40 hours ago
    path = link_config(tmp_path, plex, serializd)
    serializd.fail_next(100, 503, route=REVIEWS_ADD)  # Serializd down for the link's first run
    sync(path)
    assert serializd.diary() == []
    serializd.clear_knobs()
    configured = without_links(path)  # the link taken out meanwhile
    asyncio.run(give_up_unconfigured(path))
    (why,) = dead_letters(tmp_path)
    assert "links.plex-serializd is no longer in the config" in why
    discarded = watchbridge("deadletters", "discard", "--all", "--config", str(path))
    assert discarded.returncode == 0, discarded.stdout + discarded.stderr
    path.write_text(configured, encoding="utf-8")  # and put back

    said = sync(path)

    assert "add_play serializd episode:tmdb:1396:s1e1" in said, said
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 1)]
    assert dead_letters(tmp_path) == []


def test_a_play_whose_dead_letter_was_discarded_is_copied_again_by_the_link(
    tmp_path: Path, start_fake: Any
) -> None:
    # The link stays configured: the discarded row was not the play given up.
    _, serializd, path = giving_up_at_once(tmp_path, start_fake)
    serializd.fail_next(100, 400, route=REVIEWS_ADD)  # refused, once for good
    sync(path)
    (why,) = dead_letters(tmp_path)
    assert "HTTP 400" in why
    serializd.clear_knobs()
    assert "plan: nothing to do" in sync(path)  # the dead letter is the play's: none beside it
    discarded = watchbridge("deadletters", "discard", "--all", "--config", str(path))
    assert discarded.returncode == 0, discarded.stdout + discarded.stderr

    said = sync(path)

    assert "add_play serializd episode:tmdb:1396:s1e1" in said, said
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 1)]


def queue_webhook(
    path: Path, season: int, number: int, at: float, show: str = "1396", **told: Any
) -> None:
    """Plex's webhook of alex's play (`played=True`) or rating (`rating=0-100`) of
    S`season`E`number` of the show with TMDB id `show` (Breaking Bad), given at `at`, taken
    by the service: a delivery queued for Serializd."""
    runtime = build_runtime(load_config(path, {}))
    runtime.open()
    try:
        item = MediaRef("episode", show_ids=Ids(tmdb=show), season=season, number=number)
        action = "played" if told.get("played") else "rate"
        event = MediaEvent("generic", action, item, account=Account("alex"), occurred_at=at, **told)
        assert runtime.store.ingest(ingest_job(runtime, "alex", event))
    finally:
        runtime.close()


@pytest.mark.parametrize("then", ["retry", "discard"])
def test_a_webhook_play_given_up_is_not_copied_by_the_link_beside_its_dead_letter(
    tmp_path: Path, start_fake: Any, then: str
) -> None:
    # The webhook's dead letter is the play's delivery, as a link's own is: a copy beside it
    # would be a second dead letter (and alert) where Serializd refuses it, and a second send
    # once both are retried. Retried, it goes once; discarded, the link copies the play.
    plex, serializd, path = giving_up_at_once(
        tmp_path, start_fake
    )  # S1E1 watched in Plex 40 hours ago
    sync(path)
    serializd.episodes_refused.add(1)  # Serializd refuses S2E1's diary entry (for now)
    watched = time.time() - HOUR
    plex.watch("111", watched)
    queue_webhook(path, 2, 1, watched, played=True)
    sync(path)  # the link leaves it to the webhook's row, which gives up
    (why,) = dead_letters(tmp_path)
    assert "HTTP 400" in why, why

    assert "plan: nothing to do" in sync(path)  # the next full read: no copy beside it
    assert dead_letters(tmp_path) == [why]
    serializd.episodes_refused.clear()  # Serializd takes it now
    said = deadletters(path, then, "--all")
    assert ("1 dead letter(s) queued again" if then == "retry" else "1 dead letter") in said, said
    said = sync(path)

    assert ("add_play serializd episode:tmdb:1396:s2e1" in said) == (then == "discard"), said
    assert "plan: nothing to do" in sync(path)
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 1), (3573, 1)]
    assert dead_letters(tmp_path) == []


@pytest.mark.parametrize("then", ["retry", "discard"])
def test_a_webhook_rating_given_up_is_not_copied_by_the_link_beside_its_dead_letter(
    tmp_path: Path, start_fake: Any, then: str
) -> None:
    # As for a play: the webhook's dead letter is the rating's delivery. A link's copy beside
    # it would be a second dead letter (and alert) where Serializd refuses it, and a second
    # rating row once both are retried. Retried, it goes once; discarded, the link copies it.
    plex, serializd, path = giving_up_at_once(
        tmp_path, start_fake
    )  # S1E1 watched in Plex 40 hours ago
    sync(path)
    serializd.episodes_refused.add(1)  # Serializd refuses S1E1's rating row (for now)
    rated = time.time() - HOUR
    plex.rate("101", 8.0, rated)
    queue_webhook(path, 1, 1, rated, rating=80)
    sync(path)  # the link leaves it to the webhook's row, which gives up
    (why,) = dead_letters(tmp_path)
    assert "HTTP 400" in why, why

    said = sync(path)  # the next full read: no copy beside it
    assert "plan: nothing to do" in said, said
    assert dead_letters(tmp_path) == [why]
    serializd.episodes_refused.clear()  # Serializd takes it now
    said = deadletters(path, then, "--all")
    assert ("1 dead letter(s) queued again" if then == "retry" else "1 dead letter") in said, said
    said = sync(path)

    assert ("set_rating serializd episode:tmdb:1396:s1e1" in said) == (then == "discard"), said
    assert "plan: nothing to do" in sync(path)
    assert [r.rating for r in serializd.diary() if r.rating] == [8]
    assert dead_letters(tmp_path) == []
    assert plex.user_state("101")["userRating"] == 8.0


def test_a_dead_letter_retried_by_hand_goes_at_once_after_serializd_lists_its_show(
    tmp_path: Path, start_fake: Any
) -> None:
    # "Show not found" is taken as the answer for a day (no show lookup per row and pass),
    # but a retry by hand is the user saying "try now": Serializd lists the show since.
    _, serializd, path = giving_up_at_once(tmp_path, start_fake)
    sync(path)
    queue_webhook(path, 1, 1, time.time() - HOUR, show="95396", played=True)  # Severance
    sync(path)
    (why,) = dead_letters(tmp_path)
    assert "Show not found" in why, why
    serializd.add_show(95396, "Severance", {1: 9})
    asked = serializd.count("GET", "/api/show/{id}")

    said = deadletters(path, "retry", "--all")
    sync(path)  # delivers what is due, as the service does within minutes

    assert "1 dead letter(s) queued again" in said, said
    assert serializd.count("GET", "/api/show/{id}") > asked  # asked again, not the cache
    assert [(r.show_id, r.episode_number) for r in serializd.diary()] == [(1396, 1), (95396, 1)]
    assert dead_letters(tmp_path) == []


# --------------------------------------------------------------------------- an add the target
# always refuses: plain discard is "not this row", and it comes back at each full read;
# `discard --for-good` keeps that play off the link's target until `deadletters allow`


def always_refused(tmp_path: Path, start_fake: Any) -> tuple[Path, FakeSerializd]:
    """S1E1 and S1E2 watched in Plex; Serializd refuses S1E1's diary entry every time (a
    delivery gives up at its first failure)."""
    plex, serializd, path = giving_up_at_once(tmp_path, start_fake)
    plex.add_episode("102", "20", 1, 2)
    plex.watch("102", time.time() - 39 * HOUR)
    serializd.episodes_refused.add(1)
    return path, serializd


def deadletters(path: Path, *args: str) -> str:
    result = watchbridge("deadletters", *args, "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_an_add_the_target_always_refuses_comes_back_after_a_plain_discard(
    tmp_path: Path, start_fake: Any
) -> None:
    path, serializd = always_refused(tmp_path, start_fake)
    sync(path)
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 2)]
    (why,) = dead_letters(tmp_path)
    assert "HTTP 400" in why, why
    said = deadletters(path, "discard", "--all")
    assert "1 of them a link's copy of a play: the link copies it again" in said, said

    assert "copied it again" not in deadletters(path, "list")  # none discarded before

    said = sync(path)  # the next full read (daily)

    assert "add_play serializd episode:tmdb:1396:s1e1" in said, said
    with Store.open(tmp_path / "watchbridge.db") as store:  # given up again: alerted again
        (again,) = store.dead_letters()
        _, alert = dead_letter_alert("serializd", store.untold_dead("serializd", time.time()))
    stop = (
        "links.plex-serializd copied it again after an earlier dead letter of it was discarded;"
        f" to keep it off for good: `watchbridge deadletters discard {again.id} --for-good`"
    )
    assert stop in alert, alert
    assert stop in deadletters(path, "list")


def test_an_add_discarded_for_good_is_not_copied_again_until_allowed(
    tmp_path: Path, start_fake: Any
) -> None:
    path, serializd = always_refused(tmp_path, start_fake)
    sync(path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        (row,) = [item.id for item in store.dead_letters()]

    said = deadletters(path, "discard", f"#{row}", "--for-good")

    assert "1 play(s) kept off" in said, said
    assert "plan: nothing to do" in sync(path)  # the next full read: not copied again
    assert dead_letters(tmp_path) == []
    listed = deadletters(path, "list", "--for-good")
    assert f"#{row}  " in listed, listed
    assert "serializd/alex  play tmdb 1396 S01E01 watched " in listed, listed
    assert "links.plex-serializd does not copy it there" in listed, listed
    assert "deadletters list --for-good" in deadletters(path, "list")
    assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [(3572, 2)]
    # The user's choice, which no service tells again: `reset-state` keeps it.
    reset = watchbridge("reset-state", "--yes", "--config", str(path))
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert "add_play" not in sync(path)
    assert f"#{row}  " in deadletters(path, "list", "--for-good")

    serializd.episodes_refused.clear()  # Serializd takes it now
    assert "1 play(s) allowed again" in deadletters(path, "allow", str(row))
    said = sync(path)

    assert "add_play serializd episode:tmdb:1396:s1e1" in said, said
    assert sorted((r.season_id, r.episode_number) for r in serializd.diary()) == [
        (3572, 1),
        (3572, 2),
    ]
    assert deadletters(path, "list", "--for-good").strip() == "no plays kept off"


def test_a_links_play_waiting_for_ids_is_kept_off_for_good_by_its_id(
    tmp_path: Path, start_fake: Any
) -> None:
    # A season Serializd does not list: the link's copy waits as unmatched (hourly at first,
    # for weeks). Before: `discard` took dead letters only ("not a dead letter").
    plex, serializd = plex_and_serializd(start_fake)
    plex.add_episode("191", "20", 9, 1)
    plex.watch("191", time.time() - 39 * HOUR)
    path = link_config(tmp_path, plex, serializd)
    sync(path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        (row,) = [entry.item.id for entry in store.unmatched()]
    listed = watchbridge("unmatched", "--config", str(path)).stdout
    assert f"#{row}  " in listed and "Serializd has no season 9" in listed, listed

    said = deadletters(path, "discard", f"#{row}", "--for-good")

    assert "1 delivery(ies) waiting for ids discarded: never sent" in said, said
    assert "1 play(s) kept off" in said, said
    assert "nothing unmatched" in watchbridge("unmatched", "--config", str(path)).stdout
    assert "unmatched:" not in watchbridge("status", "--config", str(path)).stdout
    assert f"#{row}  " in deadletters(path, "list", "--for-good")
    assert "add_play" not in sync(path)  # the next full read: not copied again
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.unmatched() == [] and store.dead_letters() == []


# --------------------------------------------------------------------------- the user edits
# the diary in the Serializd app: the daily full read (`--full`) sees it


def entry_of(serializd: FakeSerializd, season_number: int, number: int) -> Any:
    season_id = serializd.shows[1396].seasons[season_number].id
    return next(
        r for r in serializd.diary() if (r.season_id, r.episode_number) == (season_id, number)
    )


@pytest.mark.parametrize("origin", ["plex", "serializd"])
def test_a_diary_entry_backdated_on_serializd_moves_its_play_in_plex(
    tmp_path: Path, start_fake: Any, origin: str
) -> None:
    """S2E3 watched in Plex and copied, or S2E11 logged in the app and copied to Plex; then
    backdated in the app: the Plex play is removed and one at the new date added."""
    path, plex, serializd = setup(tmp_path, start_fake)
    plex.add_episode("111", "20", 2, 11)
    if origin == "serializd":
        serializd.log_entry(None, 1396, 2, 11, backdate=iso(time.time() - 5 * HOUR))
    number, key = (3, "103") if origin == "plex" else (11, "111")
    sync(path)
    moved_to = time.time() - 20 * 24 * HOUR
    serializd.edit_entry(entry_of(serializd, 2, number), backdate=iso(moved_to))

    said = [sync(path) for _ in range(3)]

    # (Plex's history keeps the row of our first scrobble; unscrobbled, it is no play)
    assert plex.user_state(key)["viewCount"] == 1
    assert len(serializd.diary()) == (10 if origin == "plex" else 11)
    assert entry_of(serializd, 2, number).backdate == iso(moved_to)
    assert "(removed on serializd)" in said[0]
    assert "removed on" not in "".join(said[1:])


@pytest.mark.parametrize("version", [OLD_VERSION, MODERN_VERSION], ids=["pms-1.32", "pms-1.41"])
@pytest.mark.parametrize("untick", [False, True])
def test_a_diary_entry_we_wrote_deleted_on_serializd_is_removed_in_plex_for_good(
    tmp_path: Path, start_fake: Any, untick: bool, version: str
) -> None:
    path, plex, serializd = setup(tmp_path, start_fake)
    plex.version = version  # since 1.40 our write left no history row to delete
    sync(path)
    serializd.delete_entry(entry_of(serializd, 2, 3), untick=untick)

    for _ in range(3):
        sync(path)

    assert plex.history_of("103") == [] and not plex.user_state("103").get("viewCount")
    assert len(serializd.diary()) == 9


def test_a_tick_left_by_a_deleted_diary_entry_does_not_take_the_next_viewing_s_place(
    tmp_path: Path, start_fake: Any
) -> None:
    # S2E3's diary entry deleted in the app, its tick left alone: the Plex play goes, and the
    # tick is not copied back. S2E3 watched again in Plex: a viewing after the tick was first
    # seen, which the tick does not stand for (before, it took the new play's place: no diary
    # entry, and every later run planned nothing).
    path, plex, serializd = setup(tmp_path, start_fake)
    sync(path)
    serializd.delete_entry(entry_of(serializd, 2, 3), untick=False)
    assert "remove_play plex episode:tmdb:1396:s2e3" in sync(path)
    assert not plex.user_state("103").get("viewCount")

    plex.watch("103", time.time() + 60)  # after that run read the tick (days after, at home)
    said = sync(path)

    assert "add_play serializd episode:tmdb:1396:s2e3" in said, said
    assert len(serializd.diary()) == 10 and entry_of(serializd, 2, 3)
    assert "plan: nothing to do" in sync(path)
    assert plex.user_state("103")["viewCount"] == 1


def test_a_tick_and_a_plex_play_of_one_viewing_read_in_one_run_are_one_viewing(
    tmp_path: Path, start_fake: Any
) -> None:
    # S2E11 ticked in the Serializd app and played in Plex, whose clock runs a minute ahead:
    # the run that reads both reads a play dated after the tick's first reading. Both came up
    # since the last run: one viewing (before, each was copied to the other side: a diary
    # entry on Serializd and a second play in Plex).
    path, plex, serializd = setup(tmp_path, start_fake)
    plex.add_episode("111", "20", 2, 11)
    sync(path)
    serializd.tick(None, 1396, 2, 11)
    plex.watch("111", time.time() + 60)

    assert "plan: nothing to do" in sync(path)
    assert len(serializd.diary()) == 10  # no diary entry for S2E11
    assert plex.user_state("111")["viewCount"] == 1


def test_a_rating_changed_on_a_diary_entry_reaches_plex_at_the_full_read(
    tmp_path: Path, start_fake: Any
) -> None:
    path, plex, serializd = setup(tmp_path, start_fake)
    plex.rate("103", 6.0, time.time() - HOUR)
    sync(path)
    sync(path)  # the copy read back
    rated = next(r for r in serializd.diary() if r.rating)
    assert rated.rating == 6
    serializd.edit_entry(rated, rating=9)

    for _ in range(2):
        sync(path)

    assert plex.user_state("103")["userRating"] == 9.0
    assert next(r for r in serializd.diary() if r.rating).rating == 9


def test_plays_kept_off_for_good_are_told_by_status_the_page_and_the_api(
    tmp_path: Path, start_fake: Any
) -> None:
    path, _ = always_refused(tmp_path, start_fake)
    sync(path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        (row,) = [item.id for item in store.dead_letters()]
    assert "kept off:" not in watchbridge("status", "--config", str(path)).stdout  # none yet
    deadletters(path, "discard", f"#{row}", "--for-good")

    said = watchbridge("status", "--config", str(path)).stdout
    config = load_config(path, {})
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    with AppThread(create_app(runtime, extra_routes=statuspage.ROUTES)) as app:
        api = httpx.get(f"{app.url}/api/status").json()
        page = httpx.get(f"{app.url}/").text

    fix = (
        "`watchbridge deadletters list --for-good` lists them; "
        "`watchbridge deadletters allow ID` lets the link copy one again"
    )
    assert f"kept off:      1 play(s) kept off a link's target for good ({fix})" in said, said
    assert api["kept_off"] == [
        {"link": "plex-serializd", "profile": "alex", "target": "serializd", "plays": 1,
         "fix": fix}
    ]  # fmt: skip
    assert "kept off for good: serializd for alex (sync plex-serializd)</td><td>1 play(s) (" in page
    assert "<code>watchbridge deadletters allow ID</code>" in page, page


def test_a_renamed_link_s_kept_line_counts_the_plays_kept_off_under_its_old_name(
    tmp_path: Path, start_fake: Any
) -> None:
    path, _ = always_refused(tmp_path, start_fake)
    sync(path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        (row,) = [item.id for item in store.dead_letters()]
    deadletters(path, "discard", f"#{row}", "--for-good")
    path.write_text(path.read_text().replace("  plex-serializd:", "  ps:"), encoding="utf-8")

    said = watchbridge("status", "--config", str(path)).stdout

    assert (
        "kept:          links.plex-serializd is no longer in the config, and the database "
        "keeps 1 play(s) kept off its target for good, its sync state for alex: if a link of "
        "the config is this one renamed, give it its old name back (links.plex-serializd: "
        "under another name it starts over as on a first run, and the writes it had queued "
        "become dead letters at the service's start, and it copies again the plays kept off)"
    ) in said, said
    assert (
        "if it is gone for good, nothing is synced for it: to forget the plays it keeps off, "
        "`watchbridge deadletters allow` their ids"
    ) in said, said
    # Its sync state forgotten, the plays kept off under the old name are still told.
    reset = watchbridge("reset-state", "--yes", "--config", str(path))
    assert reset.returncode == 0, reset.stdout + reset.stderr
    said = watchbridge("status", "--config", str(path)).stdout
    assert "database keeps 1 play(s) kept off its target for good: if a link" in said, said
