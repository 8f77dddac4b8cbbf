"""Self-tests of the Serializd fake (tests/fakes/serializd.py) with plain httpx only."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.serializd import ALICE, APP_ID, FakeSerializd

FIXTURES = Path(__file__).parent / "fixtures" / "serializd"
APP = {"X-Requested-With": APP_ID}


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = FakeSerializd()
    fake.seed_reference_catalogue()
    start_fake(fake)
    return fake


@pytest.fixture
def http(fake: FakeSerializd) -> Iterator[httpx.Client]:
    """App header and alice's bearer token."""
    headers = {**APP, "Authorization": f"Bearer {fake.issue_token()}"}
    with httpx.Client(base_url=fake.url, headers=headers, timeout=2.0) as client:
        yield client


def test_login_answers_the_sample_shapes(fake: FakeSerializd) -> None:
    email, _, username = ALICE
    ok = httpx.post(f"{fake.url}/api/login", json=load("login-request.json"), headers=APP)
    assert ok.status_code == 200 and ok.json().keys() == load("login-response.json").keys()
    assert ok.json()["username"] == username
    check = httpx.post(
        f"{fake.url}/api/validateauthtoken", json={"token": ok.json()["token"]}, headers=APP
    )
    assert check.json() == load("validateauthtoken-response.json")
    wrong = httpx.post(
        f"{fake.url}/api/login", json={"email": email, "password": "nope"}, headers=APP
    )
    assert (wrong.status_code, wrong.json()) == (401, load("login-error-401.json"))


def test_app_header_and_token_are_required(fake: FakeSerializd, http: httpx.Client) -> None:
    path = "/api/user/alice_tv/diary"
    assert http.get(path).status_code == 200
    token_only = {"Authorization": http.headers["Authorization"]}
    assert httpx.get(f"{fake.url}{path}", headers=token_only).status_code == 401
    anonymous = httpx.get(f"{fake.url}{path}", headers=APP)
    assert (anonymous.status_code, anonymous.json()) == (401, load("error-401-not-logged-in.json"))
    fake.expire_tokens()
    assert http.get(path).status_code == 401


def test_camel_case_write_is_a_plain_text_500(fake: FakeSerializd, http: httpx.Client) -> None:
    camel = http.post("/api/watched_v2", json={"showId": 1396, "seasonIds": [3572]})
    assert camel.status_code == 500 and camel.headers["content-type"].startswith("text/plain")
    assert http.post("/api/watched_v2", json=load("watched_v2-request.json")).status_code == 200
    assert fake.season_marks() == {(1396, 3572), (1396, 3573)}


def test_checkpoint_and_unknown_paths_are_html(fake: FakeSerializd, http: httpx.Client) -> None:
    fake.checkpoint_next(1)
    blocked = http.post("/api/login", json=load("login-request.json"))
    assert blocked.status_code == 429 and "Vercel Security Checkpoint" in blocked.text
    assert blocked.headers["content-type"].startswith("text/html")
    missing = http.get("/api/show/1396/progress_v9")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")


def test_catalogue_matches_the_samples(fake: FakeSerializd, http: httpx.Client) -> None:
    show = http.get("/api/show/1396").json()
    sample = load("show-1396.json")
    assert show.keys() == sample.keys()
    assert show["seasons"][1].keys() == sample["seasons"][1].keys()
    assert [(s["id"], s["seasonNumber"]) for s in show["seasons"]] == [
        (s["id"], s["seasonNumber"]) for s in sample["seasons"]
    ]
    season = http.get("/api/show/1396/season/1").json()
    assert season.keys() == load("season-1396-1.json").keys()
    assert season["seasonId"] == 3572 and len(season["episodes"]) == 7
    fake.add_show(95479, "Announced", {1: 0})
    assert http.get("/api/show/95479/season/1").json()["seasonId"] is None


