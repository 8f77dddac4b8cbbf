"""A kill -9 campaign against delivery: nothing acknowledged is lost or sent twice.

The real service (`python -m watchbridge serve`) delivers to an in-process fake Trakt while
generic webhooks arrive (dated plays of movies and episodes, which go out as
`POST /sync/history` batches, scrobble start/stop pairs, ratings). Each round the fake is made
slow (answers held 0.5-3 s) or drops connections after doing the work, and the service is
stopped at a random moment by one of:

- `kill`: SIGKILL at a random time while webhooks flow;
- `history`: SIGKILL while a `POST /sync/history` is held at the fake (its plays written);
- `startup`: SIGKILL 0.05-1.5 s after the process starts (the recovery of in-flight rows);
- `term`: SIGTERM at a random time (the container stop); afterwards no row may be in flight,
  and with answers held less than the stop's grace no new mark of a send that may have landed.

At the end the fake is healthy, the service drains, and the fake must hold every acknowledged
play exactly once at its time (to the minute; a scrobble's at its stop, within 2 minutes),
every rating, and no dead letter.

    .venv/bin/python bench/kill_campaign.py [--rounds 30] [--seed N] [--keep]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.trakt import CLIENT_ID, FakeTrakt, parse_iso  # noqa: E402
from tests.harness import free_port, sign_in_trakt  # noqa: E402

from watchbridge.store import UNKNOWN_OUTCOME, Store  # noqa: E402

SECRET = "campaign-secret-1"
MOVIES, SEASONS, EPISODES = 800, 8, 40
SHOW_TVDB = 81189


@dataclass
class Expected:
    """What the acknowledged webhooks promise the fake will hold."""

    plays: list[tuple[str, float, float]] = field(default_factory=list)  # key, at, slack
    ratings: dict[str, int] = field(default_factory=dict)  # key -> rating
    sent_unanswered: set[str] = field(default_factory=set)  # keys: may land at most once
    webhooks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def seeded() -> FakeTrakt:
    fake = FakeTrakt()
    for n in range(MOVIES):
        fake.add_movie(f"Campaign {n}", 2000, imdb=f"tt8{n:06d}", tmdb=800000 + n)
    show = fake.add_show("Campaign Show", 2010, tvdb=SHOW_TVDB, imdb="tt0903747", tmdb=1396)
    for season in range(1, SEASONS + 1):
        for number in range(1, EPISODES + 1):
            fake.add_episode(show, season, number, tvdb=5_000_000 + season * 1000 + number)
    return fake


def config(directory: Path, port: int, trakt: FakeTrakt) -> Path:
    path = directory / "watchbridge.yaml"
    path.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {directory / "wb.db"}}}
delivery: {{retry_after: 1s, max_backoff: 1m}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me:
    users: {{generic: [alice]}}
    accounts: {{trakt: {{}}}}
""",
        encoding="utf-8",
    )
    return path


class Sender:
    """Posts webhooks from a few threads until told to stop; records what was acknowledged."""

    def __init__(self, url: str, expected: Expected, rng: random.Random, pool: list[str]) -> None:
        self.url, self.expected, self.rng, self.pool = url, expected, rng, pool
        self.stop = threading.Event()

    def _post(self, client: httpx.Client, body: dict[str, Any]) -> bool | None:
        """True acknowledged with something queued, False refused or nothing queued (a
        "played" of an item marked played lately is no new play: docs/webhooks.md), None no
        answer (the service went away)."""
        try:
            response = client.post(f"{self.url}/webhooks/generic/{SECRET}", json=body)
        except httpx.TransportError:
            return None
        if response.status_code >= 400:
            print("refused:", response.status_code, response.text[:200], json.dumps(body))
        return response.status_code == 202 and response.json().get("queued", 0) > 0

    def _take(self) -> str | None:
        """A new item, or (one time in four, and once all are taken) one played before:
        a rewatch, dated hours apart from its other plays."""
        with self.expected.lock:
            if self.pool and self.rng.random() < 0.75:
                return self.pool.pop()
            if not self.expected.plays:
                return self.pool.pop() if self.pool else None
            return "again:" + self.rng.choice(self.expected.plays)[0]

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                key = self._take()
                if key is None:
                    return
                kind = self.rng.random()
                if key.startswith("again:"):
                    key, kind = key.removeprefix("again:"), 1.0  # a dated play, not live
                item = item_json(key)
                if key.startswith("m") and kind < 0.15:
                    self._rate(client, key, item)
                elif key.startswith("m") and kind < 0.45:
                    self._scrobble(client, key, item)
                else:
                    self._played(client, key, item)
                time.sleep(self.rng.uniform(0.05, 0.4))

    def _played(self, client: httpx.Client, key: str, item: dict[str, Any]) -> None:
        # Its own hour: two plays of an item within a minute are one play, rightly.
        at = time.time() - 3600 * self.rng.randint(2, 960) - self.rng.uniform(0, 60)
        with self.expected.lock:
            if any(k == key and abs(t - at) < 3 * 3600 for k, t, _ in self.expected.plays):
                return
        stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
        body = {"event": "played", "user": "alice", "watched_at": stamp, "item": item}
        self._note(key, self._post(client, body), at, 60)

    def _scrobble(self, client: httpx.Client, key: str, item: dict[str, Any]) -> None:
        player = f"kodi-{key}"
        start = {"event": "start", "user": "alice", "player": player, "progress": 0, "item": item}
        if self._post(client, start) is None:
            return
        time.sleep(self.rng.uniform(0.05, 0.3))
        stop = {"event": "stop", "user": "alice", "player": player, "progress": 95, "item": item}
        at = time.time()
        self._note(key, self._post(client, stop), at, 150)

    def _rate(self, client: httpx.Client, key: str, item: dict[str, Any]) -> None:
        value = self.rng.randint(1, 10)
        body = {"event": "rate", "user": "alice", "rating": value, "item": item}
        answered = self._post(client, body)
        with self.expected.lock:
            self.expected.webhooks += 1
            if answered:
                self.expected.ratings[key] = value

    def _note(self, key: str, answered: bool | None, at: float, slack: float) -> None:
        with self.expected.lock:
            self.expected.webhooks += 1
            if answered:
                self.expected.plays.append((key, at, slack))
            elif answered is None:
                self.expected.sent_unanswered.add(key)


