"""`warden report`: one self-contained HTML file about a decision point over a period.

For owners and auditors: who owns the point, which policy and model versions decided, volumes
and routes, how often reviewers overrode the model, realised performance, drift, and every alert
and protective action. Styles and charts are inline, so the file opens offline and can be filed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

import sqlalchemy as sa

import warden
from warden.monitor import charts, store
from warden.monitor.health import accuracy_by_model, window_json
from warden.monitor.windows import Outcome, accuracy, calibration_error
from warden.policy.point import CompiledPoint
from warden.readable import moment, number
from warden.store.queries import aware
from warden.store.schema import decisions, events, monitor_alerts

PAGE = 5000
ACTION_EVENTS = (
    "kill_switch.engaged",
    "kill_switch.released",
    "protection.engaged",
    "protection.released",
    "policy.loaded",
)

Progress = Callable[[int, int], None]


@dataclass
class Period:
    """What the decisions of the period add up to; filled page by page."""

    total: int = 0
    routes: Counter[str] = field(default_factory=Counter)
    days: dict[str, Counter[str]] = field(default_factory=dict)
    policy_versions: Counter[str] = field(default_factory=Counter)
    model_versions: Counter[str] = field(default_factory=Counter)
    reviewed: int = 0
    overridden: int = 0
    pending: int = 0
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None

    def add(self, row: Any) -> None:
        self.total += 1
        self.routes[row.route] += 1
        created = aware(row.created_at)
        assert created is not None
        self.first = created if self.first is None else min(self.first, created)
        self.last = created if self.last is None else max(self.last, created)
        self.days.setdefault(created.date().isoformat(), Counter())[row.route] += 1
        self.policy_versions[row.policy_version] += 1
        self.model_versions[str(row.model_version)] += 1
        if row.route == "review":
            if row.status == "pending":
                self.pending += 1
            elif row.proposed_outcome is not None:
                self.reviewed += 1
                self.overridden += row.outcome != row.proposed_outcome
        if row.ground_truth is not None and row.proposed_outcome is not None:
            self.outcomes.setdefault(str(row.model_version), []).append(
                Outcome(row.model_version, row.ground_truth == row.proposed_outcome, row.confidence)
            )


def read_period(
    db: sa.Engine, point: str, since: datetime, until: datetime, progress: Progress | None = None
) -> Period:
    """Every decision of the period, read in pages by id so memory stays flat."""
    period = Period()
    columns = (
        decisions.c.id,
        decisions.c.created_at,
        decisions.c.route,
        decisions.c.status,
        decisions.c.outcome,
        decisions.c.proposed_outcome,
        decisions.c.confidence,
        decisions.c.policy_version,
        decisions.c.model_version,
        decisions.c.ground_truth,
    )
    where = (
        decisions.c.point == point,
        decisions.c.created_at >= since,
        decisions.c.created_at < until,
    )
    with db.connect() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one())
        cursor = ""
        while True:
            rows = conn.execute(
                sa.select(*columns)
                .where(*where, decisions.c.id > cursor)
                .order_by(decisions.c.id)
                .limit(PAGE)
            ).all()
            for row in rows:
                period.add(row)
            if progress is not None:
                progress(period.total, total)
            if len(rows) < PAGE:
                return period
            cursor = rows[-1].id


def render(
    db: sa.Engine,
    compiled: CompiledPoint,
    *,
    since: datetime,
    until: datetime | None = None,
    progress: Progress | None = None,
) -> str:
    """The report as one HTML string."""
    until = until or datetime.now(UTC)
    point = compiled.name
    period = read_period(db, point, since, until, progress)
    with db.connect() as conn:
        windows = store.windows(conn, point, since=since, limit=10_000)
        alerts = list(
            conn.execute(
                sa.select(monitor_alerts)
                .where(monitor_alerts.c.point == point, monitor_alerts.c.started_at >= since)
                .order_by(monitor_alerts.c.id)
            )
        )
        actions = list(
            conn.execute(
                sa.select(events.c.seq, events.c.type, events.c.actor, events.c.ts, events.c.body)
                .where(
                    events.c.point == point,
                    events.c.type.in_(ACTION_EVENTS),
                    events.c.ts >= since,
                    events.c.ts < until,
                )
                .order_by(events.c.seq)
            )
        )
        reference = store.latest_profile(conn, point)
    health = {
        "windows": [window_json(w) for w in windows],
        "reference": {"columns": (reference or {}).get("columns", {})},
    }
    drawn = charts.health_charts(health)
    days = sorted(period.days)
    daily = charts.stacked_bars(
        days,
        {r: [float(period.days[d].get(r, 0)) for d in days] for r in charts.ROUTE_COLORS},
        title="Decisions per day, by route",
    )
    sections = [
        _summary(compiled, period, since, until),
        _section("Volumes and routes", _routes_table(period) + daily + drawn["volume"]),
        _section("Human review", _review(period) + drawn["rates"]),
        _section("Realised performance", _performance(period, windows) + drawn["accuracy"]),
        _section("Drift", _drift(windows, reference) + drawn["drift"] + drawn["confidence"]),
        _section("Alerts and protective actions", _alerts(alerts) + _actions(actions)),
    ]
    return _page(f"Warden report: {point}", "".join(sections))


def _summary(compiled: CompiledPoint, period: Period, since: datetime, until: datetime) -> str:
    spec = compiled.spec
    rows = [
        ("Decision point", compiled.name),
        ("Owner", spec.owner),
        ("Description", spec.description or ""),
        ("Period", f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"),
        ("Decisions", f"{period.total:,}"),
        ("Policy versions", _versions(period.policy_versions, short=True)),
        ("Model versions", _versions(period.model_versions)),
        ("Current policy version", compiled.version),
    ]
    return "<header>" + _kv(rows) + "</header>"


def _versions(counts: Counter[str], *, short: bool = False) -> str:
    if not counts:
        return "none"
    return ", ".join(
        f"{(v[:12] if short else v)} ({n:,} decisions)" for v, n in counts.most_common()
    )


def _routes_table(period: Period) -> str:
    rows = [
        [route, f"{period.routes[route]:,}", _pct(period.routes[route], period.total)]
        for route in charts.ROUTE_COLORS
    ]
    return _table(["route", "decisions", "share"], rows)


def _review(period: Period) -> str:
    rows = [
        ("Reviewed and final", f"{period.reviewed:,}"),
        ("Overridden (final outcome differs from the model's)", f"{period.overridden:,}"),
        ("Override rate", _pct(period.overridden, period.reviewed)),
        ("Still waiting for a person", f"{period.pending:,}"),
    ]
    return _kv(rows)


def _performance(period: Period, windows: list[Any]) -> str:
    if not period.outcomes:
        return "<p>No ground truth arrived for decisions of this period.</p>"
    rows = [
        [
            version,
            f"{len(items):,}",
            _num(accuracy(items)),
            _num(calibration_error(items)),
        ]
        for version, items in sorted(period.outcomes.items())
    ]
    note = "<p>Accuracy: the model's proposal equals the ground truth. Calibration error: "
    note += "expected calibration error over ten confidence bins (0 is perfectly calibrated).</p>"
    by_window = accuracy_by_model(windows)
    extra = (
        f"<p>Monitor windows saw outcomes for {sum(v['outcomes'] or 0 for v in by_window.values()):,}"
        " decisions in the period.</p>"
        if by_window
        else ""
    )
    return (
        _table(["model version", "outcomes", "accuracy", "calibration error"], rows) + note + extra
    )


def _drift(windows: list[Any], reference: dict[str, Any] | None) -> str:
    if reference is None:
        intro = "<p>No reference profile: drift is not tested for this point.</p>"
    else:
        notes = "".join(f"<li>{escape(n)}</li>" for n in reference.get("notes", []))
        intro = (
            f"<p>Reference {escape(str(reference.get('fingerprint', ''))[:12])}, "
            f"{reference.get('rows', 0):,} rows.</p>" + (f"<ul>{notes}</ul>" if notes else "")
        )
    if not windows:
        return intro + "<p>No monitoring window closed in this period.</p>"
    drifted = [w for w in windows if any(c["drifted"] for c in w.drift.get("columns", []))]
    latest = windows[-1]
    rows = [
        [
            c["column"],
            c["test"],
            _num(c["score"]),
            _num(c["pvalue"]),
            _num(c["threshold"]),
            "yes" if c["drifted"] else "no",
        ]
        for c in latest.drift.get("columns", [])
    ]
    return (
        intro
        + f"<p>{len(windows):,} windows closed; {len(drifted):,} with at least one drifted column."
        f" Latest window (closed {escape(moment(aware(latest.closed_at)))}):</p>"
        + _table(["column", "test", "score", "p-value", "threshold", "drifted"], rows)
    )


def _alerts(alerts: list[Any]) -> str:
    if not alerts:
        return "<p>No alert in this period.</p>"
    rows = [
        [
            a.rule,
            a.severity,
            a.state,
            f"{a.metric} {a.op} {_num(a.threshold)}",
            _num(a.value),
            a.action,
            _when(aware(a.started_at)),
            _when(aware(a.fired_at)),
            f"{_when(aware(a.resolved_at))} {a.resolved_by or ''}".strip(),
        ]
        for a in alerts
    ]
    return _table(
        [
            "rule",
            "severity",
            "state",
            "condition",
            "value",
            "action",
            "started",
            "fired",
            "resolved",
        ],
        rows,
    )


def _actions(rows: list[Any]) -> str:
    if not rows:
        return "<p>No kill switch, protection or policy change in this period.</p>"
    import orjson

    table = []
    for row in rows:
        payload = orjson.loads(row.body).get("payload", {})
        detail = payload.get("reason") or payload.get("version", "")
        table.append([f"{row.seq:,}", _when(aware(row.ts)), row.type, row.actor, str(detail)])
    return "<h3>Actions in the ledger</h3>" + _table(
        ["event", "time", "type", "actor", "reason / version"], table
    )


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _num(value: Any) -> str:
    return "-" if value is None else number(value)


def _when(value: datetime | None) -> str:
    """To the second, in UTC: `2026-11-30 02:46:32 UTC`, not `02:46:32.607425+00:00`."""
    return "" if value is None else moment(value)


def _kv(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{body}</section>"


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;color:#212529;max-width:980px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #dee2e6;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{padding:.25em .7em;text-align:left;
border-bottom:1px solid #f1f3f5;vertical-align:top}table.kv th{color:#495057;font-weight:600}
svg{display:block;margin:.8em 0;max-width:100%;height:auto}footer{color:#868e96;margin-top:3em}
"""


def _page(title: str, body: str) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>{body}"
        f"<footer>Generated {generated} by Warden {escape(warden.__version__)} from the "
        "decision records and the ledger.</footer></body></html>"
    )


def since_ago(text: str, now: datetime | None = None) -> datetime:
    """`30d`, `12h` or an ISO date: the start of the report's period."""
    from warden.policy.durations import parse_duration

    now = now or datetime.now(UTC)
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since '{text}' is neither a duration (30d, 12h) nor a date (2026-01-31)"
        ) from None
    return start if start.tzinfo else start.replace(tzinfo=UTC)
