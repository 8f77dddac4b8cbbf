"""A first start whose anime mapping lists cannot be downloaded (no saved copy yet): AniList
deliveries wait for them, told as the lists' own problem, and go within minutes of the first
download, the service's own or `watchbridge anime refresh`'s. Over real HTTP: the lists from a
local fake that fails, then serves; AniList from its fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets, sample_bodies
from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import watchbridge, write_config
from watchbridge import anime_data
from watchbridge.app import Runtime
from watchbridge.causes import MISSING_TITLE
from watchbridge.config import Secret, load_config
from watchbridge.deliver.anilist import AniListTarget
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.maintenance import check_anime_datasets
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.services.anilist import AniListClient
from watchbridge.store import NewOutboxRow
from watchbridge.wiring import anime_mapping, build_runtime

pytestmark = pytest.mark.anyio

AOT, AOT_P2 = 1429, 131681  # TMDB show; AniList: Final Season Part 2 = TMDB S4E17-28
FIVE_MINUTES = 300.0  # what the README promises: a held play goes this soon after a download


@pytest.fixture
def lists(start_fake: Callable[[FakeServer], FakeServer]) -> FakeDatasets:
    fake = start_fake(FakeDatasets())
    assert isinstance(fake, FakeDatasets)
    fake.bodies = {}  # every download fails (404) until a test publishes them
    return fake


@pytest.fixture
def anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    fake.add_media(AOT_P2, episodes=12)
    return fake


@pytest.fixture
def config_path(
    tmp_path: Path, lists: FakeDatasets, anilist: FakeAniList, receiver: AlertReceiver
) -> Path:
    urls = "".join(f"      {name}: {url}\n" for name, url in lists.urls().items())
    return write_config(
        tmp_path,
        f'alerts: {{urls: ["{receiver.apprise_url}"]}}\n'
        "services:\n"
        f'  anilist:\n    api_url: "{anilist.url}"\n    auth_url: "{anilist.auth_url}"\n'
        f"    mapping_urls:\n{urls}"
        f'profiles:\n  me: {{accounts: {{anilist: {{token: "{anilist.issue_token()}"}}}}}}\n',
    )


@pytest.fixture
async def runtime(config_path: Path, anilist: FakeAniList) -> AsyncIterator[Runtime]:
    runtime = build_runtime(load_config(config_path, {}), clock=FakeClock(anilist.now()))
    runtime.open()
    yield runtime
    runtime.close()


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[DeliveryWorker]:
    async for made in worker_for(runtime):
        yield made


async def worker_for(runtime: Runtime) -> AsyncIterator[DeliveryWorker]:
    """The AniList deliveries as the service wires their mapping, without AniList's pacing."""
    services, account = runtime.config.services.anilist, runtime.config.profiles["me"]
    assert services is not None and account.accounts.anilist is not None
    token = account.accounts.anilist.token
    assert token is not None
    client = AniListClient(
        services,
        runtime.store,
        seeded_tokens={"me": Secret(token.reveal())},
        clock=runtime.clock,
        per_minute=100_000,
    )
    target = AniListTarget(
        client, runtime.store, runtime.config.delivery, runtime.clock, anime_mapping(runtime)
    )
    worker = DeliveryWorker(lambda _: [target], runtime.config.delivery)
    worker.targets = {target.name: target}
    yield worker
    await target.aclose()


def play_aot_s4e17(runtime: Runtime) -> None:
    item = MediaRef("episode", show_ids=Ids(tmdb=str(AOT)), season=4, number=17)
    at = runtime.clock() - 60
    row = NewOutboxRow(
        "anilist", "me", "play", {"item": ref_to_dict(item), "at": at}, f"me:{item.key()}", "p1"
    )
    assert runtime.store.enqueue([row], runtime.clock()) == 1


def progress(anilist: FakeAniList) -> int | None:
    entry = next((e for e in anilist.viewer.entries.values() if e.media.id == AOT_P2), None)
    return entry.progress if entry is not None else None


async def test_lists_that_fail_at_first_start_are_alerted_as_the_lists_not_anilist(
    runtime: Runtime, worker: DeliveryWorker, receiver: AlertReceiver
) -> None:
    play_aot_s4e17(runtime)
    await worker.pass_once(runtime)
    (alert,) = receiver.messages  # at once, not at the next hourly check
    assert alert["title"] == MISSING_TITLE
    lead = alert["message"].split("\n\n")[0]
    assert "plays for AniList wait for them" in lead
    assert "services.anilist.mapping_urls" in lead and "watchbridge anime refresh" in lead
    assert "AniList" not in MISSING_TITLE and "unreachable" not in alert["message"]


async def test_a_play_held_for_the_lists_goes_minutes_after_the_service_downloads_them(
    runtime: Runtime,
    worker: DeliveryWorker,
    lists: FakeDatasets,
    anilist: FakeAniList,
    receiver: AlertReceiver,
) -> None:
    play_aot_s4e17(runtime)
    await worker.pass_once(runtime)
    lists.bodies = sample_bodies()  # the hosts serve again
    assert isinstance(runtime.clock, FakeClock)
    runtime.clock.advance(FIVE_MINUTES)
    await worker.pass_once(runtime)
    assert progress(anilist) == 1
    assert receiver.titles() == [MISSING_TITLE, f"Resolved: {MISSING_TITLE}"]


