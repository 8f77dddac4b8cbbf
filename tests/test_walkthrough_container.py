"""Walkthrough: a container's life on Unraid or docker compose, as plain processes started the
way the image starts them (`python -m watchbridge.entrypoint`, the image's environment naming
the config and data folders): the first start on empty volumes, a config edited wrongly, an
upgrade from release 0.1.0 with plays queued, going back after an upgrade, a second container
started on the same volumes by mistake, and the disk filling up."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import START_TIMEOUT, free_port, listens, wait_for, wait_ready
from tests.ingest_samples import sample_json

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "watchbridge.example.yaml"
# Release 0.1.0 (2026-11-22): the oldest database a user upgrades from.
RELEASE_0_1_0 = "20bccac6617064d619a187f092b5f6981546beda"
SECRET = "walkthrough-container-hook-secret"
HEAT = "movie_legacy_imdb_media_scrobble.json"
EPISODE = "episode_legacy_media_scrobble.json"
# The household's config as the user writes it from the example: the port and the data
# folder from the container's environment, as the example takes them.
HOUSEHOLD = """\
server:
  host: 127.0.0.1
  port: ${{WATCHBRIDGE_PORT:-8765}}
  webhook_secret: {secret}
storage:
  path: ${{WATCHBRIDGE_DATA_DIR:-./data}}/watchbridge.db
delivery:
  retry_after: 1s
services:
  trakt: {{client_id: {client_id}, api_url: "{url}", auth_url: "{url}"}}
profiles:
  me:
    users: {{plex: ["1"]}}
    accounts: {{trakt: {{}}}}
"""


@dataclass
class Volumes:
    """A container's /config and /data, as folders of the host."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config" / "watchbridge.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def database(self) -> Path:
        return self.data / "watchbridge.db"


def image_env(volumes: Volumes, port: int, **extra: str) -> dict[str, str]:
    """The environment the image gives its entrypoint (Dockerfile's ENV), on `volumes`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHBRIDGE_")}
    env = {k: v for k, v in env.items() if k not in ("PUID", "PGID", "PYTHONPATH")}
    return {
        **env,
        "WATCHBRIDGE_CONFIG": str(volumes.config),
        "WATCHBRIDGE_DATA_DIR": str(volumes.data),
        "WATCHBRIDGE_HA_OPTIONS": str(volumes.data / "options.json"),
        "WATCHBRIDGE_EXAMPLE_CONFIG": str(EXAMPLE),
        "WATCHBRIDGE_PORT": str(port),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        **extra,
    }


@dataclass
class Container:
    """The image's entrypoint as a real process on `volumes` (`argv`: the container's
    command; `old`: the source folder of an earlier release to run instead)."""

    volumes: Volumes
    port: int = field(default_factory=free_port)
    argv: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    old: Path | None = None
    limit: int | None = None  # RLIMIT_FSIZE: a disk that takes no file past this size
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.old is not None:  # 0.1.0's own serve, on the config its image chose
            config = str(self.volumes.config)
            return [sys.executable, "-m", "watchbridge", "serve", "--config", config]
        return [sys.executable, "-m", "watchbridge.entrypoint", *self.argv]

    def start(self, wait: bool = True) -> Container:
        env = image_env(self.volumes, self.port, **self.env)
        if self.old is not None:
            env["PYTHONPATH"] = str(self.old)
        limit = self.limit

        def limited() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        self.proc = subprocess.Popen(
            self.command(),
            env=env,
            cwd=self.volumes.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=limited if limit is not None else None,
        )
        if wait:
            try:
                wait_ready(self.url, START_TIMEOUT, serving=self._listening)
            except (TimeoutError, AssertionError):
                raise AssertionError(f"the container did not start:\n{self.output()}") from None
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, "exited"
        return listens(self.proc.pid, self.port)

    def ended(self, timeout: float = 60.0) -> int:
        """Its exit code, once it has stopped by itself."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int:
        """`docker stop`: SIGTERM, and its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def output(self) -> str:
        """Its log (`docker logs`), once stopped."""
        assert self.proc is not None and self.proc.stdout is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.proc.stdout.read()


@pytest.fixture
def containers() -> Iterator[Callable[..., Container]]:
    """Make containers; each still running at the end is killed."""
    made: list[Container] = []

    def make(volumes: Volumes, **kwargs: Any) -> Container:
        made.append(Container(volumes, **kwargs))
        return made[-1]

    yield make
    for container in made:
        if container.proc is not None and container.proc.poll() is None:
            container.proc.kill()
            container.proc.wait()


@pytest.fixture
def trakt() -> Iterator[FakeTrakt]:
    with FakeTrakt() as fake:
        fake.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
        show = fake.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
        for number in range(1, 17):
            fake.add_episode(show, 5, number, tvdb=4000000 + number)
        yield fake


def household(root: Path, trakt: FakeTrakt) -> Volumes:
    """Volumes with the household's config; its data folder made as the user makes it."""
    volumes = Volumes(root)
    volumes.config.parent.mkdir(parents=True)
    volumes.data.mkdir()
    volumes.config.write_text(
        HOUSEHOLD.format(secret=SECRET, client_id=CLIENT_ID, url=trakt.url), encoding="utf-8"
    )
    return volumes


