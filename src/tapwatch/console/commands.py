"""The console's command groups: `serve`, `users`, `retention`, `support`.

FastAPI, uvicorn and argon2 are imported inside the commands so `tapwatch --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

# the console's roles (tapwatch.store.console_models.ROLES), spelled out so --help stays fast
ROLE_CHOICE = click.Choice(["security_reader", "security_analyst", "security_admin", "contributor",
                            "owner", "global_admin"])

db_options = [
    click.option("--db", "db", envvar="TAPWATCH_DB", default=None, metavar="PATH|URL",
                 help="Inventory database (default ./tapwatch.db; env TAPWATCH_DB)."),
    click.option("--database-url", "database_url", default=None, metavar="URL",
                 help="Database URL, e.g. postgresql+psycopg://user:pw@host/db (same as --db URL)."),
]


def with_db(f):  # type: ignore[no-untyped-def]
    for option in reversed(db_options):
        f = option(f)
    return f


def _engine(db: str | None, database_url: str | None):  # type: ignore[no-untyped-def]
    from tapwatch.store.db import open_engine

    if db and database_url:
        raise click.UsageError("give --db or --database-url, not both")
    return open_engine(database_url or db)


def _fail(message: str) -> None:
    click.echo(f"tapwatch: error: {message}", err=True)
    sys.exit(2)


@contextmanager
def _user_transaction(db: str | None, database_url: str | None) -> Iterator[Any]:
    """A transaction for the `users` commands: an AuthError (no such user, weak password, last
    owner) rolls it back and ends the command with its message instead of a traceback."""
    from tapwatch.console import auth
    from tapwatch.store.db import sessions

    try:
        with sessions(_engine(db, database_url)).begin() as s:
            yield s
    except auth.AuthError as e:
        _fail(str(e))


def default_log_file(db: str | None, database_url: str | None) -> Path:
    """Next to a SQLite database, else in the working directory."""
    from tapwatch.store.db import database_url as resolve

    url = resolve(database_url or db)
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).with_name("tapwatch-console.log")
    return Path("tapwatch-console.log")


@click.command()
@with_db
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--log-file", type=click.Path(path_type=Path), default=None,
              help="Console log (default: tapwatch-console.log next to the database).")
@click.option("--secure-cookies/--no-secure-cookies", default=None,
              help="Mark cookies Secure (default: when the request came over https).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve HTTPS with this certificate (PEM); needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Private key (PEM) of --tls-cert.")
def serve(db: str | None, database_url: str | None, host: str, port: int, log_file: Path | None,
          secure_cookies: bool | None, tls_cert: str | None, tls_key: str | None) -> None:
    """Serve the console (web UI and REST API under /api/v1)."""
    import uvicorn

    from tapwatch.console import auth
    from tapwatch.console.app import create_app
    from tapwatch.store.db import sessions

    engine = _engine(db, database_url)
    log_path = log_file or default_log_file(db, database_url)
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("tapwatch", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("tapwatch").setLevel(logging.INFO)
    with sessions(engine).begin() as s:
        created = auth.ensure_owner(s)
    if created:
        click.echo(f"first start: created user {created[0]!r} with password {created[1]}")
        click.echo("  (shown only this once; change it with `tapwatch users set-password`)")
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    scheme = "https" if tls_cert else "http"
    click.echo(f"tapwatch console on {scheme}://{host}:{port}/  "
               "(API: /api/v1, OpenAPI: /api/v1/openapi.json)")
    app = create_app(engine, background=True, secure_cookies=secure_cookies)
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=True,
                ssl_certfile=tls_cert, ssl_keyfile=tls_key)


@click.group()
def users() -> None:
    """Console users, roles and API tokens."""


@users.command("add")
@click.argument("username")
@with_db
@click.option("--role", default="security_reader", show_default=True,
              type=ROLE_CHOICE)
@click.option("--password", default=None, help="Default: generate one and print it once.")
def users_add(username: str, db: str | None, database_url: str | None, role: str,
              password: str | None) -> None:
    """Add a user."""
    from tapwatch.console import auth

    generated = password is None
    password = password or auth.generate_password()
    with _user_transaction(db, database_url) as s:
        auth.add_user(s, username, password, role, actor="cli")
    click.echo(f"added {username} ({role})" + (f"; password: {password}" if generated else ""))


@users.command("list")
@with_db
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def users_list(db: str | None, database_url: str | None, fmt: str) -> None:
    """List users and their roles."""
    from sqlalchemy import select

    from tapwatch.console.api.users import user_json
    from tapwatch.store.console_models import User
    from tapwatch.store.db import sessions

    with sessions(_engine(db, database_url))() as s:
        rows = [user_json(u) for u in s.scalars(select(User).order_by(User.username))]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'USER':<24} {'ROLE':<18} {'STATUS':<9} LAST LOGIN")
    for r in rows:
        click.echo(f"{r['username']:<24} {r['role']:<18} {'disabled' if r['disabled'] else 'active':<9} "
                   f"{r['last_login'] or 'never'}")


@users.command("set-role")
@click.argument("username")
@click.argument("role", type=ROLE_CHOICE)
@with_db
def users_set_role(username: str, role: str, db: str | None, database_url: str | None) -> None:
    """Change a user's role."""
    from tapwatch.console import auth

    with _user_transaction(db, database_url) as s:
        auth.set_role(s, auth.find_user(s, username), role, actor="cli")
    click.echo(f"{username}: {role}")


@users.command("set-password")
@click.argument("username")
@with_db
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def users_set_password(username: str, db: str | None, database_url: str | None, password: str) -> None:
    """Set a user's password (ends their browser sessions)."""
    from tapwatch.console import auth

    with _user_transaction(db, database_url) as s:
        auth.set_password(s, auth.find_user(s, username), password, actor="cli")
    click.echo(f"{username}: password changed")


@users.command("token")
@click.argument("username")
@with_db
@click.option("--name", default="cli", show_default=True, help="What the token is for (e.g. a sensor).")
def users_token(username: str, db: str | None, database_url: str | None, name: str) -> None:
    """Issue an API token for a user; it is printed once (only its hash is stored)."""
    from tapwatch.console import auth

    with _user_transaction(db, database_url) as s:
        token = auth.issue_token(s, auth.find_user(s, username), name, actor="cli")
    click.echo(token)


@click.group()
def retention() -> None:
    """Purging old devices and closed alerts."""


@retention.command("run")
@with_db
def retention_run(db: str | None, database_url: str | None) -> None:
    """Purge now what is older than the retention period (the `retention_days` setting)."""
    from tapwatch.console import retention as job
    from tapwatch.store.db import sessions

    with sessions(_engine(db, database_url)).begin() as s:
        r = job.run(s, actor="cli")
    if r.days <= 0:
        click.echo("retention is off (retention_days = 0)")
        return
    click.echo(f"retention {r.days} days: purged {r.devices} devices (inactive before "
               f"{str(r.device_cutoff)[:19]}), {r.connections} connections, {r.alerts} closed alerts")


@click.group()
def support() -> None:
    """Collecting what a support request needs."""


@support.command("bundle")
@with_db
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Zip file to write.")
@click.option("--log-file", type=click.Path(path_type=Path), default=None,
              help="Console log to include (default: tapwatch-console.log next to the database).")
def support_bundle(db: str | None, database_url: str | None, output: Path, log_file: Path | None) -> None:
    """Write a zip: versions, settings (secrets redacted), database statistics, recent logs."""
    from tapwatch.console.support import bundle

    names = bundle(_engine(db, database_url), output, log_file or default_log_file(db, database_url))
    click.echo(f"wrote {output}: {', '.join(names)}")