def test_diary_pages_are_unsorted_and_complete(fake: FakeSerializd, http: httpx.Client) -> None:
    for minute in range(30):
        fake.log_entry(None, 1396, 1, 1 + minute % 7, date_added=f"2026-07-01T10:{minute:02d}:00Z")
    pages = [http.get("/api/user/alice_tv/diary", params={"page": n}).json() for n in (1, 2, 3)]
    assert [len(p["reviews"]) for p in pages] == [24, 6, 0]
    assert pages[0]["totalPages"] == 2 and pages[0]["totalReviews"] == 30
    rows = [r for p in pages for r in p["reviews"]]
    assert sorted(r["id"] for r in rows) == sorted(r.id for r in fake.diary())
    added = [r["dateAdded"] for r in rows]
    assert added != sorted(added, reverse=True)
    assert rows[0].keys() == load("diary-page-1.json")["reviews"][0].keys()
    fake.flag_spelling = "long"
    row = http.get("/api/user/alice_tv/diary").json()["reviews"][0]
    assert {"isLogged", "isRewatched", "containsSpoilers"} <= row.keys()


def test_ticks_and_diary_are_separate_systems(fake: FakeSerializd, http: httpx.Client) -> None:
    review = http.post("/api/show/reviews/add", json=load("reviews-add-request-episode-log.json"))
    assert review.json().keys() == load("reviews-add-response.json").keys()
    assert [r.id for r in fake.diary()] == [review.json()["id"]] and not fake.ticks()
    logged = http.post("/api/episode_log/add", json=load("episode_log-add-request.json"))
    assert logged.json().keys() == load("episode_log-add-response.json").keys()
    assert fake.ticks() == {(1396, 3572, 5)} and len(fake.diary()) == 1
    page = http.get("/mobile/page/show/1396/season_v2_part_3/0", params={"season_id": 3572})
    assert page.json() == {
        "episodeLogs": [{"episodeNumber": 5, "dateAdded": fake.user.ticks[(1396, 3572, 5)]}]
    }
    http.post("/api/watched_v2", json={"show_id": 1396, "season_ids": [3572]})
    watched = http.get("/api/user/alice_tv/watchedpage_v2/1", params={"sort_by": "date_added_desc"})
    item = watched.json()["items"][0]
    assert item.keys() == load("watchedpage_v2-page-1.json")["items"][0].keys()
    assert item["seasonIds"] == [3572]
    assert http.get("/api/user/alice_tv/watchedpage_v2/1").status_code == 500  # no sort_by


def test_watchlist_page_needs_sort_by_and_has_the_fixture_shape(
    fake: FakeSerializd, http: httpx.Client
) -> None:
    assert http.post("/api/watchlist_v2", json=load("watchlist_v2-request.json")).status_code == 200
    page = http.get("/api/user/alice_tv/watchlistpage_v2/1", params={"sort_by": "date_added_desc"})
    item = page.json()["items"][0]
    assert item.keys() == load("watchlistpage_v2-page-1.json")["items"][0].keys()
    assert item["seasonIds"] == [3575, 3576]
    bare = http.get("/api/user/alice_tv/watchlistpage_v2/1")  # §5.2: sort_by is required
    assert bare.status_code == 500 and bare.headers["content-type"].startswith("text/plain")
    removed = http.post("/api/watchlist/remove_v2", json=load("watchlist-remove_v2-request.json"))
    assert removed.status_code == 200 and fake.watchlisted() == {1396: {3576}}
    assert http.post("/api/watchlist/remove", json={"show_id": 1396}).status_code == 404


def test_a_season_is_never_both_watched_and_watchlisted(
    fake: FakeSerializd, http: httpx.Client
) -> None:
    fake.mark(None, 1396, 3)
    http.post("/api/watchlist_v2", json={"show_id": 1396, "season_ids": [3575, 3576]})
    assert fake.season_marks() == set()  # UNCONFIRMED side effect, modelled on purpose
    http.post("/api/watched_v2", json={"show_id": 1396, "season_ids": [3576]})
    assert fake.watchlisted() == {1396: {3575}}


def test_review_without_rating_is_a_500(http: httpx.Client) -> None:
    body = load("reviews-add-request-episode-log.json")
    del body["rating"]
    assert http.post("/api/show/reviews/add", json=body).status_code == 500