def signed_in(volumes: Volumes, trakt: FakeTrakt, old: Path | None = None) -> None:
    """`watchbridge auth trakt` done (by release 0.1.0's code where `old` is its source)."""
    token = trakt.issue_token()
    data = {
        "access_token": token.access_token,
        "refresh_token": token.refresh_token,
        "created_at": token.created_at,
        "expires_in": token.expires_in,
    }
    script = (
        "import sys, json, time\n"
        "from watchbridge.store import Store\n"
        "store = Store.open(sys.argv[1])\n"
        "store.put_token('trakt', 'me', json.loads(sys.argv[2]), time.time())\n"
        "store.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if old is not None:
        env["PYTHONPATH"] = str(old)
    subprocess.run(
        [sys.executable, "-c", script, str(volumes.database), json.dumps(data)],
        env=env,
        check=True,
        timeout=60,
    )


def post_plex(container: Container, sample: str, player: str = "") -> httpx.Response:
    """Plex's webhook (multipart, the JSON in its `payload` field)."""
    payload = sample_json("plex", sample)
    if player:
        payload["Player"] = {**payload.get("Player", {}), "uuid": player}
    body = (
        b'--wb\r\nContent-Disposition: form-data; name="payload"\r\n'
        b"Content-Type: application/json\r\n\r\n" + json.dumps(payload).encode() + b"\r\n--wb--\r\n"
    )
    return httpx.post(
        f"{container.url}/webhooks/plex/{SECRET}",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=wb"},
        timeout=30,
    )


def healthcheck(volumes: Volumes, port: int) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK, run in the container beside the service."""
    return subprocess.run(
        [sys.executable, "-m", "watchbridge.healthcheck"],
        env=image_env(volumes, port),
        capture_output=True,
        text=True,
        timeout=30,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def outbox(database: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status"))


def played(trakt: FakeTrakt) -> list[str]:
    return sorted(entry.item.title for entry in trakt.history())


def test_a_first_start_on_empty_volumes_writes_a_private_example_and_serves_healthy(
    tmp_path: Path, containers: Callable[..., Container]
) -> None:
    # Unraid's template: /config made empty by the user, /data not there yet; PUID and PGID
    # set out of habit (linuxserver.io images switch to them, this one does not).
    volumes = Volumes(tmp_path)
    volumes.config.parent.mkdir()
    service = containers(volumes, env={"PUID": "99", "PGID": "100"}).start()
    health = healthcheck(volumes, service.port)
    code = service.stop()
    log = service.output()
    assert code in (0, -signal.SIGTERM), log  # a clean stop: Docker's "Exited (0)" or (143)
    assert volumes.config.read_text() == EXAMPLE.read_text()
    assert mode(volumes.config) == 0o600  # the user adds tokens to it
    assert mode(volumes.data) == 0o700
    assert mode(volumes.database) == 0o600
    assert mode(volumes.data / "watchbridge.db.lock") == 0o600
    assert f"first start: wrote the example config to {volumes.config}; edit it" in log
    if os.getuid() != 99:
        assert "PUID=99 PGID=100 are set, but this image does not switch users" in log
    assert health.returncode == 0, health.stdout + health.stderr


def test_a_config_edited_wrongly_stops_the_container_naming_file_line_key_and_expected(
    tmp_path: Path, containers: Callable[..., Container]
) -> None:
    volumes = Volumes(tmp_path)
    volumes.config.parent.mkdir()
    volumes.config.write_text(
        EXAMPLE.read_text().replace("  level: info ", "  level: loud "), encoding="utf-8"
    )
    service = containers(volumes).start(wait=False)
    code = service.ended()
    log = service.output()
    health = healthcheck(volumes, service.port)
    # Exit code 2: a config error, which restarting cannot mend (systemd does not loop on it;
    # Docker's restart policy repeats the same line, never a silent loop).
    assert code == 2, log
    said = "watchbridge.yaml:25 logging.level: expected one of debug, info, warning, error"
    assert log.splitlines() == [f"error: {said}, got 'loud'"]
    assert health.returncode == 1
    assert said in health.stdout + health.stderr  # `docker inspect`'s health log says why


def release_0_1_0(tmp_path: Path) -> Path:
    """The source of release 0.1.0, from this repository's history (skips without it)."""
    folder = tmp_path / "release-0.1.0"
    folder.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", RELEASE_0_1_0, "src"], capture_output=True
    )
    if archive.returncode != 0:
        pytest.skip("release 0.1.0 is not in this checkout's history (a shallow clone)")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "src"


