"""Steps of the wall clock, seen against the machine's uptime.

A home server's clock can be wrong when watchbridge starts and be set while it runs: a
Raspberry Pi without a real-time clock boots with the last time it saved (or 1970) until NTP
answers, a VM resumes with the time it was paused at, someone fixes a wrong time by hand. The
time of a webhook's play is this clock's as the webhook came (media servers send no usable
time), so a play received before the step carries a time off by the step: sent as it is, it
would sit in Trakt's, Serializd's or AniList's history days (or decades) off, for good.

`ClockWatch` compares the wall clock with the uptime (which no one sets) at each look; a
change of their difference by more than STEP is a step. Each stretch between steps is a frame;
what this process stamps with the wall clock names the frame it was stamped in, so a step
moves the stamps of the frame it ends by its size (`Store.restamp`): that is when they
happened, by the clock as it is now. Stamps of an earlier process (its frame ended with it)
cannot be told apart, and are left as they are.

A frame's clock was not wrong all along when an internet service's clock (its Date header)
agreed with it: a VM frozen by its host (paused, or a laptop host asleep) counts neither wall
clock nor uptime meanwhile, and its wall clock steps forward on waking. The stamps up to the
last agreement were right, and only later ones move.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# The wall clock moved this much more (or less) than the uptime between two looks: a step, not
# the slow slewing of time sync (at most 0.5 ms a second) or a look that waited for its thread.
STEP = 60.0
# A wall clock before this (2020-01-01) was never set: a board without a real-time clock
# booting at 1970, or at a time saved long ago.
UNSET_BEFORE = 1_577_836_800.0


def sent_at(at: float, now: float) -> float:
    """The time a play (or rating) stamped `at` goes out as to any target, at `now`: never
    after now. A time ahead was stamped by a clock that ran ahead (an earlier process's, set
    back across the restart; a sender's): no viewing ends in the future, and Trakt, Serializd
    and AniList would keep it so for good. A clock not set yet (before 2020) cannot judge."""
    return at if at <= now or now < UNSET_BEFORE else now


# Payload key: the time a row's last send went out as. A send whose answer was lost may
# have landed at that time, and a step since moves the row's `at` away from it.
SENT_AT = "sent_at"


def sent_before(payload: Mapping[str, Any], at: float) -> float | None:
    """The time a row (`payload`, now dated `at`) last went out as, when a step of the clock
    has moved it since (Store.restamp, redate_ahead); None when it went out as `at`, or was
    never sent."""
    sent = payload.get(SENT_AT)
    if isinstance(sent, bool) or not isinstance(sent, int | float) or sent == at:
        return None
    return float(sent)


@dataclass(frozen=True)
class Reading:
    """The wall clock (`wall`) read beside the uptime and the boot it counts from (`boot`,
    None: not known): two readings of one boot tell the time between them, whatever the wall
    clock did meanwhile."""

    wall: float
    uptime: float | None = None
    boot: str | None = None


def boot_id() -> str | None:
    """This boot's id (Linux's, also seen inside a container), None where there is none."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as found:
            return found.read().strip() or None
    except OSError:
        return None


def uptime_clock(platform: str) -> str | None:
    """The name of the `time` clock that counts the uptime on `platform` (`sys.platform`),
    suspended time included; None: `time.monotonic`. Linux's CLOCK_MONOTONIC stops while
    suspended, its CLOCK_BOOTTIME does not; macOS has no CLOCK_BOOTTIME, and its
    CLOCK_MONOTONIC counts sleep (Apple's clock_gettime(3)) where `time.monotonic` does
    not: a Mac woken from sleep would see a step and move times that were right."""
    if platform.startswith("linux"):
        return "CLOCK_BOOTTIME"
    if platform == "darwin":
        return "CLOCK_MONOTONIC"
    return None


def uptime() -> float:
    """Seconds since boot, suspended time included (a suspended host is no step), on a clock
    no one sets."""
    name = uptime_clock(sys.platform)
    clock = None if name is None else getattr(time, name, None)
    return time.monotonic() if clock is None else time.clock_gettime(clock)


@dataclass(frozen=True)
class Step:
    """The wall clock moved `seconds` (forward when positive) beside the uptime, ending the
    frame `frame` (which began at `began` and was last seen at `last`, by its own clock) and
    beginning the frame `into`. `seen`: when the step was seen, by the ended frame's clock;
    nothing was stamped in that frame later (every stamp looks first). `right_until`: an
    outside clock agreed with the frame's at that time (`ClockWatch.agreed`), so stamps until
    then were right and stay."""

    frame: str
    into: str
    seconds: float
    began: float
    last: float
    seen: float = 0.0
    right_until: float = -math.inf

    def stamped_in_frame(self, at: float) -> bool:
        """Whether a time `at` was stamped in the ended frame, after its clock was last known
        right: one the step moves."""
        return self.began <= at <= max(self.last, self.seen) and at > self.right_until


class ClockWatch:
    """The current frame of one process's wall clock, and the steps that ended earlier ones
    and are not handled yet (the delivery worker restamps by them)."""

    def __init__(self, clock: Callable[[], float], uptime: Callable[[], float]) -> None:
        self.clock, self.uptime = clock, uptime
        self._process = uuid.uuid4().hex[:12]
        self._frames = 0
        self._offset: float | None = None  # wall clock minus uptime, at the last look
        self._began = self._last = 0.0
        self._steps: list[Step] = []
        self._unset_told = False
        self._right_until = -math.inf  # this frame's last look an outside clock agreed with

    @property
    def frame(self) -> str:
        return f"{self._process}:{self._frames}"

    def look(self) -> str:
        """The current frame, after noting a step since the last look."""
        wall, up = self.clock(), self.uptime()
        offset = wall - up
        if self._offset is None:
            self._began = wall
        elif abs(offset - self._offset) > STEP:
            left = self.frame
            self._frames += 1
            seconds = offset - self._offset
            step = Step(
                left,
                self.frame,
                seconds,
                self._began,
                self._last,
                wall - seconds,
                self._right_until,
            )
            self._steps.append(step)
            self._began = wall
            self._right_until = -math.inf
            self._unset_told = False
            log.warning(
                "the clock jumped %s: plays received before keep the time they happened",
                "forward" if step.seconds > 0 else "back",
                extra={"seconds": round(step.seconds)},
            )
        # Taken at every look: time sync's slewing adds up to a step over weeks, never between
        # two looks (the worker looks at least every few minutes).
        self._offset = offset
        self._last = wall
        if wall < UNSET_BEFORE and not self._unset_told:
            self._unset_told = True
            log.warning(
                "this machine's clock is not set (it says %s): plays received now are dated "
                "once time sync sets it, if watchbridge keeps running until then; turn on time "
                "sync (NTP)",
                time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(max(wall, 0.0))),
            )
        return self.frame

    def agreed(self) -> None:
        """An internet service's clock agrees with this one now (within STEP): what this
        frame stamped until now was stamped right, and a step ending the frame leaves it."""
        self.look()
        self._right_until = self._last

    def unhandled(self) -> list[Step]:
        """The steps seen and not `handled` yet, oldest first."""
        self.look()
        return list(self._steps)

    def handled(self, step: Step) -> None:
        self._steps.remove(step)
