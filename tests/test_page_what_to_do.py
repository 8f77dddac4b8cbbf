"""The status page, read by someone on a phone with no terminal: it counts what they count,
and tells what needs them apart from what only waits. Through the running app, Jellyfin's
webhooks to the fake Trakt (the walkthrough's household)."""

from __future__ import annotations

import re
from html import unescape

from tests.test_walkthrough_trakt_refusals import House, house  # noqa: F401
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


def test_plays_and_ratings_sent_are_said_as_a_person_counts_them() -> None:
    assert sent({}) == "nothing sent"
    assert sent({"play": 1}) == "1 play sent"
    assert sent({"play": 2, "rating": 1}) == "2 plays and 1 rating sent"
    assert sent({"rating": 3}) == "3 ratings sent"
