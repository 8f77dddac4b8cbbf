"""A link's first sync reviewed and applied from the status page: a Home Assistant app's (or
Unraid's) household has no terminal for `watchbridge sync --link NAME --dry-run`, then
`--yes`. The page reads the plan in the background (as the scheduler runs a link), shows it
in the CLI's words and counts, and its button applies that plan only, once."""

from __future__ import annotations

import asyncio
import html
import re
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, sign_in_trakt, watchbridge, write_config
from tests.linkrig import LINK, link_config_file
from tests.unpaced import unpaced
from watchbridge.config import Link, load_config
from watchbridge.pagereview import PageReview, ShownPlan
from watchbridge.statuspage import (
    APPLY_BUTTON,
    NOT_THE_PLAN_SHOWN,
    RESTARTED_SINCE_READ,
    REVIEW_BUTTON,
    render_review,
)
from watchbridge.store import Store
from watchbridge.sync import APPLIED_MEANWHILE, NOT_READ_AGAIN, NeedsReview, run_link
from watchbridge.wiring import build_app, build_runtime

INGRESS = "http://homeassistant.local:8123/api/hassio_ingress/Xy12abc/"
REVIEW = f"review?link={LINK}"


@pytest.fixture(autouse=True)
def _unpaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clients' pacing lifted: these tests are about what the page shows and writes."""
    unpaced(monkeypatch, "trakt", "serializd")


@contextmanager
def waiting_for_review(
    tmp_path: Path, start_fake: Any, twice_on_trakt: bool = False
) -> Iterator[tuple[str, Any, Any]]:
    """The service of a Trakt ⇄ Serializd link whose first run waits for the review (the
    default `first_run: dry-run`): Trakt lacks S1E2 and its rating, Serializd lacks S1E3.
    `twice_on_trakt`: an old tool posted Trakt's S1E1 again a minute later."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    show = trakt.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=81189, seasons={1: 7})
    trakt.add_history(show.seasons[1].episodes[1], "2024-01-01T20:00:00.000Z")
    if twice_on_trakt:
        trakt.add_history(show.seasons[1].episodes[1], "2024-01-01T20:01:00.000Z")
    trakt.add_history(show.seasons[1].episodes[3], "2024-01-03T20:00:00.000Z")
    serializd.add_show(1396, "Breaking Bad", seasons={1: 7})
    serializd.log_entry(None, 1396, 1, 2, backdate="2024-01-02T20:00:00.000Z", rating=8)
    serializd.log_entry(None, 1396, 1, 1, backdate="2024-01-01T21:00:00.000Z")
    path = link_config_file(tmp_path, trakt, serializd)
    # The scheduler's run: it waits for the review.
    with Store.open(tmp_path / "watchbridge.db") as store, pytest.raises(NeedsReview):
        asyncio.run(run_link(load_config(path, {}), store, LINK))
    with AppThread(build_app(build_runtime(load_config(path, {})))) as app:
        yield app.url, trakt, serializd


def page_until(url: str, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        page = httpx.get(url).text
        if text in page:
            return page
        assert time.monotonic() < deadline, page
        time.sleep(0.05)


def read_the_plan(url: str) -> str:
    """Press the status page's review button; the review page once the plan is read."""
    answer = httpx.post(f"{url}/review/read?link={LINK}", follow_redirects=False)
    assert answer.status_code == 303
    # Behind ingress, from .../review/read back to .../review.
    posted_to = urllib.parse.urljoin(INGRESS, f"review/read?link={LINK}")
    assert urllib.parse.urljoin(posted_to, answer.headers["location"]) == INGRESS + REVIEW
    return page_until(f"{url}/{REVIEW}", "<h2>The plan, read")


def apply_action(page: str) -> str:
    """The apply button's form action (relative, as the page has it)."""
    found = re.search(r'<form method="post" action="(review/apply\?[^"]+)"><button>', page)
    assert found is not None, page
    return html.unescape(found.group(1))


def diary_episodes(serializd: Any) -> list[int]:
    return sorted(r.episode_number or 0 for r in serializd.diary() if r.is_log)


