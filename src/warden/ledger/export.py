"""Export events as JSON Lines (or Parquet, when pyarrow is installed), verified on the way out.

The export reads every event up to a signed checkpoint, re-derives the chain and the Merkle root
as it goes and writes only the events the filters select. The file appears only if the root
matches the checkpoint, beside a manifest naming that checkpoint and the file's SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import sqlalchemy as sa

from warden.errors import InvalidRequest
from warden.ledger.checkpoint import Checkpoint
from warden.ledger.lanecheckpoint import LanesCheckpoint
from warden.ledger.lanes import lane_count
from warden.ledger.tree import LedgerDamaged
from warden.ledger.verify import ChainPass, Row, event_batches, instant, snapshot

Progress = Callable[[int, int], None]
FIELDS = ("seq", "type", "point", "decision_id", "actor", "ts", "body", "prev_hash", "leaf_hash")
MANIFEST_FORMAT = "warden.export/v1"


@dataclass(frozen=True)
class ExportFilter:
    since: datetime | None = None
    until: datetime | None = None
    point: str | None = None

    def selects(self, row: tuple[Any, ...]) -> bool:
        if self.point is not None and row[2] != self.point:
            return False
        if self.since is None and self.until is None:
            return True
        ts = instant(row[5])
        assert ts is not None
        return (self.since is None or ts >= self.since) and (self.until is None or ts < self.until)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "point": self.point,
        }


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: Path
    events: int
    scanned: int
    checkpoint: Checkpoint | None  # None for a ledger of several lanes: see `lanes`
    format: str
    lanes: LanesCheckpoint | None = None


class _Writer(Protocol):
    def write(self, row: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def parquet_available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def export_events(
    db: sa.Engine,
    out: Path,
    checkpoint: Checkpoint | None,
    flt: ExportFilter,
    *,
    fmt: str = "jsonl",
    progress: Progress | None = None,
    lanes_checkpoint: LanesCheckpoint | None = None,
) -> ExportResult:
    """Write the selected events up to `checkpoint` to `out`; raise if they do not verify.

    A ledger of several lanes is exported lane by lane up to `lanes_checkpoint`, each lane
    re-derived and checked against the root that checkpoint signed; every line names its lane.
    """
    if fmt == "parquet" and not parquet_available():
        raise InvalidRequest(
            "Parquet export needs pyarrow: `pip install pyarrow`, or use --format jsonl",
            field="format",
        )
    if fmt not in ("jsonl", "parquet"):
        raise InvalidRequest(f"unknown format {fmt!r}; use jsonl or parquet", field="format")
    with db.connect() as conn:
        lanes = lane_count(conn)
    if lanes > 1 and (lanes_checkpoint is None or fmt != "jsonl"):
        raise InvalidRequest(
            f"this ledger has {lanes} lanes: it is exported as jsonl against a lanes checkpoint"
            + (" (Parquet is not built for lanes yet)" if fmt != "jsonl" else ""),
            field="format" if fmt != "jsonl" else None,
        )
    if lanes > 1 and lanes_checkpoint is not None:
        return _export_lanes(db, out, lanes_checkpoint, flt, progress)
    if checkpoint is None:
        raise InvalidRequest("export needs a signed checkpoint to verify against")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    writer: _Writer = _ParquetWriter(partial) if fmt == "parquet" else _JsonlWriter(partial)
    written = 0
    chain = ChainPass({checkpoint.size}, checkpoint.size, progress)

    def tap(batches: Iterator[list[Row]]) -> Iterator[list[Row]]:
        nonlocal written
        for rows in batches:
            yield rows
            for row in rows:
                if flt.selects(row):
                    writer.write(_record(row))
                    written += 1

    try:
        with snapshot(db) as conn:
            chain.run(tap(event_batches(conn, db.dialect.name, checkpoint.size)))
        writer.close()
        _check(chain, checkpoint)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    manifest = _publish(
        partial,
        out,
        fmt,
        written,
        flt,
        checkpoint=checkpoint.to_dict(),
        verified=f"all {checkpoint.size} events up to the checkpoint were re-derived "
        "and their Merkle root matches it",
    )
    return ExportResult(out, manifest, written, chain.verified, checkpoint, fmt)


def _publish(
    partial: Path, out: Path, fmt: str, written: int, flt: ExportFilter, **attested: Any
) -> Path:
    """Move a checked export into place and write its manifest beside it: the file's digest,
    what it holds, and what it was checked against (`attested`)."""
    os.replace(partial, out)
    manifest = out.with_name(out.name + ".manifest.json")
    manifest.write_bytes(
        orjson.dumps(
            {
                "format": MANIFEST_FORMAT,
                "file": out.name,
                "file_format": fmt,
                "sha256": _sha256(out),
                "events": written,
                "filters": flt.to_dict(),
                **attested,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    return manifest


def _export_lanes(
    db: sa.Engine,
    out: Path,
    signed: LanesCheckpoint,
    flt: ExportFilter,
    progress: Progress | None,
) -> ExportResult:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    writer = _JsonlWriter(partial)
    written = scanned = 0
    try:
        with snapshot(db) as conn:
            for head in signed.heads:
                chain = ChainPass({head.size}, head.size, progress, lane=head.lane)
                batches = event_batches(conn, db.dialect.name, head.size, lane=head.lane)
                for rows in batches:
                    chain.run([rows])
                    for row in rows:
                        if flt.selects(row):
                            writer.write({"lane": head.lane, **_record(row)})
                            written += 1
                    if chain.broken is not None:
                        break
                if (
                    chain.broken is not None
                    or chain.verified != head.size
                    or (head.size and chain.roots.get(head.size) != head.root)
                ):
                    raise LedgerDamaged(
                        f"export stopped: lane {head.lane} does not match the lanes checkpoint "
                        f"({head.size} events); run `warden audit verify`"
                    )
                scanned += chain.verified
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    manifest = _publish(
        partial,
        out,
        "jsonl",
        written,
        flt,
        lanes_checkpoint=signed.note,
        lanes=[{"lane": h.lane, "size": h.size, "root": h.root.hex()} for h in signed.heads],
        verified=f"all {scanned} events of {len(signed.heads)} lanes up to the lanes "
        "checkpoint were re-derived and each lane's Merkle root matches it",
    )
    return ExportResult(out, manifest, written, scanned, None, "jsonl", signed)


def _check(chain: ChainPass, checkpoint: Checkpoint) -> None:
    if chain.broken is not None:
        raise LedgerDamaged(
            f"export stopped: {chain.broken.message}; run `warden audit verify`",
            seq=chain.broken.seq,
        )
    if chain.verified < checkpoint.size:
        raise LedgerDamaged(
            f"export stopped: checkpoint {checkpoint.size} signed {checkpoint.size} events but "
            f"the log holds {chain.verified}; run `warden audit verify`"
        )
    if chain.roots.get(checkpoint.size) != checkpoint.root_bytes:
        raise LedgerDamaged(
            f"export stopped: the events do not match checkpoint {checkpoint.size}; "
            "run `warden audit verify`"
        )


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(FIELDS, row, strict=False))
    ts = instant(row[5])
    assert ts is not None
    record["ts"] = ts.isoformat()
    return record


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _JsonlWriter:
    def __init__(self, path: Path) -> None:
        self._handle = path.open("wb")

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(row) + b"\n")

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


class _ParquetWriter:
    """Rows in batches of 10,000 through pyarrow, imported only when asked for."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,import-not-found]
        import pyarrow.parquet as pq  # type: ignore[import-untyped,import-not-found]

        self._pa = pa
        self._schema = pa.schema(
            [
                ("seq", pa.int64()),
                ("type", pa.string()),
                ("point", pa.string()),
                ("decision_id", pa.string()),
                ("actor", pa.string()),
                ("ts", pa.timestamp("us", tz="UTC")),
                ("body", pa.string()),
                ("prev_hash", pa.string()),
                ("leaf_hash", pa.string()),
            ]
        )
        self._writer = pq.ParquetWriter(str(path), self._schema)
        self._rows: list[dict[str, Any]] = []
        self._closed = False

    def write(self, row: dict[str, Any]) -> None:
        self._rows.append({**row, "ts": datetime.fromisoformat(row["ts"])})
        if len(self._rows) >= 10_000:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            table = self._pa.Table.from_pylist(self._rows, schema=self._schema)
            self._writer.write_table(table)
            self._rows = []

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._flush()
            self._writer.close()
