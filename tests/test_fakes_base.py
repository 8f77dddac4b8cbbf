"""Self-tests of the fake HTTP server base (tests/fakes/base.py), with httpx as the client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.base import FakeServer, FakeServerError, cloudflare_page, running
from tests.fakes.echo import EchoFake
from tests.harness import wait_for


@pytest.fixture
def fake() -> Iterator[EchoFake]:
    with running(EchoFake()) as f:
        yield f


@pytest.fixture
def client(fake: EchoFake) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=2.0) as c:
        yield c


def test_start_and_stop_are_fast_and_url_is_local() -> None:
    t0 = time.perf_counter()
    fake = EchoFake().start()
    url = fake.url
    fake.stop()
    # Well under a second, with room for a CI machine busy with other work (0.15 s seen).
    assert time.perf_counter() - t0 < 0.5
    assert url.startswith("http://127.0.0.1:")


def test_path_params_and_query_reach_the_handler(client: httpx.Client) -> None:
    r = client.get("/echo/tmdb/603%20x", params={"extended": "full", "page": "2"})
    assert r.status_code == 200
    assert r.json() == {
        "params": {"kind": "tmdb", "id": "603 x"},
        "query": {"extended": "full", "page": "2"},
    }


def test_requests_are_recorded_with_headers_and_body(fake: EchoFake, client: httpx.Client) -> None:
    client.post("/items", json={"a": 1}, headers={"trakt-api-key": "k"})
    (req,) = fake.requests
    assert (req.method, req.path, req.route, req.status) == ("POST", "/items", "/items", 201)
    assert req.json() == {"a": 1}
    assert req.headers["Trakt-API-Key"] == "k"  # case-insensitive lookup
    assert ("trakt-api-key", "k") in req.headers.raw  # names kept exactly as sent


def test_count_matches_concrete_path_or_route_pattern(fake: EchoFake, client: httpx.Client) -> None:
    client.get("/echo/tmdb/1")
    client.get("/echo/imdb/tt2")
    assert fake.count("GET", "/echo/tmdb/1") == 1
    assert fake.count("GET", "/echo/{kind}/{id}") == 2
    assert fake.count("POST", "/echo/{kind}/{id}") == 0


def test_add_route_serves_an_ad_hoc_fake() -> None:
    fake = FakeServer()
    fake.add_route("GET", "/users/{user}/settings", lambda req: {"user": req.params["user"]})
    with running(fake), httpx.Client(base_url=fake.url) as c:
        assert c.get("/users/me/settings").json() == {"user": "me"}


def test_unknown_route_answers_404_json(fake: EchoFake, client: httpx.Client) -> None:
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"] == "not found"
    assert fake.count("GET", "/nope") == 1


def test_known_path_with_wrong_method_answers_405(client: httpx.Client) -> None:
    assert client.delete("/items").status_code == 405


def test_default_headers_are_added_to_handler_answers(client: httpx.Client) -> None:
    assert client.get("/items").headers["x-request-id"] == "echo"


def test_fail_next_429_retry_after_is_visible_to_client(
    fake: EchoFake, client: httpx.Client
) -> None:
    fake.fail_next(1, 429, headers={"Retry-After": "2"})
    r = client.get("/items")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"
    assert client.get("/items").status_code == 200


@pytest.mark.parametrize("status", [401, 409, 420, 423, 426, 500, 502, 520, 521, 522, 523, 524])
def test_fail_next_any_status_reaches_client(
    fake: EchoFake, client: httpx.Client, status: int
) -> None:
    fake.fail_next(1, status)
    assert client.get("/items").status_code == status


def test_fail_next_does_not_run_the_handler(fake: EchoFake, client: httpx.Client) -> None:
    fake.fail_next(1, 500)
    assert client.post("/items", json={"a": 1}).status_code == 500
    assert fake.items == []
    assert fake.requests[0].status == 500


def test_fail_next_after_handler_does_the_work_then_fails(
    fake: EchoFake, client: httpx.Client
) -> None:
    fake.fail_next(1, 500, route="POST /items", after_handler=True)
    assert client.post("/items", json={"a": 1}).status_code == 500
    assert fake.items == [{"a": 1}]


def test_reshape_next_does_the_work_then_answers_in_another_shape(
    fake: EchoFake, client: httpx.Client
) -> None:
    fake.reshape_next(1, lambda body: {"result": body}, route="POST /items")
    answer = client.post("/items", json={"a": 1})
    assert answer.status_code == 201 and answer.headers["x-request-id"] == "echo"
    assert answer.json() == {"result": {"added": 1, "total": 1}}
    assert fake.items == [{"a": 1}]
    assert client.post("/items", json={"b": 2}).json() == {"added": 1, "total": 2}


def test_reshape_always_may_change_the_answer_in_place(
    fake: EchoFake, client: httpx.Client
) -> None:
    def without_added(body: dict[str, int]) -> None:
        del body["added"]

    fake.reshape_always(without_added, route="POST /items")
    for n in (1, 2):
        assert client.post("/items", json={"n": n}).json() == {"total": n}


def test_fail_next_html_body_is_sent_as_html_without_app_headers(
    fake: EchoFake, client: httpx.Client
) -> None:
    fake.fail_next(1, 522, body=cloudflare_page(522))
    r = client.get("/items")
    assert r.headers["content-type"].startswith("text/html")
    assert "Error 522" in r.text
    assert "x-request-id" not in r.headers


def test_fail_next_dict_body_is_sent_as_json(fake: EchoFake, client: httpx.Client) -> None:
    fake.fail_next(1, 409, body={"watched_at": "2026-09-12T20:41:00.000Z"})
    r = client.post("/items", json={})
    assert (r.status_code, r.json()) == (409, {"watched_at": "2026-09-12T20:41:00.000Z"})


def test_fail_next_content_type_overrides_default(fake: EchoFake, client: httpx.Client) -> None:
    fake.fail_next(1, 403, body=b"blocked", content_type="text/plain")
    r = client.get("/items")
    assert (r.status_code, r.headers["content-type"], r.text) == (403, "text/plain", "blocked")


def test_knobs_are_consumed_in_order(fake: EchoFake, client: httpx.Client) -> None:
    fake.fail_next(2, 502)
    fake.fail_next(1, 401)
    statuses = [client.get("/items").status_code for _ in range(4)]
    assert statuses == [502, 502, 401, 200]
    assert fake.knobs_pending == 0


def test_route_scoped_knob_leaves_other_routes_alone(fake: EchoFake, client: httpx.Client) -> None:
    fake.fail_next(1, 429, route="POST /items")
    assert client.get("/items").status_code == 200
    assert client.get("/echo/a/b").status_code == 200
    assert client.post("/items", json={}).status_code == 429
    assert client.post("/items", json={}).status_code == 201


def test_route_scoped_knob_accepts_a_pattern(fake: EchoFake, client: httpx.Client) -> None:
    fake.fail_next(1, 404, route="/echo/{kind}/{id}")
    assert client.get("/echo/tvdb/9").status_code == 404


def test_knob_for_unknown_route_is_rejected(fake: EchoFake) -> None:
    with pytest.raises(ValueError, match="unknown route"):
        fake.fail_next(1, 500, route="/itmes")


def test_delay_causes_client_timeout(fake: EchoFake) -> None:
    fake.delay_next(1, 1.0)
    with httpx.Client(base_url=fake.url, timeout=0.05) as c, pytest.raises(httpx.TimeoutException):
        c.get("/items")


def test_delay_runs_the_handler_before_answering_late(fake: EchoFake) -> None:
    fake.delay_next(1, 1.0, route="/items")
    with httpx.Client(base_url=fake.url, timeout=0.05) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/items", json={"a": 1})
    # Under load the client's 50 ms may pass before the fake has read the request at all.
    wait_for(lambda: fake.items != [], timeout=5.0)
    assert fake.items == [{"a": 1}]


def test_short_delay_still_answers(fake: EchoFake, client: httpx.Client) -> None:
    fake.delay_next(1, 0.05)
    t0 = time.perf_counter()
    assert client.get("/items").status_code == 200
    assert time.perf_counter() - t0 >= 0.05


def test_drop_causes_transport_error(fake: EchoFake, client: httpx.Client) -> None:
    fake.drop_next(1)
    with pytest.raises(httpx.TransportError):
        client.get("/items")
    assert fake.requests[0].status is None
    assert client.get("/items").status_code == 200


def test_drop_does_not_run_the_handler(fake: EchoFake, client: httpx.Client) -> None:
    fake.drop_next(1, route="/items")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/items", json={"a": 1})
    assert fake.items == []


def test_drop_after_handler_keeps_the_state_change(fake: EchoFake, client: httpx.Client) -> None:
    fake.drop_next(1, after_handler=True)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/items", json={"a": 1})
    assert fake.items == [{"a": 1}]


def test_cut_sends_the_status_and_half_the_body_after_the_handler_ran(
    fake: EchoFake, client: httpx.Client
) -> None:
    fake.cut_next(1, route="POST /items")
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        client.post("/items", json={"a": 1})
    assert fake.items == [{"a": 1}]
    assert fake.requests[0].status == 201


def test_paginate_sets_trakt_pagination_headers(fake: EchoFake, client: httpx.Client) -> None:
    fake.items = [{"n": i} for i in range(11)]
    r = client.get("/items", params={"page": 4, "limit": 3})
    assert r.json() == [{"n": 9}, {"n": 10}]
    assert {k: v for k, v in r.headers.items() if k.startswith("x-pagination")} == {
        "x-pagination-page": "4",
        "x-pagination-limit": "3",
        "x-pagination-page-count": "4",
        "x-pagination-item-count": "11",
    }


def test_paginate_clamps_limit_and_reports_it(fake: EchoFake, client: httpx.Client) -> None:
    fake.items = [{"n": i} for i in range(300)]
    r = client.get("/items", params={"limit": 1000})
    assert len(r.json()) == 250
    assert r.headers["x-pagination-limit"] == "250"
    assert r.headers["x-pagination-page-count"] == "2"


def test_paginate_past_last_page_is_empty(fake: EchoFake, client: httpx.Client) -> None:
    r = client.get("/items", params={"page": 3})
    assert r.json() == []
    assert r.headers["x-pagination-page-count"] == "1"


def test_handler_exception_answers_500_and_is_recorded(
    fake: EchoFake, client: httpx.Client
) -> None:
    r = client.get("/boom")
    assert r.status_code == 500
    assert [str(e) for e in fake.errors] == ["fake bug"]
    fake.errors.clear()  # acknowledged; otherwise the fixture teardown fails the test


def test_leaving_a_fake_with_handler_errors_raises() -> None:
    with pytest.raises(FakeServerError), running(EchoFake()) as fake:
        httpx.get(f"{fake.url}/boom")


def test_stop_closes_the_listening_socket() -> None:
    fake = EchoFake().start()
    port = int(fake.url.rsplit(":", 1)[1])
    fake.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_stop_leaves_no_threads_even_with_open_keepalive_connection() -> None:
    before = set(threading.enumerate())
    fake = EchoFake().start()
    with httpx.Client(base_url=fake.url) as c:
        c.get("/items")
        c.get("/items")  # same keep-alive connection, its handler thread still waits
        t0 = time.perf_counter()
        fake.stop()
        assert time.perf_counter() - t0 < 0.1
    assert set(threading.enumerate()) <= before


def test_stop_interrupts_a_pending_delay() -> None:
    fake = EchoFake().start()
    fake.delay_next(1, 30.0)
    errors: list[Exception] = []

    def call() -> None:
        try:
            httpx.get(f"{fake.url}/items", timeout=5.0)
        except httpx.TransportError as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    while not fake.requests:
        time.sleep(0.005)
    t0 = time.perf_counter()
    fake.stop()
    t.join(2)
    assert time.perf_counter() - t0 < 0.5
    assert len(errors) == 1