def test_an_upgrade_from_0_1_0_keeps_every_queued_play_and_delivers_each_once(
    tmp_path: Path, containers: Callable[..., Container], trakt: FakeTrakt
) -> None:
    old_source = release_0_1_0(tmp_path)
    volumes = household(tmp_path / "host", trakt)
    signed_in(volumes, trakt, old=old_source)
    trakt.proxy_lost_server(bad_gateway=True)  # Trakt down: 0.1.0 queues the plays
    old = containers(volumes, old=old_source).start()
    assert post_plex(old, HEAT).status_code == 202
    assert post_plex(old, EPISODE).status_code == 202
    old.stop()
    assert outbox(volumes.database) == {"pending": 2}, old.output()
    # The new image on a copy of the volumes (the user's backup kept aside).
    upgraded = Volumes(tmp_path / "upgraded")
    shutil.copytree(volumes.root, upgraded.root)
    trakt.proxy_found_server()
    service = containers(upgraded).start()
    wait_for(lambda: len(trakt.history()) == 2 and outbox(upgraded.database) == {"done": 2})
    service.stop()
    log = service.output()
    assert 'msg="database upgraded"' in log
    assert played(trakt) == ["Episode 16", "Heat"]


def test_going_back_to_an_older_release_after_an_upgrade_refuses_the_database_untouched(
    tmp_path: Path, containers: Callable[..., Container], trakt: FakeTrakt
) -> None:
    volumes = household(tmp_path, trakt)
    service = containers(volumes).start()
    service.stop()
    # The database as a later release leaves it: one step this release does not know.
    with contextlib.closing(sqlite3.connect(volumes.database)) as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
            " VALUES ('watchbridge', 'm999_from_a_later_release', '2027-01-01')"
        )
        conn.commit()
    before = hashlib.sha256(volumes.database.read_bytes()).hexdigest()
    older = containers(volumes).start(wait=False)
    code = older.ended()
    log = older.output()
    assert code == 2, log  # restarting cannot mend it: systemd does not loop on it
    assert log.splitlines() == [
        f"error: storage.path {volumes.database}: the database was made by a newer watchbridge"
        " (m999_from_a_later_release); run that version again, or restore a backup taken"
        " before the upgrade"
    ]
    assert hashlib.sha256(volumes.database.read_bytes()).hexdigest() == before
    assert not (volumes.data / "watchbridge.db-wal").exists()


