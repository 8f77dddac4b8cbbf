"""When the dead letters of a service's own failures (server errors answered to their writes,
dropped connections) go once more by themselves on a setup where nothing else is delivered.

They go as soon as the service takes a write again (`DeliveryWorker._once_more`). With no new
play nor link run to show that, the oldest of them is sent alone now and then (a probe): only
a write the service takes proves writes work again (its reads may work all through an outage
of its writes), so a probe is that dead letter's own write. Through, the rest go; not through,
it is a dead letter waiting again, and the next probe comes later. One probe at a time, the
first an hour after the last of them gave up, then ever further apart: an idle setup costs a
request an hour at most, and nothing once none waits.
"""

from __future__ import annotations

from watchbridge.alerts import format_span
from watchbridge.backoff import doubled
from watchbridge.store import UNKNOWN_OUTCOME

PROBE_FIRST = 3600.0  # after the last of them gave up, or the last probe failed
PROBE_MAX = 6 * 3600.0
# The cache namespace keeping, per target, how many probes in a row failed (across restarts).
PROBES_FAILED = "once_more_probes_failed"
PROBES_KEEP = 30 * 86400.0
# How a dead letter's reason tells of its probe that failed (what follows it is replaced).
PROBED = "; sent alone again by itself, to see whether"


def next_probe_at(latest: float, failed: int) -> float:
    """When to send the next probe: `latest` is when the last of the waiting dead letters gave
    up (or the last probe failed), `failed` how many probes in a row failed."""
    return latest + min(PROBE_MAX, doubled(PROBE_FIRST, failed))


def probe_failed(before: str | None, failure: str, target: str) -> str:
    """The reason of a dead letter whose probe did not get through: the one it gave up with
    (`before`), and the probe's `failure`. Marked `unknown outcome` when either is (the next
    send looks for it first)."""
    marked = (before or "").startswith(UNKNOWN_OUTCOME) or failure.startswith(UNKNOWN_OUTCOME)
    kept = _unmarked(before or "gave up").split(PROBED)[0]
    told = (
        f"{kept}{PROBED} {target} takes writes again: not yet ({_unmarked(failure)});"
        " it goes again by itself later"
    )
    return f"{UNKNOWN_OUTCOME}: {told}" if marked else told


def probe_words(target: str) -> str:
    """How the alerts say when the dead letters go once more with nothing else delivered."""
    return (
        f"with none, the oldest is sent alone to see whether {target} takes it, an hour after"
        f" they gave up, then ever further apart (every {format_span(PROBE_MAX)} at most)"
    )


def _unmarked(reason: str) -> str:
    return reason.removeprefix(UNKNOWN_OUTCOME).removeprefix(": ")
