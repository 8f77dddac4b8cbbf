"""Service answers to reconciliation sides: keys both services share, what cannot be linked."""

from __future__ import annotations

import json
from pathlib import Path

from watchbridge.sides import episode_key, trakt_side

FIXTURES = Path(__file__).parent / "fixtures" / "trakt"


def test_trakt_history_entries_become_plays_keyed_by_tmdb_numbering() -> None:
    page = json.loads((FIXTURES / "sync_history_page.http.json").read_text())
    entries = [e for e in page["body"] if e.get("type") == "episode"]
    side = trakt_side(entries, [])
    assert len(side.plays) == len([e for e in entries if e["show"]["ids"].get("tmdb")])
    first = entries[0]
    assert side.plays[0].item == episode_key(
        first["show"]["ids"]["tmdb"], first["episode"]["season"], first["episode"]["number"]
    )
    assert side.plays[0].record == str(first["id"])


def test_trakt_entries_without_a_tmdb_show_id_are_left_out() -> None:
    entry = {
        "id": 1,
        "type": "episode",
        "watched_at": "2024-01-01T00:00:00.000Z",
        "episode": {"season": 1, "number": 1},
        "show": {"ids": {"tvdb": 1}},
    }
    assert trakt_side([entry], []).plays == ()


def test_trakt_ratings_use_the_internal_scale() -> None:
    entry = {
        "type": "show",
        "rating": 7,
        "rated_at": "2024-01-01T00:00:00.000Z",
        "show": {"ids": {"tmdb": 1396}},
    }
    assert trakt_side([], [entry]).ratings["show:tmdb:1396"].value == 70
