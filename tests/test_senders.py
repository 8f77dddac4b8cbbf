"""Plex servers reported to one profile by both Plex's and Tautulli's webhooks: a viewing
would count twice. Told when both report the same item on the same player within minutes."""

from __future__ import annotations

from dataclasses import replace

from watchbridge.senders import (
    DOUBLINGS_KEPT,
    KEPT,
    LOG_AGAIN_AFTER,
    REPORTS_KEPT,
    SHOWN_FOR,
    TOGETHER_WITHIN,
    TOLD_AT_MOST,
    Senders,
    Viewing,
)

SERVER = "d3a1f0c2b4e5968778695a4b3c2d1e0f9a8b7c6d"
FELINA = Viewing("me", SERVER, "w7h3n9d2f5j8s1a4q6e0t2y5", "73155")


def test_both_senders_reporting_one_viewing_within_minutes_are_a_doubling() -> None:
    senders = Senders()
    assert senders.saw("tautulli", FELINA, 0.0) is None
    doubling = senders.saw("plex", FELINA, 165.0)
    assert doubling is not None
    assert (doubling.profile, doubling.server) == ("me", SERVER)
    assert "reported twice" in doubling.message and "remove Tautulli's webhook" in doubling.fix


def test_one_sender_alone_is_no_doubling() -> None:
    senders = Senders()
    for minute in range(10):
        assert senders.saw("plex", FELINA, minute * 60.0) is None


def test_a_switch_from_one_sender_to_the_other_is_no_doubling() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    assert senders.saw("tautulli", FELINA, TOGETHER_WITHIN + 1) is None


def test_two_people_on_one_profile_watching_other_items_are_no_doubling() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    assert senders.saw("tautulli", replace(FELINA, item="81234", player="tv"), 60.0) is None


def test_the_same_item_on_another_player_is_no_doubling() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    assert senders.saw("tautulli", replace(FELINA, player="phone"), 60.0) is None


def test_the_same_rating_key_on_another_server_is_no_doubling() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    assert senders.saw("tautulli", replace(FELINA, server="another-server"), 60.0) is None


def test_two_profiles_one_through_each_sender_are_no_doubling() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    assert senders.saw("tautulli", replace(FELINA, profile="partner"), 60.0) is None


def test_other_sources_are_never_a_doubling() -> None:
    senders = Senders()
    senders.saw("jellyfin", FELINA, 0.0)
    assert senders.saw("emby", FELINA, 60.0) is None


def test_a_sender_naming_no_server_or_player_matches_and_the_named_server_is_kept() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    doubling = senders.saw("tautulli", replace(FELINA, server="", player=""), 60.0)
    assert doubling is not None and doubling.server == SERVER
    # The ingest cannot match such reports: each viewing counts twice.
    assert doubling.counted_twice and "counts twice" in doubling.message
    assert "server_machine_id" in doubling.fix


def test_both_senders_naming_the_server_and_player_count_a_viewing_once() -> None:
    senders = Senders()
    senders.saw("tautulli", FELINA, 0.0)
    doubling = senders.saw("plex", FELINA, 165.0)
    assert doubling is not None and not doubling.counted_twice
    assert "counted once" in doubling.message and "server_machine_id" not in doubling.fix


def test_a_doubling_that_comes_to_count_twice_is_logged_again_at_once() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    matched = senders.saw("tautulli", FELINA, 60.0)
    assert matched is not None and senders.log_due(matched, 60.0)
    unmatched = senders.saw("tautulli", replace(FELINA, player=""), 120.0)
    assert unmatched is matched and unmatched.counted_twice
    assert senders.log_due(unmatched, 120.0)


def test_each_doubled_viewing_is_reported_and_logged_once_in_a_while() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    first = senders.saw("tautulli", FELINA, 60.0)
    again = senders.saw("plex", FELINA, 120.0)
    assert first is not None and again is first  # the notifier throttles the alert
    assert senders.log_due(first, 60.0)
    assert not senders.log_due(first, 120.0)
    assert senders.log_due(first, 60.0 + LOG_AGAIN_AFTER)


