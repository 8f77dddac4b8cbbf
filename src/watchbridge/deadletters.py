"""Queueing dead letters again: the decision `watchbridge deadletters retry` and the status page's
button share (which rows may go out again, and what to tell of those left dead)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from watchbridge.accounts import NOT_SENT
from watchbridge.catalogue import forget_unknown
from watchbridge.config import Config, undeliverable
from watchbridge.ids import webhook_ref, with_cached_plex_ids
from watchbridge.store import Store


@dataclass(frozen=True)
class RetryOutcome:
    queued: int
    superseded: int  # ratings not sent again: the item was rated (or unrated) since
    stuck: dict[str, int] = field(default_factory=dict)  # left dead, by why they cannot go
    old_account: int = 0  # removals meant for an account the profile used before
    unknown: list[int] = field(default_factory=list)  # ids asked for that are no dead letters
    removed: int = 0  # by itself: plays not sent again, removed since (store.REMOVED_SINCE)

    def lines(self, sent_when: str) -> list[str]:
        """What to tell; `sent_when` says when the service sends those queued."""
        said = [
            f"{self.queued} dead letter(s) queued again{sent_when if self.queued else ''}",
            *(
                [
                    f"{self.superseded} rating(s) not sent again: the item was rated (or its "
                    "rating removed) since"
                ]
                if self.superseded
                else []
            ),
            *(
                f"{count} left as dead letter(s): {reason} (configure it again, or discard them)"
                for reason, count in self.stuck.items()
            ),
        ]
        if self.old_account:
            said.append(
                f"{self.old_account} left as dead letter(s): removals meant for an account the "
                "profile used before, which would remove from the one used now (discard them)"
            )
        return said


def retry_dead_letters(
    config: Config, store: Store, ids: Sequence[int] | None, now: float, *, by_itself: bool = False
) -> RetryOutcome:
    """Queue again the dead letters `ids` (all when None) the config can still deliver;
    `by_itself`: once, after the service's own failure (see Store.retry_dead)."""
    # Only those asked for: a worker re-queues a few after each write that went through,
    # however many other dead letters wait.
    chosen = store.dead_letters(ids)
    known = {item.id for item in chosen}
    unknown = [] if ids is None else [i for i in ids if i not in known]
    # Removals meant for an account the profile used before would remove from its new one.
    old = [item.id for item in chosen if NOT_SENT in (item.last_error or "")]
    chosen = [item for item in chosen if item.id not in old]
    # Queued again, rows the config cannot deliver would only die again at the service's
    # next start, held meanwhile with a sign-in alert whose command refuses the profile;
    # those a link queued that it no longer asks for would write what the user took out.
    why = {
        item.id: undeliverable(
            config, item.target, item.profile, item.payload.get("link"), item.action
        )
        for item in chosen
    }
    stuck = Counter(reason for reason in why.values() if reason is not None)
    ready = [item_id for item_id, reason in why.items() if reason is None]
    if not by_itself:  # by hand, "try now": also where Serializd said "show not found"
        refs = (
            webhook_ref(store, item.payload.get("item") or {}, item.payload.get("source"), now)
            for item in chosen
            if why[item.id] is None
        )
        # Their ids as a delivery found them: a Plex webhook's show by what the server said.
        forget_unknown(store, [with_cached_plex_ids(store, r, now) for r in refs if r], now)
    # By id even for all: a row that died since the list was read was not looked at.
    retried = store.retry_dead(ready, now, by_itself=by_itself)
    return RetryOutcome(
        retried.queued, retried.superseded, dict(stuck), len(old), unknown, retried.removed
    )
