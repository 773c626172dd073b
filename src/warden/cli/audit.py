"""`warden audit`: verify the ledger, sign checkpoints, prove decisions, export evidence."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from warden.cli import context
from warden.errors import InvalidRequest, WardenError
from warden.ledger import checkpoint as checkpoints
from warden.ledger import identity, keys, note, remembered, witness
from warden.ledger.export import ExportFilter, export_events
from warden.ledger.laneproof import LANES_FORMAT, lane_consistency_between, parse_since_lanes
from warden.ledger.projection import StateReport
from warden.ledger.proof import build_bundle, check_bundle, consistency_between
from warden.ledger.tree import LedgerTree
from warden.ledger.verify import Report, verify_ledger

if TYPE_CHECKING:
    from warden.ledger.witnessing import Submitter

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
        help="A trusted public key (PEM); repeat for several. Only these keys are trusted; "
        "without any, the key in WARDEN_HOME is used (not an independent check).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _fail(error: WardenError, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {error.message}", highlight=False)
    raise typer.Exit(code)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _trusted(paths: list[Path] | None) -> list[keys.PublicKey]:
    """The keys given, and only those; without any, the key in WARDEN_HOME."""
    try:
        if paths:
            return [keys.load_public_key(p) for p in paths]
        local = keys.existing_public_key(context.settings().home)
    except keys.KeyFileError as error:
        _fail(error)
    return [local] if local is not None else []


def _signing_key(db: Any) -> keys.SigningKey:
    """The ledger's key; an error (never a new key) when it is missing or not the recorded one."""
    try:
        return identity.signing_key(db, context.settings().home)
    except WardenError as error:
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
    state_file: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Your own state file: the latest checkpoint you verified. The ledger must "
            "extend it; on success it is moved forward (created on the first run).",
        ),
    ] = None,
    witness_key: Annotated[
        list[str] | None,
        typer.Option(
            "--witness-key",
            help="A witness's cosigner key (name+keyhash+base64, as `warden witness public-key` "
            "prints it); repeat for several.",
        ),
    ] = None,
    min_witnesses: Annotated[
        int | None,
        typer.Option(
            help="How many of the --witness-key witnesses must have cosigned a checkpoint "
            "(default: 1)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-derive every hash, link and signature; exit 0 only if the whole ledger verifies."""
    trusted = _trusted(public_key)
    try:
        witnessed = [cp for path in witness_file or [] for cp in witness.read(path)]
        state = remembered.load(state_file) if state_file else None
        cosigners = [note.parse_vkey(v) for v in witness_key or []]
    except WardenError as error:
        _fail(error)
    except note.NoteError as exc:
        raise typer.BadParameter(f"--witness-key: {exc}") from None
    needed = 1 if min_witnesses is None else min_witnesses
    if cosigners and not 1 <= needed <= len(cosigners):
        raise typer.BadParameter(
            f"--min-witnesses must be between 1 and the {len(cosigners)} --witness-key given"
        )
    if min_witnesses is not None and not cosigners:
        raise typer.BadParameter("--min-witnesses needs the witnesses' keys (--witness-key)")
    db = context.database(context.settings())
    try:
        with _progress("verifying") as progress:
            report = verify_ledger(
                db,
                trusted,
                witnessed=witnessed,
                progress=progress,
                require_signed=bool(public_key) or state_file is not None,
                state=state,
                cosigners=cosigners,
                min_cosigners=needed,
            )
    finally:
        db.dispose()
    if state_file is not None and report.ok:
        _advance_state(state_file, state, report)
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_report(report, trusted, bool(public_key))
        _print_state(report.projection)
    raise typer.Exit(0 if report.ok else 1)


def _advance_state(path: Path, state: remembered.Remembered | None, report: Report) -> None:
    newest = report.vouched_checkpoint
    lanes_note = report.vouched_lanes.note.text() if report.vouched_lanes is not None else None
    lanes_moved = lanes_note is not None and (state is None or lanes_note != state.lanes_note)
    if newest is not None and state is not None and newest.size <= state.size:
        if not lanes_moved:
            return
        newest = checkpoints.Checkpoint.from_dict(state.checkpoint)  # lane 0 did not move
    if newest is None:
        return
    remembered.save(
        path, report.origin, newest, lanes_note or (state.lanes_note if state else None)
    )
    report.state = (report.state or "first run") + f"; now remembering checkpoint {newest.size}"
    if lanes_moved and report.vouched_lanes is not None:
        sizes = ", ".join(str(h.size) for h in report.vouched_lanes.heads)
        report.state += f" and the lanes checkpoint at sizes {sizes}"


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


def _print_report(report: Report, trusted: list[keys.PublicKey], explicit: bool) -> None:
    total = report.events + sum(int(lane["events"]) for lane in report.lanes)
    timing = f"{report.seconds:.2f} s"
    if report.seconds > 0.5:
        timing += f", {total / report.seconds:,.0f} events/s"
    first = report.first
    if first is None:
        spread = f" in {len(report.lanes) + 1} lanes" if report.lanes else ""
        out.print(
            f"[green]ok[/green] ledger verified: {total:,} events{spread}, hash chain, "
            f"columns and Merkle tiles intact ({timing})",
            highlight=False,
        )
        if report.root:
            lane_0 = "lane 0, " if report.lanes else ""
            out.print(f"   root at {lane_0}{report.events:,}: {report.root}", highlight=False)
        for lane in report.lanes:
            out.print(
                f"   root at lane {lane['lane']}, {lane['events']:,}: {lane['root']}",
                highlight=False,
            )
        if report.vouched_lanes is not None:
            sizes = ", ".join(f"{h.size:,}" for h in report.vouched_lanes.heads)
            out.print(
                f"   lanes checkpoint: the newest signed and matching covers lanes at {sizes}",
                highlight=False,
            )
        given = {k.key_id for k in trusted}
        signers = (
            ", ".join(
                k if k in given else f"{k} via a recorded rotation" for k in report.trusted_keys
            )
            or "no key"
        )
        source = "given" if explicit else "the key in WARDEN_HOME; pass --public-key to check"
        latest = f", latest at {report.latest_checkpoint:,}" if report.latest_checkpoint else ""
        out.print(
            f"   checkpoints: {report.checkpoints} signed and matching{latest} "
            f"(trusted keys: {signers} — {source})",
            highlight=False,
        )
        if report.origin:
            out.print(f"   origin: {report.origin}", highlight=False)
        for rotation in report.rotations:
            out.print(f"   key rotation: {rotation}", highlight=False)
        if report.vouched is not None and report.vouched < report.events:
            out.print(
                f"   not yet signed: events {report.vouched + 1:,}-{report.events:,} after "
                f"checkpoint {report.vouched:,}",
                highlight=False,
            )
        if report.state:
            out.print(f"   auditor state: {report.state}", highlight=False)
        if report.cosigned is not None:
            by = ", ".join(f"{name} at {size:,}" for name, size in sorted(report.witnesses.items()))
            out.print(
                f"   witnesses: checkpoint {report.cosigned:,} is cosigned (newest by {by})",
                highlight=False,
            )
        for lane_no, cosigned in sorted(report.lanes_cosigned.items()):
            seen = report.lanes_witnesses.get(lane_no, {})
            by = ", ".join(f"{name} at {at:,}" for name, at in sorted(seen.items()))
            out.print(
                f"   witnesses: lane {lane_no} is cosigned at {cosigned:,} (newest by {by})",
                highlight=False,
            )
        if report.witnessed:
            out.print(f"   witnessed: {report.witnessed} checkpoints match", highlight=False)
        return
    if first.lane is not None:
        where = f"lane {first.lane}, event {first.seq}" if first.seq else f"lane {first.lane}"
    elif first.seq is None and first.checkpoint is None:
        where = "the witnesses"
    elif first.seq is None:
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
    db = context.database(context.settings())
    try:
        cp = checkpoints.make_checkpoint(db, _signing_key(db))
    except WardenError as error:
        _fail(error)
    finally:
        db.dispose()
    _print_json(cp.to_dict())
    _cosign(cp)
    target = witness_target or witness.from_env()
    if target:
        try:
            err.print(f"witness: {witness.push(cp, target)}", highlight=False)
        except witness.WitnessError as exc:
            err.print(f"[red]error:[/red] checkpoint stored, but {exc}", highlight=False)
            raise typer.Exit(1) from None


@audit_app.command("lanes-checkpoint")
def lanes_checkpoint() -> None:
    """Sign every lane of a ledger with several lanes as it is now: the signed lanes index and
    each lane's own checkpoint note (see docs/ledger.md, "Lanes")."""
    from warden.ledger.lanecheckpoint import make_lanes_checkpoint
    from warden.ledger.lanes import LanesRefused, lane_count

    db = context.database(context.settings())
    try:
        with db.connect() as conn:
            lanes = lane_count(conn)
        if lanes == 1:
            _fail(LanesRefused("this ledger has one lane: `warden audit checkpoint` signs it"))
        made = make_lanes_checkpoint(db, _signing_key(db))
    except WardenError as error:
        _fail(error)
    finally:
        db.dispose()
    _print_json(
        {
            "origin": made.origin,
            "lanes": [{"lane": h.lane, "size": h.size, "root": h.root.hex()} for h in made.heads],
            "note": made.note,
            "lane_notes": made.lane_notes,
        }
    )
    _cosign_lanes(made)


def _cosign_lanes(made: Any) -> None:
    """Ask the witnesses of WARDEN_WITNESSES to cosign each lane above 0; exit 1 if one does not."""
    _ask_witnesses(lambda submitter: submitter.submit_lanes(made))


def _cosign(cp: checkpoints.Checkpoint) -> None:
    """Ask the witnesses of WARDEN_WITNESSES to cosign; exit 1 if one does not."""
    _ask_witnesses(lambda submitter: submitter.submit(cp))


def _ask_witnesses(submit: Callable[[Submitter], dict[str, str]]) -> None:
    """Hand a checkpoint to every witness of WARDEN_WITNESSES, print each answer, and exit 1
    unless every one cosigned (nothing to do when no witness is configured)."""
    from warden.ledger.witnessing import Submitter, from_env

    try:
        targets = from_env()
    except WardenError as error:
        _fail(error)
    if not targets:
        return
    db = context.database(context.settings())
    try:
        results = submit(Submitter(db, targets))
    finally:
        db.dispose()
    for name, outcome in results.items():
        err.print(f"witness {name}: {outcome}", highlight=False)
    if any(not outcome.startswith("cosigned") for outcome in results.values()):
        raise typer.Exit(1)


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
    decision_id: Annotated[
        str, typer.Argument(help="The decision to prove (its id, or a unique start of it).")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the proof (default: proof-ID.json)."),
    ] = None,
    since: Annotated[
        int | None,
        typer.Option(
            help="Also prove that the ledger extends the checkpoint of this size (the one in "
            "the auditor's state file)."
        ),
    ] = None,
    since_lanes: Annotated[
        str | None,
        typer.Option(
            "--since-lanes",
            help="For a decision in a lane above 0: also prove that every lane extends the "
            "lanes checkpoint of these sizes, lane 0 first (e.g. 1,3,3: the one in the "
            "auditor's state file, as verify prints it).",
        ),
    ] = None,
) -> None:
    """Write a self-contained proof of a decision's events, checkable offline."""
    from warden.cli.tables import resolve_prefix
    from warden.store.schema import decisions

    db = context.database(context.settings())
    try:
        with db.connect() as conn:
            decision_id = resolve_prefix(conn, decisions.c.id, decision_id)
        target = output or Path(f"proof-{decision_id}.json")
        sizes = parse_since_lanes(since_lanes) if since_lanes is not None else None
        bundle = build_bundle(
            db, decision_id, signer=lambda: _signing_key(db), since=since, since_lanes=sizes
        )
    except WardenError as error:
        _fail(error, 1)
    finally:
        db.dispose()
    target.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n")
    if "checkpoint" in bundle:
        cp = bundle["checkpoint"]
        against = f"checkpoint {cp['size']} (key {cp['key_id']})"
    else:
        against = f"the signed lanes checkpoint, in lane {bundle['lane']}"
    if "consistency" in bundle:
        against += ", with the consistency proof from your remembered checkpoint"
    err.print(
        f"wrote {target}: {len(bundle['events'])} event(s) of decision {decision_id}, proved "
        f"against {against}",
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
    state_file: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Your state file: the proof's checkpoint must extend the one remembered there "
            "(ask for the proof with --since SIZE); on success it is moved forward.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a proof without the database: signature, event hashes, inclusion proofs."""
    try:
        key = keys.load_public_key(public_key)
        bundle = orjson.loads(file.read_bytes())
        state = remembered.load(state_file) if state_file else None
    except WardenError as error:
        _fail(error)
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot read {file}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from None
    except orjson.JSONDecodeError as exc:
        err.print(f"[red]error:[/red] {file} is not JSON: {exc}", highlight=False)
        raise typer.Exit(2) from None
    lanes_bundle = isinstance(bundle, dict) and bundle.get("format") == LANES_FORMAT
    if state_file and lanes_bundle and state is None:
        _fail(
            InvalidRequest(
                f"{state_file} does not exist yet: a proof across lanes moves a state file "
                "forward but cannot start one (it holds no checkpoint of lane 0 alone); start "
                f"it with `warden audit verify --public-key KEY --state {state_file}`"
            )
        )
    result = check_bundle(bundle, key, state=state)
    cp = result.checkpoint
    if state_file and result.ok and cp and (state is None or cp.size > state.size):
        remembered.save(state_file, result.origin, cp, state.lanes_note if state else None)
    if state_file and result.ok and state is not None and result.lanes_note is not None:
        remembered.save(
            state_file,
            state.origin,
            checkpoints.Checkpoint.from_dict(state.checkpoint),
            result.lanes_note,
        )
    if as_json:
        _print_json(result.to_dict())
    elif result.ok and result.lane_size is not None:
        lane = result.events[0]["lane"]
        out.print(
            f"[green]ok[/green] decision {result.decision_id}: {len(result.events)} event(s) "
            f"are in lane {lane} of the ledger {result.origin}, in its signed lanes checkpoint "
            f"(lane {lane} at size {result.lane_size:,}, key {key.key_id})",
            highlight=False,
        )
        for event in result.events:
            out.print(f"   event {event['seq']}: {event['type']} at {event['ts']}", highlight=False)
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
    lane: Annotated[
        int,
        typer.Option(
            "--lane",
            min=0,
            help="Of this lane (a ledger with several lanes): OLD and NEW are the lane's sizes "
            "at two signed lanes checkpoints.",
        ),
    ] = 0,
) -> None:
    """Prove that checkpoint NEW extends checkpoint OLD: nothing before OLD was changed."""
    trusted = {k.key_id: k for k in _trusted(public_key)}
    db = context.database(context.settings())
    if lane:
        _lane_consistency(db, lane, old, new, list(trusted.values()))
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


def _lane_consistency(db: Any, lane: int, old: int, new: int, trusted: list[Any]) -> NoReturn:
    try:
        result = lane_consistency_between(db, lane, old, new)
    except WardenError as error:
        _fail(error)
    finally:
        db.dispose()
    problems = list(result["problems"])
    for which in ("old", "new"):
        signed = note.parse_note(result[which]["note"])
        verifiers = [note.Verifier(result["origin"], k.raw) for k in trusted]
        if not any(signed.signed_by(v) for v in verifiers):
            problems.append(
                f"the lanes checkpoint of lane {lane} at {result[which]['size']} is not signed "
                "by a trusted key"
            )
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
    db = context.database(context.settings())
    from warden.ledger.lanecheckpoint import make_lanes_checkpoint
    from warden.ledger.lanes import lane_count

    try:
        with db.connect() as conn:
            lanes = lane_count(conn)
        key = _signing_key(db)
        cp = checkpoints.make_checkpoint(db, key) if lanes == 1 else None
        signed = make_lanes_checkpoint(db, key) if lanes > 1 else None
        with _progress("exporting") as progress:
            result = export_events(
                db, output, cp, flt, fmt=chosen, progress=progress, lanes_checkpoint=signed
            )
    except WardenError as error:
        _fail(error, 1)
    finally:
        db.dispose()
    against = (
        f"checkpoint {cp.size:,}" if cp is not None else f"the lanes checkpoint ({lanes} lanes)"
    )
    err.print(
        f"wrote {result.events:,} event(s) to {result.path} ({result.format}); "
        f"all {result.scanned:,} events up to {against} verified; "
        f"manifest {result.manifest}",
        highlight=False,
    )


@audit_app.command("rotate-key")
def rotate_key(
    reason: Annotated[str, typer.Option(help="Why the key changes; recorded in the ledger.")],
    lost_key: Annotated[
        bool,
        typer.Option(
            "--lost-key",
            help="The old key file is gone for good: record that, and sign with the new key "
            "only (auditors must then accept the new key explicitly).",
        ),
    ] = False,
) -> None:
    """Change the ledger's signing key: a recorded event and a checkpoint signed by both keys."""
    from warden.ledger.rotation import rotate

    settings = context.settings()
    db = context.database(settings)
    try:
        done = rotate(db, settings.home, actor=context.actor(), reason=reason, lost=lost_key)
    except WardenError as error:
        _fail(error)
    finally:
        db.dispose()
    signed = "the new key only" if lost_key else "both keys"
    err.print(
        f"rotated the ledger key {done.old_key_id} -> {done.new.key_id}; checkpoint "
        f"{done.checkpoint.size} is signed by {signed}",
        highlight=False,
    )
    if done.retired is not None:
        err.print(f"the old key is kept as {done.retired} (keep it offline)", highlight=False)
    err.print(
        "give auditors the new public key: warden audit public-key --out new.pub", highlight=False
    )
    _print_json(done.checkpoint.to_dict())


@audit_app.command("public-key")
def public_key(
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the PEM here instead of stdout.")
    ] = None,
    as_note: Annotated[
        bool,
        typer.Option(
            "--note",
            help="Print the C2SP verifier key (origin+keyhash+base64) that witnesses and "
            "signed-note tools take, instead of the PEM; with several lanes, one per lane "
            "(lane k's origin is ORIGIN/lane/k), lane 0 first.",
        ),
    ] = False,
) -> None:
    """Print the ledger's public key (PEM), for auditors and `check-proof`."""
    from warden.ledger.lanes import lane_count, lane_origin

    db = context.database(context.settings())
    try:
        public = _signing_key(db).public
        origin = identity.ensure_origin(db)
        with db.connect() as conn:
            lanes = lane_count(conn)
    finally:
        db.dispose()
    text = public.pem()
    if as_note:
        text = "".join(
            note.Verifier(lane_origin(origin, lane), public.raw).vkey() + "\n"
            for lane in range(lanes)
        )
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text)
    err.print(f"wrote {output}", highlight=False)
