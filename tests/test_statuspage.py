"""The status page at `/`: what `watchbridge status` says, with no secret on it."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from html import unescape
from pathlib import Path

import httpx
import pytest

from tests.harness import (
    AppThread,
    ServiceProcess,
    free_port,
    three_unmatched_plays_and_a_rating_behind_one,
    write_config,
)
from watchbridge.alerts import Failing, Health, Notifier
from watchbridge.app import Runtime, create_app
from watchbridge.config import Config, load_config
from watchbridge.downtime import restore_notice
from watchbridge.lastwebhooks import LastWebhook
from watchbridge.metrics import Metrics, UnfilteredHistory
from watchbridge.pagesignin import PageSignIn
from watchbridge.readers.plex import unfiltered_history
from watchbridge.refused import OVER_AFTER, REFUSALS, REFUSED_WORDS, RefusedWebhooks
from watchbridge.signins import Facts, sign_in_states
from watchbridge.statuspage import ROUTES, PageState, render
from watchbridge.storagefault import fault_of
from watchbridge.store import NewOutboxRow, Store
from watchbridge.wiring import build_app, build_runtime

SECRETS = ("hook-secret-9137", "api-token-5521", "trakt-secret-7731")


def config_for(tmp_path: Path, body: str = "") -> Config:
    path = write_config(
        tmp_path,
        "services:\n  trakt: {client_id: cid, client_secret: trakt-secret-7731}\n" + body,
    )
    path.write_text(
        path.read_text().replace(
            "server:\n",
            "server:\n  webhook_secret: hook-secret-9137\n  api_token: api-token-5521\n",
        )
    )
    return load_config(path, {})


# Profile me's link `a` between Trakt and Serializd (appended to config_for's services).
LINK_A = (
    "  serializd: {}\nprofiles:\n  me:\n    accounts: {trakt: {}, serializd: "
    "{email: a@b.c, password: pw}}\nlinks:\n  a: {services: [trakt, serializd]}\n"
)


def page(config: Config, store: Store) -> str:
    return render(PageState(config, store.status()), 10_000.0)


def test_the_page_shows_the_queue_and_dead_letters_with_what_to_do(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 9_000.0)
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k2", "i2")], 9_000.0)
        (item,) = store.claim("test", 9_000.0, 1, ["trakt"])
        store.mark_dead(item.id, 9_500.0, "gave up")
        html = page(config, store)
    assert "<td>queued</td><td>1 waiting, 0 being sent</td>" in html
    assert "<td>oldest queued</td><td>16 min ago (02:30)</td>" in html
    assert '<span class="bad">1</span>' in html and "watchbridge deadletters list" in html


def test_the_page_lists_the_newest_five_dead_letters_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        for n in range(7):
            store.enqueue([NewOutboxRow("trakt", "me", "rating", {}, f"k{n}", f"i{n}")], 9_000.0)
            (item,) = store.claim("test", 9_000.0, 1, ["trakt"])
            store.mark_dead(item.id, 9_000.0 + n, f"trakt: refused {n}")
        html = page(config, store)
    listed = re.findall(r"<li>\?: rating for Trakt \(me\), given up [^<]*\): ([^<]*)</li>", html)
    assert listed == [f"Trakt: refused {n}" for n in (6, 5, 4, 3, 2)], html
    assert "<p>and 2 more</p>" in html


def test_the_page_never_shows_a_secret(tmp_path: Path) -> None:
    config = config_for(tmp_path, "profiles:\n  me:\n    users: {plex: ['1']}\n")
    with Store.open(tmp_path / "watchbridge.db") as store:
        html = page(config, store)
    assert not [s for s in SECRETS if s in html]
    assert "watchbridge webhook-urls" in html


def test_names_from_the_config_are_escaped(tmp_path: Path) -> None:
    config = config_for(tmp_path, "profiles:\n  me:\n    users: {jellyfin: ['<b>alex</b>']}\n")
    with Store.open(tmp_path / "watchbridge.db") as store:
        html = page(config, store)
    assert "&lt;b&gt;alex&lt;/b&gt;" in html and "<b>alex" not in html


def sent_by_an_unmapped_account(tmp_path: Path, account: str) -> str:
    """The page of the service after a generic webhook from `account`, which no profile
    lists (a media server's user names it)."""
    path = write_config(tmp_path, "profiles:\n  me:\n    users: {generic: [alice]}\n")
    path.write_text(
        path.read_text().replace("server:\n", "server:\n  webhook_secret: hook-secret-9137\n")
    )
    play = {"event": "played", "user": account, "item": {"type": "movie", "title": "Heat"}}
    with AppThread(build_app(build_runtime(load_config(path, {})))) as app:
        answer = httpx.post(f"{app.url}/webhooks/generic/hook-secret-9137", json=play)
        assert answer.status_code == 200, answer.text
        return httpx.get(f"{app.url}/").text


def test_a_name_without_spaces_wraps_instead_of_widening_the_page(tmp_path: Path) -> None:
    # Table cells grow to their longest word: one 3,000-letter account name made the whole
    # table, and every column after it, run far off the screen.
    html = sent_by_an_unmapped_account(tmp_path, "W" * 3000)
    assert f"<td>{'W' * 3000}</td>" in html
    style = html.split("<style>")[1].split("</style>")[0]
    body = style.split("body{")[1].split("}")[0]
    assert "overflow-wrap:anywhere" in body.split(";")


def page_style(tmp_path: Path) -> str:
    with Store.open(tmp_path / "watchbridge.db") as store:
        html = page(config_for(tmp_path), store)
    return html.split("<style>")[1].split("</style>")[0]


def test_a_short_word_in_a_narrow_column_is_not_broken_into_letters(tmp_path: Path) -> None:
    # overflow-wrap:anywhere lets the browser squeeze a column to one letter: beside a long
    # sign-in message, "trakt" showed as "tra kt" on a desktop, "refused" as "re fu se d"
    # on a phone. Headings (our own words) never break; a cell is never narrower than a
    # short word.
    style = page_style(tmp_path)
    assert "th{overflow-wrap:normal}" in style
    assert "td{min-width:4.5em}" in style


def test_on_a_phone_each_table_row_reads_as_lines_instead_of_squeezed_columns(
    tmp_path: Path,
) -> None:
    # Five columns do not fit 390 px: a row's cells follow one another, its last (the
    # message, the button) on a line of its own.
    style = page_style(tmp_path)
    narrow = style.split("@media(max-width:40rem){")[1]
    assert "table,tr{display:block}" in narrow and "td:last-child{display:block}" in narrow
    assert "td{min-width:0}" in narrow


def test_a_name_cannot_turn_the_pages_text_around(tmp_path: Path) -> None:
    # U+202E (right-to-left override) in an account name reversed all that followed it on
    # its line; Hebrew letters are a name as any other.
    html = sent_by_an_unmapped_account(tmp_path, "\u202eevil\u2066 שלום")
    assert "\u202e" not in html and "\u2066" not in html
    assert "<td>\\u202eevil\\u2066 שלום</td>" in html


def test_a_config_without_profiles_says_webhooks_are_ignored(tmp_path: Path) -> None:
    with Store.open(tmp_path / "watchbridge.db") as store:
        html = page(config_for(tmp_path), store)
    assert "No profiles: every webhook is answered and ignored" in html


def test_the_service_serves_the_page_at_its_root_behind_the_api_token(tmp_path: Path) -> None:
    port, hook_port = free_port(), free_port()
    path = write_config(tmp_path, port=port)
    path.write_text(
        path.read_text().replace(
            "server:\n", f"server:\n  api_token: api-token-5521\n  webhook_port: {hook_port}\n"
        )
    )
    service = ServiceProcess(path, port).start()
    try:
        assert httpx.get(f"{service.url}/").status_code == 401
        answer = httpx.get(f"{service.url}/", headers={"Authorization": "Bearer api-token-5521"})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert "<h1>watchbridge" in answer.text
        assert httpx.get(f"http://127.0.0.1:{hook_port}/").status_code == 404
    finally:
        service.kill()


def test_the_page_says_why_queued_deliveries_wait_and_what_to_do(tmp_path: Path) -> None:
    # With no alert set up (the default), the page is where a lost sign-in must show.
    config = config_for(tmp_path)
    reason = "Trakt no longer accepts the sign-in: run `watchbridge auth trakt --profile me`"
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 9_000.0)
        (item,) = store.claim("test", 9_000.0, 1, ["trakt"])
        store.hold(item.id, 9_000.0, 10_900.0, reason)
        html = page(config, store)
    assert (
        '<td>on hold: trakt for me</td><td><span class="bad">1 waiting</span>, next try in 15 min '
        "(03:01): "
        "Trakt no longer accepts the sign-in: run `watchbridge auth trakt --profile me`</td>"
    ) in html


