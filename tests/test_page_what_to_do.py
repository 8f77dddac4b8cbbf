"""The status page, read by someone on a phone with no terminal: it counts what they count,
and tells what needs them apart from what only waits. Through the running app, Jellyfin's
webhooks to the fake Trakt (the walkthrough's household)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import unescape

import pytest

from tests import test_walkthrough_trakt_refusals as walk
from tests.test_walkthrough_trakt_refusals import HOUR, House, house  # noqa: F401
from watchbridge.queuewords import sent


def text_of(html: str) -> str:
    """What a reader of the page sees: the text, each tag a space."""
    body = html.split("<body>", 1)[-1]
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())


def test_two_episodes_watched_are_two_plays_sent_not_their_starts_and_stops_too(
    house: House,  # noqa: F811
) -> None:
    # "4 delivered in the last week" after 2 episodes: each scrobble start counted as one.
    house.watch(14)
    house.watch(15)
    house.settle()
    assert house.plays() == [(5, 14), (5, 15)]
    page = text_of(house.page())
    assert "All is well: last webhook " in page
    assert "; 2 plays sent in the last week." in page, page
    assert "in the last week 2 plays sent" in page  # the Deliveries table
    assert "4 " not in page.split("Deliveries", 1)[1].split("Alerts", 1)[0]
    assert "last week:     2 plays sent\n" in house.status()


def summary_of(html: str) -> str:
    """The page's summary, as read: between the title and the time zone's line."""
    return text_of(html).split("Times are in", 1)[0]


def test_trakt_down_for_hours_waits_calmly_and_is_not_under_needs_you(
    house: House,  # noqa: F811
) -> None:
    # "Needs you: 1 on hold for trakt (alex)" for two hours of Trakt answering 503: there
    # was nothing to do, and nowhere did the page say so.
    house.watch(14)
    house.settle()
    house.trakt.fail_next(10**6, 503)
    house.watch(15)
    stopped = datetime.fromtimestamp(house.clock(), UTC).strftime("%H:%M")  # its play queued
    for _ in range(3):
        house.shift(HOUR / 2)
        house.settle()
    html = house.page()
    summary = summary_of(html)
    assert "Needs you" not in summary and "All is well" not in summary, summary
    assert summary.endswith(
        "Waiting, no action needed: Trakt is not taking deliveries now (alex): 1 waiting since "
        f"{stopped} goes out by itself once it does "
    ), summary
    page = text_of(html)
    assert (
        "on hold: trakt for alex 1 waiting, next try in " in page
        and ": Trakt: answered 503 after 3 attempt(s) (nothing to do: they go out by themselves "
        "once it takes them again)"
        in page
    ), page
    assert '<span class="bad">1 waiting</span>' not in html
    status = house.status()
    assert "Trakt: answered 503 after 3 attempt(s) (nothing to do: they go out by themselves" in (
        status
    ), status
    house.trakt.clear_knobs()  # Trakt is back: the play goes by itself
    house.shift(HOUR)
    house.settle()
    assert house.plays() == [(5, 14), (5, 15)]


def test_a_sign_in_lost_stays_under_needs_you(house: House) -> None:  # noqa: F811
    house.watch(14)
    house.settle()
    house.trakt.refuse_refresh_tokens()
    house.trakt.expire_tokens()
    house.watch(15)
    house.settle()
    summary = summary_of(house.page())
    assert summary.startswith(
        "watchbridge 0.1.0 Needs you: trakt sign-in of alex: refused (button below) "
        "1 on hold for trakt (alex) "
    ), summary
    assert "no action needed" not in summary


def test_a_dead_letter_is_listed_on_the_page_with_its_title_and_why(
    house: House,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The page gave a count and `watchbridge deadletters list`, which a Home Assistant user
    # cannot run: which play was given up, and why (retry it, or not), was nowhere.
    house.stop()
    house.config.write_text(house.config.read_text() + "delivery: {max_attempts: 2}\n")
    house.start()
    monkeypatch.setitem(walk.TVDB, 17, 99999917)  # an episode Trakt does not know
    house.watch(17)
    house.settle()
    for _ in range(12):
        house.shift(HOUR * 3)
        house.settle()
    assert house.outbox().get("dead") == 1
    html = house.page()
    given_up = html.split("<td>given up (dead letters)</td>", 1)[1].split("</tr>", 1)[0]
    assert (
        "<li>Breaking Bad S05E17: play for Trakt (alex), given up 1 d ago (" in given_up
        and "): gave up after 2 attempts: unmatched: Trakt could not find Breaking Bad S05E17 ("
        in given_up
    ), given_up
    assert "Retry all dead letters here</button>" in given_up  # kept, as it was
    assert "and 1 more" not in given_up


def test_plays_and_ratings_sent_are_said_as_a_person_counts_them() -> None:
    assert sent({}) == "nothing sent"
    assert sent({"play": 1}) == "1 play sent"
    assert sent({"play": 2, "rating": 1}) == "2 plays and 1 rating sent"
    assert sent({"rating": 3}) == "3 ratings sent"
