"""The Grafana dashboard and the Prometheus alert rules we ship use only what /metrics
serves: each metric name, each label a selector, a grouping or an annotation names, in
expressions that are well formed (no promtool here: names, labels and brackets)."""

from __future__ import annotations

import json
import re
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


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Each metric name /metrics serves, with its labels: those of its series, and for a
    labelled counter or gauge with no series yet (nothing counted), those it is declared with."""
    tmp_path = tmp_path_factory.mktemp("monitoring")
    path = write_config(
        tmp_path,
        "services:\n  trakt: {client_id: id}\n  serializd: {}\n"
        "profiles:\n  me:\n    accounts:\n"
        "      trakt: {}\n      serializd: {email: a@example.com, password: pw}\n"
        "links:\n  trakt-serializd: {services: [trakt, serializd]}\n",
    )
    with Store.open(tmp_path / "watchbridge.db") as store:
        run = store.start_run("trakt-serializd", 1.0)
        assert run is not None
        store.finish_run(run, 2.0, "ok", {}, 0)
        # A Trakt sign-in as `watchbridge auth trakt` keeps it: the sign-in gauges have series.
        token = {"access_token": "a", "refresh_token": "r", "created_at": 1.0, "expires_in": 1}
        store.put_token("trakt", "me", token, 1.0)
    config = load_config(path, {})
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    with AppThread(create_app(runtime)) as app:
        text = httpx.get(f"{app.url}/metrics").text
    names: dict[str, set[str]] = {}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M):
        suffixes = ("_bucket", "_sum", "_count", "") if kind == "histogram" else ("",)
        names.update({family + suffix: set() for suffix in suffixes})
    for name, labels in re.findall(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? ", text, flags=re.M):
        names.setdefault(name, set()).update(re.findall(r'(\w+)="', labels or ""))
    for wrapper in vars(runtime.metrics).values():
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
        "watchbridge_alerts_owed",
    } <= used


def test_the_dashboard_shows_the_holds_a_user_must_act_on(served: dict[str, set[str]]) -> None:
    # A target held as a whole, and one profile's deliveries held (its sign-in, its limits):
    # each by the labels that say which, series a fresh start serves (at 0 while none is).
    used = [uses(expr) for expr in dashboard_exprs()]
    for metric, labels in (
        ("watchbridge_target_held", {"target"}),
        ("watchbridge_profile_held", {"target", "profile"}),
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
