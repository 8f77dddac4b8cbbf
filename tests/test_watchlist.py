"""Two-way watchlist planning with baselines (pure)."""

from __future__ import annotations

import pytest

from watchbridge.model import Ids, MediaRef
from watchbridge.watchlist import (
    WatchItem,
    aliases,
    baseline_entry,
    baseline_row,
    plan_watchlist,
    relisted_titles,
    watch_key,
)

ARRIVAL = Ids(tmdb="329865", imdb="tt2543164")
HEAT = Ids(tmdb="949", imdb="tt0113277")
GOT = Ids(tmdb="1399", tvdb="121361", imdb="tt0944947")
DUNE = Ids(tmdb="438631")


def plex(ids: Ids, kind: str = "movie") -> WatchItem:
    return WatchItem(kind, ids, plex_key=f"p{ids.tmdb}")  # type: ignore[arg-type]


def trakt(ids: Ids, kind: str = "movie") -> WatchItem:
    return WatchItem(kind, ids)  # type: ignore[arg-type]


def base(*items: WatchItem) -> dict[str, list[str]]:
    return dict(baseline_entry(i) for i in items)


def test_keys_prefer_tmdb_then_imdb_then_tvdb() -> None:
    assert watch_key("movie", ARRIVAL) == "movie:tmdb:329865"
    assert watch_key("show", Ids(imdb="tt0944947", tvdb="121361")) == "show:imdb:tt0944947"
    assert watch_key("show", Ids(tvdb="121361")) == "show:tvdb:121361"
    assert aliases("show", GOT) == {"show:tmdb:1399", "show:tvdb:121361", "show:imdb:tt0944947"}


def test_first_run_adds_each_side_to_the_other() -> None:
    plan = plan_watchlist([plex(ARRIVAL)], [trakt(HEAT), trakt(GOT, "show")], {})
    assert [i.ids for i in plan.add_to_trakt] == [ARRIVAL]
    assert [i.ids for i in plan.add_to_plex] == [HEAT, GOT]
    assert plan.removals == 0


def test_titles_on_both_sides_match_by_any_shared_id() -> None:
    plan = plan_watchlist([plex(Ids(imdb="tt2543164"))], [trakt(ARRIVAL)], {})
    assert plan.changes == 0 and len(plan.on_both) == 1


def test_removal_on_trakt_removes_from_plex() -> None:
    plan = plan_watchlist([plex(ARRIVAL), plex(HEAT)], [trakt(HEAT)], base(plex(ARRIVAL)))
    assert [i.plex_key for i in plan.remove_from_plex] == ["p329865"]
    assert plan.add_to_trakt == ()


def test_removal_on_plex_removes_from_trakt() -> None:
    plan = plan_watchlist([plex(HEAT)], [trakt(ARRIVAL), trakt(HEAT)], base(trakt(ARRIVAL)))
    assert [i.ids for i in plan.remove_from_trakt] == [ARRIVAL]
    assert plan.add_to_plex == ()


def test_a_title_gone_from_both_sides_is_forgotten() -> None:
    plan = plan_watchlist([], [], base(trakt(ARRIVAL)))
    assert plan.forgotten == ("movie:tmdb:329865",) and plan.changes == 0


def test_baseline_knows_a_title_by_any_of_its_aliases() -> None:
    # Trakt's item had both ids last run; Plex now lists it by IMDb only.
    plan = plan_watchlist([plex(Ids(imdb="tt2543164"))], [], base(trakt(ARRIVAL)))
    assert len(plan.remove_from_plex) == 1


def test_a_watchlist_that_suddenly_reads_empty_holds_the_removals() -> None:
    titles = [ARRIVAL, HEAT, DUNE, Ids(tmdb="1"), Ids(tmdb="2")]
    plan = plan_watchlist([plex(i) for i in titles], [], base(*[trakt(i) for i in titles]))
    assert plan.held and "5 of 5" in plan.held and "--confirm-removals" in plan.held
    assert plan.remove_from_plex == () and plan.add_to_trakt == ()


def test_confirmed_removals_are_not_held() -> None:
    titles = [ARRIVAL, HEAT, DUNE]
    plan = plan_watchlist(
        [plex(i) for i in titles], [], base(*[trakt(i) for i in titles]), confirm_removals=True
    )
    assert not plan.held and len(plan.remove_from_plex) == 3


