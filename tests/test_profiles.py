"""Which profile a webhook belongs to: explicit mapping, per server when asked, default-deny."""

from __future__ import annotations

from pathlib import Path

from watchbridge.account_ids import AccountIds, Key, Learnt, names_beside_default
from watchbridge.config import Config, parse_config
from watchbridge.model import Account, MediaEvent, MediaRef
from watchbridge.webhooks import profile_for, route_for

SERVER_A = "a1b2c3d4e5f6"
SERVER_B = "0f9e8d7c6b5a"


def config(users: str, default: str = "") -> Config:
    return parse_config(
        f"""
profiles:
  alice: {{users: {users}}}
  guest: {{users: {{}} {default}}}
""",
        Path("watchbridge.yaml"),
        {},
    )


def from_plex(account_id: str, server: str = SERVER_A, name: str = "") -> MediaEvent:
    return MediaEvent(
        source="plex",
        action="stop",
        item=MediaRef("movie", title="Heat", year=1995),
        server=server,
        account=Account(account_id, name),
    )


def test_an_account_id_maps_on_any_server() -> None:
    mapped = config('{plex: ["1"]}')
    assert profile_for(mapped, from_plex("1", SERVER_A)) == "alice"
    assert profile_for(mapped, from_plex("1", SERVER_B)) == "alice"


def test_server_and_account_together_map_on_that_server_only() -> None:
    mapped = config(f'{{plex: ["{SERVER_A}:1"]}}')
    assert profile_for(mapped, from_plex("1", SERVER_A)) == "alice"
    assert profile_for(mapped, from_plex("1", SERVER_B)) is None


def test_a_user_name_matches_whatever_its_case() -> None:
    mapped = config('{plex: ["Alice"]}')
    assert profile_for(mapped, from_plex("7", name="alice")) == "alice"


def test_an_unmapped_account_belongs_to_nobody_without_a_default_profile() -> None:
    assert profile_for(config('{plex: ["1"]}'), from_plex("42")) is None


def test_an_unmapped_account_goes_to_the_default_profile() -> None:
    mapped = config('{plex: ["1"]}', default=", default: true")
    assert profile_for(mapped, from_plex("42")) == "guest"


def from_jellyfin(user_id: str, name: str) -> MediaEvent:
    return MediaEvent(
        source="jellyfin",
        action="stop",
        item=MediaRef("movie", title="Heat", year=1995),
        server="5b6f0e3a2c1d4e8f9a7b6c5d4e3f2a1b",
        account=Account(user_id, name),
    )


