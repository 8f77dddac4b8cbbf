"""Plex servers reported to one profile by both Plex's and Tautulli's webhooks: a viewing
would count twice. Told when both send within minutes; a switch from one to the other is not."""

from __future__ import annotations

from watchbridge.senders import KEPT, SHOWN_FOR, TELL_AGAIN_AFTER, TOGETHER_WITHIN, Senders

SERVER = "d3a1f0c2b4e5968778695a4b3c2d1e0f9a8b7c6d"


def test_both_senders_of_one_server_within_minutes_are_a_doubling() -> None:
    senders = Senders()
    assert senders.saw("me", "tautulli", SERVER, 0.0) is None
    doubling = senders.saw("me", "plex", SERVER, 165.0)
    assert doubling is not None
    assert (doubling.profile, doubling.server) == ("me", SERVER)
    assert "counts twice" in doubling.message and "remove Tautulli's webhook" in doubling.fix


def test_one_sender_alone_is_no_doubling() -> None:
    senders = Senders()
    for minute in range(10):
        assert senders.saw("me", "plex", SERVER, minute * 60.0) is None


def test_a_switch_from_one_sender_to_the_other_is_no_doubling() -> None:
    senders = Senders()
    senders.saw("me", "plex", SERVER, 0.0)
    assert senders.saw("me", "tautulli", SERVER, TOGETHER_WITHIN + 1) is None


def test_two_servers_one_through_each_sender_are_no_doubling() -> None:
    senders = Senders()
    senders.saw("me", "plex", SERVER, 0.0)
    assert senders.saw("me", "tautulli", "another-server", 60.0) is None


def test_two_profiles_one_through_each_sender_are_no_doubling() -> None:
    senders = Senders()
    senders.saw("me", "plex", SERVER, 0.0)
    assert senders.saw("partner", "tautulli", SERVER, 60.0) is None


def test_other_sources_are_never_a_doubling() -> None:
    senders = Senders()
    senders.saw("me", "jellyfin", "jf", 0.0)
    assert senders.saw("me", "emby", "jf", 60.0) is None


def test_a_sender_naming_no_server_matches_the_other_and_takes_its_name() -> None:
    senders = Senders()
    senders.saw("me", "plex", SERVER, 0.0)
    doubling = senders.saw("me", "tautulli", "", 60.0)
    assert doubling is not None and doubling.server == SERVER


def test_a_doubling_is_told_once_then_again_after_a_while() -> None:
    senders = Senders()
    senders.saw("me", "plex", SERVER, 0.0)
    assert senders.saw("me", "tautulli", SERVER, 60.0) is not None
    assert senders.saw("me", "plex", SERVER, 120.0) is None
    later = 60.0 + TELL_AGAIN_AFTER
    senders.saw("me", "tautulli", SERVER, later)
    assert senders.saw("me", "plex", SERVER, later + 60) is not None


def test_the_status_shows_a_doubling_until_a_day_without_it() -> None:
    senders = Senders()
    senders.saw("me", "plex", SERVER, 0.0)
    senders.saw("me", "tautulli", SERVER, 60.0)
    assert [d.profile for d in senders.recent(60.0 + SHOWN_FOR - 1)] == ["me"]
    assert senders.recent(60.0 + SHOWN_FOR) == []


def test_only_the_most_recently_seen_sightings_are_kept() -> None:
    senders = Senders()
    for n in range(KEPT + 5):
        senders.saw(f"profile{n}", "plex", SERVER, float(n))
    assert len(senders.last_seen) == KEPT
