"""The webhooks refused since the start: counted per source and kind, told in the log once
in a while, kept small."""

from __future__ import annotations

from watchbridge.refused import (
    LOG_EVERY,
    OVER_AFTER,
    REASON_CHARS,
    REFUSALS,
    RefusedMeanwhile,
    RefusedWebhooks,
)
from watchbridge.webhooks import SOURCES


def test_a_kind_of_refusal_is_told_once_then_again_with_how_many_were_not() -> None:
    refused = RefusedWebhooks()
    assert refused.saw("tautulli", "unauthorized", 401, "wrong secret", 0.0) == 0
    assert refused.saw("tautulli", "unauthorized", 401, "wrong secret", 60.0) is None
    assert refused.saw("tautulli", "unauthorized", 401, "wrong secret", 120.0) is None
    assert refused.saw("tautulli", "unauthorized", 401, "wrong secret", LOG_EVERY) == 2


def test_each_kind_keeps_its_count_its_last_time_and_its_last_reason() -> None:
    refused = RefusedWebhooks()
    refused.saw("jellyfin", "malformed", 400, "body is not JSON", 10.0)
    refused.saw("jellyfin", "malformed", 400, "jellyfin payload has no NotificationType", 20.0)
    refused.saw("plex", "too_large", 413, "body larger than server.max_webhook_bytes", 15.0)
    latest, earlier = refused.recent()
    assert (latest.source, latest.status, latest.webhooks, latest.last_at) == (
        "jellyfin",
        400,
        2,
        20.0,
    )
    assert latest.reason == "jellyfin payload has no NotificationType"
    assert latest.fix(None) == REFUSALS["malformed"]
    assert (earlier.source, earlier.outcome, earlier.webhooks) == ("plex", "too_large", 1)


def test_a_storm_of_refusals_keeps_one_entry_per_source_and_kind() -> None:
    refused = RefusedWebhooks()
    for n in range(1000):
        for source in SOURCES:
            for outcome in REFUSALS:
                refused.saw(source, outcome, 400, "x" * 1000, float(n))
    assert len(refused.recent()) == len(SOURCES) * len(REFUSALS)
    assert all(len(r.reason) == REASON_CHARS for r in refused.recent())


def test_a_refusal_is_over_once_its_source_is_taken_and_none_came_for_a_while() -> None:
    refused = RefusedWebhooks()
    refused.saw("tautulli", "unauthorized", 401, "wrong secret", 100.0)
    refused.taken("tautulli", 200.0)  # the secret was fixed
    (refusal,) = refused.recent()
    assert not refusal.over(100.0 + OVER_AFTER - 1)  # another server may still be refused
    assert refusal.over(100.0 + OVER_AFTER)


def test_a_refusal_after_the_last_accepted_webhook_goes_on() -> None:
    refused = RefusedWebhooks()
    refused.taken("tautulli", 50.0)
    refused.saw("tautulli", "unauthorized", 401, "wrong secret", 100.0)
    refused.taken("plex", 200.0)  # another source's webhooks say nothing of Tautulli's
    assert not refused.recent()[0].over(100.0 + OVER_AFTER)


def test_webhooks_refused_for_a_cause_with_an_alert_are_said_per_source_with_cost() -> None:
    refused = RefusedMeanwhile()
    assert refused.told() == "" and refused.told_over() == ""
    refused.saw("plex", 0.0)
    refused.saw("generic", 60.0)
    refused.saw("generic", 120.0)
    told = refused.told()
    assert "So far 1 Plex webhook was refused (at 1970-01-01 00:00 UTC): " in told
    assert "unless a Plex link's sync" in told
    assert "So far 2 generic webhooks were refused (from 1970-01-01 00:01 UTC to" in told
    assert "unless its sender sends it again" in told
    assert "2 generic webhooks were refused meanwhile" in refused.told_over()
    refused.clear()
    assert refused.told() == ""


def test_webhooks_refused_within_one_minute_are_told_at_that_minute_not_from_it_to_it() -> None:
    # A full disk's alert (and the status page) read "(from 2026-11-29 17:26 UTC to
    # 2026-11-29 17:26 UTC)": a webhook's start and stop refused within the minute.
    refused = RefusedMeanwhile()
    refused.saw("jellyfin", 60.0)
    refused.saw("jellyfin", 100.0)
    assert "So far 2 Jellyfin webhooks were refused (at 1970-01-01 00:01 UTC): " in refused.told()
    assert "2 Jellyfin webhooks were refused meanwhile (at 1970-01-01 00:01 UTC): " in (
        refused.told_over()
    )


def test_refused_webhooks_of_a_server_the_catch_up_reads_cost_nothing_to_mark_again() -> None:
    refused = RefusedWebhooks(caught_up=frozenset({"jellyfin"}))
    refused.saw("jellyfin", "unauthorized", 401, "wrong secret", 100.0)
    refused.saw("emby", "unauthorized", 401, "wrong secret", 100.0)
    jellyfin, emby = sorted(refused.recent(), key=lambda r: r.source != "jellyfin")
    going_on = jellyfin.warning(100.0)
    assert "their plays are caught up from Jellyfin" in going_on
    assert "users.jellyfin are read every 15 minutes" in going_on
    assert "do not mark them played again in Jellyfin (each would count twice)" in going_on
    assert "mark what was watched meanwhile watched again in Emby" in emby.warning(100.0)
    refused.taken("jellyfin", 200.0)
    over = jellyfin.warning(100.0 + OVER_AFTER)
    assert over.startswith("the webhooks refused before were not recorded, but their plays")
    assert "nothing to do" in over and "watched again" not in over


def test_the_storage_alert_says_a_caught_up_servers_refused_plays_are_caught_up() -> None:
    meanwhile = RefusedMeanwhile(caught_up=frozenset({"emby"}))
    meanwhile.saw("emby", 100.0)
    assert "their plays are caught up from Emby" in meanwhile.told()
    assert "their plays are caught up from Emby" in meanwhile.told_over()