def test_a_jellyfin_user_id_matches_with_or_without_dashes() -> None:
    mapped = config('{jellyfin: ["0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"]}')
    assert profile_for(mapped, from_jellyfin("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "x")) == "alice"


def test_a_user_name_differing_by_a_dash_is_another_person() -> None:
    assert profile_for(config('{plex: ["jamie-r"]}'), from_plex("99", name="jamier")) is None
    mapped = config('{jellyfin: ["maryjane"]}')
    assert (
        profile_for(mapped, from_jellyfin("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "mary-jane")) is None
    )


def test_an_account_named_on_its_server_wins_over_the_same_id_on_any_server() -> None:
    # Alice owns server A and lists her id 1; Bob owns server B, where he is 1 too, and
    # names it as the README says: his plays there are his, whichever profile comes first.
    mapped = parse_config(
        f"""
profiles:
  alice: {{users: {{plex: ["1"]}}}}
  bob: {{users: {{plex: ["{SERVER_B}:1"]}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    assert profile_for(mapped, from_plex("1", SERVER_B, name="bob")) == "bob"
    assert profile_for(mapped, from_plex("1", SERVER_A, name="alice")) == "alice"


def test_a_plex_owner_named_by_their_user_name_is_not_taken_by_another_profiles_1() -> None:
    # Two Plex servers post here: Alice owns A and lists 1, Bob owns B and lists his name.
    # On B Bob is account 1 too: his name says whose the plays are.
    mapped = parse_config(
        """
profiles:
  alice: {users: {plex: ["1"]}}
  bob: {users: {plex: [Bob]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    assert profile_for(mapped, from_plex("1", SERVER_B, name="bob")) == "bob"
    assert profile_for(mapped, from_plex("1", SERVER_A, name="alice")) == "alice"


def from_tautulli(user_id: str, name: str) -> MediaEvent:
    return MediaEvent(
        source="tautulli",
        action="stop",
        item=MediaRef("movie", title="Heat", year=1995),
        server=SERVER_A,
        account=Account(user_id, name),
    )


def test_a_tautulli_account_another_profile_lists_for_plex_is_not_the_defaults() -> None:
    # Alice is listed for Plex's own webhook only; Tautulli reports her plays too. The
    # default profile must not take them: they are hers (and Plex's webhook sends them).
    mapped = config('{plex: ["alice"]}', default=", default: true")
    assert profile_for(mapped, from_tautulli("5123891", "Alice")) is None


def test_a_tautulli_account_no_profile_lists_anywhere_goes_to_the_default() -> None:
    mapped = config('{plex: ["alice"]}', default=", default: true")
    assert profile_for(mapped, from_tautulli("77", "friend")) == "guest"


def test_a_tautulli_account_listed_for_tautulli_is_that_profiles() -> None:
    mapped = config('{plex: ["alice"], tautulli: ["alice"]}', default=", default: true")
    assert profile_for(mapped, from_tautulli("5123891", "alice")) == "alice"


def test_the_default_profiles_own_plex_account_reported_by_tautulli_stays_its_own() -> None:
    # Tautulli only (no Plex Pass for Plex's webhook): the default profile lists its owner's
    # Plex name, as it did before; her Tautulli plays are hers, not nobody's. Bob's (listed
    # for Plex by another profile) still go to nobody.
    mapped = parse_config(
        """
profiles:
  alice: {default: true, users: {plex: ["1", alice]}}
  bob: {users: {plex: [bob]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    assert profile_for(mapped, from_tautulli("5123891", "alice")) == "alice"
    assert profile_for(mapped, from_tautulli("7", "bob")) is None
    assert profile_for(mapped, from_tautulli("77", "friend")) == "alice"


def test_a_tautulli_account_another_profile_lists_on_one_plex_server_is_not_the_defaults() -> None:
    mapped = config(f'{{plex: ["{SERVER_B}:alice"]}}', default=", default: true")
    assert profile_for(mapped, from_tautulli("5123891", "Alice")) is None


def test_a_plex_account_another_profile_lists_for_tautulli_is_not_the_defaults() -> None:
    # Some people's plays told by Tautulli, others' by Plex's webhook, which fires for
    # everyone on the owner's server: a managed user by name, a friend by plex.tv id.
    mapped = config('{tautulli: [Sam, "48151623"]}', default=", default: true")
    for event in (from_plex("28374651", name="Sam"), from_plex("48151623", name="jamie.r")):
        route = route_for(mapped, event)
        assert (route.profile, route.sent_by, route.defaulted) == (None, "tautulli", False)
    assert profile_for(mapped, from_plex("77", name="friend")) == "guest"


def test_the_plex_owner_another_profile_lists_for_tautulli_by_name_is_not_the_defaults() -> None:
    # Tautulli names the owner by plex.tv id and username; Plex's webhook by 1 and that name.
    mapped = config('{tautulli: ["alex"]}', default=", default: true")
    assert route_for(mapped, from_plex("1", name="alex")).sent_by == "tautulli"
    by_id = config('{tautulli: ["27160034"]}', default=", default: true")
    assert profile_for(by_id, from_plex("1", name="alex")) == "guest"


def test_a_plex_account_the_default_profile_lists_for_tautulli_stays_its_own() -> None:
    mapped = parse_config(
        """
profiles:
  alice: {default: true, users: {plex: ["1"], tautulli: [alice]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    assert profile_for(mapped, from_plex("5123891", name="alice")) == "alice"


# --------------------------------------------------------------------------- renamed accounts


def learnt_from(mapped: Config, *events: MediaEvent) -> dict[Key, Learnt]:
    """The ids the route learns from `events`, in order (as the webhook route keeps them)."""
    known: dict[Key, Learnt] = {}
    for event in events:
        if (learn := route_for(mapped, event, known).learn) is not None:
            known[learn[0]] = learn[1]
    return known


def test_a_renamed_account_goes_by_the_id_its_listed_name_came_with() -> None:
    mapped = config('{plex: ["bob"]}', default=", default: true")
    known = learnt_from(mapped, from_plex("5", name="Bob"))

    route = route_for(mapped, from_plex("5", name="Robert"), known)

    assert route.profile == "alice"  # bob's profile here; not the default (guest)
    assert route.renamed is not None and route.learn is None
    assert route.renamed.message == (
        "Plex account 'Robert' (id 5) was 'Bob', listed in profiles.alice.users.plex: "
        "write its id or its new name there"
    )
    assert profile_for(mapped, from_plex("6", name="Robert"), known) == "guest"  # another id


def test_a_name_match_is_learnt_once() -> None:
    mapped = config('{plex: ["bob", "7"]}')
    known = learnt_from(mapped, from_plex("5", name="Bob"))
    assert known == {Key("plex", SERVER_A, "5"): Learnt("alice", "bob", "Bob")}
    assert route_for(mapped, from_plex("5", name="BOB"), known).learn is None


def test_a_plex_owner_is_remembered_per_server() -> None:
    """Every server's owner is account 1: the one named alice on server A is not server B's."""
    mapped = config('{plex: ["alice"]}', default=", default: true")
    known = learnt_from(mapped, from_plex("1", SERVER_A, name="alice"))
    assert profile_for(mapped, from_plex("1", SERVER_A, name="ally"), known) == "alice"
    assert profile_for(mapped, from_plex("1", SERVER_B, name="bob"), known) == "guest"
    assert learnt_from(mapped, from_plex("1", "", name="alice")) == {}  # no server: no key


def test_a_listed_entry_that_matches_wins_over_a_remembered_id() -> None:
    mapped = parse_config(
        """
profiles:
  alice: {users: {plex: [bob]}}
  robert: {users: {plex: [Robert]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    known = learnt_from(mapped, from_plex("5", name="Bob"))
    assert profile_for(mapped, from_plex("5", name="Robert"), known) == "robert"


def test_a_name_taken_out_of_the_config_takes_its_remembered_id_with_it() -> None:
    known = learnt_from(config('{plex: ["bob"]}'), from_plex("5", name="Bob"))
    taken_out = config('{plex: ["carol"]}', default=", default: true")
    assert profile_for(taken_out, from_plex("5", name="Robert"), known) == "guest"


def test_a_plex_account_renamed_reported_by_tautulli_is_still_not_the_defaults() -> None:
    # Alice is listed by name for Plex's own webhook only; Tautulli reports her plays too.
    # Renamed in Plex, Plex's webhook follows her by the id remembered: Tautulli's report of
    # the same account (the same plex.tv id) must not go to the default profile meanwhile.
    mapped = config('{plex: ["alice"]}', default=", default: true")
    known = learnt_from(mapped, from_plex("5123891", name="alice"))
    assert profile_for(mapped, from_plex("5123891", name="Ally"), known) == "alice"
    assert profile_for(mapped, from_tautulli("5123891", "Ally"), known) is None
    assert profile_for(mapped, from_tautulli("77", "friend"), known) == "guest"
    taken_out = config('{plex: ["carol"]}', default=", default: true")
    assert profile_for(taken_out, from_tautulli("5123891", "Ally"), known) == "guest"


def test_check_config_hints_at_ids_for_names_listed_beside_a_default_profile() -> None:
    ids = '{plex: ["1", "5551234"], jellyfin: ["0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"]}'
    assert names_beside_default(config(ids, default=", default: true")) == []
    assert names_beside_default(config('{plex: ["bob"]}')) == []  # no default profile
    [hint] = names_beside_default(config('{plex: ["1", bob]}', default=", default: true"))
    assert hint.startswith("profiles.alice.users.plex lists bob by name beside the default")


# --------------------------------------------------------------------------- new account ids


def remembered_from(mapped: Config, *events: MediaEvent) -> AccountIds:
    """What the webhook route remembers from `events`, in order."""
    remembered = AccountIds()
    for event in events:
        route = route_for(mapped, event, remembered.known, remembered.names)
        if route.learn is not None:
            remembered.learn(*route.learn)
    return remembered


def test_an_id_match_learns_the_accounts_name_once_and_again_when_it_changes() -> None:
    mapped = config('{plex: ["7"]}')
    remembered = remembered_from(mapped, from_plex("7", name="carol"))
    assert remembered.known == {Key("plex", SERVER_A, "7"): Learnt("alice", "7", "carol")}
    assert route_for(mapped, from_plex("7", name="carol"), remembered.known).learn is None
    renamed = route_for(mapped, from_plex("7", name="caz"), remembered.known).learn
    assert renamed == (Key("plex", SERVER_A, "7"), Learnt("alice", "7", "caz"))


def test_a_new_id_goes_by_the_name_its_listed_id_came_with() -> None:
    mapped = config('{plex: ["5"]}', default=", default: true")
    remembered = remembered_from(mapped, from_plex("5", name="Bob"))

    route = route_for(mapped, from_plex("6", name="bob"), remembered.known, remembered.names)

    assert route.profile == "alice"  # bob's profile here; not the default (guest)
    assert route.new_id is not None and route.learn is None and route.renamed is None
    assert route.new_id.message == (
        "Plex account 'bob' now has id 6; profiles.alice.users.plex lists 5, its id before: "
        "replace it with 6"
    )
    known, names = remembered.known, remembered.names
    assert profile_for(mapped, from_plex("6", name="carol"), known, names) == "guest"
    assert profile_for(mapped, from_plex("6", SERVER_B, name="bob"), known, names) == "guest"
    assert profile_for(mapped, from_plex("6", name=""), known, names) == "guest"  # no name


def test_a_name_is_remembered_only_where_the_server_names_its_accounts_uniquely() -> None:
    """Tautulli may give a friendly name, a generic sender any; a Plex owner is 1 for good."""
    mapped = parse_config(
        """
profiles:
  alice:
    users: {plex: ["1", "5"], tautulli: ["5"], jellyfin: ["0a1b2c3d4e5f60718293a4b5c6d7e8f9"]}
""",
        Path("watchbridge.yaml"),
        {},
    )
    owner = from_plex("1", name="alice")
    tautulli = MediaEvent(
        source="tautulli", action="stop", item=owner.item, server=SERVER_A,
        account=Account("5", "bob"),
    )  # fmt: skip
    no_server = MediaEvent(
        source="jellyfin", action="stop", item=owner.item, server="",
        account=Account("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "carol"),
    )  # fmt: skip
    assert remembered_from(mapped, owner, tautulli, no_server).names == {}
    assert remembered_from(mapped, from_plex("5", name="bob")).names != {}


def test_a_listed_entry_that_matches_wins_over_a_remembered_name() -> None:
    mapped = config('{plex: ["5"]}', default=", default: true")
    remembered = remembered_from(mapped, from_plex("5", name="bob"))
    listed = parse_config(
        """
profiles:
  alice: {users: {plex: ["5"]}}
  robert: {users: {plex: ["6"]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    event = from_plex("6", name="bob")
    assert profile_for(listed, event, remembered.known, remembered.names) == "robert"


def test_an_id_taken_out_of_the_config_takes_its_remembered_name_with_it() -> None:
    remembered = remembered_from(config('{plex: ["5"]}'), from_plex("5", name="bob"))
    taken_out = config('{plex: ["carol"]}', default=", default: true")
    event = from_plex("6", name="bob")
    assert profile_for(taken_out, event, remembered.known, remembered.names) == "guest"


def test_a_listed_ids_old_name_goes_no_more_once_it_has_another() -> None:
    mapped = config('{plex: ["5"]}', default=", default: true")
    remembered = remembered_from(mapped, from_plex("5", name="bob"), from_plex("5", name="rob"))
    known, names = remembered.known, remembered.names
    assert profile_for(mapped, from_plex("6", name="bob"), known, names) == "guest"
    assert profile_for(mapped, from_plex("6", name="rob"), known, names) == "alice"
