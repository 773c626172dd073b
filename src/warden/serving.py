"""How many processes `warden serve` runs when not told."""

from __future__ import annotations

import os


def default_workers(db_url: str) -> int:
    """1 on SQLite, one per usable CPU on PostgreSQL.

    A worker's decisions run on one interpreter, so one worker uses at most one core; on
    PostgreSQL the ledger head is a row lock every worker takes in turn for a short commit, so
    more workers add throughput until the cores are busy (`benchmarks/bench_scaling.py`,
    docs/scaling.md). SQLite writes one transaction at a time per file, and its writer is
    already batching everything one process queues: a second process only waits for the file
    lock, at the cost of another copy of every model.
    """
    if db_url.startswith("sqlite"):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
