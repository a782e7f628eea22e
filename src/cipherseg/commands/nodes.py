"""``cipherseg manager serve``: protocol 4.2's manager as a network service for nodes of
several organisations; ``manager add-node``/``remove-node``/``nodes``: one token per node;
``centre serve --protocol joint`` is served from here too (docs/deployment.md).

>>> from typer.testing import CliRunner
>>> from cipherseg.cli import app
>>> CliRunner().invoke(app, ["manager", "serve", "--help"]).exit_code
0
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from cipherseg.commands.progress import console
from cipherseg.errors import ParameterError
from cipherseg.transport.base import is_loopback_host
from cipherseg.transport.tokens import (
    OwnersFile,
    add_owner,
    read_token_file,
    remove_owner,
    write_new_private_file,
)

manager_app = typer.Typer(help="Run protocol 4.2's manager as a service for the nodes of "
                          "several organisations.", no_args_is_help=True)

NodesFileOption = Annotated[Path, typer.Option(
    "--nodes-file", help="One token per node (names and SHA-256 digests; `cipherseg manager "
    "add-node`).")]


def _nodes(path: Path | None, what: str) -> OwnersFile:
    if path is None:
        raise typer.BadParameter(f"the joint {what} needs the nodes' tokens file "
                                 "(`cipherseg manager add-node NAME --nodes-file …`)")
    try:
        nodes = OwnersFile(path)
        if not nodes.names():
            raise ParameterError(f"{path} names no node yet")
    except ParameterError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return nodes


def _check_exposure(host: str, ssl_certfile: Path | None, ssl_keyfile: Path | None,
                    insecure_http: bool) -> None:
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise typer.BadParameter("--ssl-certfile and --ssl-keyfile go together")
    if not is_loopback_host(host) and ssl_certfile is None and not insecure_http:
        raise typer.BadParameter(f"listening on {host} needs --ssl-certfile/--ssl-keyfile "
                                 "(or --insecure-http on a network you trust)")


def serve_joint_centre_command(*, host: str, port: int, nodes_file: Path | None,
                               contact_seconds: float, max_message_mb: int,
                               ssl_certfile: Path | None, ssl_keyfile: Path | None,
                               insecure_http: bool) -> None:
    """``cipherseg centre serve --protocol joint``."""
    from cipherseg.nodes.serve import serve_joint_centre

    nodes = _nodes(nodes_file, "centre")
    _check_exposure(host, ssl_certfile, ssl_keyfile, insecure_http)
    if "manager" not in nodes.names():
        raise typer.BadParameter(f"{nodes_file} has no entry 'manager' (the manager "
                                 "service's token): `cipherseg manager add-node manager …`")
    scheme = "https" if ssl_certfile else "http"
    console.print(f"joint compute centre (protocol 4.2) on {scheme}://{host}:{port}; nodes: "
                  f"{', '.join(nodes.names())}")
    serve_joint_centre(host=host, port=port, nodes=nodes, contact_timeout=contact_seconds,
                       max_message_bytes=max_message_mb * 1024**2,
                       ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)


@manager_app.command("serve")
def serve(
    nodes_file: NodesFileOption,
    centre: Annotated[str, typer.Option(help="URL of the joint centre (`cipherseg centre "
                                        "serve --protocol joint`).")],
    centre_token_file: Annotated[Path, typer.Option(
        help="The manager's token on the centre (its entry 'manager' there).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8788,
    contact_seconds: Annotated[float, typer.Option(
        min=1.0, help="End a session when a node or the centre has not made contact for "
        "this long.")] = 60.0,
    join_minutes: Annotated[float, typer.Option(
        min=0.1, help="End a session whose nodes have not all joined within this.")] = 15.0,
    centre_ca_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    max_message_mb: Annotated[int, typer.Option(min=1)] = 64,
    ssl_certfile: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    insecure_http: Annotated[bool, typer.Option(
        help="Allow plain HTTP off loopback (tokens and metadata in clear).")] = False,
) -> None:
    """Serve protocol 4.2's manager: holds a key share, fuses decryptions, releases the model
    to the nodes."""
    from cipherseg.nodes.serve import serve_manager

    nodes = _nodes(nodes_file, "manager")
    _check_exposure(host, ssl_certfile, ssl_keyfile, insecure_http)
    try:
        token = read_token_file(centre_token_file)
    except ParameterError as exc:
        raise typer.BadParameter(str(exc)) from exc
    scheme = "https" if ssl_certfile else "http"
    console.print(f"joint manager (protocol 4.2) on {scheme}://{host}:{port}, centre {centre}; "
                  f"nodes: {', '.join(nodes.names())}")
    try:
        serve_manager(host=host, port=port, nodes=nodes, centre_url=centre, centre_token=token,
                      contact_timeout=contact_seconds, join_timeout=60 * join_minutes,
                      centre_ca=str(centre_ca_file) if centre_ca_file else None,
                      insecure_http=insecure_http, max_message_bytes=max_message_mb * 1024**2,
                      ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    except ParameterError as exc:
        raise typer.BadParameter(str(exc)) from exc


@manager_app.command("add-node")
def add_node(
    name: Annotated[str, typer.Argument(help="The node's name (letters, digits, . _ -).")],
    nodes_file: NodesFileOption,
    token_out: Annotated[Path, typer.Option(help="Where to write the node's new token (mode "
                                            "0600), to hand to that node's operator.")],
) -> None:
    """Give a node (or, in the centre's file, the manager) its own token."""
    if token_out.exists():
        raise typer.BadParameter(f"{token_out} exists; choose a new file for the token")
    try:
        token = add_owner(nodes_file, name)
    except ParameterError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except OSError as exc:
        raise typer.BadParameter(f"cannot write {nodes_file}: {exc.strerror}") from exc
    try:
        write_new_private_file(token_out, token + "\n")
    except OSError as exc:
        with contextlib.suppress(ParameterError, OSError):
            remove_owner(nodes_file, name)  # a token nobody holds would be a dead entry
        raise typer.BadParameter(f"cannot write {token_out}: {exc.strerror}; node {name} "
                                 "was not added") from exc
    console.print(f"node {name} added to {nodes_file}; give its operator {token_out}")


@manager_app.command("remove-node")
def remove_node(name: Annotated[str, typer.Argument()], nodes_file: NodesFileOption) -> None:
    """Revoke a node's token (refused from the service's next request on)."""
    try:
        remove_owner(nodes_file, name)
    except ParameterError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except OSError as exc:
        raise typer.BadParameter(f"cannot write {nodes_file}: {exc.strerror}") from exc
    console.print(f"node {name} removed from {nodes_file}")


def bench_joint_network(*, nodes: int, customers: int, k: int, repeats: int, seed: int,
                        data: str, json_path: Path) -> None:
    """``cipherseg bench joint --network``: see :mod:`cipherseg.bench.joint_network`."""
    import json

    from rich.progress import Progress

    from cipherseg.bench.joint_network import run_network_bench

    with Progress(console=console) as bar:
        task = bar.add_task("sessions (in process and over HTTP, alternating)",
                            total=2 * repeats)
        result = run_network_bench(nodes=nodes, customers=customers, k=k, repeats=repeats,
                                   seed=seed, data=data, on_run=lambda: bar.advance(task))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    med = result["median_seconds"]
    console.print(f"{nodes} nodes × {customers:,} customers, k={k}, {result['n_iter']} "
                  f"iterations: in one process {med['in_process']:.2f} s, nodes over HTTP "
                  f"{med['network']:.2f} s → ratio {result['ratio_network_vs_in_process']:.2f}× "
                  f"(target ≤ 1.3×; pairs {result['pair_ratios']}, load "
                  f"{result['loadavg_before_after']}); same model: {result['identical_models']}")
    console.print(f"wrote {json_path}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(manager_app, name="manager")
