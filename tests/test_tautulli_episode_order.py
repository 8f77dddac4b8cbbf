"""Tautulli names an episode by its show's ids: with services.plex, the episode's own TMDB id
comes from the Plex server, so a library in TVDB order logs the episode TMDB numbers there."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.harness import ServiceProcess, free_port
from tests.ingest_samples import sample_json

SECRET = "tautulli-secret-0123456789"
OWNER_PLEXTV_ID = "27160034"  # Tautulli's user_id for the owner: the plex.tv id


def test_a_tvdb_ordered_episode_from_tautulli_is_logged_where_plex_says_tmdb_has_it(
    tmp_path: Path, start_fake: Any
) -> None:
    # Plex orders Re:ZERO by TheTVDB (aired): TVDB S2E16 is TMDB S1E41, and Plex knows the
    # episode's own TMDB id; Tautulli's body names only the show's ids and the rating keys.
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    show = serializd.add_show(65942, "Re:ZERO", {1: 50, 2: 16})
    first = show.seasons[1].first_episode_id
    plex.add_show("900", "Re:ZERO", 2016, ["tmdb://65942", "tvdb://305089"], ordering="aired")
    plex.add_episode("916", "900", 2, 16, [f"tmdb://{first + 41}", "tvdb://7700016"])
    port = free_port()
    config = tmp_path / "watchbridge.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  serializd: {{api_url: "{serializd.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  alex:
    users: {{tautulli: ["{OWNER_PLEXTV_ID}"]}}
    accounts: {{serializd: {{email: "{ALICE[0]}", password: "{ALICE[1]}"}}}}
""",
        encoding="utf-8",
    )
    body = sample_json("tautulli", "watched_episode.json") | {
        "server_machine_id": plex.machine_id,
        "user_id": OWNER_PLEXTV_ID,
        "rating_key": "916",
        "grandparent_rating_key": "900",
        "guid": f"plex://episode/{'916':0>24}",
        "show_name": "Re:ZERO",
        "season_num": "2",
        "episode_num": "16",
        "imdb_id": "",
        "themoviedb_id": "65942",
        "thetvdb_id": "305089",
    }
    service = ServiceProcess(config, port).start()
    try:
        response = httpx.post(
            f"{service.url}/webhooks/tautulli/{SECRET}",
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + 15
        while not serializd.diary() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        service.kill()
    logged = [(r.season_id, r.episode_number) for r in serializd.diary()]
    assert logged == [(show.seasons[1].id, 41)]