def test_the_page_and_api_count_deliveries_waiting_behind_an_earlier_one_of_their_item(
    tmp_path: Path,
) -> None:
    # 4 pending, 3 waiting for ids: the 4th waits behind one of them, and the page says so.
    config = load_config(three_unmatched_plays_and_a_rating_behind_one(tmp_path), {})
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        html = httpx.get(f"{app.url}/").text
        status = httpx.get(f"{app.url}/api/status").json()
    assert (status["outbox"]["pending"], status["unmatched"], status["behind"]) == (4, 3, 1)
    assert "<td>queued</td><td>4 waiting, 0 being sent</td>" in html
    assert (
        "<td>waiting their turn</td><td>1 waiting for an earlier delivery of the same item to the "
        "same service (they go out in order: each follows once the one before it is delivered "
        "or given up)</td>"
    ) in html


def test_nothing_waits_behind_on_the_page_when_no_item_has_two_deliveries(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 9_000.0)
        html = page(config, store)
        assert store.status().behind == 0
    assert "waiting their turn" not in html


def test_the_page_says_why_a_link_did_not_run_and_what_to_run(tmp_path: Path) -> None:
    config = config_for(tmp_path, LINK_A)
    with Store.open(tmp_path / "watchbridge.db") as store:
        run = store.start_run("a", 9_000.0)
        assert run is not None
        store.finish_run(run, 9_100.0, "needs-review", {}, 2, "review it: `watchbridge sync`")
        html = page(config, store)
    assert "review it: <code>" not in html
    assert (
        '<span class="bad">waiting for your review</span> 15 min ago (02:31): '
        "review it: `watchbridge sync`"
    ) in html
    assert "nothing to do" not in html  # it waits for the review: not a quiet run