def trakt_episodes(trakt: Any) -> list[int]:
    return sorted(h.item.number for h in trakt.history())


def test_the_status_page_offers_the_review_of_a_first_sync(tmp_path: Path, start_fake: Any) -> None:
    with waiting_for_review(tmp_path, start_fake) as (url, _, _):
        page = httpx.get(f"{url}/").text
    assert f'<form method="post" action="review/read?link={LINK}"><button>{REVIEW_BUTTON}' in page
    # The summary's line says the button is there, as a sign-in's does for its own.
    assert (
        f'<li><a href="#links">sync {LINK}: waiting for your review (button below)</a></li>' in page
    )


def test_the_review_shows_the_plan_the_cli_shows_and_writes_nothing(
    tmp_path: Path, start_fake: Any
) -> None:
    with waiting_for_review(tmp_path, start_fake) as (url, trakt, serializd):
        page = read_the_plan(url)
        status = httpx.get(f"{url}/").text
    # Per service and kind, in the status page's words.
    for counted in (
        "trakt: 1 play(s) to add",
        "trakt: 1 rating(s) to set",
        "serializd: 1 play(s) to add",
    ):
        assert counted in page
    # The lines `watchbridge sync --dry-run` prints.
    assert "profile me: trakt 2 plays, serializd 2 plays; plan:" in page
    assert "add_play trakt episode:tmdb:1396:s1e2 2024-01-02 20:00:00 UTC  (new on serializd)" in (
        html.unescape(page)
    )
    assert APPLY_BUTTON in page and "me (waits for this review)" in page
    # One way only: the command to paste, with this link's own directions (a first sync
    # made one way asks for --yes too).
    one_way = f"watchbridge sync --link {LINK} --direction trakt-to-serializd --yes"
    assert f"<code>{one_way}</code>" in page and "<code>serializd-to-trakt</code>" in page
    assert "A-to-B" not in page
    assert trakt_episodes(trakt) == [1, 3] and trakt.ratings() == []
    assert diary_episodes(serializd) == [1, 2]
    # Read from the page, the link still waits: its button stays, beside the review's link.
    assert REVIEW_BUTTON in status and f'<a href="{REVIEW}">' in status


def test_the_review_says_the_plan_in_words_and_the_viewings_an_old_tool_held_twice(
    tmp_path: Path, start_fake: Any
) -> None:
    # Trakt held 3 plays and Serializd 2, the plan said nothing of the gap.
    with waiting_for_review(tmp_path, start_fake, twice_on_trakt=True) as (url, trakt, _):
        page = html.unescape(read_the_plan(url))
    assert (
        "profile me: trakt 3 plays, serializd 2 plays; plan: add 1 play(s) to serializd (new on"
        " trakt), add 1 play(s) to trakt (new on serializd), set 1 rating(s) on trakt (from"
        " serializd)"
    ) in page
    assert (
        "1 play(s) held twice on trakt (an old tool's duplicates, within two minutes): left as"
        " they are; remove them there if you like"
    ) in page
    assert trakt_episodes(trakt) == [1, 1, 3]  # nothing written, nothing removed


def test_an_apply_posted_by_another_site_writes_nothing(tmp_path: Path, start_fake: Any) -> None:
    with waiting_for_review(tmp_path, start_fake) as (url, trakt, serializd):
        action = apply_action(read_the_plan(url))
        answer = httpx.post(f"{url}/{action}", headers={"sec-fetch-site": "cross-site"})
        answer_origin = httpx.post(f"{url}/{action}", headers={"origin": "https://evil.example"})
        time.sleep(0.5)
        page = httpx.get(f"{url}/{REVIEW}").text
    assert answer.status_code == answer_origin.status_code == 403
    assert "Applying" not in page and "applied:" not in page
    assert trakt_episodes(trakt) == [1, 3] and diary_episodes(serializd) == [1, 2]


