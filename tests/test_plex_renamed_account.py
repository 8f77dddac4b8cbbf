"""A person listed in `users.plex` by name, renamed in Plex (the owner renames Home users):
their link keeps reading their own history, and nothing is removed from their other side."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, write_config
from tests.test_sync_plex import FELINA_SEEN, JAMIE, JAMIE_TOKEN, sync, trakt_plays
from watchbridge.readers.plex import ACCOUNTS, FOUND_BY_NAME
from watchbridge.store import Store

DAY = 86400


def jamie_by_name(tmp_path: Path, start_fake: Any) -> tuple[Path, FakeTrakt, FakePlex]:
    """Jamie (a pasted token, listed by name) watched S01E01 twice and S01E02 once."""
    trakt, plex = start_fake(FakeTrakt()), start_fake(FakePlex())
    trakt.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=81189, seasons={1: 2})
    plex.add_show("200", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    plex.add_episode("201", "200", 1, 1)
    plex.add_episode("202", "200", 1, 2)
    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    plex.watch("201", FELINA_SEEN, account=JAMIE)
    plex.watch("201", FELINA_SEEN + DAY, account=JAMIE)
    plex.watch("202", FELINA_SEEN + 2 * DAY, account=JAMIE)
    path = write_config(
        tmp_path,
        f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  jamie:
    users: {{plex: ["jamie"]}}
    accounts: {{trakt: {{}}, plex: {{token: "{JAMIE_TOKEN}"}}}}
links:
  plex-trakt: {{services: [plex, trakt], first_run: apply}}
""",
    )
    store = Store.open(tmp_path / "watchbridge.db")
    sign_in_trakt(store, trakt, "jamie", now=time.time(), user=trakt.add_user("jamie"))
    store.close()
    return path, trakt, plex


def a_week_later(path: Path) -> None:
    """The server's account list, remembered for a week, is asked again."""
    store = Store.open(path.parent / "watchbridge.db")
    store.cache_forget(ACCOUNTS)
    store.close()


def test_a_person_renamed_in_plex_keeps_their_rewatches_and_new_plays(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = jamie_by_name(tmp_path, start_fake)
    sync(path)
    assert len(trakt_plays(trakt, "jamie")) == 3
    plex.users[JAMIE_TOKEN] = (JAMIE, "Jay")  # the owner renames the Home user
    a_week_later(path)
    plex.watch("202", FELINA_SEEN + 3 * DAY, account=JAMIE)  # a rewatch since
    result = sync(path, "--full")
    assert "remove_play" not in result.stdout
    assert trakt_plays(trakt, "jamie") == [
        ("Episode", "2024-02-01T21:00:00.000Z"),
        ("Episode", "2024-02-02T21:00:00.000Z"),
        ("Episode", "2024-02-03T21:00:00.000Z"),
        ("Episode", "2024-02-04T21:00:00.000Z"),
    ]
    told = f"write {JAMIE} (or its new name) in profiles.jamie.users.plex"
    assert "no longer named jamie on the server (now 'Jay')" in result.stderr
    assert told in result.stderr


def test_a_name_no_account_ever_had_on_the_server_is_no_account(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = jamie_by_name(tmp_path, start_fake)
    plex.users[JAMIE_TOKEN] = (JAMIE, "Jay")  # renamed before watchbridge ever read it
    result = sync(path)
    assert "no Plex account id for this profile" in result.stderr
    assert len(trakt_plays(trakt, "jamie")) == 2  # one per watched item, as documented


def kept(path: Path) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """The store's cursors, and its Plex maps but the history cache (see `PlexReader._history`),
    with when each was written."""
    with sqlite3.connect(path.parent / "watchbridge.db") as db:
        cursors = set(db.execute("SELECT * FROM cursors"))
        maps = set(
            db.execute("SELECT * FROM mirror WHERE service = 'plex' AND collection != 'history'")
        )
    return cursors, maps


def test_a_dry_run_leaves_what_the_next_runs_go_by_as_it_was(
    tmp_path: Path, start_fake: Any
) -> None:
    """`sync --dry-run` of a profile whose `users.plex` names were just edited writes nothing
    later runs go by: not the account those names found (the names a rename is followed by),
    nor the maps and cursors the deliverer reads."""
    path, _, plex = jamie_by_name(tmp_path, start_fake)
    sync(path)
    config = path.read_text(encoding="utf-8")
    path.write_text(config.replace('plex: ["jamie"]', 'plex: ["jamie", "jay"]'), encoding="utf-8")
    plex.watch("202", FELINA_SEEN + 3 * DAY, account=JAMIE)
    cursors, maps = kept(path)
    sync(path, "--dry-run")
    after = kept(path)
    assert after[0] == cursors
    assert after[1] == maps


def test_the_run_after_a_dry_run_remembers_the_account_found_by_name(
    tmp_path: Path, start_fake: Any
) -> None:
    """A dry run caches no account its names found (a run finding it cached would not remember
    it for a rename, see `_account_by_name`): the next run asks and remembers it."""
    path, _, _ = jamie_by_name(tmp_path, start_fake)
    sync(path, "--dry-run")
    sync(path)
    store = Store.open(path.parent / "watchbridge.db")
    found = store.get_cursor("plex", "jamie", FOUND_BY_NAME)
    store.close()
    assert found is not None and json.loads(found)["id"] == str(JAMIE)
