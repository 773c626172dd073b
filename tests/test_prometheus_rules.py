"""The exported alert rules, checked by Prometheus' own promtool: `check rules` accepts them
whatever the columns are called, and `test rules` — with expectations computed by Warden's own
alert evaluation over the same windows — shows both fire and resolve at the same moments."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warden.monitor.alerts import RuleState, State, evaluate
from warden.monitor.rules import expression, number, prometheus_rules, rules_yaml
from warden.policy.loader import compile_spec
from warden.policy.point import CompiledPoint
from warden.policy.schema import DecisionPointSpec

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package 'prometheus'; .ci/run installs it)",
)
ODD = ['odd"col', "back\\slash", "tab\there", "naïve €", "new\nline", "{{ .Value }}"]
INTERVAL = 60  # seconds between window closes, and between Prometheus evaluations


def monitored_point(alerts: list[dict[str, Any]], name: str = "loan") -> CompiledPoint:
    spec = DecisionPointSpec.model_validate(
        {
            "point": name,
            "owner": 'risk "team" <risk@example.com>',
            "input": {
                "type": "object",
                "properties": {column: {"type": "number"} for column in [*ODD, "amount"]},
            },
            "model": {"kind": "proposal"},
            "outcomes": ["approve", "decline"],
            "rules": {},
            "monitoring": {
                "reference": {"first_n": 100},
                "window": {"every": f"{INTERVAL}s"},
                "alerts": alerts,
            },
        }
    )
    return compile_spec(spec, Path(f"/points/{name}.yaml"))


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_thresholds_are_written_exactly() -> None:
    point = monitored_point(
        [
            {"id": "a", "metric": "review_rate", "threshold": 0.1234567},
            {"id": "b", "metric": "volume", "op": "<", "threshold": 1234567.5},
            {"id": "c", "metric": "drift.amount", "threshold": 1e-300},
        ]
    )
    exprs = [r["expr"] for r in prometheus_rules([point])["groups"][0]["rules"]]
    assert exprs[0].endswith("> 0.1234567")
    assert exprs[1].endswith("< 1234567.5")
    assert exprs[2].endswith("> 1e-300")


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False))
def test_numbers_round_trip(value: float) -> None:
    assert float(number(value).replace("+Inf", "inf").replace("-Inf", "-inf")) == value


@needs_promtool
def test_promtool_checks_rules_on_columns_with_any_name(tmp_path: Path) -> None:
    alerts = [
        {"id": f"drift_{i}", "metric": f"drift.{column}", "threshold": 0.1 + i / 7}
        for i, column in enumerate(ODD)
    ]
    alerts.append({"id": "rate", "metric": "review_rate", "threshold": 1 / 3, "for": "90s"})
    (tmp_path / "rules.yml").write_text(rules_yaml([monitored_point(alerts)]))
    checked = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts) + 1} rules found" in checked.stdout


# -- Warden's evaluation as a promtool test ------------------------------------------------------


def near(threshold: float) -> st.SearchStrategy[float]:
    """Values at, just above and just below the threshold (where rounding would flip the
    comparison), and anywhere around it."""
    return st.one_of(
        st.just(threshold),
        st.just(math.nextafter(threshold, math.inf)),
        st.just(math.nextafter(threshold, -math.inf)),
        st.just(threshold * (1 + 1e-7) + 1e-9),
        st.just(threshold * (1 - 1e-7) - 1e-9),
        st.floats(threshold - 10, threshold + 10, allow_nan=False),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[float]]]:
    metrics = draw(
        st.lists(
            st.sampled_from(["review_rate", "drift_share", *(f"drift.{c}" for c in ODD)]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    steps = draw(st.integers(4, 14))
    alerts, series = [], []
    for i, metric in enumerate(metrics):
        threshold = draw(st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: x != 0))
        alerts.append(
            {
                "id": f"rule_{i}",
                "metric": metric,
                "op": draw(st.sampled_from([">", ">=", "<", "<="])),
                "threshold": threshold,
                "for": f"{draw(st.integers(0, 3)) * INTERVAL}s",
                "keep_firing_for": f"{draw(st.integers(0, 3)) * INTERVAL}s",
                "no_data": "ok",
            }
        )
        series.append(draw(st.lists(near(threshold), min_size=steps, max_size=steps)))
    return alerts, series


def series_name(point: str, metric: str) -> str:
    """The input series promtool is fed: the gauge the rule's expression selects."""
    return expression(point, metric)


