"""The accounts whose webhooks no profile takes: counted, bounded, logged once in a while."""

from __future__ import annotations

from watchbridge.unmapped import (
    KEPT,
    LOG_AGAIN_AFTER,
    TOLD_AT_MOST,
    UnmappedAccounts,
    account_label,
    unmapped_fix,
)


def test_an_account_is_told_once_then_again_after_a_while() -> None:
    seen = UnmappedAccounts()
    assert seen.saw("plex", "srv", "friend", 0.0)
    assert not seen.saw("plex", "srv", "friend", 60.0)
    assert seen.saw("plex", "srv", "friend", 60.0 + LOG_AGAIN_AFTER)
    (sighting,) = seen.recent()
    assert (sighting.webhooks, sighting.first_at) == (3, 0.0)


def test_only_the_most_recently_seen_accounts_are_kept() -> None:
    seen = UnmappedAccounts()
    for n in range(KEPT + 5):
        seen.saw("jellyfin", "srv", f"user{n}", float(n))
    recent = seen.recent()
    assert len(recent) == KEPT
    assert recent[0].account == f"user{KEPT + 4}"


def test_an_account_reads_by_its_name_with_its_id_beside_it() -> None:
    assert account_label("alex", "1") == "alex (id 1)"
    assert account_label(None, "1") == "1"
    assert account_label("alex", None) == "alex"


def test_a_named_account_is_told_to_be_listed_under_its_source() -> None:
    assert unmapped_fix("jellyfin", "Alex Smith").startswith(
        "add it under profiles.NAME.users.jellyfin"
    )


def test_a_webhook_naming_nobody_is_told_the_senders_setting_not_a_profile() -> None:
    assert "Limit user events to" in unmapped_fix("emby", account_label(None, None))
    assert "user_id or username" in unmapped_fix("tautulli", account_label(None, None))


def test_an_account_pushed_off_the_list_is_not_told_again_when_it_comes_back() -> None:
    seen = UnmappedAccounts()
    told = [
        seen.saw("plex", "srv", f"friend{n}", float(round_ * 100 + n))
        for round_ in range(3)
        for n in range(KEPT + 5)
    ]
    assert told.count(True) == KEPT + 5


def test_a_sender_naming_a_new_account_in_every_webhook_does_not_fill_the_log() -> None:
    seen = UnmappedAccounts()
    told = [seen.saw("generic", "", f"acct{n}", float(n)) for n in range(10_000)]
    assert told.count(True) <= TOLD_AT_MOST
    assert len(seen.told) <= TOLD_AT_MOST
    # A while later the log tells new ones again.
    assert seen.saw("generic", "", "someone", 10_000.0 + LOG_AGAIN_AFTER)
