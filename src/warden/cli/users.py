"""`warden user create`: console users who log in with a username and password."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from warden.cli import context
from warden.errors import WardenError

user_app = typer.Typer(no_args_is_help=True, help="Console users (username and password).")
err = Console(stderr=True)


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
) -> None:
    """Create a console user; the password is asked for (or read from stdin) and stored hashed."""
    from warden.auth.users import create_user
    from warden.store.recorder import Recorder

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    db = context.database(context.settings())
    recorder = Recorder(db)
    try:
        create_user(
            recorder,
            username=username,
            password=password,
            roles=role,
            points=point,
            groups=group,
            actor=context.actor(),
        )
    except WardenError as error:
        err.print(f"[red]warden user create:[/red] {error.message}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        recorder.close()
        db.dispose()
    err.print(
        f"User [bold]{username}[/bold] created (roles {', '.join(sorted(role))}; "
        f"points {', '.join(sorted(point))}; groups {', '.join(sorted(group or [])) or 'none'}).",
        highlight=False,
    )
