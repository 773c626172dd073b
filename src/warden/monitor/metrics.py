"""Prometheus metrics, named by the Prometheus guide, with low-cardinality labels only.

Labels are the decision point, route, model version, failure code, column and metric name —
all bounded by the point files — never a decision id or an input value.

With `warden serve --workers N` every worker writes its samples to PROMETHEUS_MULTIPROC_DIR and
a scrape of any worker merges them (prometheus-client's multi-process mode); review queue figures
come from the database at scrape time, so they are the same whichever worker answers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from warden.store.queries import aware
from warden.store.schema import decisions

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}

REGISTRY = CollectorRegistry(auto_describe=True)

DECISIONS = Counter(
    "warden_decisions",
    "Governed decisions, by decision point, route and model version.",
    ["point", "route", "model_version"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "warden_decision_duration_seconds",
    "Time from receiving a decision to its durable record, in seconds.",
    ["point"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
MODEL_ERRORS = Counter(
    "warden_model_errors",
    "Model calls that ended in a failure, by failure code.",
    ["point", "code"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "warden_breaker_state",
    "Circuit breaker state of the point's model: 0 closed, 1 half-open, 2 open (worst worker).",
    ["point"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
OVERRIDES = Counter(
    "warden_overrides",
    "Reviewed decisions whose final outcome differs from the model's proposal.",
    ["point"],
    registry=REGISTRY,
)
DRIFT_SCORE = Gauge(
    "warden_drift_score",
    "Drift score of a monitored column in the latest closed window.",
    ["point", "column"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
DRIFT_SHARE = Gauge(
    "warden_drift_share",
    "Share of monitored columns that drifted in the latest closed window.",
    ["point"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
WINDOW_VALUE = Gauge(
    "warden_monitor_value",
    "A monitored metric of the latest closed window (the value alert rules compare).",
    ["point", "metric"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
ALERTS_ACTIVE = Gauge(
    "warden_alerts_active",
    "Alerts currently pending, firing or without data.",
    ["point", "state", "severity"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
WINDOW_CLOSED = Gauge(
    "warden_window_closed_timestamp_seconds",
    "When the point's latest monitoring window closed (Unix time).",
    ["point"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
TIGHTENED = Gauge(
    "warden_point_tightened",
    "1 while a firing alert routes every decision of the point to review.",
    ["point"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)

SHADOW_DROPPED = Counter(
    "warden_shadow_results_dropped",
    "Shadow results dropped because the shadow backlog was full (never a decision).",
    registry=REGISTRY,
)
WRITES_REFUSED = Counter(
    "warden_writes_refused",
    "Changes refused before they were written: the write queue was full, the database "
    "unreachable, or the caller gave up while its change still queued.",
    ["reason"],
    registry=REGISTRY,
)
BATCH_FALLBACKS = Counter(
    "warden_model_batch_fallbacks",
    "Vectorised model calls that raised, so the batch was answered row by row instead.",
    ["model_version"],
    registry=REGISTRY,
)
LEDGER_LOCK_HOLD = Histogram(
    "warden_ledger_lock_hold_seconds",
    "How long each commit held the ledger head lock: from the head row read under the lock "
    "to COMMIT done (the WAL flush included); on PostgreSQL measured on the database's clock, "
    "so neither the network nor the writer's wait for its interpreter counts. Every other "
    "writer waits this long.",
    buckets=(
        0.0001,
        0.0002,
        0.0003,
        0.0005,
        0.00075,
        0.001,
        0.0015,
        0.002,
        0.003,
        0.005,
        0.0075,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        1.0,
    ),
    registry=REGISTRY,
)
WRITER_SECONDS = Counter(
    "warden_writer_seconds",
    "Where the writer thread's time goes, per phase: idle (waiting for a first change), "
    "gather (collecting the rest of a batch), prepare (making the batch ready, before the "
    "database), database (the round trip that locks the head, appends and commits), answer "
    "(telling the callers). clock=wall is elapsed time, clock=cpu the thread's own CPU time; "
    "wall less cpu outside `database` is time spent waiting for the interpreter (the GIL) or "
    "for a core.",
    ["phase", "clock"],
    registry=REGISTRY,
)
WRITER_COMMITS = Counter(
    "warden_writer_commits",
    "Transactions the writer committed.",
    registry=REGISTRY,
)
WRITER_CHANGES = Counter(
    "warden_writer_changes",
    "Changes (decisions, reviews, ...) in the transactions the writer committed: over "
    "warden_writer_commits_total, the group commit's batch size.",
    registry=REGISTRY,
)
WRITER_ERRORS = Counter(
    "warden_writer_errors",
    "Failures inside the writer after a commit (a guard-state hook, a read-back).",
    ["stage"],
    registry=REGISTRY,
)


class ReviewQueueCollector(Collector):
    """Queue depth and age of the oldest pending decision, read from the database per scrape."""

    def __init__(self, db: sa.Engine, points: Iterable[str]) -> None:
        self.db = db
        self.points = sorted(points)

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "warden_review_queue_depth", "Decisions waiting for a person.", labels=["point"]
        )
        age = GaugeMetricFamily(
            "warden_review_age_seconds",
            "Age of the oldest decision waiting for a person, in seconds.",
            labels=["point"],
        )
        now = datetime.now(UTC)
        found: dict[str, tuple[int, datetime | None]] = {}
        try:
            with self.db.connect() as conn:
                rows = conn.execute(
                    sa.select(
                        decisions.c.point, sa.func.count(), sa.func.min(decisions.c.created_at)
                    )
                    .where(decisions.c.status == "pending")
                    .group_by(decisions.c.point)
                )
                found = {r[0]: (int(r[1]), aware(r[2])) for r in rows}
        except sa.exc.SQLAlchemyError:
            return []
        for point in sorted(set(self.points) | set(found)):
            count, oldest = found.get(point, (0, None))
            depth.add_metric([point], count)
            age.add_metric([point], (now - oldest).total_seconds() if oldest else 0.0)
        return [depth, age]


def exposition(extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The text exposition: this process's (or every worker's) metrics plus `extra` collectors."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        body = generate_latest(merged)
    else:
        body = generate_latest(REGISTRY)
    scraped = CollectorRegistry()
    for collector in extra:
        scraped.register(collector)
    return body + generate_latest(scraped), CONTENT_TYPE_LATEST


def prepare_multiprocess(workers: int, home: Path) -> None:
    """Before `warden serve` forks N workers: an empty shared folder for their samples."""
    if workers <= 1 or os.environ.get(MULTIPROC_ENV):
        return
    folder = home / "prometheus"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder.resolve())


def process_exited() -> None:
    """Drop this worker's live gauges from the merged view when it stops."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
