"""Self-tests of the Trakt fake (tests/fakes/trakt.py) with plain httpx, no watchbridge code."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, CLIENT_SECRET, FakeTrakt, Token

FIXTURES = Path(__file__).parent / "fixtures" / "trakt"
HEADERS = {
    "content-type": "application/json",
    "user-agent": "watchbridge-tests/0.1",
    "trakt-api-key": CLIENT_ID,
    "trakt-api-version": "2",
}


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def keys(data: Any) -> Any:
    """The key structure of a JSON value (for shape comparisons with samples)."""
    if isinstance(data, dict):
        return {k: keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [keys(data[0])] if data else []
    return None


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = FakeTrakt()
    fake.seed_reference_catalogue()
    start_fake(fake)
    return fake


@pytest.fixture
def token(trakt: FakeTrakt) -> Token:
    return trakt.issue_token()


@pytest.fixture
def anon(trakt: FakeTrakt) -> Iterator[httpx.Client]:
    """App headers, no user token (OAuth endpoints, public GETs)."""
    with httpx.Client(base_url=trakt.url, headers=HEADERS, timeout=2.0) as c:
        yield c


@pytest.fixture
def api(trakt: FakeTrakt, token: Token) -> Iterator[httpx.Client]:
    auth = {"authorization": f"Bearer {token.access_token}"}
    with httpx.Client(base_url=trakt.url, headers={**HEADERS, **auth}, timeout=2.0) as c:
        yield c


def device_code(anon: httpx.Client) -> dict[str, Any]:
    r = anon.post("/oauth/device/code", json={"client_id": CLIENT_ID})
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


def poll(anon: httpx.Client, code: dict[str, Any]) -> httpx.Response:
    body = {"code": code["device_code"], "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return anon.post("/oauth/device/token", json=body)


def refresh(anon: httpx.Client, refresh_token: str) -> httpx.Response:
    body = {
        "refresh_token": refresh_token,
        "client_id": CLIENT_ID,
        "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
        "grant_type": "refresh_token",
    }
    return anon.post("/oauth/token", json=body)


def stop(api: httpx.Client, progress: float, movie_trakt: int = 28) -> httpx.Response:
    body = {"movie": {"ids": {"trakt": movie_trakt}}, "progress": progress}
    return api.post("/scrobble/stop", json=body)


# -- edge and headers ------------------------------------------------------------------------
def test_missing_user_agent_gets_cloudflare_html_403_without_request_id(
    api: httpx.Client,
) -> None:
    del api.headers["user-agent"]
    r = api.get("/sync/last_activities")
    sample = load("error_403_cloudflare.http.json")
    assert (r.status_code, r.text) == (403, sample["body"])
    assert r.headers["content-type"].startswith("text/html")
    assert "x-request-id" not in r.headers


def test_title_cased_trakt_header_names_are_blocked_by_cloudflare(
    trakt: FakeTrakt, token: Token
) -> None:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "x/1",
        "Trakt-Api-Key": CLIENT_ID,
        "Trakt-Api-Version": "2",
        "Authorization": f"Bearer {token.access_token}",
    }
    r = httpx.get(f"{trakt.url}/sync/last_activities", headers=headers)
    assert r.status_code == 403
    assert "x-request-id" not in r.headers


def test_header_names_are_recorded_exactly_as_sent(trakt: FakeTrakt, api: httpx.Client) -> None:
    api.get("/sync/last_activities")
    (req,) = trakt.calls("GET", "/sync/last_activities")
    names = [name for name, _ in req.headers.raw]
    assert {"trakt-api-key", "trakt-api-version", "content-type", "user-agent"} <= set(names)


def test_missing_api_key_answers_403(api: httpx.Client) -> None:
    del api.headers["trakt-api-key"]
    r = api.get("/sync/last_activities")
    assert r.status_code == 403
    assert "x-request-id" in r.headers  # from Trakt, not from Cloudflare


def test_non_json_content_type_answers_412(api: httpx.Client) -> None:
    r = api.get("/sync/last_activities", headers={"content-type": "text/plain"})
    assert r.status_code == 412


def test_sync_call_without_token_answers_401(anon: httpx.Client) -> None:
    assert anon.get("/sync/history").status_code == 401


def test_application_answers_carry_request_id_and_runtime(api: httpx.Client) -> None:
    r = api.get("/users/settings")
    assert r.status_code == 200
    assert r.headers["x-request-id"] and r.headers["x-runtime"]


# -- device flow (§6) --------------------------------------------------------------------------
def test_device_code_answers_the_documented_fields(anon: httpx.Client) -> None:
    code = device_code(anon)
    assert keys(code) == keys(load("device_code_response.json"))
    assert (code["expires_in"], code["interval"], len(code["user_code"])) == (600, 5, 8)


def test_device_token_pending_answers_400(anon: httpx.Client) -> None:
    assert poll(anon, device_code(anon)).status_code == 400


def test_device_token_unknown_code_answers_404(anon: httpx.Client) -> None:
    assert poll(anon, {"device_code": "nope"}).status_code == 404


def test_device_token_approved_answers_a_working_token(
    trakt: FakeTrakt, anon: httpx.Client
) -> None:
    code = device_code(anon)
    trakt.approve_device(code["user_code"])
    r = poll(anon, code)
    assert r.status_code == 200
    tok = r.json()
    assert keys(tok) == keys(load("token_response.json"))
    assert (tok["token_type"], tok["scope"], tok["expires_in"]) == ("bearer", "public", 604800)
    auth = {"authorization": f"Bearer {tok['access_token']}"}
    me = anon.get("/users/settings", headers=auth)
    assert me.json()["user"]["username"] == "sean"


def test_device_token_polled_again_after_success_answers_409(
    trakt: FakeTrakt, anon: httpx.Client
) -> None:
    code = device_code(anon)
    trakt.approve_device(code["user_code"])
    assert poll(anon, code).status_code == 200
    assert poll(anon, code).status_code == 409


def test_device_token_expired_answers_410(trakt: FakeTrakt, anon: httpx.Client) -> None:
    code = device_code(anon)
    trakt.expire_device(code["user_code"])
    assert poll(anon, code).status_code == 410


def test_device_code_expires_after_expires_in(trakt: FakeTrakt, anon: httpx.Client) -> None:
    code = device_code(anon)
    trakt.approve_device(code["user_code"])
    trakt.advance(601)
    assert poll(anon, code).status_code == 410


def test_device_token_denied_answers_418(trakt: FakeTrakt, anon: httpx.Client) -> None:
    code = device_code(anon)
    trakt.deny_device(code["user_code"])
    assert poll(anon, code).status_code == 418


def test_device_token_polling_faster_than_interval_answers_429(
    trakt: FakeTrakt, anon: httpx.Client
) -> None:
    trakt.enforce_poll_interval = True
    code = device_code(anon)
    assert poll(anon, code).status_code == 400
    assert poll(anon, code).status_code == 429
    trakt.advance(5)
    assert poll(anon, code).status_code == 400


def test_device_token_slow_down_helper_answers_429_once(
    trakt: FakeTrakt, anon: httpx.Client
) -> None:
    code = device_code(anon)
    trakt.slow_down_device(code["user_code"])
    assert [poll(anon, code).status_code for _ in range(2)] == [429, 400]


def test_device_code_with_unknown_client_id_answers_401_invalid_client(
    anon: httpx.Client,
) -> None:
    r = anon.post("/oauth/device/code", json={"client_id": "other"})
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")


# -- tokens (§6) -------------------------------------------------------------------------------
def test_refresh_token_is_single_use(trakt: FakeTrakt, anon: httpx.Client) -> None:
    tok = trakt.issue_token()
    assert refresh(anon, tok.refresh_token).status_code == 200
    again = refresh(anon, tok.refresh_token)
    sample = load("token_refresh_invalid_grant.http.json")
    assert (again.status_code, again.json()) == (sample["status"], sample["body"])


def test_refresh_answers_a_new_working_pair_and_retires_the_old_access_token(
    trakt: FakeTrakt, anon: httpx.Client
) -> None:
    tok = trakt.issue_token()
    new = refresh(anon, tok.refresh_token).json()
    assert new["refresh_token"] != tok.refresh_token
    old_auth = {"authorization": f"Bearer {tok.access_token}"}
    new_auth = {"authorization": f"Bearer {new['access_token']}"}
    assert anon.get("/users/settings", headers=new_auth).status_code == 200
    assert anon.get("/users/settings", headers=old_auth).status_code == 401
    assert refresh(anon, new["refresh_token"]).status_code == 200


def test_refresh_works_without_client_secret(trakt: FakeTrakt, anon: httpx.Client) -> None:
    assert refresh(anon, trakt.issue_token().refresh_token).status_code == 200


def test_expired_access_token_answers_401(trakt: FakeTrakt, api: httpx.Client) -> None:
    trakt.expire_tokens()
    assert api.get("/sync/last_activities").status_code == 401


def test_access_token_expires_after_expires_in(trakt: FakeTrakt, api: httpx.Client) -> None:
    assert api.get("/sync/last_activities").status_code == 200
    trakt.advance(7 * 24 * 3600)
    assert api.get("/sync/last_activities").status_code == 401


def test_expired_access_token_can_still_be_refreshed(
    trakt: FakeTrakt, anon: httpx.Client, token: Token
) -> None:
    trakt.expire_tokens()
    assert refresh(anon, token.refresh_token).status_code == 200


def test_authorization_code_with_pkce_is_exchanged_once(
    trakt: FakeTrakt, anon: httpx.Client
) -> None:
    verifier = "v" * 43
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    code = trakt.authorize(redirect_uri="https://x.test/cb", code_challenge=challenge.decode())
    body = {
        "code": code,
        "client_id": CLIENT_ID,
        "redirect_uri": "https://x.test/cb",
        "grant_type": "authorization_code",
        "code_verifier": verifier,
    }
    assert anon.post("/oauth/token", json={**body, "code_verifier": "w" * 43}).status_code == 400
    assert anon.post("/oauth/token", json=body).status_code == 200
    assert anon.post("/oauth/token", json=body).status_code == 400


def test_revoked_token_answers_401(trakt: FakeTrakt, api: httpx.Client, token: Token) -> None:
    body = {"token": token.access_token, "client_id": CLIENT_ID}
    r = api.post("/oauth/revoke", json=body)
    assert (r.status_code, r.content) == (200, b"")
    assert api.get("/users/settings").status_code == 401


# -- scrobble (§7) -----------------------------------------------------------------------------
def test_scrobble_start_movie_answers_the_sample(api: httpx.Client) -> None:
    r = api.post("/scrobble/start", json=load("scrobble_start_movie_request.json"))
    assert (r.status_code, r.json()) == (201, load("scrobble_start_movie_response.json"))


def test_scrobble_start_sets_watching(trakt: FakeTrakt, api: httpx.Client) -> None:
    api.post("/scrobble/start", json=load("scrobble_start_movie_request.json"))
    r = api.get("/users/me/watching")
    assert (r.status_code, r.json()["movie"]["ids"]["trakt"]) == (200, 28)
    watching = trakt.watching()
    assert watching is not None and watching.item.trakt == 28


def test_watching_is_empty_204_after_stop(api: httpx.Client) -> None:
    api.post("/scrobble/start", json=load("scrobble_start_movie_request.json"))
    stop(api, 95)
    assert api.get("/users/sean/watching").status_code == 204


def test_scrobble_stop_above_80_percent_adds_a_scrobble_play(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    r = api.post("/scrobble/stop", json=load("scrobble_stop_episode_request.json"))
    expected = load("scrobble_stop_episode_response.json")
    (play,) = trakt.history()
    assert r.status_code == 201
    assert r.json() == {**expected, "id": play.id}
    assert (play.item.trakt, play.action) == (16, "scrobble")


def test_scrobble_stop_at_exactly_80_percent_scrobbles(trakt: FakeTrakt, api: httpx.Client) -> None:
    assert stop(api, 80.0).json()["action"] == "scrobble"
    assert len(trakt.history()) == 1


def test_scrobble_stop_below_80_percent_is_a_pause_without_history(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    r = stop(api, 79.9)
    assert (r.status_code, r.json()["action"]) == (201, "pause")
    assert trakt.history() == []
    assert [p.progress for p in trakt.playback()] == [79.9]


def test_second_stop_within_the_window_answers_409(trakt: FakeTrakt, api: httpx.Client) -> None:
    first = stop(api, 90)
    (play,) = trakt.history()
    again = stop(api, 95)
    assert again.status_code == 409
    assert keys(again.json()) == keys(load("scrobble_stop_409.http.json")["body"])
    assert again.json()["watched_at"] == play.watched_at
    assert first.json()["id"] == play.id
    assert len(trakt.history()) == 1


def test_stop_after_the_window_scrobbles_again(trakt: FakeTrakt, api: httpx.Client) -> None:
    stop(api, 90)
    trakt.advance(3600)
    assert stop(api, 90).status_code == 201
    assert len(trakt.history()) == 2


def test_scrobble_stop_below_1_percent_answers_422(api: httpx.Client) -> None:
    assert stop(api, 0.5).status_code == 422


def test_scrobble_unknown_item_answers_404(api: httpx.Client) -> None:
    assert stop(api, 90, movie_trakt=999_999).status_code == 404


def test_scrobble_by_show_ids_and_numbers_resolves_the_episode(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    r = api.post("/scrobble/stop", json=load("scrobble_stop_episode_by_number_request.json"))
    assert r.json()["episode"]["ids"]["trakt"] == 16
    assert [e.item.trakt for e in trakt.history()] == [16]


def test_scrobble_by_absolute_number_answers_the_sample(api: httpx.Client) -> None:
    r = api.post("/scrobble/start", json=load("scrobble_start_absolute_number_request.json"))
    assert (r.status_code, r.json()) == (201, load("scrobble_start_absolute_number_response.json"))


def test_scrobble_pause_saves_playback_progress(api: httpx.Client) -> None:
    r = api.post("/scrobble/pause", json={"movie": {"ids": {"tmdb": 118340}}, "progress": 75.0})
    sample = load("scrobble_pause_movie_response.json")
    assert r.json() == {**sample, "id": r.json()["id"]}
    assert r.json()["id"] != 0
    (item,) = api.get("/sync/playback/movies").json()
    assert (item["progress"], item["movie"]["ids"]["trakt"]) == (75.0, 28)


def test_episode_identified_only_by_imdb_id_is_not_found(api: httpx.Client) -> None:
    body = {"episode": {"ids": {"imdb": "tt0959621"}}, "progress": 90}
    assert api.post("/scrobble/stop", json=body).status_code == 404


# -- history (§9) ------------------------------------------------------------------------------
def test_history_add_sample_answers_the_sample_response(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    r = api.post("/sync/history", json=load("sync_history_add_request.json"))
    assert (r.status_code, r.json()) == (201, load("sync_history_add_response.json"))
    assert sorted(e.item.trakt for e in trakt.history()) == [1, 49, 36440, 36441]


def test_history_add_unknown_ids_go_to_not_found_and_add_nothing(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    body = {
        "movies": [{"ids": {"tmdb": 1}}],
        "shows": [{"ids": {"tvdb": 2}}],
        "episodes": [{"ids": {"trakt": 3}}],
    }
    r = api.post("/sync/history", json=body).json()
    assert r["added"] == {"movies": 0, "episodes": 0}
    assert r["not_found"] == {**body, "seasons": []}
    assert trakt.history() == []


def test_history_add_missing_nested_episode_is_echoed_under_episodes(api: httpx.Client) -> None:
    # trakt-api#357: the show narrowed to the episode comes back under `episodes`, not `shows`
    show = {"ids": {"trakt": 1390}, "seasons": [{"number": 1, "episodes": [{"number": 1}]}]}
    missing = {"ids": {"trakt": 1390}, "seasons": [{"number": 1, "episodes": [{"number": 99}]}]}
    r = api.post("/sync/history", json={"shows": [show, missing]}).json()
    assert r["added"]["episodes"] == 1
    assert (r["not_found"]["episodes"], r["not_found"]["shows"]) == ([missing], [])


def test_rating_of_a_missing_nested_episode_is_echoed_under_episodes(api: httpx.Client) -> None:
    episode = {"number": 99, "rating": 8}
    missing = {"ids": {"trakt": 1390}, "seasons": [{"number": 1, "episodes": [episode]}]}
    r = api.post("/sync/ratings", json={"shows": [missing]}).json()
    assert r["added"]["episodes"] == 0
    assert (r["not_found"]["episodes"], r["not_found"]["shows"]) == ([missing], [])


def test_a_request_naming_a_refused_entry_is_refused_whole(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    trakt.refuse_entries(400, {"error": "bad entry"}, trakt=1390)
    show = {"ids": {"trakt": 1390}, "seasons": [{"number": 1, "episodes": [{"number": 1}]}]}
    r = api.post("/sync/history", json={"movies": [{"ids": {"trakt": 1}}], "shows": [show]})
    assert (r.status_code, r.json()) == (400, {"error": "bad entry"})
    assert trakt.history() == []
    assert api.post("/sync/history", json={"movies": [{"ids": {"trakt": 1}}]}).status_code == 201
    trakt.refuse_entries(422, trakt=1)
    r = api.post("/sync/ratings", json={"movies": [{"ids": {"trakt": 1}, "rating": 8}]})
    assert (r.status_code, r.content) == (422, b"")
    assert trakt.ratings() == []


def test_history_add_is_not_deduplicated(trakt: FakeTrakt, api: httpx.Client) -> None:
    body = {"movies": [{"ids": {"trakt": 1}, "watched_at": "2026-09-10T21:05:00.000Z"}]}
    api.post("/sync/history", json=body)
    api.post("/sync/history", json=body)
    assert len(trakt.history()) == 2


def test_history_watched_at_is_kept_to_the_minute(trakt: FakeTrakt, api: httpx.Client) -> None:
    body = {"movies": [{"ids": {"trakt": 1}, "watched_at": "2026-09-10T21:05:42.123Z"}]}
    api.post("/sync/history", json=body)
    assert [e.watched_at for e in trakt.history()] == ["2026-09-10T21:05:00.000Z"]


def test_bare_show_adds_every_episode(trakt: FakeTrakt, api: httpx.Client) -> None:
    r = api.post("/sync/history", json={"shows": [{"ids": {"tvdb": 81189}}]}).json()
    assert r["added"]["episodes"] == 3
    assert {e.action for e in trakt.history()} == {"watch"}


def test_history_get_paginates_with_trakt_headers(trakt: FakeTrakt, api: httpx.Client) -> None:
    movie = trakt.movies[0]
    for day in range(1, 12):
        trakt.add_history(movie, f"2026-09-{day:02d}T20:00:00Z")
    r = api.get("/sync/history", params={"page": 1, "limit": 3})
    sample = load("sync_history_page.http.json")
    pagination = {k: v for k, v in r.headers.items() if k.startswith("x-pagination")}
    assert pagination == {k: v for k, v in sample["headers"].items() if "pagination" in k}
    assert [e["watched_at"][:10] for e in r.json()] == ["2026-09-11", "2026-09-10", "2026-09-09"]
    assert keys(r.json()[0]) == keys(sample["body"][1])


def test_history_get_filters_by_start_at_and_end_at(trakt: FakeTrakt, api: httpx.Client) -> None:
    for day in (1, 5, 9):
        trakt.add_history(trakt.movies[0], f"2026-09-0{day}T20:00:00Z")
    params = {"start_at": "2026-09-02T00:00:00.000Z", "end_at": "2026-09-09T00:00:00.000Z"}
    r = api.get("/sync/history", params=params)
    assert [e["watched_at"] for e in r.json()] == ["2026-09-05T20:00:00.000Z"]


def test_history_get_by_type_and_trakt_id(trakt: FakeTrakt, api: httpx.Client) -> None:
    api.post("/sync/history", json=load("sync_history_add_request.json"))
    assert len(api.get("/sync/history/movies").json()) == 1
    assert len(api.get("/sync/history/shows/1390").json()) == 2
    assert len(api.get("/sync/history/seasons/2146").json()) == 2
    assert len(api.get("/sync/history/episodes/49").json()) == 1


def test_history_remove_sample_answers_the_sample_response(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    tron = next(m for m in trakt.movies if m.trakt == 12601)
    hermanos = next(e for e in trakt.shows[0].episodes() if e.trakt == 56)
    trakt.add_history(tron, "2026-09-10T21:05:00Z", id=9876543210007)
    trakt.add_history(hermanos, "2026-09-01T20:00:00Z")
    trakt.add_history(tron, "2026-08-01T20:00:00Z")
    r = api.post("/sync/history/remove", json=load("sync_history_remove_request.json"))
    assert (r.status_code, r.json()) == (200, load("sync_history_remove_response.json"))
    assert [(e.item.trakt, e.watched_at) for e in trakt.history()] == [
        (12601, "2026-08-01T20:00:00.000Z")
    ]


def test_watched_shows_snapshot_has_the_sample_shape(api: httpx.Client) -> None:
    api.post("/sync/history", json=load("sync_history_add_request.json"))
    r = api.get("/sync/watched/shows", params={"extended": "progress"}).json()
    assert keys(r) == keys(load("sync_watched_shows.json"))
    got = next(row for row in r if row["show"]["ids"]["trakt"] == 1390)
    assert [e["number"] for e in got["seasons"][0]["episodes"]] == [1, 2]


def test_watched_shows_carry_seasons_only_with_extended_progress(api: httpx.Client) -> None:
    # trakt-api#835, #844, #875: since mid-2026 neither the plain nor the `full` answer has them
    api.post("/sync/history", json=load("sync_history_add_request.json"))
    for extended in (None, "full", "noseasons"):
        params = {"extended": extended} if extended else {}
        rows = api.get("/sync/watched/shows", params=params).json()
        assert rows and all("seasons" not in row for row in rows)
    rows = api.get("/sync/watched/shows", params={"extended": "progress"}).json()
    assert rows and all(row["seasons"] for row in rows)


def test_watched_shows_leave_out_specials_unless_asked(trakt: FakeTrakt, api: httpx.Client) -> None:
    show = trakt.add_show("Doctor Who", 2005, tvdb=78804, seasons={0: 1, 1: 1})
    for episode in show.episodes():
        trakt.add_history(episode, "2026-09-01T20:00:00Z")
    for specials, numbers in ((None, [1]), ("true", [0, 1])):
        params = {"extended": "progress"} | ({"specials": specials} if specials else {})
        (row,) = api.get("/sync/watched/shows", params=params).json()
        assert [season["number"] for season in row["seasons"]] == numbers  # trakt-api#792


def test_watched_snapshot_paginates_like_history(trakt: FakeTrakt, api: httpx.Client) -> None:
    for n in range(120):
        trakt.add_history(trakt.add_movie(f"Movie {n}", 2000), "2026-09-01T20:00:00Z")
    r = api.get("/sync/watched/movies")
    assert len(r.json()) == 100  # jellyfin-plugin-trakt#299: the first 100 only, unasked
    assert (r.headers["x-pagination-page-count"], r.headers["x-pagination-item-count"]) == (
        "2",
        "120",
    )
    assert len(api.get("/sync/watched/movies", params={"page": 2}).json()) == 20


def test_watched_shows_with_progress_page_at_100_at_most(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    for n in range(110):
        show = trakt.add_show(f"Show {n}", 2000, seasons={1: 1})
        trakt.add_history(show.seasons[1].episodes[1], "2026-09-01T20:00:00Z")
    params = {"extended": "progress", "limit": 250}
    r = api.get("/sync/watched/shows", params=params)  # PlexTraktSync#2518
    assert (len(r.json()), r.headers["x-pagination-limit"]) == (100, "100")
    assert len(api.get("/sync/watched/shows", params={"limit": 250}).json()) == 110


# -- ratings (§11) -----------------------------------------------------------------------------
def test_ratings_add_sample_answers_the_sample_response(api: httpx.Client) -> None:
    r = api.post("/sync/ratings", json=load("sync_ratings_add_request.json"))
    assert (r.status_code, r.json()) == (201, load("sync_ratings_add_response.json"))


def test_ratings_round_trip(trakt: FakeTrakt, api: httpx.Client) -> None:
    api.post("/sync/ratings", json=load("sync_ratings_add_request.json"))
    movies = api.get("/sync/ratings/movies").json()
    assert movies == [load("sync_ratings_movies.json")[0]]
    r = api.post("/sync/ratings/remove", json={"movies": [{"ids": {"trakt": 12601}}]})
    assert r.json()["deleted"] == {"movies": 1, "shows": 0, "seasons": 0, "episodes": 0}
    assert sorted(x.item.kind for x in trakt.ratings()) == ["episode", "show"]


def test_ratings_get_filters_by_rating_value(api: httpx.Client) -> None:
    api.post("/sync/ratings", json=load("sync_ratings_add_request.json"))
    assert sorted(x["rating"] for x in api.get("/sync/ratings/all/8,9").json()) == [8, 9]


def test_rating_outside_1_to_10_answers_422(trakt: FakeTrakt, api: httpx.Client) -> None:
    body = {"movies": [{"ids": {"trakt": 1}, "rating": 11}]}
    assert api.post("/sync/ratings", json=body).status_code == 422
    assert trakt.ratings() == []


# -- lookups (§14) -----------------------------------------------------------------------------
def test_search_by_tvdb_episode_id_answers_the_sample(anon: httpx.Client) -> None:
    r = anon.get("/search/tvdb/349232", params={"type": "episode"})
    assert (r.status_code, r.json()) == (200, load("search_tvdb_episode_lookup.json"))


def test_search_unknown_id_answers_an_empty_list(anon: httpx.Client) -> None:
    r = anon.get("/search/imdb/tt0000000", params={"type": "movie"})
    assert (r.status_code, r.json()) == (200, [])


def test_search_type_separates_ids_shared_across_types(anon: httpx.Client) -> None:
    both = anon.get("/search/trakt/1", params={"type": "movie,show"}).json()
    assert [x["type"] for x in both] == ["movie", "show"]
    only = anon.get("/search/trakt/1", params={"type": "show"}).json()
    assert [x["show"]["title"] for x in only] == ["Breaking Bad"]


def test_show_seasons_with_episodes_answers_the_sample(anon: httpx.Client) -> None:
    r = anon.get("/shows/game-of-thrones/seasons", params={"extended": "episodes"})
    assert r.json() == load("show_seasons_extended_episodes.json")


def test_added_catalogue_items_are_searchable(trakt: FakeTrakt, anon: httpx.Client) -> None:
    show = trakt.add_show("Severance", 2022, tvdb=371980, seasons={1: 9})
    ep = show.episode(1, 3)
    assert ep is not None and ep.tvdb is not None
    r = anon.get(f"/search/tvdb/{ep.tvdb}", params={"type": "episode"}).json()
    assert (r[0]["episode"]["season"], r[0]["episode"]["number"]) == (1, 3)


# -- last activities (§8) and settings (§15) ---------------------------------------------------
def test_last_activities_has_the_reference_structure(api: httpx.Client) -> None:
    assert keys(api.get("/sync/last_activities").json()) == keys(load("last_activities.json"))


def test_last_activities_watched_at_moves_after_a_history_add(api: httpx.Client) -> None:
    before = api.get("/sync/last_activities").json()
    api.post("/sync/history", json={"movies": [{"ids": {"trakt": 1}}]})
    after = api.get("/sync/last_activities").json()
    assert after["movies"]["watched_at"] > before["movies"]["watched_at"]
    assert after["all"] == after["movies"]["watched_at"]
    assert after["episodes"] == before["episodes"]


def test_last_activities_rated_at_moves_after_a_rating(api: httpx.Client) -> None:
    before = api.get("/sync/last_activities").json()
    api.post("/sync/ratings", json={"shows": [{"ids": {"trakt": 1}, "rating": 7}]})
    after = api.get("/sync/last_activities").json()
    assert after["shows"]["rated_at"] > before["shows"]["rated_at"]


def test_users_settings_has_the_sample_structure(api: httpx.Client) -> None:
    assert keys(api.get("/users/settings").json()) == keys(load("users_settings.json"))


def test_users_keep_separate_state(trakt: FakeTrakt, api: httpx.Client) -> None:
    other = trakt.add_user("alice", vip=True)
    auth = {"authorization": f"Bearer {trakt.issue_token(other).access_token}"}
    api.post("/sync/history", json={"movies": [{"ids": {"trakt": 1}}]}, headers=auth)
    assert (len(trakt.history("alice")), trakt.history()) == (1, [])
    assert api.get("/users/settings", headers=auth).json()["user"]["vip"] is True


# -- watchlist (§12) ---------------------------------------------------------------------------
def test_watchlist_over_the_limit_answers_420_with_limit_headers(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    trakt.user.limits["watchlist"]["item_count"] = 1
    assert api.post("/sync/watchlist", json={"movies": [{"ids": {"trakt": 1}}]}).status_code == 201
    r = api.post("/sync/watchlist", json={"movies": [{"ids": {"trakt": 28}}]})
    sample = load("error_420_account_limit.http.json")["headers"]
    assert r.status_code == 420
    assert {"x-upgrade-url", "x-vip-user", "x-account-limit"} <= set(r.headers)
    assert r.headers["x-account-limit"] == "1" and sample["x-vip-user"] == r.headers["x-vip-user"]
    assert len(trakt.watchlist()) == 1


def test_watched_movie_leaves_the_watchlist(trakt: FakeTrakt, api: httpx.Client) -> None:
    r = api.post("/sync/watchlist", json={"movies": [{"ids": {"trakt": 28}}]})
    assert keys(r.json()) == keys(load("sync_watchlist_add_response.json"))
    stop(api, 90)
    assert trakt.watchlist() == []


# -- rate limits and account states (§2, §3, §15) ----------------------------------------------
def test_rate_limits_are_off_by_default(api: httpx.Client) -> None:
    assert [stop(api, 10).status_code for _ in range(3)] == [201, 201, 201]


def test_second_post_within_a_second_answers_429_with_retry_after(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    trakt.enforce_rate_limits = True
    assert stop(api, 10).status_code == 201
    r = stop(api, 10)
    assert (r.status_code, r.headers["retry-after"]) == (429, "1")
    limit = json.loads(r.headers["x-ratelimit"])
    sample = json.loads(load("error_429_rate_limit.http.json")["headers"]["x-ratelimit"])
    assert limit.keys() == sample.keys()
    assert (limit["name"], limit["remaining"]) == ("AUTHED_API_POST_LIMIT", 0)


def test_post_bucket_refills_after_its_period(trakt: FakeTrakt, api: httpx.Client) -> None:
    trakt.enforce_rate_limits = True
    stop(api, 10)
    trakt.advance(1)
    assert stop(api, 10).status_code == 201


def test_get_bucket_reports_remaining_calls(trakt: FakeTrakt, api: httpx.Client) -> None:
    trakt.enforce_rate_limits = True
    info = json.loads(api.get("/sync/last_activities").headers["x-ratelimit"])
    assert (info["name"], info["limit"], info["remaining"]) == ("AUTHED_API_GET_LIMIT", 500, 499)


def test_tripped_limit_blocks_every_bucket_when_configured(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    trakt.enforce_rate_limits, trakt.trip_block_seconds = True, 300
    stop(api, 10)
    stop(api, 10)
    r = api.get("/sync/last_activities")
    assert (r.status_code, r.headers["retry-after"]) == (429, "300")
    assert "x-ratelimit" not in r.headers


def test_throttle_next_without_headers_is_a_bare_429(trakt: FakeTrakt, api: httpx.Client) -> None:
    trakt.throttle_next(headers=False)
    r = api.get("/sync/last_activities")
    assert r.status_code == 429
    assert "retry-after" not in r.headers and "x-ratelimit" not in r.headers


def test_locked_account_answers_423_with_headers(trakt: FakeTrakt, api: httpx.Client) -> None:
    trakt.lock_account()
    r = api.get("/sync/last_activities")
    sample = load("error_423_locked.http.json")["headers"]
    assert r.status_code == 423
    assert r.headers["x-account-locked"] == sample["x-account-locked"]
    assert r.headers["x-account-deactivated"] == sample["x-account-deactivated"]


def test_account_limit_answers_420_with_the_documented_headers(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    trakt.account_limit(route="POST /sync/watchlist")
    r = api.post("/sync/watchlist", json={"movies": [{"ids": {"trakt": 1}}]})
    sample = load("error_420_account_limit.http.json")["headers"]
    assert r.status_code == 420
    assert {k: r.headers[k] for k in ("x-upgrade-url", "x-vip-user", "x-account-limit")} == {
        k: sample[k] for k in ("x-upgrade-url", "x-vip-user", "x-account-limit")
    }


def test_account_limit_bare_variant_has_no_body_and_no_headers(
    trakt: FakeTrakt, api: httpx.Client
) -> None:
    trakt.account_limit(headers=False)
    r = api.post("/sync/watchlist", json={"movies": [{"ids": {"trakt": 1}}]})
    assert (r.status_code, r.content) == (420, b"")
    assert "x-account-limit" not in r.headers


def test_app_without_vip_answers_426_with_upgrade_url(trakt: FakeTrakt, api: httpx.Client) -> None:
    trakt.vip = False
    r = api.get("/users/settings")
    assert (r.status_code, r.headers["x-upgrade-url"]) == (426, "https://trakt.tv/vip")


def test_deleted_app_answers_403_and_invalid_client(trakt: FakeTrakt, api: httpx.Client) -> None:
    trakt.delete_app()
    assert api.get("/users/settings").status_code == 403
    r = api.post("/oauth/device/code", json={"client_id": CLIENT_ID})
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")


def test_cloudflare_next_is_html_without_request_id(trakt: FakeTrakt, api: httpx.Client) -> None:
    trakt.cloudflare_next(status=521)
    r = api.get("/sync/last_activities")
    assert (r.status_code, r.headers["content-type"].startswith("text/html")) == (521, True)
    assert "x-request-id" not in r.headers