def promtool_test(point: CompiledPoint, series: list[list[float]]) -> dict[str, Any]:
    """A promtool unit test whose expected alerts are Warden's own evaluation of the windows."""
    assert point.spec.monitoring is not None
    exported = {r["alert"]: r for r in prometheus_rules([point])["groups"][0]["rules"]}
    cases = []
    states = [RuleState() for _ in point.spec.monitoring.alerts]
    for step in range(len(series[0])):
        now = float(step * INTERVAL)
        firing = []
        for rule, state, values in zip(point.spec.monitoring.alerts, states, series, strict=True):
            evaluate(rule, state, values[step], now, lambda: "episode")
            exported_rule = exported[f"warden_{point.name}_{rule.id}"]
            labels = _series_labels(rule.metric, point.name) | exported_rule["labels"]
            if state.state is State.FIRING:
                shown = {
                    key: text.replace('{{ "{{" }}', "{{")
                    for key, text in exported_rule["annotations"].items()
                }
                firing.append((exported_rule["alert"], labels, shown))
        for rule in point.spec.monitoring.alerts:
            name = f"warden_{point.name}_{rule.id}"
            cases.append(
                {
                    "eval_time": f"{int(now)}s",
                    "alertname": name,
                    "exp_alerts": [
                        {"exp_labels": labels, "exp_annotations": annotations}
                        for alert, labels, annotations in firing
                        if alert == name
                    ],
                }
            )
    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": f"{INTERVAL}s",
        "tests": [
            {
                "interval": f"{INTERVAL}s",
                "input_series": [
                    {
                        "series": series_name(point.name, rule.metric),
                        "values": " ".join(number(v) for v in values),
                    }
                    for rule, values in zip(point.spec.monitoring.alerts, series, strict=True)
                ],
                "alert_rule_test": cases,
            }
        ],
    }


def _series_labels(metric: str, point: str) -> dict[str, str]:
    if metric == "drift_share":
        return {"point": point}
    if metric.startswith("drift."):
        return {"point": point, "column": metric.removeprefix("drift.")}
    return {"point": point, "metric": metric}


@needs_promtool
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario=scenarios())
def test_prometheus_fires_exactly_when_warden_does(
    scenario: tuple[list[dict[str, Any]], list[list[float]]], tmp_path: Path
) -> None:
    alerts, series = scenario
    point = monitored_point(alerts)
    (tmp_path / "rules.yml").write_text(rules_yaml([point]))
    (tmp_path / "test.yml").write_text(
        yaml.safe_dump(promtool_test(point, series), sort_keys=False, allow_unicode=True)
    )
    tested = promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_a_threshold_between_rounded_digits_fires_in_both(tmp_path: Path) -> None:
    """The issue's case: 0.1234567 exported as 0.123457 let Warden fire while Prometheus did not."""
    point = monitored_point([{"id": "surge", "metric": "review_rate", "threshold": 0.1234567}])
    series = [[0.1, 0.12345695, 0.12345695, 0.1]]
    test = promtool_test(point, series)
    firing = [bool(case["exp_alerts"]) for case in test["tests"][0]["alert_rule_test"]]
    assert firing == [False, True, True, False]
    (tmp_path / "rules.yml").write_text(rules_yaml([point]))
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    tested = promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_annotations_show_column_names_as_written(tmp_path: Path) -> None:
    """Prometheus expands annotations as templates: a column called `{{ .Value }}` must still
    read as its name, not as the alert's value."""
    column = "{{ .Value }}"
    point = monitored_point([{"id": "odd", "metric": f"drift.{column}", "threshold": 0.25}])
    test = promtool_test(point, [[0.5, 0.5]])
    shown = test["tests"][0]["alert_rule_test"][1]["exp_alerts"][0]["exp_annotations"]
    assert shown["summary"] == f"loan: drift.{column} > 0.25"
    (tmp_path / "rules.yml").write_text(rules_yaml([point]))
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    tested = promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