def test_a_failing_link_says_when_it_last_went_through(tmp_path: Path) -> None:
    # Someone who looks once a month must tell a link that failed once from one failing
    # for days: the last run alone is "failed (15 min ago)" either way.
    config = config_for(tmp_path, LINK_A)
    with Store.open(tmp_path / "watchbridge.db") as store:
        for started, outcome in [(1_000.0, "ok"), (5_000.0, "failed"), (9_000.0, "failed")]:
            run = store.start_run("a", started)
            assert run is not None
            store.finish_run(run, started + 100.0, outcome, {}, 1, "trakt: 503")
        html = page(config, store)
    assert (
        '<span class="bad">failed</span> 15 min ago (02:31): trakt: 503; last went through 2 h ago '
        "(00:18)"
    ) in html


def test_a_failing_link_with_no_run_that_went_through_says_so(tmp_path: Path) -> None:
    # A link added today whose first run failed: not "none in the last 30 days".
    config = config_for(tmp_path, LINK_A)
    with Store.open(tmp_path / "watchbridge.db") as store:
        run = store.start_run("a", 9_000.0)
        assert run is not None
        store.finish_run(run, 9_100.0, "failed", {}, 1, "trakt: 503")
        html = page(config, store)
    assert "trakt: 503; no run of it has gone through yet" in html


def test_a_link_failing_longer_than_runs_are_kept_still_says_when_it_went_through(
    tmp_path: Path,
) -> None:
    # Finished runs are pruned after a month: the link's last run that went through is not,
    # or a link dead for longer would look as if it had never worked.
    day = 86400.0
    config = config_for(tmp_path, LINK_A)
    with Store.open(tmp_path / "watchbridge.db") as store:
        for started, outcome in [(0.0, "ok"), (day, "failed"), (40 * day, "failed")]:
            run = store.start_run("a", started)
            assert run is not None
            store.finish_run(run, started + 100.0, outcome, {}, 1, "trakt: 503")
        assert store.prune(40 * day + 200.0, 7 * day, 7 * day)["sync_runs"] == 1
        html = render(PageState(config, store.status()), 40 * day + 200.0)
    assert "trakt: 503; last went through 40 d ago (1 Jan 00:01)" in html


def test_a_link_whose_last_run_went_through_says_no_more_than_that(tmp_path: Path) -> None:
    config = config_for(tmp_path, LINK_A)
    with Store.open(tmp_path / "watchbridge.db") as store:
        run = store.start_run("a", 9_000.0)
        assert run is not None
        store.finish_run(run, 9_100.0, "ok", {}, 1)
        html = page(config, store)
    assert "went through" not in html


