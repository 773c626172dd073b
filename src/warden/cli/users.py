"""`warden token|user|principal`: credentials, the people behind them, and how they end."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console

from warden.cli import context
from warden.errors import WardenError
from warden.store.recorder import Recorder

token_app = typer.Typer(no_args_is_help=True, help="API tokens: create, list, rotate, revoke.")
user_app = typer.Typer(no_args_is_help=True, help="Console users (username and password).")
principal_app = typer.Typer(
    no_args_is_help=True, help="Principals: the people and services behind credentials."
)
err = Console(stderr=True)
out = Console()
T = TypeVar("T")

PrincipalOption = Annotated[
    str | None,
    typer.Option(
        help="The person or service it belongs to (name or id); default: the principal named "
        "like it, created when new. All credentials of one principal count as one person."
    ),
]
ExpiresOption = Annotated[
    str | None, typer.Option(help="Lifetime, e.g. 90d, 12h or 30m; default: never expires.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(command: str, error: WardenError) -> NoReturn:
    err.print(f"[red]warden {command}:[/red] {error.message}", highlight=False)
    raise typer.Exit(1)


@contextmanager
def _recorder(command: str) -> Iterator[Recorder]:
    db = context.database(context.settings())
    recorder = Recorder(db)
    try:
        yield recorder
    except WardenError as error:
        _fail(command, error)
    finally:
        recorder.close()
        db.dispose()


def _run(command: str, action: Callable[[Recorder], T]) -> T:
    with _recorder(command) as recorder:
        return action(recorder)
    raise AssertionError("unreachable")  # pragma: no cover


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who or what uses the token.")],
    role: Annotated[
        list[str],
        typer.Option(help="caller, reviewer, owner, auditor or admin; repeat for several."),
    ],
    point: Annotated[
        list[str], typer.Option(help="Decision point the token may act on; repeat, or '*' for all.")
    ],
    group: Annotated[
        list[str] | None, typer.Option(help="Reviewer group, e.g. credit-officers; repeatable.")
    ] = None,
    principal: PrincipalOption = None,
    expires: ExpiresOption = None,
    kind: Annotated[
        str, typer.Option(help="person or service, for a principal created now.")
    ] = "person",
) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    from warden.auth.tokens import create_token, parse_expiry

    def create(recorder: Recorder) -> tuple[str, Any]:
        return create_token(
            recorder,
            name=name,
            roles=role,
            points=point,
            groups=group,
            actor=context.actor(),
            principal=principal,
            expires=parse_expiry(expires),
            kind=kind,
        )

    secret, who = _run("token create", create)
    until = who.expires_at.isoformat(timespec="seconds") if who.expires_at else "never"
    err.print(
        f"Token {who.token_id} for [bold]{name}[/bold] of principal {who.principal_name} "
        f"(roles {', '.join(sorted(who.roles))}; points {', '.join(sorted(who.points))}; "
        f"expires {until}). It is shown only once:",
        highlight=False,
    )
    out.print(secret, highlight=False, soft_wrap=True)


@token_app.command("list")
def token_list(
    principal: Annotated[str | None, typer.Option(help="Only this principal's tokens.")] = None,
    all_tokens: Annotated[
        bool, typer.Option("--all", help="Include revoked and expired tokens.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Tokens (never their secrets): id, name, principal, roles, points, expiry, state."""
    from warden.auth.lifecycle import list_tokens

    db = context.database(context.settings())
    try:
        with db.connect() as conn:
            found = list_tokens(conn, principal=principal, include_dead=all_tokens)
    finally:
        db.dispose()
    now = datetime.now(UTC)
    if as_json:
        _print_json([t.as_dict(now) for t in found])
        return
    from rich.table import Table

    table = Table("id", "name", "principal", "roles", "points", "expires", "state")
    for t in found:
        expiry = t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never"
        table.add_row(
            t.id,
            t.name,
            t.principal,
            ",".join(t.roles),
            ",".join(t.points),
            expiry,
            t.state(now),
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (see `warden token list`).")],
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
) -> None:
    """Revoke a token: every replica refuses it within a second."""
    from warden.auth.lifecycle import revoke_token

    _run("token revoke", lambda r: revoke_token(r, token_id, actor=context.actor(), reason=reason))
    err.print(f"Token {token_id} revoked.", highlight=False)