def item_json(key: str) -> dict[str, Any]:
    if key.startswith("m"):
        return {"type": "movie", "ids": {"imdb": f"tt8{int(key[1:]):06d}"}}
    season, number = (int(x) for x in key[1:].split("x"))
    return {
        "type": "episode",
        "season": season,
        "number": number,
        "show": {"title": "Campaign Show", "ids": {"tvdb": SHOW_TVDB}},
    }


def key_of(entry: Any) -> str:
    item = entry.item
    if item.kind == "movie":
        return f"m{int(item.imdb[3:])}"
    return f"e{item.season}x{item.number}"


def spawn(path: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "watchbridge", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=0.5).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def rows(db: Path, where: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(
            f"SELECT id, status, attempts, last_error FROM outbox WHERE {where}"
        ).fetchall()


def marked(db: Path) -> set[int]:
    return {r[0] for r in rows(db, "status != 'done'") if (r[3] or "").startswith(UNKNOWN_OUTCOME)}


def faults(trakt: FakeTrakt, rng: random.Random, gentle: bool) -> str:
    trakt.clear_knobs()
    choice = rng.choice(["slow", "slow", "drop-after", "drop", "none"] if not gentle else ["slow"])
    n = rng.randint(1, 6)
    if choice == "slow":
        trakt.delay_next(n, rng.uniform(0.5, 1.5 if gentle else 3.0))
    elif choice == "drop-after":
        trakt.drop_next(n, after_handler=True)
    elif choice == "drop":
        trakt.drop_next(n)
    return f"{choice}x{n}"


def campaign(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    directory = Path(tempfile.mkdtemp(prefix="wb-kill-"))
    trakt = seeded().start()
    port = free_port()
    path = config(directory, port, trakt)
    store = Store.open(directory / "wb.db")
    sign_in_trakt(store, trakt, "me", now=time.time())
    store.close()
    url = f"http://127.0.0.1:{port}"
    log = directory / "service.log"
    expected = Expected()
    pool = [f"m{n}" for n in range(MOVIES)] + [
        f"e{s}x{n}" for s in range(1, SEASONS + 1) for n in range(1, EPISODES + 1)
    ]
    rng.shuffle(pool)
    started = time.monotonic()
    kills = terms = 0
    problems: list[str] = []
    modes = collections.Counter[str]()
    for round_ in range(args.rounds):
        mode = rng.choice(["kill", "kill", "history", "startup", "term"])
        modes[mode] += 1
        told = faults(trakt, rng, gentle=mode == "term")
        before = marked(directory / "wb.db")
        proc = spawn(path, log)
        if mode == "startup":
            time.sleep(rng.uniform(0.05, 1.5))
            proc.kill()
            proc.wait()
            kills += 1
            print(f"round {round_}: startup kill ({told})", flush=True)
            continue
        if not ready(url, proc):
            problems.append(f"round {round_}: not ready (exit {proc.poll()})")
            proc.kill()
            proc.wait()
            break
        senders = [Sender(url, expected, random.Random(rng.random()), pool) for _ in range(2)]
        threads = [threading.Thread(target=s.run) for s in senders]
        for thread in threads:
            thread.start()
        held = None
        if mode == "history":
            held = trakt.hold_next("POST /sync/history")
            deadline = time.monotonic() + 15
            while trakt.knobs_pending and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            time.sleep(rng.uniform(0.3, 5.0))
        if mode == "term":
            asked = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(15)
            except subprocess.TimeoutExpired:
                problems.append(f"round {round_}: SIGTERM did not stop it in 15 s")
                proc.kill()
                code = proc.wait()
            terms += 1
        else:
            proc.kill()
            code = proc.wait()
            kills += 1
        for sender in senders:
            sender.stop.set()
        for thread in threads:
            thread.join()
        if held is not None:
            held.set()
        acked = len(expected.plays)
        print(f"round {round_}: {mode} ({told}) exit {code}, acked {acked}", flush=True)
        if mode == "term":
            inflight = rows(directory / "wb.db", "status = 'inflight'")
            if inflight:
                problems.append(f"round {round_}: SIGTERM left rows in flight: {inflight[:5]}")
            with trakt.lock:
                writes = [r for r in trakt.requests if r.method == "POST"]
            after = [f"{r.path} +{r.time - asked:.2f}s" for r in writes if r.time >= asked]
            if after:
                problems.append(f"round {round_}: writes begun after SIGTERM: {after}")
            on_its_way = [r for r in writes if asked - 10 < r.time < asked]
            new_marks = marked(directory / "wb.db") - before
            if new_marks and not on_its_way:
                ids = ", ".join(map(str, new_marks))
                shown = rows(directory / "wb.db", f"id IN ({ids})")[:5]
                problems.append(f"round {round_}: SIGTERM marked rows, no write sent: {shown}")
            elif new_marks:
                cut = [f"{r.path} -{asked - r.time:.2f}s" for r in on_its_way]
                print(f"  {len(new_marks)} marked: writes on their way at the stop {cut}")
    trakt.clear_knobs()
    proc = spawn(path, log)
    ready(url, proc)
    deadline = time.monotonic() + args.drain_timeout
    while time.monotonic() < deadline:
        waiting = rows(directory / "wb.db", "status IN ('pending', 'inflight')")
        if not waiting:
            break
        time.sleep(1)
    time.sleep(3)
    waiting = rows(directory / "wb.db", "status IN ('pending', 'inflight')")
    dead = rows(directory / "wb.db", "status = 'dead'")
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    minutes = (time.monotonic() - started) / 60
    landed = collections.defaultdict(list)
    for entry in trakt.history():
        landed[key_of(entry)].append(parse_iso(entry.watched_at))
    acked = collections.Counter(k for k, _, _ in expected.plays)
    unmatched = {key: list(times) for key, times in landed.items()}
    for key, at, slack in sorted(expected.plays, key=lambda p: p[2]):
        times = unmatched.get(key, [])
        near = [t for t in times if abs(t - at) <= slack]
        if near:
            times.remove(min(near, key=lambda t: abs(t - at)))
        elif not landed.get(key):
            problems.append(f"lost: {key} at {at:.0f}")
        else:
            got = [round(t) for t in landed[key]]
            problems.append(f"lost or misdated: {key} wanted {at:.0f}, got {got}")
    for key, times in landed.items():
        allowed = acked[key] + (1 if key in expected.sent_unanswered else 0)
        if len(times) > max(allowed, 1) or (acked[key] and len(times) > acked[key]):
            problems.append(f"doubled: {key} x{len(times)} (acked {acked[key]})")
    ratings = {key_of(r): r.rating for r in trakt.ratings()}
    for key, value in expected.ratings.items():
        if ratings.get(key) != value:
            problems.append(f"rating: {key} wanted {value}, got {ratings.get(key)}")
    if waiting:
        problems.append(f"still waiting after the drain: {waiting[:5]}")
    for row in dead:
        problems.append(f"dead letter: {row}")
    requests = collections.Counter(f"{r.method} {r.route}" for r in trakt.requests)
    print(
        f"\n{args.rounds} rounds {dict(modes)}: {kills} kills, {terms} SIGTERMs, "
        f"{expected.webhooks} webhooks, {len(expected.plays)} plays and "
        f"{len(expected.ratings)} ratings acknowledged, {sum(map(len, landed.values()))} plays "
        f"on Trakt, {minutes:.1f} min"
    )
    print("requests:", dict(requests))
    print(f"problems: {len(problems)}")
    for problem in problems[:60]:
        print(" ", problem)
    trakt.stop()
    if args.keep or problems:
        print("kept:", directory)
    else:
        shutil.rmtree(directory)
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SEED", "1")))
    parser.add_argument("--drain-timeout", type=float, default=180)
    parser.add_argument("--keep", action="store_true")
    raise SystemExit(campaign(parser.parse_args()))


if __name__ == "__main__":
    main()