def test_the_page_names_an_anilist_sign_in_to_renew(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    sign_ins = sign_in_states([Facts("me", "anilist", None)], 10_000.0)
    with Store.open(tmp_path / "watchbridge.db") as store:
        html = render(PageState(config, store.status(), sign_ins), 10_000.0)
    assert (
        '<td>me</td><td>anilist</td><td><span class="bad">not signed in</span></td><td>-</td>'
        '<td><span class="bad">not signed in: run `watchbridge auth anilist --profile me`'
    ) in html


def test_a_link_running_its_first_backfill_is_not_shown_as_a_problem(tmp_path: Path) -> None:
    config = config_for(tmp_path, LINK_A)
    with Store.open(tmp_path / "watchbridge.db") as store:
        run = store.start_run("a", 9_000.0)  # long into a first Serializd read
        assert run is not None
        store.heartbeat_run(run, 9_990.0)  # and beating
        html = page(config, store)
    assert (
        "<td>running since 16 min ago (02:30)</td>" in html
        and '<span class="bad">running' not in html
    )


def test_a_run_whose_process_died_hours_ago_is_shown_failed_not_running(tmp_path: Path) -> None:
    config = config_for(tmp_path, LINK_A)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.start_run("a", 10_000.0 - 3 * 3600)  # a `watchbridge sync` killed since
        html = page(config, store)
        (run,) = store.status().last_runs
    assert (
        '<span class="bad">failed</span> 3 h ago (yesterday 23:46): the process running it stopped'
    ) in html
    assert run.as_seen(10_000.0).outcome == "failed" and run.as_seen(run.started_at) == run


def test_the_profiles_say_what_plays_no_account_of_theirs_keeps(tmp_path: Path) -> None:
    serializd_only = (
        "  serializd: {}\nprofiles:\n  me:\n    users: {jellyfin: [alex]}\n"
        "    accounts: {serializd: {email: a@b.c, password: pw}}\n"
    )
    with Store.open(tmp_path / "watchbridge.db") as store:
        html = page(config_for(tmp_path, serializd_only), store)
    assert "<th>plays sent nowhere</th>" in html and "<td>movies</td>" in html


def test_the_page_and_api_say_when_alerts_cannot_reach_anyone(tmp_path: Path) -> None:
    # The alerts' own failure cannot be alerted: the page is where the user learns of it.
    port, closed = free_port(), free_port()
    down = f"json://alerts:hunter2@127.0.0.1:{closed}/hook/s3cr3t-hook-token"
    typo = "jsn://alerts:hunter2@example.com/hook/s3cr3t-hook-token"
    path = write_config(tmp_path, f'alerts: {{urls: ["{down}", "{typo}"]}}\n', port=port)
    path.write_text(
        path.read_text().replace("server:\n", "server:\n  webhook_secret: hook-secret-9137\n")
    )
    service = ServiceProcess(path, port).start()
    try:
        # A webhook with a wrong secret raises a `webhook_rejects` alert at once.
        refused = httpx.post(f"{service.url}/webhooks/plex/not-the-secret", json={})
        assert refused.status_code == 401
        deadline = time.monotonic() + 15
        while not httpx.get(f"{service.url}/api/status").json().get("alerts", {}).get("failing"):
            assert time.monotonic() < deadline, "the failed alert is not on /api/status"
            time.sleep(0.1)
        alerts = httpx.get(f"{service.url}/api/status").json()["alerts"]
        assert alerts["destinations"] == 1
        assert alerts["failing"]["sends"] == 1
        assert "alerts.urls[0]" in alerts["failing"]["to"]
        assert any("alerts.urls[1]" in p and "jsn://" in p for p in alerts["problems"])
        html = httpx.get(f"{service.url}/").text
        assert "alerts.urls[1]: unknown Apprise service jsn://" in html
        assert "did not get through" in html and "watchbridge test-alert" in html
        for shown in (html, json.dumps(alerts)):
            assert "hunter2" not in shown and "s3cr3t-hook-token" not in shown
    finally:
        service.kill()


def test_the_page_says_when_this_machines_clock_is_far_off_a_services(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        clocks = {"trakt": 1200.0, "plex": 3.0}
        html = render(PageState(config, store.status(), clocks=clocks), 10_000.0)
    assert "The clocks of this machine and of trakt differ by 20 minute(s)" in html
    assert "NTP" in html
    assert "of plex" not in html  # seconds apart: nothing to say


def test_the_page_and_api_say_when_the_plex_history_ignored_its_account_filter(
    tmp_path: Path,
) -> None:
    # What a link's read of jamie's Plex history noted (test_plex_reader has the read).
    config = load_config(write_config(tmp_path), {})
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    message = unfiltered_history("jamie", "48151623", 3)
    runtime.metrics.plex_history_unfiltered("jamie", 3, message, time.time())
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        html = httpx.get(f"{app.url}/").text
        status = httpx.get(f"{app.url}/api/status").json()
    assert "the Plex server ignored the accountID filter of its watch history" in html
    assert "reading profile jamie&#x27;s (account 48151623) it also sent 3 play(s)" in html
    (noted,) = status["plex_history_unfiltered"]
    assert (noted["profile"], noted["rows"], noted["message"]) == ("jamie", 3, message)


def test_refused_webhooks_taken_again_since_are_no_longer_shown_as_a_problem(
    tmp_path: Path,
) -> None:
    refused = RefusedWebhooks()
    refused.saw("tautulli", "unauthorized", 401, "missing or wrong webhook secret", 1_000.0)
    refused.saw("jellyfin", "malformed", 400, "body is not JSON", 1_000.0)
    refused.taken("tautulli", 1_100.0)  # its secret was fixed; Jellyfin's setup was not
    config = config_for(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        state = PageState(config, store.status(), refused=refused.recent())
        html = render(state, 1_000.0 + OVER_AFTER)
    going_on, _, over = html.partition("taken again since")
    assert '<span class="bad">400: not understood</span>' in going_on
    assert "<td>tautulli</td>" not in going_on and "<td>tautulli</td>" in over
    assert "401: wrong secret" in over and '"bad"' not in over


@pytest.mark.parametrize("outcome", sorted(REFUSALS))
def test_refused_webhooks_are_told_in_words_not_their_outcome_labels(
    tmp_path: Path, outcome: str
) -> None:
    # A full disk refused Jellyfin's webhooks: the summary said "503 store_error", the label
    # of the metrics and /api/status, to a household that reads it on a phone.
    refused = RefusedWebhooks()
    refused.saw("jellyfin", outcome, 503, "could not store the event", 9_000.0)
    refused.saw("plex", outcome, 503, "could not store the event", 9_000.0)
    refused.taken("plex", 9_100.0)  # over: told in the second table
    config = config_for(tmp_path, "profiles:\n  me:\n    users: {plex: ['1']}\n")
    with Store.open(tmp_path / "watchbridge.db") as store:
        state = PageState(config, store.status(), refused=refused.recent())
        html = render(state, 9_000.0 + OVER_AFTER)
    words = REFUSED_WORDS[outcome]
    assert needs_named(html) == [("webhooks", f"1 jellyfin webhook(s) refused: {words}")]
    assert f'<span class="bad">503: {words}</span>' in html
    assert f"<td>503: {words}</td>" in html  # taken again since
    assert outcome not in text_of(html)


def test_refused_webhooks_taken_again_still_say_their_plays_were_not_recorded(
    tmp_path: Path,
) -> None:
    # Someone who looks weeks after the fix must still learn that the plays those webhooks
    # carried are missing, though nothing is failing any more.
    refused = RefusedWebhooks()
    refused.saw("tautulli", "unauthorized", 401, "missing or wrong webhook secret", 1_000.0)
    refused.taken("tautulli", 1_100.0)
    config = config_for(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        state = PageState(config, store.status(), refused=refused.recent())
        html = render(state, 30 * 86400.0)
    _, _, over = html.partition("taken again since")
    assert "were not recorded" in over and "only a Plex link&#x27;s sync" in over
    assert '"bad"' not in over  # told, not in red: the refusals are over


def test_the_page_and_api_say_what_is_kept_for_a_profile_and_a_link_no_longer_configured(
    tmp_path: Path,
) -> None:
    """Renamed (or taken out): their state waits under the old names, which the config and
    so the page's tables no longer list."""
    config = config_for(tmp_path, LINK_A)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.set_cursor("trakt", "old", "link:gone", "{}", 9_000.0)
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    bearer = {"Authorization": "Bearer api-token-5521"}
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        html = httpx.get(f"{app.url}/", headers=bearer).text
        status = httpx.get(f"{app.url}/api/status", headers=bearer).json()
    kept = status["no_longer_in_the_config"]
    assert [(k["kind"], k["name"], k["kept"]) for k in kept] == [
        ("profile", "old", "the sync state of links.gone"),
        ("link", "gone", "its sync state for old"),
    ]
    assert "give it its old name back" in kept[0]["fix"]
    profiles = html[html.index('id="profiles"') : html.index('id="webhooks"')]
    assert (
        "<p>profile old is no longer in the config, and the database keeps the sync state of "
        "links.gone: if a profile of the config is this one renamed, give it its old name back"
    ) in profiles
    links = html[html.index('id="links"') : html.index('id="profiles"')]
    assert "<p>links.gone is no longer in the config, and the database keeps its sync" in links


def summary_of(html: str) -> str:
    """The summary under the title: between the heading and the time zone's line."""
    return html.split("</h1>", 1)[1].split('<p class="zone">', 1)[0]


def needs_named(html: str) -> list[tuple[str, str]]:
    """The summary's list of what needs the user: (anchor, text) each, in order."""
    return re.findall(r'<li><a href="#([^"]+)">([^<]+)</a></li>', summary_of(html))


def test_the_summary_says_all_is_well_with_the_last_webhook_and_deliveries(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path, "profiles:\n  me:\n    users: {plex: ['1']}\n")
    heard = [LastWebhook("plex", "srv", 9_000.0), LastWebhook("jellyfin", "", 9_500.0)]
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 9_000.0)
        (item,) = store.claim("test", 9_000.0, 1, ["trakt"])
        store.complete(item.id, 9_100.0)
        html = render(PageState(config, store.status(), last_webhooks=heard), 10_000.0)
    assert summary_of(html) == (
        '<p class="summary well">All is well: last webhook 8 min ago (from jellyfin); '
        "1 play sent in the last week.</p>"
    )


def test_the_summary_names_what_needs_the_user_most_urgent_first(tmp_path: Path) -> None:
    config = config_for(tmp_path, LINK_A)
    full = fault_of(sqlite3.OperationalError("database or disk is full"), "/data/wb.db")
    sign_ins = sign_in_states([Facts("me", "trakt", None)], 10_000.0)
    with Store.open(tmp_path / "watchbridge.db") as store:
        rows = [NewOutboxRow("trakt", "me", "play", {}, f"k{n}", f"i{n}") for n in range(3)]
        store.enqueue(rows, 9_000.0)
        dead, held, unmatched = store.claim("test", 9_000.0, 3, ["trakt"])
        store.mark_dead(dead.id, 9_500.0, "gave up")
        store.hold(held.id, 9_000.0, 10_900.0, "not signed in: run `watchbridge auth trakt`")
        store.hold(unmatched.id, 9_000.0, 10_900.0, "unmatched: no trakt id for Heat")
        run = store.start_run("a", 9_000.0)
        assert run is not None
        store.finish_run(run, 9_100.0, "failed", {}, 1, "trakt: 503")
        state = PageState(
            config,
            store.status(),
            sign_ins,
            storage=full,
            downtime=restore_notice(""),
        )
        html = render(state, 10_000.0)
    assert needs_named(html) == [
        ("storage", "watchbridge cannot write its database"),
        ("sign-ins", "trakt sign-in of me: not signed in (button below)"),
        ("deliveries", "1 given up (dead letters)"),
        ("deliveries", "1 on hold for trakt (me)"),
        ("deliveries", "1 not found on the service yet"),
        ("links", "sync a: failed"),
        ("webhooks", "the database is a backup copy, put back in its place"),
    ]
    assert "All is well" not in html


@pytest.mark.parametrize(
    ("outcome", "said"), [("needs-review", "waiting for your review"), ("failed", "failed")]
)
def test_a_sync_waiting_for_its_review_says_the_button_is_below(
    tmp_path: Path, outcome: str, said: str
) -> None:
    # Failed too: one profile's run failed while another waits for its review.
    config = config_for(tmp_path, LINK_A)
    with Store.open(tmp_path / "watchbridge.db") as store:
        run = store.start_run("a", 9_000.0)
        assert run is not None
        store.finish_run(run, 9_100.0, outcome, {}, 1, "`watchbridge sync --link a --yes`")
        html = render(PageState(config, store.status(), to_review=frozenset({"a"})), 10_000.0)
    assert needs_named(html) == [("links", f"sync a: {said} (button below)")]


def test_each_need_in_the_summary_links_to_a_part_of_the_page(tmp_path: Path) -> None:
    config = config_for(tmp_path, LINK_A)
    full = fault_of(sqlite3.OperationalError("database or disk is full"), "/data/wb.db")
    sign_ins = sign_in_states([Facts("me", "anilist", None)], 10_000.0)
    refused = RefusedWebhooks()
    refused.saw("plex", "unauthorized", 401, "missing or wrong webhook secret", 9_000.0)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 9_000.0)
        (item,) = store.claim("test", 9_000.0, 1, ["trakt"])
        store.mark_dead(item.id, 9_500.0, "gave up")
        run = store.start_run("a", 9_000.0)
        assert run is not None
        store.finish_run(run, 9_100.0, "failed", {}, 1, "trakt: 503")
        state = PageState(
            config,
            store.status(),
            sign_ins,
            storage=full,
            refused=refused.recent(),
            clocks={"trakt": 600.0},
            alerts=Health(0, ["alerts.urls[0] (unknown scheme)"], None),
            downtime="watchbridge was not running for about 3 h: media servers ...",
        )
        html = render(state, 10_000.0)
    anchors = {anchor for anchor, _ in needs_named(html)}
    assert anchors == {"storage", "sign-ins", "deliveries", "links", "alerts", "webhooks"}
    assert [a for a in anchors if f'id="{a}"' not in html] == []


def test_the_summary_never_says_all_is_well_beside_something_in_red(tmp_path: Path) -> None:
    # A sign-in started from the page that failed stays in red under a sign-in that works
    # again (signed in from a terminal meanwhile): no need names it, the page is still red.
    config = config_for(tmp_path, "profiles:\n  me:\n    users: {plex: ['1']}\n")
    works = sign_in_states([Facts("me", "trakt", None)], 10_000.0)
    works = [replace(one, state="ok") for one in works]
    failed = PageSignIn("me", "trakt", 9_000.0, outcome="the code expired", failed=True)
    failed = replace(failed, finished_at=9_900.0)
    with Store.open(tmp_path / "watchbridge.db") as store:
        html = render(PageState(config, store.status(), works, signing_in=[failed]), 10_000.0)
    assert "All is well" not in html
    assert needs_named(html) == [("deliveries", "something below is in red")]


def test_a_delivery_held_for_a_trakt_sign_in_points_to_the_pages_button(tmp_path: Path) -> None:
    # The Home Assistant app's user has no terminal for the command the reason names.
    config = config_for(tmp_path)
    sign_ins = sign_in_states([Facts("me", "trakt", None)], 10_000.0)
    reason = "Trakt no longer accepts the sign-in: run `watchbridge auth trakt --profile me`"
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 9_000.0)
        (item,) = store.claim("test", 9_000.0, 1, ["trakt"])
        store.hold(item.id, 9_000.0, 10_900.0, reason)
        html = render(PageState(config, store.status(), sign_ins), 10_000.0)
    assert (
        "run `watchbridge auth trakt --profile me`, or press "
        '<a href="#sign-ins">Sign in to Trakt here</a> under Sign-ins</td>'
    ) in html


def test_a_delivery_held_by_an_outage_does_not_point_to_the_sign_in_button(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    sign_ins = sign_in_states([Facts("me", "trakt", None)], 10_000.0)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 9_000.0)
        (item,) = store.claim("test", 9_000.0, 1, ["trakt"])
        store.hold(item.id, 9_000.0, 10_900.0, "trakt answered 503: tried again later")
        html = render(PageState(config, store.status(), sign_ins), 10_000.0)
    assert "503: tried again later</td>" in html


def test_the_page_follows_a_dark_theme(tmp_path: Path) -> None:
    # In a dark Home Assistant sidebar the page stayed a white glare.
    style = page_style(tmp_path)
    assert ":root{color-scheme:light dark}" in style
    dark = style.split("@media(prefers-color-scheme:dark){")[1]
    assert "body{color:#ddd;background:#121212}" in dark


# 2026-09-21 14:13:20 UTC: 16:13 in Berlin, on summer time.
SEPTEMBER = 1_790_000_000.0


def text_of(html: str) -> str:
    """What a reader of the page (or of a part of it) sees: the text, each tag a space."""
    body = html.split("<body>", 1)[-1]
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())


