"""Where reference data comes from: a CSV or Parquet file, or a point's first N decisions."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from warden.errors import WardenError
from warden.policy.monitoring import CONFIDENCE_COLUMN, OUTPUT_COLUMN
from warden.store.schema import decisions


class ReferenceError(WardenError):
    """The reference data cannot be read; the message names the file and what to fix."""

    type = "reference_error"
    http_status = 500


def file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_file(path: Path, kinds: Mapping[str, str]) -> dict[str, list[Any]]:
    """The monitored columns found in the file; numeric columns as floats (None when empty)."""
    if not path.is_file():
        raise ReferenceError(
            f"{path}: reference file not found; put it next to the point file or use first_n"
        )
    if path.suffix == ".csv":
        return _load_csv(path, kinds)
    return _load_parquet(path, kinds)


def _load_csv(path: Path, kinds: Mapping[str, str]) -> dict[str, list[Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ReferenceError(f"{path}: the file is empty; it needs a header row") from None
        wanted = {name: index for index, name in enumerate(header) if name in kinds}
        data: dict[str, list[Any]] = {name: [] for name in wanted}
        numeric = {name for name in wanted if kinds[name] == "numeric"}
        for line, row in enumerate(reader, start=2):
            for name, index in wanted.items():
                text = row[index] if index < len(row) else ""
                if name in numeric:
                    data[name].append(_number(text, path, line, name))
                else:
                    data[name].append(text if text != "" else None)
    return data


def _number(text: str, path: Path, line: int, column: str) -> float | None:
    if text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise ReferenceError(
            f"{path}:{line}: column '{column}' has {text!r}, not a number; fix the value or "
            f"declare the column categorical (monitoring.drift.tests.{column}.kind)"
        ) from None


def _load_parquet(path: Path, kinds: Mapping[str, str]) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ReferenceError(
            f"{path}: reading Parquet needs pyarrow; pip install 'warden-ai[parquet]' or "
            "use a CSV file"
        ) from None
    try:
        schema = pq.read_schema(path)
        present = [name for name in schema.names if name in kinds]
        table = pq.read_table(path, columns=present)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise ReferenceError(f"{path}: not a readable Parquet file: {exc}") from exc
    return {name: table.column(name).to_pylist() for name in present}


def decision_columns(
    input: Mapping[str, Any], output: Any, confidence: Any, columns: Collection[str]
) -> dict[str, Any]:
    """One decision's values for the monitored columns."""
    row = {name: input.get(name) for name in columns if name in input}
    if OUTPUT_COLUMN in columns:
        row[OUTPUT_COLUMN] = output
    if CONFIDENCE_COLUMN in columns:
        row[CONFIDENCE_COLUMN] = confidence
    return row


def first_decisions(
    conn: sa.Connection, point: str, n: int, columns: Collection[str]
) -> tuple[dict[str, list[Any]], str] | None:
    """The point's first `n` decisions with valid input as columns, and their fingerprint.

    None until the point has made that many. Input the schema refused is no evidence of normal.
    """
    data: dict[str, list[Any]] = {name: [] for name in columns}
    digest = hashlib.sha256(f"first_n:{point}:{n}".encode())
    taken = 0
    cursor = ""
    while taken < n:
        rows = conn.execute(
            sa.select(
                decisions.c.id,
                decisions.c.input,
                decisions.c.proposed_outcome,
                decisions.c.confidence,
                decisions.c.reasons,
            )
            .where(decisions.c.point == point, decisions.c.id > cursor)
            .order_by(decisions.c.id)
            .limit(min(5000, 2 * (n - taken) + 100))
        ).all()
        if not rows:
            return None
        for row in rows:
            cursor = row.id
            if any(r.get("code") == "invalid_input" for r in row.reasons):
                continue
            values = decision_columns(row.input, row.proposed_outcome, row.confidence, columns)
            for name in columns:
                data[name].append(values.get(name))
            digest.update(row.id.encode())
            taken += 1
            if taken == n:
                break
    return data, digest.hexdigest()
