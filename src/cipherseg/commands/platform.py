"""Platform commands: ``serve``, ``worker``, ``db upgrade``, ``db demo-data``, ``users create``,
``users list``, ``users set-password``, ``pii rotate-key`` and ``bench platform``.

Settings come from ``CIPHERSEG_*`` environment variables (see ``docs/platform.md``).

>>> from typer.testing import CliRunner
>>> from cipherseg.cli import app
>>> CliRunner().invoke(app, ["users", "--help"]).exit_code
0
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:  # the platform is imported only by the commands that run it
    from cipherseg.platform.core.config import Settings

console = Console(stderr=True)

db_app = typer.Typer(help="Database schema (Alembic migrations shipped in the package).",
                     no_args_is_help=True)
users_app = typer.Typer(help="Platform accounts.", no_args_is_help=True)
pii_app = typer.Typer(help="The PII vault's keys.", no_args_is_help=True)


def _settings() -> Settings:
    from cipherseg.platform.core.config import Settings

    return Settings()


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int | None, typer.Option(
        help="Background worker threads in this process (default CIPHERSEG_WORKER_THREADS;"
             " 0 = run `cipherseg worker` separately).")] = None,
) -> None:
    """Run the web platform (FastAPI + background worker)."""
    import uvicorn

    from cipherseg.errors import CipherSegError
    from cipherseg.platform.app import create_app

    settings = _settings()
    if workers is not None:
        settings.worker_threads = workers
    try:
        app = create_app(settings)
    except CipherSegError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"cipherseg platform on http://{host}:{port}  (data: "
                  f"{settings.data_dir.resolve()}, database: "
                  f"{app.state.platform.engine.dialect.name})")
    # proxy headers are read by the app, from CIPHERSEG_TRUSTED_PROXIES only (uvicorn's own
    # handling would trust any local process: its default is 127.0.0.1)
    uvicorn.run(app, host=host, port=port, proxy_headers=False, forwarded_allow_ips="",
                log_level="info")


def worker(
    threads: Annotated[int, typer.Option(min=1, help="Worker threads.")] = 1,
) -> None:
    """Run background jobs (imports, segmentations) in this process until interrupted."""
    import time

    from cipherseg.errors import CipherSegError
    from cipherseg.platform.app import install_log_redaction, make_context, make_worker

    try:
        ctx = make_context(_settings())
    except CipherSegError as exc:
        raise _fail(str(exc)) from exc
    install_log_redaction(ctx.settings.default_region)
    w = make_worker(ctx, threads=threads)
    w.start()
    console.print(f"worker {w.name} running {threads} thread(s); Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        w.stop()


def settings_vault(settings: Any) -> Any:
    """The platform's PII vault (keyring from the environment or the keyring file)."""
    from cipherseg.pii.keys import load_or_create_keyring
    from cipherseg.pii.vault import PiiVault

    if settings.pii_keyring_from_env:
        return PiiVault(settings.pii_keyring)
    return PiiVault(load_or_create_keyring(settings.pii_keyring_path))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Create or update the database schema."""
    from cipherseg.platform.db import make_engine
    from cipherseg.platform.migrate import current_revision, upgrade

    settings = _settings()
    engine = make_engine(settings.resolved_database_url())
    before = current_revision(engine)
    upgrade(engine, revision, vault=lambda: settings_vault(settings))
    after = current_revision(engine)
    console.print(f"database {engine.url.render_as_string(hide_password=True)}: "
                  f"{before or 'empty'} -> {after}")


@db_app.command("demo-data")
def db_demo_data(
    out: Annotated[Path, typer.Argument(help="Directory for customers.csv and "
                                             "transactions.csv.")],
    customers: Annotated[int, typer.Option(min=10)] = 600,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """Write synthetic demo data in the upload templates' format."""
    from cipherseg.platform.demo_data import demo_csv

    c, t = demo_csv(customers, seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "customers.csv").write_bytes(c)
    (out / "transactions.csv").write_bytes(t)
    console.print(f"wrote {out / 'customers.csv'} and {out / 'transactions.csv'}")


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="admin, owner, merchant, centre or operator.")],
) -> None:
    """Create an account; the password is read from stdin (or prompted for twice)."""
    from cipherseg.errors import ValidationError
    from cipherseg.platform import audit
    from cipherseg.platform.db import make_engine, make_sessionmaker
    from cipherseg.platform.services.users import create_user, parse_role

    password = _read_password()
    settings = _settings()
    factory = make_sessionmaker(make_engine(settings.resolved_database_url()))
    with factory() as s:
        try:
            user = create_user(s, name, password, parse_role(role))
        except ValidationError as exc:
            raise _fail(str(exc)) from exc
        audit.record(s, "user_create", actor=None, actor_name="cli", object_type="user",
                     object_id=user.username, detail={"role": user.role})
        s.commit()
    console.print(f"created {name} ({role})")


