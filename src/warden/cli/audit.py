"""`warden audit`: verify the ledger, sign checkpoints, prove decisions, export evidence."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from warden.cli import context
from warden.errors import WardenError
from warden.ledger import checkpoint as checkpoints
from warden.ledger import keys, witness
from warden.ledger.export import ExportFilter, export_events
from warden.ledger.projection import StateReport
from warden.ledger.proof import build_bundle, check_bundle, consistency_between
from warden.ledger.tree import LedgerTree
from warden.ledger.verify import Report, verify_ledger

audit_app = typer.Typer(
    no_args_is_help=True,
    help="Verify the tamper-evident ledger, sign checkpoints, prove decisions, export evidence.",
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

PublicKeyOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--public-key",
        "-k",
        help="A trusted public key (PEM); repeat for several. Default: the key in WARDEN_HOME.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _fail(error: WardenError, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {error.message}", highlight=False)
    raise typer.Exit(code)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _trusted(paths: list[Path] | None) -> list[keys.PublicKey]:
    try:
        found = [keys.load_public_key(p) for p in paths or []]
        local = keys.existing_public_key(context.settings().home)
    except keys.KeyFileError as error:
        _fail(error)
    if local is not None and local.key_id not in {k.key_id for k in found}:
        found.append(local)
    return found


def _signing_key() -> keys.SigningKey:
    try:
        return keys.load_or_create(context.settings().home)
    except keys.KeyFileError as error:
        _fail(error)


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; a silent callback otherwise."""
    if not err.is_terminal:
        yield None
        return
    with Progress(
        f"[bold]{label}[/bold]",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@audit_app.command()
def verify(
    public_key: PublicKeyOption = None,
    witness_file: Annotated[
        list[Path] | None,
        typer.Option("--witness", "-w", help="A witness file of checkpoints; repeat for several."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-derive every hash, link and signature; exit 0 only if the whole ledger verifies."""
    trusted = _trusted(public_key)
    try:
        witnessed = [cp for path in witness_file or [] for cp in witness.read(path)]
    except WardenError as error:
        _fail(error)
    db = context.database(context.settings())
    try:
        with _progress("verifying") as progress:
            report = verify_ledger(db, trusted, witnessed=witnessed, progress=progress)
    finally:
        db.dispose()
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_report(report, trusted)
        _print_state(report.state)
    raise typer.Exit(0 if report.ok else 1)


def _print_state(state: StateReport | None) -> None:
    """The state tables against what the events imply."""
    if state is None:
        return
    rows = sum(state.rows.values())
    unchecked = (
        f"; {state.unchecked:,} values older events do not record" if state.unchecked else ""
    )
    if state.ok:
        out.print(
            f"[green]ok[/green] state agrees with the ledger: {rows:,} rows in "
            f"{len(state.rows)} tables ({state.seconds:.2f} s{unchecked})",
            highlight=False,
        )
        return
    out.print(
        f"[red]STATE DIFFERS[/red] from the ledger: {state.count:,} disagreement(s) in "
        f"{rows:,} rows{unchecked}",
        highlight=False,
    )
    for found in state.disagreements:
        out.print(f"   {found.kind}: {found.message}", highlight=False)
    if state.count > len(state.disagreements):
        out.print(f"   ... and {state.count - len(state.disagreements):,} more", highlight=False)


def _print_report(report: Report, trusted: list[keys.PublicKey]) -> None:
    timing = f"{report.seconds:.2f} s"
    if report.seconds > 0.5:
        timing += f", {report.events / report.seconds:,.0f} events/s"
    first = report.first
    if first is None:
        out.print(
            f"[green]ok[/green] ledger verified: {report.events:,} events, hash chain, "
            f"columns and Merkle tiles intact ({timing})",
            highlight=False,
        )
        if report.root:
            out.print(f"   root at {report.events:,}: {report.root}", highlight=False)
        signers = ", ".join(k.key_id for k in trusted) or "no key"
        latest = f", latest at {report.latest_checkpoint:,}" if report.latest_checkpoint else ""
        out.print(
            f"   checkpoints: {report.checkpoints} signed and matching{latest} "
            f"(trusted keys: {signers})",
            highlight=False,
        )
        if report.witnessed:
            out.print(f"   witnessed: {report.witnessed} checkpoints match", highlight=False)
        return
    if first.seq is None:
        where = f"checkpoint {first.checkpoint}"
    elif first.last_seq and first.last_seq != first.seq:
        where = f"events {first.seq}-{first.last_seq}"
    else:
        where = f"event {first.seq}"
    out.print(
        f"[red]BROKEN[/red] at {where}: [bold]{first.kind.value}[/bold]",
        highlight=False,
    )
    for problem in report.problems:
        out.print(f"   {problem.kind.value}: {problem.message}", highlight=False)
    out.print(
        f"   hash chain intact over the first {report.events:,} events ({timing})",
        highlight=False,
    )


@audit_app.command()
def checkpoint(
    witness_target: Annotated[
        str | None,
        typer.Option(
            "--witness", "-w", help="Also hand it to this file or URL (default: $WARDEN_WITNESS)."
        ),
    ] = None,
) -> None:
    """Sign a checkpoint of the ledger as it is now (the newest one, if nothing was added)."""
    key = _signing_key()
    db = context.database(context.settings())
    try:
        cp = checkpoints.make_checkpoint(db, key)
    except WardenError as error:
        _fail(error)
    finally:
        db.dispose()
    _print_json(cp.to_dict())
    target = witness_target or witness.from_env()
    if target:
        try:
            err.print(f"witness: {witness.push(cp, target)}", highlight=False)
        except witness.WitnessError as exc:
            err.print(f"[red]error:[/red] checkpoint stored, but {exc}", highlight=False)
            raise typer.Exit(1) from None


@audit_app.command("checkpoints")
def list_checkpoints(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
) -> None:
    """List the newest signed checkpoints as JSON."""
    db = context.database(context.settings())
    try:
        with db.connect() as conn:
            found = checkpoints.page(conn, before=None, limit=limit)
    finally:
        db.dispose()
    _print_json([cp.to_dict() for cp in found])


@audit_app.command()
def prove(
    decision_id: Annotated[str, typer.Argument(help="The decision to prove.")],
    output: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the proof (default: proof-ID.json)."),
    ] = None,
) -> None:
    """Write a self-contained proof of a decision's events, checkable offline."""
    target = output or Path(f"proof-{decision_id}.json")
    db = context.database(context.settings())
    try:
        bundle = build_bundle(db, decision_id, signer=_signing_key)
    except WardenError as error:
        _fail(error, 1)
    finally:
        db.dispose()
    target.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n")
    cp = bundle["checkpoint"]
    err.print(
        f"wrote {target}: {len(bundle['events'])} event(s) of decision {decision_id}, proved "
        f"against checkpoint {cp['size']} (key {cp['key_id']})",
        highlight=False,
    )
    err.print(
        f"check it anywhere with: warden audit check-proof {target} --public-key KEY.pem",
        highlight=False,
    )


@audit_app.command("check-proof")
def check_proof(
    file: Annotated[Path, typer.Argument(help="A proof written by `warden audit prove`.")],
    public_key: Annotated[
        Path, typer.Option("--public-key", "-k", help="The ledger's public key (PEM).")
    ],
    as_json: JsonOption = False,
) -> None:
    """Check a proof without the database: signature, event hashes, inclusion proofs."""
    try:
        key = keys.load_public_key(public_key)
        bundle = orjson.loads(file.read_bytes())
    except WardenError as error:
        _fail(error)
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot read {file}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from None
    except orjson.JSONDecodeError as exc:
        err.print(f"[red]error:[/red] {file} is not JSON: {exc}", highlight=False)
        raise typer.Exit(2) from None
    result = check_bundle(bundle, key)
    if as_json:
        _print_json(result.to_dict())
    elif result.ok:
        assert result.checkpoint is not None
        cp = result.checkpoint
        out.print(
            f"[green]ok[/green] decision {result.decision_id}: {len(result.events)} event(s) "
            f"are in the ledger signed at {cp.signed_at} (size {cp.size:,}, key {cp.key_id})",
            highlight=False,
        )
        for event in result.events:
            out.print(f"   event {event['seq']}: {event['type']} at {event['ts']}", highlight=False)
    else:
        out.print(f"[red]INVALID[/red] proof for decision {result.decision_id}", highlight=False)
        for problem in result.problems:
            out.print(f"   {problem}", highlight=False)
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command()
def consistency(
    old: Annotated[int, typer.Argument(help="Size of the older checkpoint.")],
    new: Annotated[int, typer.Argument(help="Size of the newer checkpoint.")],
    public_key: PublicKeyOption = None,
) -> None:
    """Prove that checkpoint NEW extends checkpoint OLD: nothing before OLD was changed."""
    trusted = {k.key_id: k for k in _trusted(public_key)}
    db = context.database(context.settings())
    try:
        result = consistency_between(db, old, new, LedgerTree())
    except WardenError as error:
        _fail(error)
    finally:
        db.dispose()
    problems = list(result["problems"])
    for which in ("old", "new"):
        cp = checkpoints.Checkpoint.from_dict(result[which])
        key = trusted.get(cp.key_id)
        if key is None or not cp.signed_by(key):
            problems.append(f"checkpoint {cp.size} is not signed by a trusted key")
    result["verified"] = not problems
    result["problems"] = problems
    _print_json(result)
    raise typer.Exit(0 if not problems else 1)


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{name} must be an ISO date or time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@audit_app.command()
def export(
    output: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    since: Annotated[str | None, typer.Option(help="Events at or after this time (ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Events before this time (ISO).")] = None,
    point: Annotated[str | None, typer.Option(help="Only this decision point.")] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="jsonl or parquet (default: from the file name)."),
    ] = None,
) -> None:
    """Export events, verified against a fresh signed checkpoint, with a manifest beside them."""
    chosen = fmt or ("parquet" if output.suffix == ".parquet" else "jsonl")
    flt = ExportFilter(_when(since, "--since"), _when(until, "--until"), point)
    key = _signing_key()
    db = context.database(context.settings())
    try:
        cp = checkpoints.make_checkpoint(db, key)
        with _progress("exporting") as progress:
            result = export_events(db, output, cp, flt, fmt=chosen, progress=progress)
    except WardenError as error:
        _fail(error, 1)
    finally:
        db.dispose()
    err.print(
        f"wrote {result.events:,} event(s) to {result.path} ({result.format}); "
        f"all {result.scanned:,} events up to checkpoint {cp.size:,} verified; "
        f"manifest {result.manifest}",
        highlight=False,
    )


@audit_app.command("public-key")
def public_key(
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the PEM here instead of stdout.")
    ] = None,
) -> None:
    """Print the ledger's public key (PEM), for auditors and `check-proof`."""
    pem = _signing_key().public.pem()
    if output is None:
        sys.stdout.write(pem)
        return
    output.write_text(pem)
    err.print(f"wrote {output}", highlight=False)
