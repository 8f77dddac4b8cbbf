"""The one HTTP policy: what is retried, what is handed back, and what is never sent twice."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.echo import EchoFake
from watchbridge.http import (
    IN_ITS_PLACE_PAUSE,
    Bucket,
    HttpClient,
    Pacer,
    RateLimited,
    RetryPolicy,
    Unavailable,
    Unsendable,
)
from watchbridge.metrics import Metrics

pytestmark = pytest.mark.anyio


@pytest.fixture
def echo(start_fake: Callable[[FakeServer], FakeServer]) -> EchoFake:
    fake = start_fake(EchoFake())
    assert isinstance(fake, EchoFake)
    return fake


@pytest.fixture
async def client(echo: EchoFake) -> AsyncIterator[HttpClient]:
    http = HttpClient(
        "echo",
        echo.url,
        metrics=Metrics(),
        timeout=1.0,
        retry=RetryPolicy(attempts=3, backoff=0.01, max_inline_wait=1.0),
    )
    yield http
    await http.aclose()


async def test_server_errors_are_retried(client: HttpClient, echo: EchoFake) -> None:
    echo.fail_next(2, 502)
    assert (await client.request("GET", "/items")).status_code == 200
    assert echo.count("GET", "/items") == 3


@pytest.fixture
async def marking_client(echo: EchoFake) -> AsyncIterator[HttpClient]:
    """A client of a service whose own answers carry `x-request-id` (Trakt's do)."""
    http = HttpClient(
        "echo",
        echo.url,
        retry=RetryPolicy(attempts=3, backoff=0.01, max_inline_wait=1.0),
        own_answer=lambda response: "x-request-id" in response.headers,
    )
    yield http
    await http.aclose()


async def test_an_error_page_in_the_services_place_is_an_outage_not_its_refusal(
    marking_client: HttpClient, echo: EchoFake
) -> None:
    # A proxy's 404 page says nothing of the row written: held for minutes, no try spent.
    echo.fail_next(1, 404, body="<html><h1>404 Not Found</h1></html>")
    with pytest.raises(Unavailable, match="404 with a page of a firewall or proxy") as caught:
        await marking_client.request("POST", "/items", json={"n": 1})
    assert caught.value.retry_after == IN_ITS_PLACE_PAUSE
    assert not caught.value.answered and not caught.value.outcome_unknown
    echo.fail_next(1, 404, headers={"x-request-id": "its-own"})
    assert (await marking_client.request("POST", "/items", json={"n": 1})).status_code == 404


@pytest.mark.parametrize("token", ["abc\u200bdef", "abc\ndef"], ids=["invisible", "newline"])
async def test_a_header_that_cannot_be_sent_is_named_once_without_its_value(
    client: HttpClient, echo: EchoFake, token: str
) -> None:
    with pytest.raises(Unsendable) as caught:  # held, as no retry can help
        await client.request("GET", "/items", headers={"authorization": f"Bearer {token}"})
    assert "holds a character HTTP does not allow" in caught.value.message
    assert "abc" not in caught.value.message
    assert echo.count("GET", "/items") == 0


async def test_a_broken_character_in_a_body_is_not_blamed_on_a_token(client: HttpClient) -> None:
    with pytest.raises(UnicodeEncodeError):  # a bug to see whole, not a token to set again
        await client.request("POST", "/items", json={"title": "cut mid-emoji \ud83d"})


async def test_a_dropped_post_is_not_sent_again(client: HttpClient, echo: EchoFake) -> None:
    echo.drop_next(1, route="POST /items", after_handler=True)
    with pytest.raises(Unavailable) as caught:
        await client.request("POST", "/items", json={"n": 1})
    assert caught.value.outcome_unknown
    assert len(echo.items) == 1 and echo.count("POST", "/items") == 1


async def test_a_post_answered_500_is_not_sent_again(client: HttpClient, echo: EchoFake) -> None:
    echo.fail_next(1, 500, route="POST /items", after_handler=True)  # written, then failed
    with pytest.raises(Unavailable) as caught:
        await client.request("POST", "/items", json={"n": 1})
    assert caught.value.outcome_unknown
    assert len(echo.items) == 1 and echo.count("POST", "/items") == 1


async def test_a_post_answered_503_is_retried(client: HttpClient, echo: EchoFake) -> None:
    echo.fail_next(1, 503, route="POST /items")
    assert (await client.request("POST", "/items", json={"n": 1})).status_code == 201
    assert len(echo.items) == 1


async def test_an_idempotent_post_is_retried_after_a_drop(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.drop_next(1, route="POST /items")
    response = await client.request("POST", "/items", json={"n": 1}, idempotent=True)
    assert response.status_code == 201


@pytest.mark.parametrize("pacer", [Pacer, lambda: None], ids=["paced", "unpaced"])
async def test_a_short_retry_after_is_waited_out(
    client: HttpClient, echo: EchoFake, pacer: Callable[[], Pacer | None]
) -> None:
    echo.fail_next(1, 429, headers={"Retry-After": "1"})
    assert (await client.request("GET", "/items", pacer=pacer())).status_code == 200
    limited, retried = echo.calls("GET", "/items")
    assert retried.time - limited.time >= 1.0  # Trakt's 429: nothing before Retry-After


async def test_a_long_retry_after_is_handed_back(client: HttpClient, echo: EchoFake) -> None:
    echo.fail_next(1, 429, headers={"Retry-After": "120"})
    with pytest.raises(RateLimited) as caught:
        await client.request("GET", "/items")
    assert caught.value.retry_after is not None and caught.value.retry_after > 120


async def test_a_redirect_is_not_followed_and_says_where_it_points_and_what_to_set(
    echo: EchoFake,
) -> None:
    # Plex behind a reverse proxy that sends plain http to https: the key stays here.
    http = HttpClient("plex", echo.url, setting="services.plex.url", retry=RetryPolicy(attempts=1))
    moved = "https://plex.example.net/items?X-Plex-Token=abc"
    echo.fail_next(1, 301, headers={"Location": moved}, body="<html>Moved</html>")
    with pytest.raises(Unavailable) as raised:
        await http.request("GET", "/items")
    await http.aclose()
    assert raised.value.message == (
        "Plex: answered 301, a redirect to https://plex.example.net/items: watchbridge does not "
        "follow redirects (its token or key would go with it); set services.plex.url to "
        "https://plex.example.net"
    )
    assert raised.value.status == 301 and not raised.value.answered
    assert echo.count("GET", "/items") == 1


async def test_a_redirect_of_an_online_service_says_to_set_its_url(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.fail_next(1, 307, headers={"Location": "/v2/items"}, route="POST /items")
    with pytest.raises(Unavailable) as raised:
        await client.request("POST", "/items", json={"n": 1})
    assert raised.value.message == (
        f"echo: answered 307, a redirect to {echo.url}/v2/items: watchbridge does not follow "
        "redirects (its token or key would go with it); if the service answers there now, set "
        "its URL in the config to it"
    )
    assert not raised.value.outcome_unknown  # a redirect is not the request's work done
    assert echo.items == []


async def test_a_redirect_is_handed_back_to_a_caller_that_follows_it_itself(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.fail_next(1, 302, headers={"Location": "/items"})
    response = await client.request("GET", "/echo/a/1", passthrough=frozenset({302}))
    assert response.status_code == 302


async def test_inspect_may_refuse_an_answer_first(client: HttpClient, echo: EchoFake) -> None:
    echo.fail_next(1, 429, body="<html>checkpoint</html>")

    def refuse(response: httpx.Response) -> None:
        if "html" in response.headers.get("content-type", ""):
            raise Unavailable("echo", "bot checkpoint")

    with pytest.raises(Unavailable, match="bot checkpoint"):
        await client.request("GET", "/items", inspect=refuse)
    assert echo.count("GET", "/items") == 1


async def test_an_answer_that_cannot_be_decoded_is_retried_and_counted(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.fail_next(
        1, 200, headers={"Content-Encoding": "gzip"}, body=b"not gzip", route="GET /items"
    )
    assert (await client.request("GET", "/items")).status_code == 200
    assert client.metrics is not None
    text = client.metrics.render().decode()
    assert 'watchbridge_http_requests_total{method="GET",service="echo",status="error"} 1.0' in text


async def test_a_write_whose_answer_cannot_be_decoded_may_have_landed(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.fail_next(
        1, 201, headers={"Content-Encoding": "gzip"}, body=b"not gzip", route="POST /items"
    )
    with pytest.raises(Unavailable) as caught:
        await client.request("POST", "/items", json={"n": 1})
    assert caught.value.outcome_unknown


async def test_requests_are_counted_by_status(client: HttpClient, echo: EchoFake) -> None:
    echo.fail_next(1, 503)
    await client.request("GET", "/items")
    assert client.metrics is not None
    text = client.metrics.render().decode()
    assert 'watchbridge_http_requests_total{method="GET",service="echo",status="503"} 1.0' in text
    assert 'watchbridge_http_requests_total{method="GET",service="echo",status="200"} 1.0' in text


async def test_a_429_with_only_trakts_ratelimit_header_waits_until_its_until(
    client: HttpClient, echo: EchoFake
) -> None:
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 300))
    limit = {"name": "AUTHED_API_POST_LIMIT", "period": 1, "limit": 1, "remaining": 0}
    echo.fail_next(1, 429, headers={"X-Ratelimit": json.dumps(limit | {"until": until})})
    with pytest.raises(RateLimited) as caught:
        await client.request("GET", "/items")
    assert caught.value.retry_after is not None and caught.value.retry_after > 290


@pytest.fixture
async def client_an_hour_ahead(echo: EchoFake) -> AsyncIterator[HttpClient]:
    """A client whose clock is an hour ahead of the service's (its Date header)."""
    http = HttpClient("echo", echo.url, clock=lambda: time.time() + 3600)
    yield http
    await http.aclose()


async def test_a_429s_ratelimit_until_is_read_by_the_services_clock_not_a_clock_ahead_of_it(
    client_an_hour_ahead: HttpClient, echo: EchoFake
) -> None:
    # Five minutes ahead by Trakt's clock are in the past by a clock an hour ahead: read by
    # ours, the 429 was asked again within seconds, inside the block.
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 300))
    limit = {"name": "AUTHED_API_POST_LIMIT", "period": 1, "limit": 1, "remaining": 0}
    echo.fail_next(1, 429, headers={"X-Ratelimit": json.dumps(limit | {"until": until})})
    with pytest.raises(RateLimited) as caught:
        await client_an_hour_ahead.request("GET", "/items")
    assert caught.value.retry_after is not None and 290 < caught.value.retry_after < 310


async def test_a_server_errors_retry_after_date_is_read_by_the_services_clock(
    client_an_hour_ahead: HttpClient, echo: EchoFake
) -> None:
    # Read by ours, the date was past and the request asked again at once, inside the wait.
    at = email.utils.formatdate(time.time() + 300, usegmt=True)
    echo.fail_next(1, 503, headers={"Retry-After": at})
    with pytest.raises(Unavailable) as caught:
        await client_an_hour_ahead.request("GET", "/items")
    assert caught.value.retry_after is not None and 290 < caught.value.retry_after < 310


async def test_a_short_retry_after_on_a_server_error_is_waited_out(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.fail_next(1, 503, headers={"Retry-After": "0.4"})
    started = time.monotonic()
    assert (await client.request("GET", "/items")).status_code == 200
    assert time.monotonic() - started >= 0.4


async def test_a_gateway_timeout_with_a_long_retry_after_may_have_written(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.fail_next(1, 504, headers={"Retry-After": "60"})
    with pytest.raises(Unavailable) as caught:
        await client.request("POST", "/items", json={"n": 1})
    assert caught.value.outcome_unknown


async def test_a_retried_write_that_may_have_landed_is_reported_so_whatever_came_after(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.drop_next(1, route="POST /items", after_handler=True)  # taken, answer lost
    echo.fail_next(2, 503, route="POST /items")
    with pytest.raises(Unavailable) as caught:
        await client.request("POST", "/items", json={"n": 1}, idempotent=True)
    assert caught.value.outcome_unknown
    assert len(echo.items) == 1


async def test_a_rate_limit_after_a_try_that_may_have_landed_is_reported_as_such(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.drop_next(1, route="POST /items", after_handler=True)
    echo.fail_next(1, 429, headers={"Retry-After": "120"}, route="POST /items")
    with pytest.raises(Unavailable) as caught:
        await client.request("POST", "/items", json={"n": 1}, idempotent=True)
    assert caught.value.outcome_unknown and caught.value.retry_after is not None


UNSAID_WAITS = [
    {},  # an abuse filter's: neither Retry-After nor X-Ratelimit (trakt-api.md §3)
    {"Retry-After": "0"},
    {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},  # a date past (or a clock ahead)
]


@pytest.mark.parametrize("headers", UNSAID_WAITS, ids=["no-headers", "zero", "date-past"])
@pytest.mark.parametrize("paced", [True, False], ids=["paced", "unpaced"])
async def test_429s_in_a_row_that_say_no_wait_are_waited_out_longer_each_time(
    echo: EchoFake, headers: dict[str, str], paced: bool
) -> None:
    # Each call began its own backoff anew (Retry-After 0: none at all): a filter that keeps
    # answering 429 was asked again every half minute (every second for a 0), for ever.
    http = HttpClient("echo", echo.url, retry=RetryPolicy(backoff=0.25, max_inline_wait=1.0))
    pacer = Pacer() if paced else None
    echo.fail_next(3, 429, headers=headers)
    waits = []
    try:
        for _ in range(3):
            with pytest.raises(RateLimited) as caught:
                await http.request("GET", "/items", pacer=pacer)
            assert caught.value.retry_after is not None
            waits.append(caught.value.retry_after)
            if pacer is not None:
                pacer.pause.until = 0.0  # the wait it asked for has passed
        assert waits[0] < waits[1] < waits[2] and waits[2] > 2 * waits[0]
        assert (await http.request("GET", "/items", pacer=pacer)).status_code == 200
        echo.fail_next(1, 429, headers=headers)  # an answer came between: anew
        with pytest.raises(RateLimited) as caught:
            await http.request("GET", "/items", pacer=pacer)
        assert caught.value.retry_after is not None and caught.value.retry_after < waits[1]
    finally:
        await http.aclose()
    assert len(echo.calls("GET", "/items")) == 5  # none sent inside a wait


SIX_HOURS = 6 * 3600  # the longest wait a service may ask for: delivery.max_backoff's default


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (429, {"Retry-After": "99999999"}),
        (503, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}),
        (
            429,
            {
                "X-Ratelimit": json.dumps(
                    {"name": "AUTHED_API_POST_LIMIT", "until": "2999-01-01T00:00:00Z"}
                )
            },
        ),
    ],
    ids=["retry-after-seconds", "retry-after-date", "x-ratelimit-until"],
)
async def test_a_wait_of_years_is_taken_as_six_hours(
    client: HttpClient, echo: EchoFake, status: int, headers: dict[str, str]
) -> None:
    echo.fail_next(1, status, headers=headers)
    with pytest.raises(Unavailable) as caught:  # RateLimited is one
        await client.request("GET", "/items")
    assert caught.value.retry_after is not None and 3600 < caught.value.retry_after <= SIX_HOURS


async def test_a_retry_after_too_large_for_a_number_is_ignored(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.fail_next(1, 429, headers={"Retry-After": "9" * 400})  # float('9' * 400) is inf
    pacer = Pacer()
    assert (await client.request("GET", "/items", pacer=pacer)).status_code == 200
    assert pacer.blocked_until < time.monotonic() + 60


async def test_a_retry_after_in_other_digits_than_ascii_is_ignored(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.fail_next(1, 429, headers={"Retry-After": "²"})  # str.isdigit() says yes, float() no
    assert (await client.request("GET", "/items", pacer=Pacer())).status_code == 200


async def test_a_write_does_not_wait_behind_reads_waiting_for_the_read_bucket(
    client: HttpClient,
) -> None:
    # A live scrobble while a sync's reads have spent the account's read allowance.
    pacer = Pacer({"read": Bucket(1, 0.2), "write": Bucket(1, 1)})
    await client.request("GET", "/items", pacer=pacer, bucket="read")
    reading = asyncio.create_task(client.request("GET", "/items", pacer=pacer, bucket="read"))
    await asyncio.sleep(0.05)  # the read now waits ~5 s for its turn
    started = time.monotonic()
    await client.request("POST", "/items", json={}, pacer=pacer, bucket="write")
    waited = time.monotonic() - started
    reading.cancel()
    assert waited < 1.0


async def test_the_services_clock_is_read_from_its_answers_date_header(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.date_clock = lambda: time.time() + 600  # type: ignore[method-assign]
    await client.request("GET", "/items")
    assert client.clock_skew == pytest.approx(600, abs=2)


async def test_a_clock_far_off_the_services_is_warned_of_once_with_what_to_do(
    client: HttpClient, echo: EchoFake, caplog: pytest.LogCaptureFixture
) -> None:
    echo.date_clock = lambda: time.time() - 20 * 60  # type: ignore[method-assign]
    for _ in range(3):
        await client.request("GET", "/items")
    warned = [r for r in caplog.records if "clocks" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].service == "echo"  # type: ignore[attr-defined]
    assert "NTP" in warned[0].fix  # type: ignore[attr-defined]


async def test_a_clock_off_for_days_is_told_hourly_for_the_clients_each_run_makes(
    echo: EchoFake, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    echo.date_clock = lambda: now[0] - 20 * 60  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="watchbridge.http"):
        for _ in range(50):  # a sync run every 10 minutes for 8 hours, each its own client
            http = HttpClient("echo", echo.url, clock=lambda: now[0])
            for _ in range(3):
                await http.request("GET", "/items")
            await http.aclose()
            now[0] += 600
        echo.date_clock = lambda: now[0]  # type: ignore[method-assign]  # NTP turned on
        http = HttpClient("echo", echo.url, clock=lambda: now[0])
        await http.request("GET", "/items")
        await http.aclose()
    lines = [
        r
        for r in caplog.records
        if "clocks of this machine and of the service differ" in r.getMessage()
    ]
    warned = [r for r in lines if r.levelno == logging.WARNING]
    assert len(warned) == 9  # the first, then one an hour
    assert len(lines) == 50  # each run's client still says so at DEBUG
    assert [getattr(r, "more_since_last_line", 0) for r in warned[1:]] == [5] * 8
    agree = "the clocks of this machine and of the service agree again"
    (over,) = [r for r in caplog.records if r.getMessage() == agree]
    assert over.levelno == logging.INFO and over.times == 50  # type: ignore[attr-defined]


async def test_a_clock_off_is_told_again_hourly_by_a_client_kept_for_days(
    echo: EchoFake, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    echo.date_clock = lambda: now[0] + 10 * 60  # type: ignore[method-assign]
    http = HttpClient("echo", echo.url, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="watchbridge.http"):
        for _ in range(24 * 12):  # the delivery worker's client, a request every 5 minutes
            await http.request("GET", "/items")
            now[0] += 300
    await http.aclose()
    warned = [
        r
        for r in caplog.records
        if "clocks of this machine and of the service differ" in r.getMessage()
    ]
    assert len(warned) == 24  # a day: the first and one an hour, not just the first


async def test_a_clock_near_the_services_is_not_warned_of(
    client: HttpClient, echo: EchoFake, caplog: pytest.LogCaptureFixture
) -> None:
    echo.date_clock = lambda: time.time() + 30  # type: ignore[method-assign]
    await client.request("GET", "/items")
    assert not [r for r in caplog.records if "clocks" in r.getMessage()]


async def test_the_services_clock_is_a_metric(client: HttpClient, echo: EchoFake) -> None:
    echo.date_clock = lambda: time.time() - 300  # type: ignore[method-assign]
    await client.request("GET", "/items")
    assert client.metrics is not None
    exported = client.metrics.render().decode()
    line = 'watchbridge_clock_skew_seconds{service="echo"} '
    (value,) = [float(x.removeprefix(line)) for x in exported.splitlines() if x.startswith(line)]
    assert value == pytest.approx(-300, abs=2)  # the Date header counts whole seconds


def test_a_date_header_without_a_zone_is_gmt_whatever_the_local_zone(
    time_zone: Callable[[str], None],
) -> None:
    from watchbridge.http import date_header_time

    time_zone("Europe/Berlin")
    assert date_header_time({"date": "Thu, 26 Nov 2026 10:00:00 -0000"}) == 1795687200.0
    assert date_header_time({"date": "Thu, 26 Nov 2026 10:00:00 GMT"}) == 1795687200.0
    assert date_header_time({"date": "not a date"}) is None


async def test_a_service_down_is_one_warning_for_every_client_a_scheduled_run_makes(
    echo: EchoFake, caplog: pytest.LogCaptureFixture
) -> None:
    echo.fail_next(1000, 503)  # down for the day; each link run makes its own client
    now = [0.0]
    with caplog.at_level(logging.INFO, logger="watchbridge.http"):
        for _ in range(50):  # a run every 10 minutes for 8 hours
            http = HttpClient("echo", echo.url, clock=lambda: now[0], retry=RetryPolicy(attempts=1))
            with contextlib.suppress(Unavailable):
                await http.request("GET", "/items")
            await http.aclose()
            now[0] += 600
        echo.clear_knobs()
        http = HttpClient("echo", echo.url, clock=lambda: now[0])
        await http.request("GET", "/items")
        await http.aclose()
    told = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert told.count("request failed") == 9  # the first, then one an hour
    (over,) = [r for r in caplog.records if r.getMessage() == "requests answered again"]
    assert over.times == 50  # type: ignore[attr-defined]
