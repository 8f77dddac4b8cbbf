"""The fake AniList behaves as the reference says, so client tests against it mean something."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anilist import CLIENT_ID, CLIENT_SECRET, PIN_REDIRECT, FakeAniList
from tests.fakes.base import FakeServer

FIXTURES = Path(__file__).parent / "fixtures" / "anilist"


def sample_query(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    return fake


def post(
    fake: FakeAniList, query: str, variables: dict[str, Any] | None = None, token: str | None = None
) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        fake.url + "/", json={"query": query, "variables": variables or {}}, headers=headers
    )


def test_the_sample_collection_query_dedupes_nothing_and_lists_custom_lists_too(
    fake: FakeAniList,
) -> None:
    fake.add_entry(164, status="COMPLETED", progress=1, custom_lists=["Rewatch queue"])
    fake.add_entry(21, status="PAUSED", hidden=True, custom_lists=["Rewatch queue"])
    body = post(fake, sample_query("medialistcollection.graphql"), {"userId": fake.viewer.id})
    groups = {
        g["name"]: [e["mediaId"] for e in g["entries"]]
        for g in body.json()["data"]["MediaListCollection"]["lists"]
    }
    assert groups == {"Completed": [164], "Rewatch queue": [164, 21]}


def test_collections_come_in_chunks_of_at_most_500(fake: FakeAniList) -> None:
    fake.generate_list(501, 1000)
    query = sample_query("medialistcollection.graphql")
    first = post(fake, query, {"userId": fake.viewer.id, "chunk": 1, "perChunk": 900}).json()
    second = post(fake, query, {"userId": fake.viewer.id, "chunk": 2, "perChunk": 900}).json()
    count = sum(
        len(g["entries"])
        for g in first["data"]["MediaListCollection"]["lists"]
        if not g["isCustomList"]
    )
    assert count == 500 and first["data"]["MediaListCollection"]["hasNextChunk"] is True
    assert second["data"]["MediaListCollection"]["hasNextChunk"] is False


def test_list_queries_without_a_user_id_are_refused(fake: FakeAniList) -> None:
    answer = post(fake, sample_query("medialistcollection.graphql"), {})
    assert answer.status_code == 400 and answer.json()["errors"][0]["message"] == "validation"


def test_scores_follow_the_format_the_query_asks_for(fake: FakeAniList) -> None:
    fake.add_entry(164, status="COMPLETED", progress=1, score=75)  # viewer: POINT_5
    raw = post(fake, sample_query("medialist-updated-since.graphql"), {"userId": fake.viewer.id})
    shown = post(
        fake,
        sample_query("medialist-updated-since.graphql").replace(
            "score(format: POINT_100)", "score"
        ),
        {"userId": fake.viewer.id},
    )
    assert raw.json()["data"]["Page"]["mediaList"][0]["score"] == 75
    assert shown.json()["data"]["Page"]["mediaList"][0]["score"] == 4


def test_the_sample_save_mutation_creates_an_entry(fake: FakeAniList) -> None:
    fake.add_media(119661, episodes=12)
    variables = json.loads((FIXTURES / "save-media-list-entry-variables.json").read_text())
    answer = post(
        fake, sample_query("save-media-list-entry.graphql"), variables, fake.issue_token()
    )
    saved = answer.json()["data"]["SaveMediaListEntry"]
    assert (saved["progress"], saved["score"], saved["status"]) == (4, 70, "CURRENT")


def test_a_mutation_needs_a_token_and_the_mutation_keyword(fake: FakeAniList) -> None:
    query = sample_query("delete-media-list-entry.graphql")
    assert post(fake, query, {"id": 1}).status_code == 401
    bare = query.replace("mutation Delete", "query Delete")
    assert post(fake, bare, {"id": 1}, fake.issue_token()).status_code == 400


def test_an_unknown_field_is_an_error_inside_http_200(fake: FakeAniList) -> None:
    answer = post(fake, "query { Nonsense { id } }")
    assert answer.status_code == 200 and answer.json()["errors"][0]["status"] == 400


def test_going_over_the_limit_gives_a_minute_long_timeout_like_the_sample(
    fake: FakeAniList,
) -> None:
    fake.limit = 2
    query = sample_query("viewer.graphql")
    token = fake.issue_token()
    remaining = [post(fake, query, token=token).headers["x-ratelimit-remaining"] for _ in range(2)]
    assert remaining == ["1", "0"]
    answer = post(fake, query, token=token)
    assert answer.status_code == 429
    assert answer.json() == json.loads((FIXTURES / "error-429.json").read_text())
    assert answer.headers["retry-after"] == "60"
    assert int(answer.headers["x-ratelimit-reset"]) >= int(fake.now()) + 59
    fake.advance(61)
    assert post(fake, query, token=token).status_code == 200


def test_the_burst_limiter_answers_429_while_remaining_shows_room(fake: FakeAniList) -> None:
    fake.burst_limit = 3
    query = sample_query("viewer.graphql")
    token = fake.issue_token()
    answers = [post(fake, query, token=token) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["x-ratelimit-remaining"]) > 20
    assert fake.rate_limited == ["burst"]


def test_an_expired_token_is_an_invalid_token(fake: FakeAniList) -> None:
    token = fake.issue_token()
    fake.expire_tokens()
    answer = post(fake, sample_query("viewer.graphql"), token=token)
    assert answer.status_code == 400 and answer.json()["errors"][0]["message"] == "Invalid token"


def test_the_token_endpoint_trades_a_pin_code_once(fake: FakeAniList) -> None:
    code = fake.authorize()
    body = {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": PIN_REDIRECT,
        "code": code,
    }
    first = httpx.post(fake.auth_url + "/token", json=body)
    assert first.status_code == 200 and first.json()["expires_in"] == 31536000
    assert httpx.post(fake.auth_url + "/token", json=body).status_code == 400


def test_api_disabled_answers_403_with_the_documented_body(fake: FakeAniList) -> None:
    fake.disabled = True
    answer = post(fake, sample_query("viewer.graphql"))
    assert answer.status_code == 403
    assert "temporarily disabled" in answer.json()["errors"][0]["message"]