def test_the_button_applies_the_first_sync_once(tmp_path: Path, start_fake: Any) -> None:
    with waiting_for_review(tmp_path, start_fake) as (url, trakt, serializd):
        action = apply_action(read_the_plan(url))
        answer = httpx.post(f"{url}/{action}", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == f"../{REVIEW}"
        page = page_until(f"{url}/{REVIEW}", "applied:")
        assert "applied: 3 change(s) queued; the service sends them now" in page
        deadline = time.monotonic() + 20

        def landed() -> tuple[list[int], list[int], list[int]]:
            ratings = [r.rating for r in trakt.ratings()]
            return trakt_episodes(trakt), diary_episodes(serializd), ratings

        # The rating goes out after the play (one profile's Trakt writes are spaced).
        while landed() != ([1, 2, 3], [1, 2, 3], [8]):
            assert time.monotonic() < deadline, landed()
            time.sleep(0.05)
        writes = [r for r in trakt.requests + serializd.requests if r.method == "POST"]

        again = httpx.post(f"{url}/{action}")  # pressed twice (a reload that posts again)
        time.sleep(1.0)
        page = httpx.get(f"{url}/{REVIEW}").text
        status = httpx.get(f"{url}/").text
    assert again.status_code == 303  # back to the review page, which says why nothing was done
    assert html.escape(NOT_THE_PLAN_SHOWN) in page and APPLY_BUTTON not in page
    assert [r for r in trakt.requests + serializd.requests if r.method == "POST"] == writes
    assert trakt_episodes(trakt) == [1, 2, 3] and diary_episodes(serializd) == [1, 2, 3]
    assert REVIEW_BUTTON not in status  # the link no longer waits


def test_a_plan_the_sides_no_longer_make_is_not_applied_but_shown_anew(
    tmp_path: Path, start_fake: Any
) -> None:
    with waiting_for_review(tmp_path, start_fake) as (url, trakt, serializd):
        action = apply_action(read_the_plan(url))
        show = trakt.shows[0]
        trakt.add_history(show.seasons[1].episodes[4], "2024-01-04T20:00:00.000Z")
        assert httpx.post(f"{url}/{action}", follow_redirects=False).status_code == 303
        page = page_until(f"{url}/{REVIEW}", "the sides changed since the plan shown was read")
        assert "serializd: 2 play(s) to add" in page  # the new plan, with its own button
        assert apply_action(page) != action
        forged = action.replace(action.rsplit("=", 1)[1], "0123456789abcdef")
        httpx.post(f"{url}/{forged}")
        time.sleep(0.5)
        page = httpx.get(f"{url}/{REVIEW}").text
    assert html.escape(NOT_THE_PLAN_SHOWN) in page
    assert trakt_episodes(trakt) == [1, 3, 4] and trakt.ratings() == []
    assert diary_episodes(serializd) == [1, 2]


def test_an_apply_after_the_cli_applied_the_first_sync_writes_nothing_again_and_says_so(
    tmp_path: Path, start_fake: Any
) -> None:
    """`watchbridge sync --link NAME --yes` (another process, the same database) queued the
    first sync while the plan was on the page: the button then queues nothing again. Before,
    the page said the sides had changed (and, below, that nothing changed on either side)."""
    with waiting_for_review(tmp_path, start_fake) as (url, _, _):
        action = apply_action(read_the_plan(url))
        config = load_config(tmp_path / "watchbridge.yaml", {})
        with Store.open(tmp_path / "watchbridge.db") as store:  # the CLI's run
            assert asyncio.run(run_link(config, store, LINK, yes=True)).queued == 3
            assert httpx.post(f"{url}/{action}", follow_redirects=False).status_code == 303
            page = page_until(f"{url}/{REVIEW}", "From this page")
            (rows,) = store.db.execute("SELECT COUNT(*) FROM outbox").fetchone()
    assert rows == 3  # the CLI's, none more
    assert html.escape(APPLIED_MEANWHILE) in page, page
    assert "the sides changed" not in page and 'class="bad"' not in page
    assert APPLY_BUTTON not in page


def test_a_profile_that_cannot_be_read_again_at_the_apply_is_named_on_the_page(
    tmp_path: Path, start_fake: Any
) -> None:
    """Two profiles wait for the review; at the apply, one's Serializd password was changed:
    nothing is written and the plan shown anew says that profile could not be read. Before,
    it was left out of the plan without a word, as if it had nothing to sync."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    show = trakt.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=81189, seasons={1: 7})
    trakt.add_history(show.seasons[1].episodes[1], "2024-01-01T20:00:00.000Z")
    bob = trakt.add_user("bob")
    trakt.add_history(show.seasons[1].episodes[2], "2024-01-02T20:00:00.000Z", user=bob)
    serializd.add_show(1396, "Breaking Bad", seasons={1: 7})
    serializd.add_user("bob@example.com", "bobs password", "bob_tv")
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
  bob:
    accounts:
      trakt: {{}}
      serializd: {{email: bob@example.com, password: "bobs password"}}
links:
  {LINK}: {{services: [trakt, serializd]}}
""",
    )
    with Store.open(tmp_path / "watchbridge.db") as store:
        sign_in_trakt(store, trakt, "me", now=time.time())
        sign_in_trakt(store, trakt, "bob", now=time.time(), user=bob)
    with AppThread(build_app(build_runtime(load_config(path, {})))) as app:
        page = read_the_plan(app.url)
        assert "me (waits for this review)" in page and "bob (waits for this review)" in page
        serializd.users[ALICE[0]].password = "changed"
        serializd.expire_tokens()
        assert httpx.post(f"{app.url}/{apply_action(page)}").status_code == 303
        page = page_until(f"{app.url}/{REVIEW}", "From this page")
    assert html.escape(NOT_READ_AGAIN) in page, page
    assert re.search(r"Not read: Serializd refused [^<]* of profile me ", page), page
    assert trakt.history() and not serializd.diary()  # nothing written