def _read_password() -> str:
    if sys.stdin.isatty():
        password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return password
    return sys.stdin.readline().rstrip("\r\n")


@users_app.command("set-password")
def users_set_password(
    name: Annotated[str, typer.Argument(help="User name.")],
) -> None:
    """Set an account's password (read from stdin, or prompted for twice); ends the user's
    sessions and clears a pending forced change. Audited as ``password_set`` by ``cli``."""
    from cipherseg.errors import ValidationError
    from cipherseg.platform import audit
    from cipherseg.platform.db import make_engine, make_sessionmaker
    from cipherseg.platform.services.users import get_user, set_password

    password = _read_password()
    factory = make_sessionmaker(make_engine(_settings().resolved_database_url()))
    with factory() as s:
        user = get_user(s, name)
        if user is None:
            raise _fail(f"there is no user called {name!r} (`cipherseg users list`)")
        try:
            set_password(s, user, password)
        except ValidationError as exc:
            raise _fail(str(exc)) from exc
        audit.record(s, "password_set", actor=None, actor_name="cli", object_type="user",
                     object_id=user.username)
        s.commit()
    console.print(f"password of {name} set; their sessions were ended")


@users_app.command("list")
def users_list() -> None:
    """List accounts."""
    from sqlalchemy import select

    from cipherseg.platform.db import make_engine, make_sessionmaker
    from cipherseg.platform.models import User

    factory = make_sessionmaker(make_engine(_settings().resolved_database_url()))
    with factory() as s:
        for u in s.scalars(select(User).order_by(User.username)):
            typer.echo(f"{u.username}\t{u.role}\t{'active' if u.active else 'disabled'}")


@pii_app.command("rotate-key")
def pii_rotate_key() -> None:
    """New PII data key; re-encrypt every phone number and name; retire the old key."""
    from rich.progress import Progress

    from cipherseg.errors import CipherSegError
    from cipherseg.platform.db import make_engine
    from cipherseg.platform.rotation import rotate_pii_key

    settings = _settings()
    engine = make_engine(settings.resolved_database_url())
    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("re-encrypting", total=None)
            report = rotate_pii_key(settings, engine, progress=lambda d, t: bar.update(
                task, completed=d, total=t))
    except CipherSegError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"new key {report.new_key_id}; re-encrypted {report.reencrypted} values; "
                  + ("old keys retired" if report.retired else
                     "old keys kept (an import was running or values remain): run again"))


def bench_platform(
    sessions: Annotated[int, typer.Option(min=1, max=200)] = 50,
    requests_per_session: Annotated[int, typer.Option(min=1)] = 40,
    max_seconds: Annotated[float, typer.Option(min=5)] = 180.0,
    out: Annotated[Path, typer.Option(help="Directory for JSON and PNG.")]
    = Path("bench/results"),
    import_rows: Annotated[int, typer.Option(
        min=0, help="Also time a customers and a transactions import of this many rows "
                    "(0: skip).")] = 100_000,
) -> None:
    """Load test on loopback: concurrent sessions browse and upload while a job runs."""
    from cipherseg.testing.loadtest import run_import_bench, run_load_test

    if import_rows:
        console.print(f"timing {import_rows:,}-row imports")
        for kind, m in run_import_bench(import_rows, out_dir=out).items():
            console.print(f"{kind}: {m['rows']:,} rows in {m['seconds']} s "
                          f"({m['rows_per_s']:,} rows/s)")
    result = run_load_test(sessions=sessions, requests_per_session=requests_per_session,
                           max_seconds=max_seconds, out_dir=out, console=console)
    console.print(result.summary())


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this module's commands."""
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.add_typer(db_app, name="db")
    app.add_typer(users_app, name="users")
    app.add_typer(pii_app, name="pii")
    bench_app.command("platform")(bench_platform)