def test_titles_another_link_took_off_trakt_are_not_weighed_again() -> None:
    """Another link of ours took them off Trakt (past its guard, or confirmed there): their
    removal from the peer goes without a second hold; the rest are weighed as ever, and a
    reason every removal waits (an unchecked account read empty) still holds them all."""
    titles = [ARRIVAL, HEAT, DUNE, Ids(tmdb="1"), Ids(tmdb="2")]
    peer, baseline = [plex(i) for i in titles], base(*[trakt(i) for i in titles])
    ours = {a for i in titles[:4] for a in aliases("movie", i)}
    plan = plan_watchlist(peer, [trakt(titles[4])], baseline, taken_off_trakt=ours)
    assert not plan.held and len(plan.remove_from_plex) == 4
    two = {a for i in titles[:2] for a in aliases("movie", i)}
    plan = plan_watchlist(peer, [], baseline, taken_off_trakt=two)
    assert "3 of 5" in plan.held and not plan.remove_from_plex
    why = "trakt read empty, its account unchecked"
    held = plan_watchlist(peer, [], baseline, taken_off_trakt=ours, hold=why)
    assert why in held.held and not held.remove_from_plex


def test_removing_one_title_from_a_short_list_is_ordinary() -> None:
    plan = plan_watchlist([plex(ARRIVAL), plex(HEAT)], [trakt(HEAT)], base(plex(ARRIVAL)))
    assert not plan.held and len(plan.remove_from_plex) == 1


def test_one_way_to_trakt_never_writes_plex_and_puts_back_what_trakt_lost() -> None:
    plan = plan_watchlist(
        [plex(ARRIVAL), plex(HEAT)],
        [trakt(DUNE), trakt(GOT, "show")],
        base(plex(ARRIVAL), trakt(GOT, "show")),
        only_to="trakt",
    )
    assert {i.ids.tmdb for i in plan.add_to_trakt} == {"329865", "949"}
    assert [i.ids for i in plan.remove_from_trakt] == [GOT]  # Plex lost it
    assert plan.add_to_plex == () and plan.remove_from_plex == ()  # Dune stays Trakt's own


def test_one_way_to_plex_never_writes_trakt() -> None:
    plan = plan_watchlist([plex(ARRIVAL)], [trakt(HEAT)], base(plex(ARRIVAL)), only_to="plex")
    assert [i.ids for i in plan.remove_from_plex] == [ARRIVAL]
    assert [i.ids for i in plan.add_to_plex] == [HEAT]
    assert plan.add_to_trakt == () and plan.remove_from_trakt == ()


def test_held_removals_name_the_peer_service() -> None:
    titles = [Ids(tmdb=str(n)) for n in range(1, 5)]
    shows = [trakt(i, "show") for i in titles]
    plan = plan_watchlist(shows, [], base(*shows), peer="serializd")
    assert "4 of 4 watchlist titles on Serializd" in plan.held
    assert plan.counts["serializd"] == 4


def test_one_way_to_the_peer_never_writes_trakt() -> None:
    plan = plan_watchlist(
        [trakt(GOT, "show")], [trakt(HEAT)], {}, only_to="serializd", peer="serializd"
    )
    assert [i.ids for i in plan.add_to_peer] == [HEAT] and plan.add_to_trakt == ()


def test_only_to_must_name_one_of_the_two_sides() -> None:
    with pytest.raises(ValueError, match="only_to"):
        plan_watchlist([], [], {}, only_to="plex", peer="serializd")


def test_the_titles_of_a_side_whose_account_is_unchecked_wait_with_its_removals() -> None:
    """Trakt read empty and its account is not checked yet (`hold`, `unchecked`): the titles
    only on Trakt would go to Plex, and may be another person's; they wait for the same
    reason as removals would, and go once removals are confirmed. Plex's own titles still go
    to Trakt (the side checked)."""
    on_trakt = [WatchItem("movie", Ids(tmdb=str(n)), f"Trakt {n}") for n in (1, 2)]
    on_plex = [WatchItem("show", Ids(tmdb="9"), "Plex's")]
    why = "trakt read empty, and its account is not checked yet"

    plan = plan_watchlist(on_plex, on_trakt, {}, hold=why, unchecked=("trakt",))
    confirmed = plan_watchlist(
        on_plex, on_trakt, {}, hold=why, unchecked=("trakt",), confirm_removals=True
    )

    assert not plan.add_to_plex and [i.title for i in plan.add_to_trakt] == ["Plex's"]
    assert plan.held == (
        f"2 watchlist titles only on Trakt would be added to Plex ({why}); "
        "confirm with `watchbridge sync --confirm-removals`"
    )
    assert len(confirmed.add_to_plex) == 2 and not confirmed.held


