"""A `webhook_rejects` alert gets its "Resolved" notice once its source's webhooks are taken."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fakes.receiver import AlertReceiver
from tests.harness import AppThread, write_config
from tests.ingest_samples import sample_bytes
from tests.test_webhooks_e2e import wait_for
from watchbridge import webhooks
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime, create_app
from watchbridge.config import load_config
from watchbridge.metrics import Metrics

SECRET = "s3cret-hook"
REFUSING = "watchbridge is refusing jellyfin webhooks"


def test_a_refused_webhooks_alert_is_resolved_when_that_source_is_accepted_again(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    path = write_config(
        tmp_path,
        f'alerts: {{urls: ["{receiver.apprise_url}"]}}\n'
        "profiles:\n  me:\n    users: {jellyfin: [alex]}\n",
    )
    path.write_text(path.read_text().replace("server:\n", f"server:\n  webhook_secret: {SECRET}\n"))
    config = load_config(path, {})
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    body = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
    with AppThread(create_app(runtime, extra_routes=webhooks.ROUTES)) as app:
        refused = httpx.post(f"{app.url}/webhooks/jellyfin/wrong-secret", content=body)
        wait_for(lambda: receiver.titles() == [REFUSING])
        accepted = httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", content=body)
        wait_for(lambda: len(receiver.titles()) == 2)
    assert (refused.status_code, accepted.status_code) == (401, 202)
    assert receiver.titles() == [REFUSING, f"Resolved: {REFUSING}"]