def test_the_status_shows_a_doubling_until_a_day_without_it() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    senders.saw("tautulli", FELINA, 60.0)
    assert [d.profile for d in senders.recent(60.0 + SHOWN_FOR - 1)] == ["me"]
    assert senders.recent(60.0 + SHOWN_FOR) == []


def test_only_the_most_recently_reported_items_are_kept() -> None:
    senders = Senders()
    for n in range(KEPT + 5):
        senders.saw("plex", replace(FELINA, item=str(n)), float(n))
    assert len(senders.last_seen) == KEPT
    assert ("me", str(KEPT + 4)) in senders.last_seen


def test_a_sender_naming_a_new_player_in_every_webhook_keeps_a_few_reports_of_the_item() -> None:
    # Plex Web gets a new player id with each browser it runs in; a sender may make them up.
    senders = Senders()
    for n in range(REPORTS_KEPT * 10):
        senders.saw("plex", replace(FELINA, player=f"browser-{n}"), float(n))
    assert len(senders.last_seen[("me", FELINA.item)]) == REPORTS_KEPT
    latest = replace(FELINA, player=f"browser-{REPORTS_KEPT * 10 - 1}")
    assert senders.saw("tautulli", latest, REPORTS_KEPT * 10.0) is not None


def test_reports_too_old_to_pair_with_any_are_let_go() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    senders.saw("plex", replace(FELINA, player="tv"), TOGETHER_WITHIN + 1)
    assert list(senders.last_seen[("me", FELINA.item)]) == [("plex", SERVER, "tv")]


def test_a_sender_naming_a_new_server_in_every_webhook_keeps_a_few_doublings() -> None:
    senders = Senders()
    told = []
    for n in range(DOUBLINGS_KEPT * 10):
        server = replace(FELINA, server=f"server-{n}")
        senders.saw("tautulli", server, float(n))
        doubling = senders.saw("plex", server, float(n))
        assert doubling is not None
        told.append(senders.log_due(doubling, float(n)))
    assert len(senders.doublings) == DOUBLINGS_KEPT
    assert told.count(True) == TOLD_AT_MOST  # the log tells of a few, not of each
    shown = senders.recent(DOUBLINGS_KEPT * 10.0)
    assert shown[0].server == f"server-{DOUBLINGS_KEPT * 10 - 1}"
    assert senders.log_due(shown[0], DOUBLINGS_KEPT * 10.0 + LOG_AGAIN_AFTER)


def test_a_doubling_over_for_a_day_is_let_go() -> None:
    senders = Senders()
    senders.saw("plex", FELINA, 0.0)
    senders.saw("tautulli", FELINA, 60.0)
    other = replace(FELINA, server="another-server", item="81234")
    senders.saw("plex", other, 60.0 + SHOWN_FOR)
    senders.saw("tautulli", other, 60.0 + SHOWN_FOR)
    assert list(senders.doublings) == [("me", "another-server")]


def test_a_tautulli_template_without_machine_id_pairs_by_the_players_name() -> None:
    # Its {player} is the name Plex's webhook gives as Player.title: counted once.
    senders = Senders()
    senders.saw("tautulli", replace(FELINA, player="", player_name="Living Room"), 0.0)
    doubling = senders.saw("plex", replace(FELINA, player_name="Living Room"), 165.0)
    assert doubling is not None and not doubling.counted_twice


def test_a_tautulli_template_without_machine_id_naming_the_player_otherwise_says_to_add_it() -> (
    None
):
    senders = Senders()
    senders.saw("plex", replace(FELINA, player_name="Living Room"), 0.0)
    doubling = senders.saw("tautulli", replace(FELINA, player="", player_name="TV"), 165.0)
    assert doubling is not None and doubling.counted_twice
    assert '"machine_id": "{machine_id}"' in doubling.message
    assert "server_machine_id" not in doubling.message
    assert '"machine_id": "{machine_id}"' in doubling.fix and "JSON Data" in doubling.fix