def test_plex_beside_serializd_is_planned_by_the_same_rules_and_named_as_itself() -> None:
    """A plex-serializd link: Serializd the peer, Plex the other side. The guard, one-way
    links and unchecked accounts name Plex, never Trakt."""
    shows = [WatchItem("show", Ids(tmdb=str(n)), f"Show {n}") for n in range(1, 5)]
    held = plan_watchlist(shows, [], base(*shows), peer="serializd", other="plex")
    assert "4 of 4 watchlist titles on Serializd" in held.held
    emptied = plan_watchlist([], shows, base(*shows), peer="serializd", other="plex")
    assert "4 of 4 watchlist titles on Plex" in emptied.held
    assert emptied.counts == {"serializd": 0, "plex": 4, "baseline": 4}
    one_way = plan_watchlist(
        [shows[0]], [shows[1]], {}, only_to="plex", peer="serializd", other="plex"
    )
    assert one_way.add_to_other == (shows[0],) and one_way.add_to_peer == ()
    why = "plex read empty, and its account is not checked yet"
    waits = plan_watchlist(
        [], shows[:2], {}, peer="serializd", other="plex", hold=why, unchecked=("plex",)
    )
    assert waits.held.startswith("2 watchlist titles only on Plex would be added to Serializd")
    with pytest.raises(ValueError, match="only_to must be 'plex' or 'serializd'"):
        plan_watchlist([], [], {}, only_to="trakt", peer="serializd", other="plex")


LISTED = 1_800_000_000.0  # when the titles below were listed on the peer


def episode_of(show: Ids) -> MediaRef:
    return MediaRef("episode", show_ids=Ids(imdb=show.imdb), season=1, number=1)


@pytest.mark.parametrize(
    ("played", "listed", "put_back"),
    [
        ([LISTED - 86400 * 400], LISTED, True),  # a viewing from before the listing
        ([LISTED - 86400 * 400, LISTED + 60], LISTED, False),  # ...and one since: watched
        ([LISTED + 60], LISTED, False),  # watched since it was listed
        ([LISTED - 86400 * 400], None, False),  # listed at no known time
    ],
    ids=["old-play", "old-and-new-play", "new-play", "listing-unknown"],
)
def test_a_title_trakt_dropped_for_a_play_older_than_its_listing_goes_back_on_trakt(
    played: list[float], listed: float | None, put_back: bool
) -> None:
    on_peer = WatchItem("show", GOT, listed_at=listed)
    stored = {key: {"aliases": keys} for key, keys in base(trakt(GOT, "show")).items()}
    plays = [(episode_of(GOT), at) for at in played]
    relisted = relisted_titles([on_peer, plex(HEAT)], [trakt(HEAT)], stored, plays)
    assert relisted == ({on_peer.key} if put_back else set())
    plan = plan_watchlist([on_peer], [], base(trakt(GOT, "show")), relisted=relisted)
    assert (plan.add_to_trakt, plan.remove_from_peer) == (
        ((on_peer,), ()) if put_back else ((), (on_peer,))
    )


def test_the_earliest_listing_either_side_knew_decides() -> None:
    """Listed on Trakt a year ago, copied to the peer today: a play from half a year ago is a
    viewing since the listing, and Trakt's removal is carried on."""
    on_peer = WatchItem("show", GOT, listed_at=LISTED)
    on_trakt = WatchItem("show", GOT, listed_at=LISTED - 86400 * 365)
    stored = dict([baseline_row(on_peer, on_trakt)])
    plays = [(episode_of(GOT), LISTED - 86400 * 180)]
    assert relisted_titles([on_peer], [], stored, plays) == frozenset()
