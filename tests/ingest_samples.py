"""Loading the webhook samples in tests/fixtures/{plex,jellyfin,emby,tautulli}/ for ingest tests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from watchbridge.model import Accepted, MediaEvent, ParseResult

FIXTURES = Path(__file__).parent / "fixtures"
SOURCES_WITH_SAMPLES = ("plex", "jellyfin", "emby", "tautulli")
HAMA = "com.plexapp.agents.hama://"  # the guid scheme of Plex's HAMA anime agent


def sample_bytes(source: str, name: str) -> bytes:
    return (FIXTURES / source / name).read_bytes()


def sample_json(source: str, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(sample_bytes(source, name))
    return loaded


def raw_request(source: str, stem: str) -> tuple[bytes, str]:
    """A captured raw body (`<stem>.bin`) and the Content-Type it was sent with."""
    headers = sample_json(source, f"{stem}.headers.json")["headers"]
    return sample_bytes(source, f"{stem}.bin"), headers["content-type"]


def payload_names(source: str) -> list[str]:
    """The JSON payload samples of a source (not headers files or the Tautulli template)."""
    return sorted(
        path.name
        for path in (FIXTURES / source).glob("*.json")
        if not path.name.endswith(".headers.json")
        and not path.name.startswith("template_data")
        and not path.name.startswith("template_headers")
    )


def all_payloads() -> list[tuple[str, dict[str, Any]]]:
    return [
        (source, sample_json(source, name))
        for source in SOURCES_WITH_SAMPLES
        for name in payload_names(source)
    ]


def only_event(result: ParseResult) -> MediaEvent:
    """The single event of an Accepted result (fails the test otherwise)."""
    assert isinstance(result, Accepted), result
    assert len(result.events) == 1
    return result.events[0]


def plex_scrobble_now(name: str, viewed_at: float | None = None) -> dict[str, Any]:
    """A Plex `media.scrobble` sample as the server sends it at `viewed_at` (None: now): its
    `lastViewedAt` counts the view it reports (reference/plex.md), while the sample's is the
    capture's, which a replay today would take for a view synced late (`playback.reported_late`)."""
    payload = sample_json("plex", name)
    payload["Metadata"]["lastViewedAt"] = int(time.time() if viewed_at is None else viewed_at)
    return payload


def hama_scrobble(key: str, title: str, guid: str, show_guid: str) -> dict[str, Any]:
    """A Plex webhook's scrobble of an episode the HAMA anime agent matched: its guid's path
    (`tvdb-305089/1/4`) and its show's whole guid (`grandparentGuid`), numbered as the path
    numbers it."""
    season, number = (int(part) for part in guid.split("/")[1:3])
    return {
        "event": "media.scrobble",
        "user": True,
        "owner": True,
        "Account": {"id": 1, "title": "alex"},
        "Server": {"title": "Basement", "uuid": "d" * 40},
        "Player": {"local": True, "title": "TV", "uuid": "player-1"},
        "Metadata": {
            "librarySectionType": "show",
            "type": "episode",
            "ratingKey": key,
            "grandparentRatingKey": f"{key}0",
            "guid": f"{HAMA}{guid}?lang=en",
            "grandparentGuid": show_guid,
            "grandparentTitle": title,
            "parentIndex": season,
            "index": number,
            "duration": 1_440_000,
        },
    }