@pytest.mark.parametrize(
    ("ago", "shown"),
    [
        # A household in Berlin read "5 min ago" and had no clock time, and a time in UTC
        # would be two hours off theirs: the page speaks the zone watchbridge runs in (TZ).
        (300, "5 min ago (16:08)"),
        (40 * 86400, "40 d ago (12 Aug 16:13)"),  # days ago: its day too
    ],
)
def test_the_page_tells_a_time_in_the_services_time_zone(
    tmp_path: Path, time_zone: Callable[[str], None], ago: float, shown: str
) -> None:
    time_zone("Europe/Berlin")
    heard = [LastWebhook("plex", "srv", SEPTEMBER - ago)]
    with Store.open(tmp_path / "watchbridge.db") as store:
        html = render(
            PageState(config_for(tmp_path), store.status(), last_webhooks=heard), SEPTEMBER
        )
    assert f"<td>plex</td><td>srv</td><td>{shown}</td>" in html


def test_the_page_names_its_time_zone_once(
    tmp_path: Path, time_zone: Callable[[str], None]
) -> None:
    time_zone("Europe/Berlin")
    with Store.open(tmp_path / "watchbridge.db") as store:
        text = text_of(page(config_for(tmp_path), store))
    assert "Times are in Europe/Berlin." in text and text.count("Europe/Berlin") == 1