@token_app.command("rotate")
def token_rotate(
    token_id: Annotated[str, typer.Argument(help="The token to replace.")],
    grace: Annotated[
        str, typer.Option(help="How long the old secret keeps working, e.g. 24h or 0s.")
    ] = "24h",
    expires: ExpiresOption = None,
) -> None:
    """A new secret with the same principal, roles and points; the old one works for `grace`."""
    from datetime import timedelta

    from warden.auth.lifecycle import rotate_token
    from warden.auth.tokens import parse_expiry
    from warden.errors import InvalidRequest
    from warden.policy.durations import parse_duration

    def rotate(recorder: Recorder) -> tuple[str, Any]:
        try:
            seconds = parse_duration(grace)
        except ValueError as exc:
            raise InvalidRequest(f"--grace: {exc}", field="grace") from None
        return rotate_token(
            recorder,
            token_id,
            actor=context.actor(),
            grace=timedelta(seconds=seconds),
            expires=parse_expiry(expires),
        )

    secret, info = _run("token rotate", rotate)
    err.print(
        f"Token {token_id} rotated to {info.id}; the old secret works for {grace} more. "
        "The new one is shown only once:",
        highlight=False,
    )
    out.print(secret, highlight=False, soft_wrap=True)


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="Lower-case login name.")],
    role: Annotated[list[str], typer.Option(help="reviewer, owner, auditor, admin; repeatable.")],
    point: Annotated[list[str], typer.Option(help="Decision point, repeatable, or '*' for all.")],
    group: Annotated[
        list[str] | None, typer.Option(help="Reviewer group, e.g. credit-officers; repeatable.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    principal: PrincipalOption = None,
) -> None:
    """Create a console user; the password is asked for (or read from stdin) and stored hashed."""
    from warden.auth.users import create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    _run(
        "user create",
        lambda recorder: create_user(
            recorder,
            username=username,
            password=password,
            roles=role,
            points=point,
            groups=group,
            actor=context.actor(),
            principal=principal,
        ),
    )
    err.print(
        f"User [bold]{username}[/bold] created (roles {', '.join(sorted(role))}; "
        f"points {', '.join(sorted(point))}; groups {', '.join(sorted(group or [])) or 'none'}).",
        highlight=False,
    )


@user_app.command("disable")
def user_disable(
    username: Annotated[str, typer.Argument(help="The console user to disable.")],
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
) -> None:
    """Disable a console user: no more logins, and their open sessions end now."""
    from warden.auth.lifecycle import disable_user

    _run("user disable", lambda r: disable_user(r, username, actor=context.actor(), reason=reason))
    err.print(f"User {username} disabled; their sessions have ended.", highlight=False)


@principal_app.command("list")
def principal_list(as_json: JsonOption = False) -> None:
    """Principals with their id, kind and whether they are disabled."""
    import sqlalchemy as sa

    from warden.store.schema import principals

    db = context.database(context.settings())
    try:
        with db.connect() as conn:
            rows = conn.execute(sa.select(principals).order_by(principals.c.name)).all()
    finally:
        db.dispose()
    found = [
        {
            "id": r.id,
            "name": r.name,
            "kind": r.kind,
            "disabled": r.disabled_at is not None,
        }
        for r in rows
    ]
    if as_json:
        _print_json(found)
        return
    for p in found:
        state = "disabled" if p["disabled"] else "active"
        out.print(f"{p['id']}  {p['name']}  {p['kind']}  {state}", highlight=False)


@principal_app.command("disable")
def principal_disable(
    name: Annotated[str, typer.Argument(help="The principal's name or id.")],
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
) -> None:
    """Disable a person or service: all their tokens and console logins stop working."""
    from warden.auth.lifecycle import disable_principal

    _run(
        "principal disable",
        lambda r: disable_principal(r, name, actor=context.actor(), reason=reason),
    )
    err.print(f"Principal {name} disabled; all their credentials are refused.", highlight=False)
