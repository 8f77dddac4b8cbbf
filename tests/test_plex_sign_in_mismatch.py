"""A profile whose Plex sign-in is another account than the one `users.plex` names (a typo in
`watchbridge auth plex --home-user`): its link never mixes two people's Plex."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.harness import watchbridge
from tests.test_sync_plex import FELINA_SEEN, JAMIE, JAMIE_TOKEN, setup_sam, trakt_plays


def test_a_home_user_signed_in_as_another_is_refused_and_gets_none_of_their_plays(
    tmp_path: Path, start_fake: Any
) -> None:
    sam = setup_sam(tmp_path, start_fake, managed=True)  # signed in as home user sam
    config = sam.path.read_text(encoding="utf-8")
    # ... but sam's profile names jamie's account (the id of the other child).
    sam.path.write_text(
        config.replace(
            "  sam:\n    accounts:", f'  sam:\n    users: {{plex: ["{JAMIE}"]}}\n    accounts:'
        ),
        encoding="utf-8",
    )
    plex, me = sam.plex, sam.account.id
    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    plex.watch("202", FELINA_SEEN, account=JAMIE)  # jamie watched it first
    plex.watch("202", FELINA_SEEN + 3600, account=me)  # then sam
    result: subprocess.CompletedProcess[str] = watchbridge(
        "sync", "--link", "plex-trakt", "--config", str(sam.path)
    )
    assert ("Episode", "2024-02-01T21:00:00.000Z") not in trakt_plays(sam.trakt, "sam")
    told = (
        f"profile sam: users.plex names Plex account {JAMIE}, but its plex.tv sign-in is "
        f"account {me} (sam)"
    )
    assert told in result.stdout + result.stderr


def test_of_the_ids_users_plex_lists_the_signed_in_ones_history_is_read(
    tmp_path: Path, start_fake: Any
) -> None:
    sam = setup_sam(tmp_path, start_fake, managed=True)
    plex, me = sam.plex, sam.account.id
    config = sam.path.read_text(encoding="utf-8")
    listed = f'users: {{plex: ["{JAMIE}", "{me}"]}}'
    sam.path.write_text(
        config.replace("  sam:\n    accounts:", f"  sam:\n    {listed}\n    accounts:"),
        encoding="utf-8",
    )
    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    plex.watch("202", FELINA_SEEN, account=JAMIE)
    plex.watch("202", FELINA_SEEN + 3600, account=me)
    result = watchbridge("sync", "--link", "plex-trakt", "--config", str(sam.path))
    assert result.returncode == 0, result.stderr
    assert trakt_plays(sam.trakt, "sam") == [("Episode", "2024-02-01T22:00:00.000Z")]
