"""``cipherseg centre serve``: the compute centre as a network service (protocol 4.1 over HTTP);
``centre add-owner``/``remove-owner``/``owners``: one access token per data owner;
``--centre``/``--centre-token-file`` for the commands that reach it; ``bench transport``.

>>> from typer.testing import CliRunner
>>> from cipherseg.cli import app
>>> CliRunner().invoke(app, ["centre", "serve", "--help"]).exit_code
0
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cipherseg.commands.engine_options import EngineOption, SchedulerOption
from cipherseg.commands.progress import console
from cipherseg.errors import ParameterError
from cipherseg.transport.base import is_loopback_host
from cipherseg.transport.tokens import (
    OwnersFile,
    add_owner,
    ensure_token_file,
    read_token_file,
    remove_owner,
    write_new_private_file,
)

if TYPE_CHECKING:
    from cipherseg.transport.http import HttpTransport

centre_app = typer.Typer(help="Run the compute centre as a service for remote data owners.",
                         no_args_is_help=True)


CentreOption = Annotated[str | None, typer.Option(
    "--centre", help="URL of a compute centre run with `cipherseg centre serve` "
    "(default: the centre runs in this process).")]
CentreTokenOption = Annotated[Path | None, typer.Option(
    help="File holding the remote centre's access token.")]
CentreCaOption = Annotated[Path | None, typer.Option(
    exists=True, dir_okay=False, help="CA bundle that signed the remote centre's certificate "
    "(default: the system's).")]


def remote_centre(url: str | None, token_file: Path | None, engine: str,
                  ca_file: Path | None = None) -> HttpTransport | None:
    """The transport to a remote centre for ``--centre``, or None; a clear CLI error else."""
    from cipherseg.transport.http import HttpTransport

    if url is None:
        if token_file is not None or ca_file is not None:
            raise typer.BadParameter("--centre-token-file and --centre-ca-file need --centre URL")
        return None
    if engine != "local":
        raise typer.BadParameter("--engine chooses where an in-process centre runs; a remote "
                                 "centre chooses its own (cipherseg centre serve --engine)")
    try:
        token = read_token_file(token_file) if token_file is not None else None
        return HttpTransport(url, token=token, verify=str(ca_file) if ca_file else True)
    except ParameterError as exc:
        raise typer.BadParameter(str(exc)) from exc


@centre_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8787,
    token_file: Annotated[Path | None, typer.Option(
        help="Access token that owners must present; created (mode 0600) if missing. "
             "This or --owners-file is required unless the centre listens on loopback only.")
    ] = None,
    owners_file: Annotated[Path | None, typer.Option(
        help="One token per data owner, each owner's sessions its own (`cipherseg centre "
             "add-owner`); changes apply from the next request.")] = None,
    engine: EngineOption = "local",
    workers: Annotated[int, typer.Option(min=-1, help="Centre worker processes (-1: all "
                                         "cores).")] = -1,
    scheduler: SchedulerOption = None,
    max_message_mb: Annotated[int, typer.Option(min=1, help="Largest message accepted, MB "
                                                "(the upload is the largest).")] = 2048,
    session_idle_minutes: Annotated[float, typer.Option(
        min=0.1, help="Drop a session (and its ciphertexts) after this long without a "
        "message.")] = 60.0,
    ssl_certfile: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    insecure_http: Annotated[bool, typer.Option(
        help="Allow plain HTTP on a non-loopback address (the token and the protocol's "
             "metadata then cross the network in clear).")] = False,
    protocol: Annotated[str, typer.Option(
        help="outsourced: protocol 4.1 for single owners; joint: protocol 4.2's centre for "
             "nodes of several organisations (--owners-file names the nodes and 'manager'; "
             "docs/deployment.md).")] = "outsourced",
    contact_seconds: Annotated[float, typer.Option(
        min=1.0, help="joint: end a session when a node or the manager has not made "
        "contact for this long.")] = 60.0,
) -> None:
    """Serve protocol 4.1 (or 4.2's centre) over HTTP(S); holds public material only."""
    if protocol == "joint":
        from cipherseg.commands.nodes import serve_joint_centre_command

        if token_file is not None or engine != "local" or scheduler is not None:
            raise typer.BadParameter("--protocol joint takes --owners-file (one token per "
                                     "node and one for the manager), not --token-file, "
                                     "--engine or --scheduler")

        serve_joint_centre_command(host=host, port=port, nodes_file=owners_file,
                                   contact_seconds=contact_seconds,
                                   max_message_mb=max_message_mb, ssl_certfile=ssl_certfile,
                                   ssl_keyfile=ssl_keyfile, insecure_http=insecure_http)
        return
    if protocol != "outsourced":
        raise typer.BadParameter("--protocol is 'outsourced' (4.1) or 'joint' (4.2)")
    from cipherseg.engine.factory import check_engine_options
    from cipherseg.engine.local import resolve_n_jobs
    from cipherseg.errors import CipherSegError
    from cipherseg.hosting.centre_http import serve_centre

    try:
        check_engine_options(engine, scheduler)
    except CipherSegError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise typer.BadParameter("--ssl-certfile and --ssl-keyfile go together")
    if token_file is not None and owners_file is not None:
        raise typer.BadParameter("give --token-file (one token for all owners) or "
                                 "--owners-file (one per owner), not both")
    if not is_loopback_host(host):
        if token_file is None and owners_file is None:
            raise typer.BadParameter(f"listening on {host} needs --token-file or --owners-file "
                                     "(anyone who can reach the port could otherwise use this "
                                     "centre)")
        if ssl_certfile is None and not insecure_http:
            raise typer.BadParameter(f"listening on {host} needs --ssl-certfile/--ssl-keyfile "
                                     "(or --insecure-http on a network you trust)")
    try:
        token = ensure_token_file(token_file) if token_file is not None else None
        if owners_file is not None and not owners_file.exists():
            raise ParameterError(f"no owners file {owners_file}: create it with `cipherseg "
                                 "centre add-owner NAME --owners-file … --token-out …`")
        owners = OwnersFile(owners_file) if owners_file is not None else None
        if owners is not None and not owners.names():
            raise ParameterError(f"{owners_file} names no owner yet: `cipherseg centre "
                                 "add-owner NAME --owners-file …` first")
    except CipherSegError as exc:
        raise typer.BadParameter(str(exc)) from exc
    scheme = "https" if ssl_certfile else "http"
    if owners is not None:
        access = f"owners: {', '.join(owners.names())} (tokens per {owners_file})"
    elif token_file is not None:
        access = f"owners need the token in {token_file}"
    else:
        access = "no access token (loopback only)"
    console.print(f"compute centre on {scheme}://{host}:{port} ({engine}); {access}")
    serve_centre(host=host, port=port, token=token, owners=owners,
                 n_jobs=resolve_n_jobs(workers),
                 engine=engine, scheduler=scheduler,
                 session_idle_seconds=60 * session_idle_minutes,
                 max_message_bytes=max_message_mb * 1024**2,
                 ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
                 ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None)


OwnersFileOption = Annotated[Path, typer.Option(
    help="The service's owners file (`cipherseg centre serve --owners-file`).")]


@centre_app.command("add-owner")
def add_owner_command(
    name: Annotated[str, typer.Argument(help="The data owner's name (letters, digits, . _ -).")],
    owners_file: OwnersFileOption,
    token_out: Annotated[Path, typer.Option(
        help="Where to write the owner's new token (mode 0600), to hand to that owner; "
             "the owners file keeps only its SHA-256.")],
) -> None:
    """Give a data owner its own access token to the centre service."""
    if token_out.exists():
        raise typer.BadParameter(f"{token_out} exists; choose a new file for the token")
    try:
        token = add_owner(owners_file, name)
    except ParameterError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except OSError as exc:
        raise typer.BadParameter(f"cannot write {owners_file}: {exc.strerror}") from exc
    try:
        write_new_private_file(token_out, token + "\n")
    except OSError as exc:
        with contextlib.suppress(ParameterError, OSError):
            remove_owner(owners_file, name)  # a token nobody holds would be a dead entry
        raise typer.BadParameter(f"cannot write {token_out}: {exc.strerror}; owner {name} "
                                 "was not added") from exc
    console.print(f"owner {name} added to {owners_file}; give them {token_out} "
                  "(for --centre-token-file)")


@centre_app.command("remove-owner")
def remove_owner_command(
    name: Annotated[str, typer.Argument(help="The data owner to revoke.")],
    owners_file: OwnersFileOption,
) -> None:
    """Revoke a data owner's token; a running service refuses it from its next request."""
    try:
        remove_owner(owners_file, name)
    except ParameterError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except OSError as exc:
        raise typer.BadParameter(f"cannot write {owners_file}: {exc.strerror}") from exc
    console.print(f"owner {name} removed from {owners_file}")


@centre_app.command("owners")
def owners_command(owners_file: OwnersFileOption) -> None:
    """The data owners that hold a token (names only)."""
    try:
        names = OwnersFile(owners_file).names()
    except ParameterError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print("\n".join(names) if names else f"no owners in {owners_file}")


def bench_transport(
    customers: Annotated[int, typer.Option(min=100)] = 100_000,
    k: Annotated[int, typer.Option(min=1)] = 4,
    iterations: Annotated[int, typer.Option(min=1)] = 10,
    repeats: Annotated[int, typer.Option(min=1)] = 3,
    workers: Annotated[int, typer.Option(min=1, help="Processes of each party.")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    json_path: Annotated[Path, typer.Option("--json")] = Path("bench/results/transport.json"),
) -> None:
    """Protocol 4.1 with the centre in-process vs over HTTP, measured in one run: JSON + PNG."""
    import json

    from rich.progress import Progress

    from cipherseg.bench.transport import plot_transport_bench, run_transport_bench

    with Progress(console=console) as bar:
        task = bar.add_task("fits (in-process and over HTTP, alternating)", total=2 * repeats)
        result = run_transport_bench(customers, k=k, iterations=iterations, repeats=repeats,
                                     workers=workers, seed=seed,
                                     on_fit=lambda: bar.advance(task))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    png = plot_transport_bench(result, json_path.with_suffix(".png"))
    med = result["median_seconds"]
    console.print(f"{result['customers']:,} customers, {iterations} iterations: in-process "
                  f"{med['in_process']:.2f} s, over HTTP {med['http']:.2f} s → median ratio "
                  f"{result['median_ratio']:.2f}× ({result['mb_per_run']:.0f} MB per fit); "
                  f"ARI between the modes {result['ari_http_vs_in_process']:.4f}")
    console.print(f"wrote {json_path} and {png}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(centre_app, name="centre")
    bench_app.command("transport")(bench_transport)