def test_a_second_container_on_the_same_volumes_refuses_to_start_and_no_play_goes_twice(
    tmp_path: Path, containers: Callable[..., Container], trakt: FakeTrakt
) -> None:
    volumes = household(tmp_path, trakt)
    signed_in(volumes, trakt)
    first = containers(volumes).start()
    # The old container not stopped: a second on the same volumes (its own port mapping).
    second = containers(volumes).start(wait=False)
    code = second.ended()
    refused = second.output()
    assert post_plex(first, HEAT).status_code == 202
    wait_for(lambda: outbox(volumes.database) == {"done": 1})
    first.stop()
    assert code == 2, refused
    assert "another watchbridge service is running on this database" in refused
    assert f"pid {first.proc.pid if first.proc else '?'}" in refused
    assert played(trakt) == ["Heat"]
    assert trakt.count("POST", "/scrobble/stop") == 1


def _tmpfs(folder: Path, size: str) -> bool:
    """A disk of its own of `size` at `folder`; False where this machine does not let us."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    return mounted.returncode == 0


def _unmount(folder: Path) -> None:
    deadline = time.monotonic() + 10
    while subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{folder} stays mounted")
        time.sleep(0.1)


def _fill(folder: Path) -> Path:
    """Fill the disk holding `folder` to its last byte."""
    filler = folder / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        out.write(b"\0" * free)
    return filler


def events(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    return int(count)


@pytest.mark.parametrize("disk", ["tmpfs", "file size limit"])
def test_a_full_disk_refuses_webhooks_rather_than_acknowledging_them_unstored(
    tmp_path: Path, containers: Callable[..., Container], trakt: FakeTrakt, disk: str
) -> None:
    volumes = household(tmp_path, trakt)
    if disk == "tmpfs" and not _tmpfs(volumes.data, "3m"):
        pytest.skip("cannot mount a small file system here (not root)")
    try:
        signed_in(volumes, trakt)
        trakt.proxy_lost_server(bad_gateway=True)  # plays stay queued: the database grows
        limit = volumes.database.stat().st_size + 64 * 1024 if disk != "tmpfs" else None
        service = containers(volumes, limit=limit).start()
        filler = _fill(volumes.data) if disk == "tmpfs" else None
        answers = [post_plex(service, HEAT, player=f"tv-{n}") for n in range(40)]
        answers = answers[: next(n for n, a in enumerate(answers) if a.status_code != 202) + 1]
        refused = answers[-1]
        ready = httpx.get(f"{service.url}/readyz")
        health = healthcheck(volumes, service.port)  # Docker's (Unraid's) health meanwhile
        if filler is not None:  # space freed: webhooks are taken again, and delivered
            filler.unlink()
            trakt.proxy_found_server()
            wait_for(lambda: httpx.get(f"{service.url}/readyz").status_code == 200)
            assert post_plex(service, HEAT, player="tv-after").status_code == 202
            wait_for(lambda: trakt.count("POST", "/scrobble/stop") >= 1)
        service.stop()
        log = service.output()
        stored = events(volumes.database)
    finally:
        if disk == "tmpfs":
            _unmount(volumes.data)
    assert refused.status_code == 503, log
    assert refused.headers["retry-after"] == "60"
    assert "could not store the event" in refused.json()["error"]
    assert ready.status_code == 503
    assert health.returncode == 1  # unhealthy while it cannot store webhooks
    assert "/readyz: answered 503: watchbridge is up but cannot write its database" in health.stdout
    # Each webhook answered 202 is in the database; the refused one is not.
    acknowledged = len(answers) - 1 + (1 if filler is not None else 0)
    assert stored == acknowledged, log
    assert "watchbridge cannot write its database" in log
    assert "unexpected error" not in log and "Traceback" not in log
