"""The Grafana dashboard and the Prometheus alert rules we ship use only what /metrics
serves: each metric name, each label a selector, a grouping or an annotation names, in
expressions that are well formed (no promtool here: names, labels and brackets)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import AppThread, write_config
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime, create_app
from watchbridge.config import load_config
from watchbridge.metrics import Metrics
from watchbridge.store import Store
from watchbridge.wiring import build_app, build_runtime

REPO = Path(__file__).parent.parent
DASHBOARD = REPO / "config" / "grafana" / "dashboards" / "watchbridge.json"
RULES = REPO / "config" / "prometheus-alerts.yml"
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"instance", "job"}
FUNCTIONS = {
    "absent", "abs", "avg", "ceil", "clamp_min", "count", "delta", "floor", "histogram_quantile",
    "increase", "irate", "label_values", "max", "max_over_time", "min", "min_over_time", "rate",
    "round", "scalar", "sort_desc", "sum", "time", "topk", "vector",
}  # fmt: skip
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OPERATORS = {"and", "or", "unless", "bool"}
TOKEN = re.compile(
    r'(?P<string>"(?:[^"\\]|\\.)*")|(?P<range>\[\d+[smhdwy]\])|(?P<number>\d+(?:\.\d+)?)'
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)|(?P<match>=~|!~|!=|==|>=|<=|=)|(?P<punct>[-+*/%<>(){},])"
    r"|(?P<space>\s+)"
)
PAIRS = {")": "(", "}": "{"}


@dataclass
class Uses:
    """What one expression names: metrics, and labels (each with the metric it selects on,
    or None for a grouping, which may name any label of the expression's metrics)."""

    metrics: set[str] = field(default_factory=set)
    labels: list[tuple[str | None, str]] = field(default_factory=list)


def uses(expr: str) -> Uses:
    """The metric and label names `expr` uses; fails on what does not parse as PromQL."""
    expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
    tokens, at = [], 0
    while at < len(expr):
        found = TOKEN.match(expr, at)
        assert found, f"{expr!r}: cannot read {expr[at:]!r}"
        at = found.end()
        if found.lastgroup != "space":
            tokens.append((found.lastgroup, found.group()))
    found_uses, stack, metric = Uses(), [], None
    for i, (kind, text) in enumerate(tokens):
        after = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        before = tokens[i - 1][1] if i else ""
        if text in "({":
            stack.append((text, before))
        elif text in PAIRS:
            assert stack and stack[-1][0] == PAIRS[text], f"{expr!r}: unbalanced {text}"
            stack.pop()
        if kind != "name":
            continue
        inside = stack[-1] if stack else ("", "")
        if inside[0] == "{":
            assert after in ("=", "!=", "=~", "!~"), f"{expr!r}: {text} is no label matcher"
            found_uses.labels.append((metric, text))
        elif inside[0] == "(" and inside[1] in GROUPING:
            found_uses.labels.append((None, text))
        elif text in FUNCTIONS or text in GROUPING:
            # An aggregation may put its grouping first: `sum by (target) (...)`.
            assert after in ("(", "by", "without"), f"{expr!r}: {text} without ("
        elif text not in OPERATORS:
            metric = text
            found_uses.metrics.add(text)
    assert not stack, f"{expr!r}: unclosed {stack[-1][0]}"
    return found_uses


@dataclass(frozen=True)
class Scrape:
    """One answer of /metrics, and the metrics that served it."""

    text: str
    metrics: Metrics


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Scrape:
    """/metrics of a service whose link went through, with sign-ins in each state the
    Sign-ins panel tells apart: `me`'s Trakt one working (it has an expiry), its Serializd
    email and password not tried yet and `you`'s Trakt account not signed in (neither has)."""
    tmp_path = tmp_path_factory.mktemp("monitoring")
    path = write_config(
        tmp_path,
        "services:\n  trakt: {client_id: id}\n  serializd: {}\n"
        "profiles:\n  me:\n    accounts:\n"
        "      trakt: {}\n      serializd: {email: a@example.com, password: pw}\n"
        "  you:\n    accounts: {trakt: {}}\n"
        "links:\n  trakt-serializd: {services: [trakt, serializd]}\n",
    )
    now = time.time()
    with Store.open(tmp_path / "watchbridge.db") as store:
        run = store.start_run("trakt-serializd", 1.0)
        assert run is not None
        store.finish_run(run, 2.0, "ok", {}, 0)
        # A Trakt sign-in as `watchbridge auth trakt` keeps it: the sign-in gauges have series.
        token = {"access_token": "a", "refresh_token": "r", "created_at": now, "expires_in": 86400}
        store.put_token("trakt", "me", token, now)
    config = load_config(path, {})
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    with AppThread(create_app(runtime)) as app:
        return Scrape(httpx.get(f"{app.url}/metrics").text, runtime.metrics)


@pytest.fixture(scope="module")
def served(scraped: Scrape) -> dict[str, set[str]]:
    """Each metric name /metrics serves, with its labels: those of its series, and for a
    labelled counter or gauge with no series yet (nothing counted), those it is declared with."""
    text = scraped.text
    names: dict[str, set[str]] = {}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M):
        suffixes = ("_bucket", "_sum", "_count", "") if kind == "histogram" else ("",)
        names.update({family + suffix: set() for suffix in suffixes})
    for name, labels in re.findall(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? ", text, flags=re.M):
        names.setdefault(name, set()).update(re.findall(r'(\w+)="', labels or ""))
    for wrapper in vars(scraped.metrics).values():
        if isinstance(wrapper, MetricWrapperBase):  # prometheus_client keeps these private
            name = wrapper._name + ("_total" if wrapper._type == "counter" else "")
            for exposed in [n for n in names if n.startswith(name)]:
                names[exposed] |= set(wrapper._labelnames)
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def unknown(expr: str, served: dict[str, set[str]]) -> list[str]:
    used = uses(expr)
    problems = [f"{expr}: no metric {name}" for name in sorted(used.metrics - set(served))]
    labels = TARGET_LABELS.union(*(served.get(name, set()) for name in used.metrics))
    for metric, label in used.labels:
        known = TARGET_LABELS | served.get(metric, set()) if metric else labels
        if label not in known:
            problems.append(f"{expr}: no label {label}" + (f" on {metric}" if metric else ""))
    return problems


def test_the_dashboard_uses_only_metrics_and_labels_the_service_serves(
    served: dict[str, set[str]],
) -> None:
    exprs = dashboard_exprs()
    assert exprs
    assert [p for expr in exprs for p in unknown(expr, served)] == []
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
            assert query, variable["definition"]
            metric, label = query.groups()
            assert label in TARGET_LABELS | served[metric], variable["definition"]


def test_the_alert_rules_use_only_metrics_and_labels_the_service_serves(
    served: dict[str, set[str]],
) -> None:
    problems = []
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
        assert re.fullmatch(r"\d+[smhd]", rule.get("for", "0s")), rule
        problems += unknown(rule["expr"], served)
        # An annotation's {{ $labels.X }} is empty unless the expression's series have X.
        used = uses(rule["expr"])
        grouped = {label for metric, label in used.labels if metric is None}
        labels = grouped or TARGET_LABELS.union(*(served[name] for name in used.metrics))
        for text in rule.get("annotations", {}).values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                if label not in labels:
                    problems.append(f"{rule['alert']}: its annotation names {label}")
    assert problems == []


def test_the_alert_rules_cover_what_a_user_must_act_on() -> None:
    used = set().union(*(uses(rule["expr"]).metrics for rule in rules()))
    assert {
        "watchbridge_build_info",
        "watchbridge_target_held",
        "watchbridge_profile_held",
        "watchbridge_outbox_oldest_pending_age_seconds",
        "watchbridge_dead_letters",
        "watchbridge_sign_in_ok",
        "watchbridge_sync_last_success_timestamp_seconds",
        "watchbridge_sync_runs_total",  # a link that never went through has no last success
        "watchbridge_alerts_owed",
    } <= used


def test_the_dashboard_shows_the_holds_a_user_must_act_on(served: dict[str, set[str]]) -> None:
    # A target held as a whole, one profile's deliveries held (its sign-in, its limits), and
    # deliveries waiting for a sign-in or for a media server's own key (no sign-in helps
    # those): each by the labels that say which, series a fresh start serves (at 0 while
    # none is).
    used = [uses(expr) for expr in dashboard_exprs()]
    for metric, labels in (
        ("watchbridge_target_held", {"target"}),
        ("watchbridge_profile_held", {"target", "profile"}),
        ("watchbridge_outbox_waiting_for_sign_in", {"target"}),
        ("watchbridge_outbox_waiting_for_server_key", {"target"}),
    ):
        assert labels <= served[metric]
        grouped = [{label for _, label in u.labels} for u in used if metric in u.metrics]
        assert any(labels <= names for names in grouped), metric


def test_the_checks_catch_a_name_or_label_the_service_does_not_serve(
    served: dict[str, set[str]],
) -> None:
    assert unknown('sum(watchbridge_dead_letter{target="trakt"})', served)
    assert unknown('sum(watchbridge_dead_letters{service="trakt"})', served)
    assert unknown("sum by (profile) (watchbridge_dead_letters)", served)
    assert unknown("watchbridge_dead_letters > 0", served) == []
    with pytest.raises(AssertionError):
        uses("sum(rate(watchbridge_webhook_events_total[5m])")


def test_prometheus_loads_the_alert_rules_compose_mounts() -> None:
    prometheus = yaml.safe_load((REPO / "config" / "prometheus.yml").read_text(encoding="utf-8"))
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = compose["services"]["prometheus"]["volumes"]
    for rule_file in prometheus["rule_files"]:
        assert f"./config/{RULES.name}:{rule_file}:ro" in mounts


def test_refusal_counters_start_at_zero_so_the_first_refused_webhook_raises_the_alert(
    tmp_path: Path,
) -> None:
    # WatchbridgeWebhooksRefused is `increase(...) > 0`: a series that first appears at 1
    # shows Prometheus no increase, so the one refused webhook of a wrong secret alerted no
    # one. Each source's refusal series must be served at 0 before any webhook comes.
    path = write_config(tmp_path)  # its webhook secret is generated: not "wrong-secret"
    with AppThread(build_app(build_runtime(load_config(path, {})))) as app:
        before = events_served(httpx.get(f"{app.url}/metrics").text)
        refused = httpx.post(f"{app.url}/webhooks/jellyfin/wrong-secret", content=b"{}")
        after = events_served(httpx.get(f"{app.url}/metrics").text)
    assert refused.status_code == 401
    outcomes = {"unauthorized", "malformed", "stalled", "too_large", "store_error"}
    outcomes.add("internal_error")
    for source in ("plex", "jellyfin", "emby", "tautulli", "generic"):
        for outcome in outcomes:
            assert before.get((source, outcome)) == 0, (source, outcome)
    assert after[("jellyfin", "unauthorized")] == 1
    # Only the refusals the rule selects: no series for outcomes nothing has answered yet.
    assert before.keys() == {(s, o) for s, o in before if o in outcomes}


def events_served(text: str) -> dict[tuple[str, str], float]:
    """watchbridge_webhook_events_total's samples, by source and outcome, as Prometheus reads
    them."""
    return {
        (sample.labels["source"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "watchbridge_webhook_events"
        for sample in family.samples
    }


Sample = tuple[dict[str, str], float]  # a series' labels (its name under __name__), its value
COMPARE = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
    "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b,
}  # fmt: skip


def scraped_samples(text: str) -> list[Sample]:
    """The samples of one scrape as Prometheus stores them, with the target labels it adds."""
    return [
        ({"__name__": s.name, **s.labels, "instance": "host:8765", "job": "watchbridge"}, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def evaluate(expr: str, samples: list[Sample]) -> list[Sample]:
    """What an instant query of `expr` returns over `samples`, for the forms a panel that sets
    series apart uses: selectors, a comparison with a number, and `and`, `unless` and `or`
    matched `on` labels, taken left to right (parentheses say otherwise)."""
    expr = expr.replace("$instance", ".*")
    tokens = [m.group() for m in TOKEN.finditer(expr) if m.lastgroup != "space"]
    assert "".join(tokens) == re.sub(r"\s", "", expr), expr
    at = 0

    def take(expected: str | None = None) -> str:
        nonlocal at
        token, at = tokens[at], at + 1
        assert expected in (None, token), f"{expr!r}: {token} where {expected} belongs"
        return token

    def term() -> list[Sample]:
        if tokens[at] == "(":
            take("(")
            found = combined()
            take(")")
        else:
            matchers = [("__name__", "=", take())]
            if at < len(tokens) and tokens[at] == "{":
                take("{")
                while tokens[at] != "}":
                    matchers.append((take(), take(), json.loads(take())))
                    if tokens[at] == ",":
                        take(",")
                take("}")
            found = [s for s in samples if all(matches(s[0], *m) for m in matchers)]
        if at < len(tokens) and tokens[at] in COMPARE:
            compare, number = COMPARE[take()], float(take())
            found = [s for s in found if compare(s[1], number)]
        return found

    def combined() -> list[Sample]:
        left = term()
        while at < len(tokens) and tokens[at] in ("and", "unless", "or"):
            operator = take()
            take("on")
            take("(")
            on = []
            while tokens[at] != ")":
                on.append(take())
                if tokens[at] == ",":
                    take(",")
            take(")")
            right = term()
            keys = {key_on(labels, on) for labels, _ in right}
            if operator == "and":
                left = [s for s in left if key_on(s[0], on) in keys]
            elif operator == "unless":
                left = [s for s in left if key_on(s[0], on) not in keys]
            else:
                kept = {key_on(labels, on) for labels, _ in left}
                left = left + [s for s in right if key_on(s[0], on) not in kept]
        return left

    found = combined()
    assert at == len(tokens), f"{expr!r}: cannot read past {tokens[at]!r}"
    return found


def key_on(labels: dict[str, str], on: list[str]) -> tuple[str, ...]:
    return tuple(labels.get(name, "") for name in on)


def matches(labels: dict[str, str], name: str, operator: str, value: str) -> bool:
    got = labels.get(name, "")
    if operator in ("=~", "!~"):
        return (re.fullmatch(value, got) is not None) == (operator == "=~")
    return (got == value) == (operator == "=")


def shown_red(panel: dict[str, Any], ref_id: str, value: float) -> bool:
    """Whether the stat panel colours a value of its query `ref_id` red: its query's override
    (a fixed colour, or a value mapping's colour) or else the panel's fixed colour."""
    color = panel["fieldConfig"]["defaults"]["color"]["fixedColor"]
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"] == {"id": "byFrameRefID", "options": ref_id}:
            for prop in override["properties"]:
                if prop["id"] == "color":
                    color = prop["value"]["fixedColor"]
                elif prop["id"] == "mappings":
                    for mapping in prop["value"]:
                        color = mapping["options"].get(f"{value:g}", {}).get("color", color)
    return bool(color == "red")


def test_the_sign_ins_panel_shows_each_sign_in_once_and_in_red_each_that_needs_you(
    scraped: Scrape,
) -> None:
    # A profile not signed in, a login refused, a Plex token refused: `sign_in_ok` 0 and no
    # expiry. Shown only where an expiry is, they were left off the panel: no red at all.
    samples = scraped_samples(scraped.text)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panel = next(p for p in dashboard["panels"] if p["title"] == "Sign-ins")
    works = {
        (labels["service"], labels["profile"]): value == 1
        for labels, value in evaluate("watchbridge_sign_in_ok", samples)
    }
    expiring = {(labels["service"], labels["profile"]) for labels, _ in evaluate(
        "watchbridge_sign_in_expiry_seconds", samples
    )}  # fmt: skip
    assert works == {("trakt", "me"): True, ("serializd", "me"): True, ("trakt", "you"): False}
    assert expiring == {("trakt", "me")}
    shown = [
        ((labels["service"], labels["profile"]), shown_red(panel, target["refId"], value))
        for target in panel["targets"]
        for labels, value in evaluate(target["expr"], samples)
    ]
    assert sorted(shown) == sorted((sign_in, not ok) for sign_in, ok in works.items())


def test_the_evaluation_reads_the_panel_queries_as_prometheus_does(scraped: Scrape) -> None:
    samples = scraped_samples(scraped.text)
    ok = 'watchbridge_sign_in_ok{instance=~"$instance"}'
    expiry = "watchbridge_sign_in_expiry_seconds"
    on = "on (instance, service, profile)"
    assert len(evaluate(ok, samples)) == 3
    assert [s[0]["profile"] for s in evaluate(f"{ok} == 0", samples)] == ["you"]
    assert len(evaluate(f"{ok} and {on} {expiry}", samples)) == 1
    assert len(evaluate(f"{ok} unless {on} {expiry}", samples)) == 2
    assert len(evaluate(f"{expiry} or {on} ({ok} == 0)", samples)) == 2
    assert evaluate('watchbridge_sign_in_ok{service="anilist"}', samples) == []
