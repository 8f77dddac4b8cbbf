"""Trakt account limits: parsing settings and 420s, and the pause/resume policy (pure)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from watchbridge.limits import (
    DEFAULT_UPGRADE_URL,
    AccountLimits,
    LimitHit,
    Pause,
    decide,
    parse_settings,
    room_text,
)

FIXTURES = Path(__file__).parent / "fixtures" / "trakt"
FREE = AccountLimits(vip=False, item_limits={"watchlist": 250, "collection": 1000})
VIP = AccountLimits(vip=True, item_limits={"watchlist": 5000, "collection": 100000})
NOW = 1_800_000_000.0


def test_settings_sample_gives_vip_flag_and_item_limits() -> None:
    settings = json.loads((FIXTURES / "users_settings.json").read_text())
    parsed = parse_settings(settings)
    assert parsed.vip is False
    assert parsed.limit("watchlist") == 250
    assert parsed.limit("collection") == 1000
    assert parsed.limit("list") == 250
    assert parsed.limit("search") is None  # recent_count, not an item limit


def test_settings_without_limits_are_read_leniently() -> None:
    parsed = parse_settings({"user": {"vip": True}, "limits": {"watchlist": "oops"}})
    assert parsed == AccountLimits(vip=True, item_limits={})


def test_420_sample_headers_give_limit_vip_flag_and_upgrade_url() -> None:
    sample = json.loads((FIXTURES / "error_420_account_limit.http.json").read_text())
    hit = LimitHit.from_headers(sample["headers"])
    assert hit == LimitHit(limit=250, vip=False, upgrade_url="https://trakt.tv/vip")


def test_bare_420_of_2026_parses_to_unknowns() -> None:
    assert LimitHit.from_headers({}) == LimitHit()


def test_room_left_means_run_with_the_capacity_known() -> None:
    decision = decide("watchlist", "me", paused=None, limits=FREE, count=240, wanted=5, now=NOW)
    assert decision.action == "run" and decision.may_write
    assert decision.capacity == 10 and decision.alert is None


def test_a_full_kind_with_something_to_add_pauses_with_one_alert() -> None:
    decision = decide("watchlist", "me", paused=None, limits=FREE, count=250, wanted=1, now=NOW)
    assert decision.action == "pause" and not decision.may_write
    assert decision.pause is not None and decision.pause.limit == 250
    assert decision.alert is not None
    assert DEFAULT_UPGRADE_URL in decision.alert
    assert "watchlist" in decision.alert and "me" in decision.alert


def test_a_full_kind_with_nothing_to_add_keeps_running() -> None:
    decision = decide("watchlist", "me", paused=None, limits=FREE, count=250, now=NOW)
    assert decision.action == "run"


def test_a_420_pauses_with_its_upgrade_url() -> None:
    hit = LimitHit(limit=250, vip=False, upgrade_url="https://trakt.tv/vip")
    decision = decide("watchlist", "me", paused=None, limits=FREE, hit=hit, now=NOW)
    assert decision.action == "pause"
    assert decision.alert is not None and "https://trakt.tv/vip" in decision.alert


def test_a_bare_420_pauses_with_the_limit_from_settings_and_the_default_url() -> None:
    decision = decide("collection", "me", paused=None, limits=FREE, hit=LimitHit(), now=NOW)
    assert decision.pause is not None
    assert decision.pause.limit == 1000
    assert decision.pause.upgrade_url == DEFAULT_UPGRADE_URL


def paused_at(limit: int | None, vip: bool = False) -> Pause:
    return Pause("watchlist", "me", limit, vip, "https://trakt.tv/vip", NOW - 3600)


def test_a_pause_stays_while_the_limit_is_unchanged_and_the_kind_full() -> None:
    pause = paused_at(250)
    decision = decide("watchlist", "me", paused=pause, limits=FREE, count=250, wanted=3, now=NOW)
    assert decision.action == "stay_paused"
    assert decision.pause == pause and decision.alert is None and not decision.may_write


def test_a_pause_tries_again_when_the_kind_holds_fewer_than_its_limit() -> None:
    pause = replace(paused_at(250), count=250)
    decision = decide("watchlist", "me", paused=pause, limits=FREE, count=240, wanted=30, now=NOW)
    assert decision.action == "retry" and decision.may_write and decision.capacity == 10
    assert decision.pause == pause  # kept until the adds went through
    assert decision.alert is None and decision.resolved is None


def test_a_vip_pause_tries_again_when_there_is_room() -> None:
    pause = replace(paused_at(5000, vip=True), count=5000)
    decision = decide("watchlist", "me", paused=pause, limits=VIP, count=4990, wanted=1, now=NOW)
    assert decision.action == "retry" and decision.capacity == 10


def test_a_pause_trakt_refused_with_room_seen_waits_for_fewer_items_than_then() -> None:
    pause = replace(paused_at(250), count=200)  # a 420 while 200 were listed
    same = decide("watchlist", "me", paused=pause, limits=FREE, count=200, wanted=1, now=NOW)
    assert same.action == "stay_paused"
    fewer = decide("watchlist", "me", paused=pause, limits=FREE, count=190, wanted=1, now=NOW)
    assert fewer.action == "retry" and fewer.capacity == 60


def test_a_420_on_trying_again_keeps_the_pause_and_notes_the_count_it_met() -> None:
    pause = replace(paused_at(250), count=250)
    decision = decide(
        "watchlist", "me", paused=pause, limits=FREE, count=240, hit=LimitHit(), now=NOW
    )
    assert decision.action == "stay_paused" and decision.alert is None
    assert decision.pause == replace(pause, count=240)


def test_room_again_says_how_many_were_added() -> None:
    assert room_text("watchlist", "me", 3) == (
        "There is room again in the Trakt watchlist of profile me: 3 titles added."
    )
    assert room_text("collection", "me", 1) == (
        "There is room again in the Trakt collection of profile me: 1 item added."
    )
    assert room_text("watchlist", "me", 0) == (
        "There is room again in the Trakt watchlist of profile me: nothing waits to be added"
        " any more."
    )


def test_a_pause_stays_when_the_limits_were_not_read() -> None:
    decision = decide("watchlist", "me", paused=paused_at(250), limits=None, now=NOW)
    assert decision.action == "stay_paused"


def test_upgrading_to_vip_resumes_with_a_recovery_notice() -> None:
    decision = decide(
        "watchlist", "me", paused=paused_at(250), limits=VIP, count=250, wanted=3, now=NOW
    )
    assert decision.action == "resume" and decision.may_write and decision.pause is None
    assert decision.resolved is not None and "5000 titles instead of 250" in decision.resolved


def test_a_raised_limit_that_is_still_too_small_pauses_again_at_the_new_limit() -> None:
    bigger = AccountLimits(vip=False, item_limits={"watchlist": 260})
    decision = decide(
        "watchlist", "me", paused=paused_at(250), limits=bigger, count=260, wanted=3, now=NOW
    )
    assert decision.action == "pause"
    assert decision.pause is not None and decision.pause.limit == 260


def test_a_limit_that_changes_while_the_kind_stays_full_is_no_recovery() -> None:
    bigger = AccountLimits(vip=False, item_limits={"watchlist": 260})
    decision = decide(
        "watchlist", "me", paused=paused_at(250), limits=bigger, count=260, wanted=3, now=NOW
    )
    assert decision.action == "pause" and decision.resolved is None


def test_a_pause_from_a_bare_420_adopts_the_first_limit_read_afterwards() -> None:
    decision = decide("watchlist", "me", paused=paused_at(None), limits=FREE, wanted=1, now=NOW)
    assert decision.action == "stay_paused"


def test_a_second_420_while_paused_sends_no_second_alert() -> None:
    pause = paused_at(250)
    decision = decide("watchlist", "me", paused=pause, limits=FREE, hit=LimitHit(250), now=NOW)
    assert decision.action == "stay_paused" and decision.alert is None


def test_pause_state_survives_a_round_trip_through_storage() -> None:
    pause = paused_at(250)
    assert Pause.from_dict(json.loads(json.dumps(pause.to_dict()))) == pause


# ---------------------------------------------------------- edges found by mutating limits.py


def test_an_executive_producer_or_original_vip_counts_as_vip() -> None:
    assert parse_settings({"user": {"vip": False, "vip_ep": True}}).vip is True
    assert parse_settings({"user": {"vip": False, "vip_og": True}}).vip is True
    assert parse_settings({"user": {"vip": False, "vip_ep": False, "vip_og": False}}).vip is False


def test_420_headers_are_read_whatever_their_case() -> None:
    headers = {"X-Account-Limit": "250", "X-VIP-User": "true", "X-Upgrade-URL": "https://u/vip"}
    assert LimitHit.from_headers(headers) == LimitHit(
        limit=250, vip=True, upgrade_url="https://u/vip"
    )


def test_a_free_accounts_alert_says_to_make_room_or_upgrade_to_vip() -> None:
    alert = paused_at(250).alert_text()
    assert (
        "Remove titles from the Trakt watchlist to make room, or upgrade to Trakt VIP at"
        " https://trakt.tv/vip" in alert
    )
    assert "even with VIP" not in alert


def test_a_vip_accounts_alert_says_the_limit_is_reached_even_with_vip() -> None:
    alert = paused_at(5000, vip=True).alert_text()
    assert (
        "the most Trakt allows even with VIP. Remove titles from the Trakt watchlist to make"
        " room;" in alert
    )
    assert "upgrade to Trakt VIP" not in alert.lower()


def test_a_full_collection_says_room_comes_from_items_not_in_plex() -> None:
    # Taking off Trakt's collection an item of the Plex libraries makes no room: the next sync
    # adds it back.
    alert = replace(paused_at(5000, vip=True), kind="collection").alert_text()
    assert (
        "the most Trakt allows even with VIP. Make room by removing from the Trakt collection"
        " items that are not in the Plex libraries (collected elsewhere: one that is in them is"
        " added back at the next sync); everything else keeps syncing." in alert
    )


def test_the_alert_names_the_limit_only_when_it_is_known() -> None:
    assert ": it holds 250 titles, the most" in paused_at(250).alert_text()
    assert ": it holds the most a free Trakt account may hold." in paused_at(None).alert_text()


def test_a_stored_pause_without_an_upgrade_url_reads_with_the_default_one() -> None:
    stored = {"kind": "watchlist", "profile": "me", "limit": 250, "vip": False, "since": NOW}
    assert Pause.from_dict(stored).upgrade_url == DEFAULT_UPGRADE_URL
    assert Pause.from_dict({**stored, "upgrade_url": ""}).upgrade_url == DEFAULT_UPGRADE_URL


def test_a_420_saying_vip_user_makes_the_alert_a_vip_one_whatever_the_settings_said() -> None:
    hit = LimitHit(limit=5000, vip=True)
    decision = decide("watchlist", "me", paused=None, limits=FREE, hit=hit, now=NOW)
    assert decision.pause is not None and decision.pause.vip is True
    assert decision.alert is not None and "even with VIP" in decision.alert


def test_a_420_without_the_vip_header_takes_vip_from_the_settings() -> None:
    decision = decide("watchlist", "me", paused=None, limits=VIP, hit=LimitHit(), now=NOW)
    assert decision.pause is not None and decision.pause.vip is True


def test_a_pause_records_how_many_items_the_kind_held() -> None:
    full = decide("watchlist", "me", paused=None, limits=FREE, count=250, wanted=1, now=NOW)
    assert full.pause is not None and full.pause.count == 250
    hit = decide("watchlist", "me", paused=None, limits=FREE, count=249, hit=LimitHit(), now=NOW)
    assert hit.pause is not None and hit.pause.count == 249


def test_a_list_over_a_lowered_limit_pauses_instead_of_running_with_negative_room() -> None:
    decision = decide("watchlist", "me", paused=None, limits=FREE, count=300, wanted=1, now=NOW)
    assert decision.action == "pause" and decision.pause is not None


def test_a_list_over_a_lowered_limit_with_nothing_to_add_has_no_room() -> None:
    decision = decide("watchlist", "me", paused=None, limits=FREE, count=300, now=NOW)
    assert decision.action == "run" and decision.capacity == 0


def test_a_vip_change_alone_ends_a_pause() -> None:
    same_limit = AccountLimits(vip=True, item_limits={"watchlist": 250})
    decision = decide(
        "watchlist", "me", paused=paused_at(250), limits=same_limit, count=10, wanted=1, now=NOW
    )
    assert decision.action == "resume" and decision.resolved is not None


def test_a_pause_from_a_bare_420_ended_by_vip_names_the_new_limit_alone() -> None:
    decision = decide(
        "watchlist", "me", paused=paused_at(None), limits=VIP, count=10, wanted=1, now=NOW
    )
    assert decision.action == "resume"
    assert decision.resolved == (
        "Trakt takes titles for the watchlist of profile me again: the account is Trakt VIP"
        " now, its limit 5000 titles. Those that waited are added from this sync on."
    )


def test_a_420_while_paused_keeps_the_first_pause_even_when_the_limits_changed() -> None:
    pause = paused_at(250)
    decision = decide("watchlist", "me", paused=pause, limits=VIP, hit=LimitHit(), now=NOW)
    assert decision.action == "stay_paused" and decision.pause == pause
    assert decision.alert is None and decision.resolved is None