def populated(tmp_path: Path, now: float) -> str:
    """The page of a household with something in every part: plays queued, held, waiting
    for a match, given up and sent, a link that failed, sign-ins to do, webhooks refused,
    a clock off, alerts that do not load, a Plex history read that got other accounts'."""
    config = config_for(tmp_path, LINK_A)
    sign_ins = sign_in_states([Facts("me", "trakt", None), Facts("me", "anilist", None)], now)
    refused = RefusedWebhooks()
    refused.saw("plex", "unauthorized", 401, "missing or wrong webhook secret", now - 600)
    refused.saw("tautulli", "unauthorized", 401, "missing or wrong webhook secret", now - 9000)
    refused.taken("tautulli", now - 8000)
    with Store.open(tmp_path / "watchbridge.db") as store:
        rows = [NewOutboxRow("trakt", "me", "play", {}, f"k{n}", f"i{n}") for n in range(5)]
        store.enqueue(rows, now - 1000)
        dead, held, unmatched, done, _ = store.claim("test", now - 1000, 5, ["trakt"])
        store.mark_dead(dead.id, now - 500, "gave up")
        store.hold(held.id, now - 1000, now + 900, "not signed in: run `watchbridge auth trakt`")
        store.hold(unmatched.id, now - 1000, now + 900, "unmatched: no trakt id for Heat")
        store.complete(done.id, now - 900)
        run = store.start_run("a", now - 3000)
        assert run is not None
        store.finish_run(run, now - 2900, "ok", {"serializd:add_play": 3, "same_viewing": 1}, 1)
        run = store.start_run("a", now - 2000)
        assert run is not None
        store.finish_run(run, now - 1900, "failed", {}, 1, "trakt: 503")
        message = unfiltered_history("jamie", "48151623", 3)
        state = PageState(
            config,
            store.status(),
            sign_ins,
            refused=refused.recent(),
            last_webhooks=[LastWebhook("plex", "srv", now - 300)],
            clocks={"trakt": 600.0},
            alerts=Health(0, ["alerts.urls[0]: unknown Apprise service jsn://"], None),
            downtime=restore_notice(""),
            unfiltered=[UnfilteredHistory("jamie", 3, message, now - 100)],
        )
        return render(state, now)