async def test_a_play_held_for_the_lists_goes_minutes_after_anime_refresh_downloads_them(
    runtime: Runtime,
    worker: DeliveryWorker,
    lists: FakeDatasets,
    anilist: FakeAniList,
    config_path: Path,
) -> None:
    play_aot_s4e17(runtime)
    await worker.pass_once(runtime)
    lists.bodies = sample_bodies()
    # In a thread: the command runs its own event loop, as from a shell.
    refreshed = await asyncio.to_thread(
        watchbridge, "anime", "refresh", "--config", str(config_path)
    )
    assert refreshed.returncode == 0, refreshed.stderr
    asked = len(lists.requests)
    assert isinstance(runtime.clock, FakeClock)
    runtime.clock.advance(FIVE_MINUTES)
    await worker.pass_once(runtime)
    assert progress(anilist) == 1
    assert len(lists.requests) == asked  # the command's copies, not a download of its own


async def test_after_a_restart_the_lists_alert_resolves_at_the_next_delivery_pass(
    runtime: Runtime,
    worker: DeliveryWorker,
    lists: FakeDatasets,
    anilist: FakeAniList,
    receiver: AlertReceiver,
    config_path: Path,
) -> None:
    """The service restarts while the lists are missing; they arrive (`anime refresh`) before
    its first delivery pass: "Resolved" comes with that pass, not at the hourly check."""
    play_aot_s4e17(runtime)
    await worker.pass_once(runtime)
    assert isinstance(runtime.clock, FakeClock)
    later = runtime.clock() + FIVE_MINUTES
    runtime.close()  # the restart
    lists.bodies = sample_bodies()
    refreshed = await asyncio.to_thread(
        watchbridge, "anime", "refresh", "--config", str(config_path)
    )
    assert refreshed.returncode == 0, refreshed.stderr
    restarted = build_runtime(load_config(config_path, {}), clock=FakeClock(later))
    restarted.open()
    try:
        async for again in worker_for(restarted):
            await again.pass_once(restarted)
    finally:
        restarted.close()
    assert progress(anilist) == 1
    assert receiver.titles() == [MISSING_TITLE, f"Resolved: {MISSING_TITLE}"]


async def test_a_play_held_for_lists_on_disk_that_cannot_be_read_says_so(
    runtime: Runtime, worker: DeliveryWorker, lists: FakeDatasets, config_path: Path
) -> None:
    """Copies downloaded but each unreadable (damaged, or a format this release cannot read):
    before, the held play said the lists were "not downloaded yet", which no wait ends; it
    says what the link run says of them."""
    lists.bodies = sample_bodies()
    refreshed = await asyncio.to_thread(
        watchbridge, "anime", "refresh", "--config", str(config_path)
    )
    assert refreshed.returncode == 0, refreshed.stderr
    data = anime_data.from_config(runtime.config)
    for name in data.urls:
        data.path(name).write_text("not a mapping list", encoding="utf-8")
    play_aot_s4e17(runtime)

    await worker.pass_once(runtime)

    ((status, reason),) = runtime.store.db.execute("SELECT status, last_error FROM outbox")
    assert status == "pending", status  # held, no try spent
    assert "the anime mapping lists on disk could not be read" in reason, reason
    assert "not downloaded yet" not in reason, reason
    assert data.link_waits().message == reason.replace(
        "AniList deliveries wait", "the link reads and plans nothing"
    )


UNREADABLE_TITLE = "watchbridge: anime mapping lists could not be read"


async def test_lists_on_disk_that_cannot_be_read_are_alerted_with_no_link_to_tell(
    runtime: Runtime,
    worker: DeliveryWorker,
    lists: FakeDatasets,
    anilist: FakeAniList,
    receiver: AlertReceiver,
    config_path: Path,
) -> None:
    """A webhook-only AniList profile (no link, so no link's alert): before, the held play
    said why in the queue only, and no alert told of it, as the lists' alert came only while
    none was downloaded. It comes at the pass that holds a play, the hourly check keeps it,
    and it resolves once the lists can be read and the play went."""
    lists.bodies = sample_bodies()
    refreshed = await asyncio.to_thread(
        watchbridge, "anime", "refresh", "--config", str(config_path)
    )
    assert refreshed.returncode == 0, refreshed.stderr
    data = anime_data.from_config(runtime.config)
    for name in data.urls:
        data.path(name).write_text("not a mapping list", encoding="utf-8")
    play_aot_s4e17(runtime)

    await worker.pass_once(runtime)
    await check_anime_datasets(runtime)  # the hourly check: the same rule, no "Resolved"

    (alert,) = receiver.messages  # at once, not at the next hourly check
    assert alert["title"] == UNREADABLE_TITLE
    assert runtime.notifier.raised("service_unreachable", anime_data.MISSING_KEY)
    lead, problems = alert["message"].split("\n\n")[:2]
    assert "could not be read" in lead and "plays for AniList wait" in lead, lead
    assert "watchbridge anime refresh" in lead and "update watchbridge" in lead, lead
    assert f"delete the files in {data.directory}" in lead, lead
    assert "not downloaded" not in alert["message"]
    assert "anibridge:" in problems and "animelists:" in problems, problems

    refreshed = await asyncio.to_thread(  # as the alert says
        watchbridge, "anime", "refresh", "--config", str(config_path)
    )
    assert refreshed.returncode == 0, refreshed.stderr
    assert isinstance(runtime.clock, FakeClock)
    runtime.clock.advance(FIVE_MINUTES)
    await worker.pass_once(runtime)
    assert progress(anilist) == 1
    assert receiver.titles() == [UNREADABLE_TITLE, f"Resolved: {UNREADABLE_TITLE}"]