def test_an_apply_pressed_after_a_restart_says_to_read_the_plan_again(
    tmp_path: Path, start_fake: Any
) -> None:
    """The plan read is held in memory: after a restart the button writes nothing (safe),
    and before, the page said nothing of why."""
    with waiting_for_review(tmp_path, start_fake) as (url, trakt, serializd):
        action = apply_action(read_the_plan(url))
    config = load_config(tmp_path / "watchbridge.yaml", {})
    with AppThread(build_app(build_runtime(config))) as restarted:  # the service restarted
        answer = httpx.post(f"{restarted.url}/{action}", follow_redirects=False)
        time.sleep(0.5)
        page = httpx.get(f"{restarted.url}/{REVIEW}").text
    assert answer.status_code == 303 and answer.headers["location"] == f"../{REVIEW}"
    assert html.escape(RESTARTED_SINCE_READ) in page, page
    assert f'action="review/read?link={LINK}"><button>Read again' in page  # the review button
    assert APPLY_BUTTON not in page
    assert trakt_episodes(trakt) == [1, 3] and diary_episodes(serializd) == [1, 2]


def test_the_review_page_says_reading_and_looks_again_while_it_reads() -> None:
    reading = PageReview(LINK, started_at=time.time() - 30)
    configured = Link(services=["trakt", "serializd"])
    page = render_review(LINK, reading, waits=True, now=time.time(), configured=configured)
    assert "Reading both sides…" in page and '<meta http-equiv="refresh" content="10">' in page
    assert APPLY_BUTTON not in page and '<a href="./">' in page


def test_the_plans_lines_wrap_on_a_phone_instead_of_widening_the_page() -> None:
    # A plan line is some 80 letters without a break (`add_play trakt episode:tmdb:1396:s1e2
    # 2024-01-02 20:00:00 UTC  (new on serializd)`): at 360 px the page ran four screens wide.
    line = "add_play trakt episode:tmdb:1396:s1e2 2024-01-02 20:00:00 UTC  (new on serializd)"
    plan = ShownPlan(time.time(), (("me", ("trakt: 1 play(s) to add",)),), (line,), "t", ("me",))
    now = time.time()
    done = PageReview(LINK, now - 30, finished_at=now, plan=plan, outcome="read")
    configured = Link(services=["trakt", "serializd"])
    page = render_review(LINK, done, waits=True, now=now, configured=configured)
    assert f"<pre>{html.escape(line)}</pre>" in page
    style = page.split("<style>")[1].split("</style>")[0]
    assert "pre{white-space:pre-wrap}" in style