# Words of watchbridge's insides: what a household reading the page would not know.
INTERNAL = (
    "outbox",
    "row",
    "rows",
    "row(s)",
    "claim",
    "claimed",
    "attempt",
    "attempts",
    "watermark",
    "fence",
    "cursor",
    "in flight",
    "inflight",
    "settled",
    "pending",
    "waiting for ids",
    "add_play",
    "same_viewing",
)


def test_a_populated_page_speaks_no_internal_word(tmp_path: Path) -> None:
    text = text_of(populated(tmp_path, SEPTEMBER)).casefold()
    used = [w for w in INTERNAL if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text)]
    assert used == []


def test_the_page_explains_a_link_once_where_it_lists_them(tmp_path: Path) -> None:
    html = populated(tmp_path, SEPTEMBER)
    links = text_of(html[html.index('<h2 id="links"') : html.index('<h2 id="profiles"')])
    assert links.startswith("Syncs Each keeps two services alike (the links of the config).")


def test_each_need_in_the_summary_is_one_short_line(tmp_path: Path) -> None:
    # A phone's summary holds about 50 letters a line: a need of three lines (a held
    # delivery's whole reason, a Plex notice) buried the next one. Its link takes the reader
    # to the whole story.
    needs = [text for _, text in needs_named(populated(tmp_path, SEPTEMBER))]
    assert len(needs) >= 9
    assert [n for n in needs if len(n) > 52] == []


