"""`warden witness`: run a C2SP tlog-witness that cosigns other Warden ledgers' checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from warden.ledger import keys, note

witness_app = typer.Typer(
    no_args_is_help=True,
    help="Run a transparency-log witness (C2SP tlog-witness) that cosigns ledger checkpoints.",
)
err = Console(stderr=True, soft_wrap=True)

HomeOption = Annotated[
    Path,
    typer.Option(help="Where the witness keeps its key and the checkpoints it cosigned."),
]
NameOption = Annotated[
    str, typer.Option(help="The witness's name, a URL without scheme, e.g. witness.example.com.")
]


def _verifier(home: Path, name: str) -> tuple[keys.SigningKey, note.Verifier]:
    from warden.ledger.cosigner import KEY_FILE

    try:
        if not name or " " in name or "+" in name:
            raise note.NoteError(f"witness name {name!r} must have no spaces and no '+'")
        key = keys.load_or_create(home, KEY_FILE)
    except (note.NoteError, keys.KeyFileError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    public = note.raw_public(key.key.public_key())
    return key, note.Verifier(name, public, note.COSIGNATURE_V1)


@witness_app.command("public-key")
def public_key(home: HomeOption, name: NameOption) -> None:
    """Print the witness's cosigner key (name+keyhash+base64), for WARDEN_WITNESSES and
    `warden audit verify --witness-key`. Creates the key on first use."""
    _, verifier = _verifier(home, name)
    typer.echo(verifier.vkey())


@witness_app.command()
def serve(
    home: HomeOption,
    name: NameOption,
    log: Annotated[
        list[str],
        typer.Option(
            "--log",
            help="A log to witness: its verifier key, as `warden audit public-key --note` "
            "prints it. Repeat for several.",
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8100,
) -> None:
    """Serve POST /add-checkpoint: check each log's signature and consistency, then cosign."""
    import uvicorn

    from warden.ledger.cosigner import STATE_FILE, Witness, create_app

    key, verifier = _verifier(home, name)
    try:
        logs = [note.parse_vkey(v) for v in log]
    except note.NoteError as exc:
        err.print(f"[red]error:[/red] --log: {exc}", highlight=False)
        raise typer.Exit(2) from None
    witness = Witness(name, key.key, logs, home / STATE_FILE)
    err.print(f"witness {verifier.vkey()}", highlight=False)
    err.print(f"witnessing: {', '.join(v.name for v in logs)}", highlight=False)
    uvicorn.run(create_app(witness), host=host, port=port, log_level="info", access_log=False)