def test_a_review_of_a_link_the_config_lacks_is_refused(tmp_path: Path, start_fake: Any) -> None:
    with waiting_for_review(tmp_path, start_fake) as (url, _, _):
        assert httpx.get(f"{url}/review?link=nope").status_code == 400
        assert httpx.post(f"{url}/review/read?link=nope").status_code == 400


@contextmanager
def watchlist_waiting_for_review(tmp_path: Path, start_fake: Any) -> Iterator[tuple[str, Any, Any]]:
    """The service of a Trakt ⇄ Serializd link past its reviewed first run, whose `kinds`
    took `watchlist` in since: its first sync waits for the review (Serializd's watchlist
    lists Breaking Bad, Trakt's nothing); the plays and ratings sync as usual."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    show = trakt.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=81189, seasons={1: 7})
    trakt.add_history(show.seasons[1].episodes[1], "2024-01-01T20:00:00.000Z")
    serializd.add_show(1396, "Breaking Bad", seasons={1: 7})
    trakt.add_show("The Bear", 2022, tmdb=136315, tvdb=403294, seasons={1: 8})
    serializd.add_show(136315, "The Bear", seasons={1: 8})
    path = link_config_file(tmp_path, trakt, serializd, ", kinds: [history, ratings]")
    with Store.open(tmp_path / "watchbridge.db") as store:
        asyncio.run(run_link(load_config(path, {}), store, LINK, yes=True))  # reviewed
        serializd.add_to_watchlist(None, 1396)
        path.write_text(path.read_text().replace("ratings]", "ratings, watchlist]"))
        with pytest.raises(NeedsReview, match="first sync of watchlist since"):
            asyncio.run(run_link(load_config(path, {}), store, LINK))
    with AppThread(build_app(build_runtime(load_config(path, {})))) as app:
        yield app.url, trakt, serializd


def test_a_watchlist_taken_into_the_kinds_later_is_reviewed_and_applied_here(
    tmp_path: Path, start_fake: Any
) -> None:
    """Before, the page said no profile waited for its review and offered no button: a
    household with no terminal could not apply it."""
    with watchlist_waiting_for_review(tmp_path, start_fake) as (url, trakt, serializd):
        page = read_the_plan(url)
        assert "me (waits for this review)" in page and "trakt: 1 watchlist" in page, page
        assert "  + to trakt: Breaking Bad" in html.unescape(page), page  # the lines, named
        serializd.add_to_watchlist(None, 136315)  # listed meanwhile: not the plan shown
        assert httpx.post(f"{url}/{apply_action(page)}").status_code == 303
        page = page_until(f"{url}/{REVIEW}", "the sides changed since the plan shown was read")
        assert trakt.watchlist() == [] and "trakt: 2 watchlist" in page
        assert httpx.post(f"{url}/{apply_action(page)}").status_code == 303
        page_until(f"{url}/{REVIEW}", "applied:")
        status = httpx.get(f"{url}/").text
    assert sorted(e.item.title for e in trakt.watchlist()) == ["Breaking Bad", "The Bear"]
    assert REVIEW_BUTTON not in status  # the link no longer waits


def test_a_dry_run_from_the_cli_leaves_the_first_sync_among_what_needs_you(
    tmp_path: Path, start_fake: Any
) -> None:
    # It said "All is well" after `watchbridge sync --link NAME --dry-run`, as the README has
    # it, until the next scheduled run half an hour later: the dry run was the last run.
    with waiting_for_review(tmp_path, start_fake) as (url, trakt, serializd):
        config = str(tmp_path / "watchbridge.yaml")
        dry = watchbridge("sync", "--link", LINK, "--config", config, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        page = httpx.get(f"{url}/").text
    assert "All is well" not in page
    assert (
        f'<li><a href="#links">sync {LINK}: waiting for your review (button below)</a></li>' in page
    )
    assert REVIEW_BUTTON in page
    assert trakt_episodes(trakt) == [1, 3] and diary_episodes(serializd) == [1, 2]
