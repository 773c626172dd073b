"""Charts as inline SVG strings, drawn on the server: no JavaScript, no CDN, fine offline.

The console and the HTML report embed them as they are. Every label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

ROUTE_COLORS = {
    "auto": "#2b8a3e",
    "review": "#1c7ed6",
    "fallback": "#e8590c",
    "refused": "#868e96",
}
PALETTE = ("#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#f08c00", "#0b7285", "#c92a2a")
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _frame(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _legend(names: Sequence[str], colors: Sequence[str], x: int, y: int) -> list[str]:
    out = []
    for i, (name, color) in enumerate(zip(names, colors, strict=False)):
        left = x + i * 110
        out.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{left + 14}" y="{y}" {FONT}>{escape(name)}</text>')
    return out


def stacked_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    width: int = 640,
    height: int = 220,
    colors: Mapping[str, str] = ROUTE_COLORS,
) -> str:
    """Counts per label, stacked by series (e.g. decisions per window, by route)."""
    left, top, bottom = 44, 24, 30
    plot_w, plot_h = width - left - 10, height - top - bottom
    totals = [sum(series[name][i] for name in series) for i in range(len(labels))]
    peak = max(totals, default=0) or 1
    body = [_axis(left, top, plot_w, plot_h, 0.0, float(peak), integer=True)]
    step = plot_w / max(len(labels), 1)
    for i in range(len(labels)):
        y = float(top + plot_h)
        for name, values in series.items():
            h = values[i] / peak * plot_h
            if h > 0:
                y -= h
                color = colors.get(name, "#999")
                body.append(
                    f'<rect x="{left + i * step + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
                    f'height="{h:.1f}" fill="{color}"><title>{escape(labels[i])} {escape(name)}: '
                    f"{values[i]:g}</title></rect>"
                )
    body += _x_labels(labels, left, step, top + plot_h + 14)
    body += _legend(list(series), [colors.get(n, "#999") for n in series], left, 14)
    return _frame(width, height, body, title)


def line_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    width: int = 640,
    height: int = 220,
    low: float | None = 0.0,
    high: float | None = None,
    guides: Mapping[str, float] | None = None,
) -> str:
    """Lines over labels; gaps where a value is missing; dashed `guides` (thresholds, reference)."""
    left, top, bottom = 44, 24, 30
    plot_w, plot_h = width - left - 10, height - top - bottom
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    values += list((guides or {}).values())
    lo = low if low is not None else min(values, default=0.0)
    hi = high if high is not None else max(values, default=1.0)
    if hi <= lo:
        hi = lo + 1.0
    body = [_axis(left, top, plot_w, plot_h, lo, hi)]
    step = plot_w / max(len(labels) - 1, 1)

    def y_of(v: float) -> float:
        return top + plot_h - (min(max(v, lo), hi) - lo) / (hi - lo) * plot_h

    for (name, value), color in zip((guides or {}).items(), PALETTE[::-1], strict=False):
        y = y_of(value)
        body.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}" '
            f'stroke-dasharray="4 3"/><text x="{left + plot_w - 4}" y="{y - 3:.1f}" '
            f'text-anchor="end" {FONT} fill="{color}">{escape(name)}</text>'
        )
    for (name, points), color in zip(series.items(), PALETTE, strict=False):
        path: list[str] = []
        for i, v in enumerate(points):
            if v is None or not math.isfinite(v):
                path.append("")
                continue
            x = left + i * step
            command = "L" if path and path[-1] else "M"
            path.append(f"{command}{x:.1f},{y_of(v):.1f}")
            body.append(
                f'<circle cx="{x:.1f}" cy="{y_of(v):.1f}" r="2" fill="{color}">'
                f"<title>{escape(labels[i])} {escape(name)}: {v:.4g}</title></circle>"
            )
        d = " ".join(p for p in path if p)
        if d:
            body.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    body += _x_labels(labels, left - step / 2, step, top + plot_h + 14)
    body += _legend(list(series), PALETTE, left, 14)
    return _frame(width, height, body, title)


def heatmap(
    rows: Sequence[str],
    columns: Sequence[str],
    values: Sequence[Sequence[float | None]],
    flagged: Sequence[Sequence[bool]],
    *,
    title: str,
    width: int = 640,
) -> str:
    """Drift per feature (rows) over windows (columns): darker is more drift relative to the
    threshold, a black outline marks a drifted cell, grey means not tested."""
    left, top = 120, 10
    cell_h = 18
    plot_w = width - left - 10
    cell_w = plot_w / max(len(columns), 1)
    height = top + cell_h * len(rows) + 30
    body = []
    for r, name in enumerate(rows):
        y = top + r * cell_h
        body.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" {FONT}>{escape(name)}</text>'
        )
        for c in range(len(columns)):
            value = values[r][c]
            if value is None:
                fill = "#e9ecef"
            else:
                strength = min(max(value, 0.0), 2.0) / 2.0
                fill = _blend("#fff5f5", "#c92a2a", strength)
            stroke = ' stroke="#000" stroke-width="1.5"' if flagged[r][c] else ""
            shown = "not tested" if value is None else f"{value:.3g} x threshold"
            body.append(
                f'<rect x="{left + c * cell_w:.1f}" y="{y}" width="{max(cell_w - 1, 1):.1f}" '
                f'height="{cell_h - 2}" fill="{fill}"{stroke}><title>{escape(name)}, '
                f"{escape(columns[c])}: {shown}</title></rect>"
            )
    body += _x_labels(columns, left, cell_w, top + cell_h * len(rows) + 14)
    return _frame(width, height, body, title)


def _axis(
    left: int, top: int, w: float, h: float, lo: float, hi: float, *, integer: bool = False
) -> str:
    parts = [
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + h}" stroke="#adb5bd"/>',
        f'<line x1="{left}" x2="{left + w}" y1="{top + h}" y2="{top + h}" stroke="#adb5bd"/>',
    ]
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        y = top + h - h * i / 4
        label = f"{v:.0f}" if integer else f"{v:.3g}"
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" {FONT}>{label}</text>'
            f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#f1f3f5"/>'
        )
    return "".join(parts)


def _x_labels(labels: Sequence[str], left: float, step: float, y: float) -> list[str]:
    widest = max((len(label) for label in labels), default=1) * 6.5 + 8  # px at 11px type
    every = max(1, math.ceil(widest / max(step, 1.0)))
    return [
        f'<text x="{left + i * step + step / 2:.1f}" y="{y:.1f}" text-anchor="middle" {FONT}>'
        f"{escape(label)}</text>"
        for i, label in enumerate(labels)
        if i % every == 0
    ]


def _blend(a: str, b: str, t: float) -> str:
    ca = [int(a[i : i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb, strict=True))


def health_charts(health: Mapping[str, Any]) -> dict[str, str]:
    """The point-health charts from `monitor.health.point_health`, keyed by name.

    For the console: `volume` (decisions per window by route), `rates` (review, fallback,
    override and model-error rates), `confidence` (mean confidence per window against the
    reference), `accuracy` (realised accuracy when ground truth arrived) and `drift` (heat map).
    """
    windows = list(health.get("windows") or [])
    labels = [_short(w["closed_at"]) for w in windows]
    routes = ("auto", "review", "fallback", "refused")
    charts = {
        "volume": stacked_bars(
            labels,
            {r: [float(w["routes"].get(r, 0)) for w in windows] for r in routes},
            title="Decisions per window, by route",
            width=480,
        ),
        "rates": line_chart(
            labels,
            {
                name: [w["metrics"].get(key) for w in windows]
                for name, key in (
                    ("review", "review_rate"),
                    ("fallback", "fallback_rate"),
                    ("override", "override_rate"),
                    ("model errors", "error_rate"),
                )
            },
            title="Rates per window",
            high=1.0,
            width=480,
        ),
    }
    reference = health.get("reference") or {}
    ref_conf = (reference.get("columns") or {}).get("confidence", {})
    guides = {"reference mean": ref_conf["mean"]} if ref_conf.get("mean") is not None else {}
    charts["confidence"] = line_chart(
        labels,
        {"mean confidence": [w["metrics"].get("confidence_mean") for w in windows]},
        title="Confidence against the reference",
        high=1.0,
        guides=guides,
        width=480,
    )
    charts["accuracy"] = line_chart(
        labels,
        {"realised accuracy": [w["metrics"].get("accuracy") for w in windows]},
        title="Realised accuracy (ground truth received per window)",
        high=1.0,
        width=480,
    )
    columns = sorted({c["column"] for w in windows for c in w["drift"]["columns"]})
    cells = [
        [
            next(
                (_relative(c) for c in w["drift"]["columns"] if c["column"] == name),
                None,
            )
            for w in windows
        ]
        for name in columns
    ]
    flags = [
        [any(c["column"] == name and c["drifted"] for c in w["drift"]["columns"]) for w in windows]
        for name in columns
    ]
    charts["drift"] = heatmap(
        columns, labels, cells, flags, title="Drift per feature over windows", width=960
    )
    return charts


def _relative(column: Mapping[str, object]) -> float | None:
    """A column's drift as a multiple of its threshold (p-value tests: alpha over p)."""
    score, threshold, pvalue = column.get("score"), column.get("threshold"), column.get("pvalue")
    if column.get("by_pvalue") and isinstance(pvalue, float):
        return float(threshold) / max(pvalue, 1e-12) if isinstance(threshold, float) else None
    if isinstance(score, float | int) and isinstance(threshold, float | int) and threshold:
        return float(score) / float(threshold)
    return None


def _short(stamp: object) -> str:
    """`HH:MM` of an ISO time (UTC); the page or report says which day."""
    text = str(stamp or "")
    return text[11:16] if len(text) >= 16 else text