@pytest.mark.parametrize(
    ("tz", "shown"),
    [
        # The image's default: a household far from London read every time hours off.
        ("", "UTC (set TZ to your time zone, e.g. Europe/Berlin, to see your own)"),
        # docker-compose.yml and the Unraid template set TZ=Etc/UTC until the user sets
        # theirs: the page said "Times are in UTC." as if chosen.
        (
            "Etc/UTC",
            "UTC (TZ=Etc/UTC; if you live elsewhere, set TZ to your time zone, e.g. "
            "Europe/Berlin, to see your own)",
        ),
    ],
)
def test_a_page_in_utc_for_want_of_tz_says_how_to_see_ones_own_time(
    tmp_path: Path, time_zone: Callable[[str], None], tz: str, shown: str
) -> None:
    time_zone(tz)
    with Store.open(tmp_path / "watchbridge.db") as store:
        text = text_of(page(config_for(tmp_path), store))
    assert f"Times are in {shown}." in text


def test_the_summary_names_every_alert_destination_that_fails(tmp_path: Path) -> None:
    # Two of three destinations failed the last alert: the summary named the first alone, so
    # the household fixed one and thought alerts reached them again.
    failing = Failing(
        SEPTEMBER - 600, 2, "alerts.urls[0] (JSON: failure), alerts.urls[2] (ntfy: failure)"
    )
    with Store.open(tmp_path / "watchbridge.db") as store:
        state = PageState(config_for(tmp_path), store.status(), alerts=Health(3, [], failing))
        html = render(state, SEPTEMBER)
    assert ("alerts", "Alerts do not get through to alerts.urls[0], alerts.urls[2]") in (
        needs_named(html)
    )


def test_dead_letters_listed_by_the_running_page_are_escaped_redacted_and_never_a_500(
    tmp_path: Path,
) -> None:
    # What a dead letter stored is the service's and the sender's words: a show titled
    # `<script>`, a payload an older release wrote without the fields this one reads, a
    # service's error quoting a secret. The page lists them all, as text, and still answers.
    config = config_for(tmp_path)
    script = "<script>alert(1)</script>"
    payloads = [
        {"item": {"kind": "show", "title": script}},
        {"item": {"kind": "episode", "ids": [], "show_ids": "x", "title": {"a": 1}}},
        {"item": "not a dict"},
        {},
    ]
    with Store.open(tmp_path / "watchbridge.db") as store:
        for n, payload in enumerate(payloads):
            store.enqueue([NewOutboxRow("trakt", "me", "play", payload, f"k{n}", f"i{n}")], 9e3)
            (item,) = store.claim("test", 9_000.0, 1, ["trakt"])
            store.mark_dead(item.id, 9_000.0 + n, f"trakt: refused {script} trakt-secret-7731")
    with AppThread(build_app(build_runtime(config))) as app:
        answer = httpx.get(f"{app.url}/", headers={"Authorization": "Bearer api-token-5521"})
    assert answer.status_code == 200, answer.text
    assert "<script>" not in answer.text and "&lt;script&gt;alert(1)" in answer.text
    assert not [s for s in SECRETS if s in answer.text]
    assert answer.text.count("for Trakt (me), given up") == 4, answer.text
