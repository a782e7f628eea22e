"""``cipherseg vertical join``: take part in a vertical session (protocol 4.5) from this
machine, against the manager and centre services (``cipherseg manager serve``,
``cipherseg centre serve --protocol joint``; both host protocol 4.5 too).

The node's columns are read here, PSI-blinded, scaled and encrypted here; only blinded
points and ciphertexts under the manager's key leave. What comes back: the shared
customers' segments (this node's own identifiers) and the released centroids.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Annotated

import typer

vertical_app = typer.Typer(help="Vertical segmentation (protocol 4.5) on nodes.",
                           no_args_is_help=True)

MAX_ROWS = 2_000_000


def read_columns(path: Path, id_column: str, columns: tuple[str, ...]
                 ) -> tuple[list[str], list[list[float]]]:
    """Identifiers and the named columns of a CSV file (finite numbers; unique ids)."""
    ids: list[str] = []
    rows: list[list[float]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (id_column, *columns) if c not in (reader.fieldnames or [])]
        if missing:
            raise typer.BadParameter(f"{path} has no column(s) {', '.join(missing)}")
        for line, record in enumerate(reader, start=2):
            if len(ids) >= MAX_ROWS:
                raise typer.BadParameter(f"{path} has more than {MAX_ROWS:,} rows")
            try:
                values = [float(record[c]) for c in columns]
            except (TypeError, ValueError):
                raise typer.BadParameter(f"{path}, line {line}: a column named in the terms "
                                         "is not a number") from None
            if not all(math.isfinite(v) for v in values):
                raise typer.BadParameter(f"{path}, line {line}: not a finite number")
            ids.append(record[id_column])
            rows.append(values)
    if len(set(ids)) != len(ids):
        raise typer.BadParameter(f"{path}: identifiers in {id_column} are not unique")
    return ids, rows


@vertical_app.command("join")
def join(
    terms_file: Annotated[Path, typer.Option("--terms", exists=True, dir_okay=False,
                                             help="The agreed terms (JSON).")],
    node: Annotated[str, typer.Option(help="This node's name in the terms.")],
    data: Annotated[Path, typer.Option(exists=True, dir_okay=False,
                                       help="CSV with the id column and this node's columns.")],
    manager: Annotated[str, typer.Option(help="URL of the manager service.")],
    manager_token_file: Annotated[Path, typer.Option(exists=True, dir_okay=False)],
    centre: Annotated[str, typer.Option(help="URL of the centre service.")],
    centre_token_file: Annotated[Path, typer.Option(exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Where to write id,segment of the shared "
                                           "customers (written only when the run completes).")],
    id_column: Annotated[str, typer.Option(help="The identifier both sides share (phone "
                                                "numbers in E.164, say).")] = "phone",
    phone_region: Annotated[str | None, typer.Option(
        help="Read the ids as phone numbers of this region and match them in E.164 (as the "
        "platform stores them: '13812345678' with CN is '+8613812345678'); default: the "
        "terms' phone_region, if they name one.")] = None,
    log1p: Annotated[bool, typer.Option(
        "--log1p", help="Use log(1 + x) of every column (counts and amounts ≥ 0): on the "
        "scale of the mall's log1p RFM, as k-means weighs every column alike.")] = False,
    contact_seconds: Annotated[float, typer.Option(min=1.0)] = 60.0,
    ca_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    insecure_http: Annotated[bool, typer.Option(
        help="Allow plain HTTP off loopback (tokens and metadata in clear).")] = False,
) -> None:
    """Join a vertical session with this machine's columns; write its shared customers'
    segments."""
    import numpy as np

    from cipherseg.commands.progress import console
    from cipherseg.errors import CipherSegError
    from cipherseg.nodes.client import ServiceClient
    from cipherseg.nodes.vertical_holder import run_holder
    from cipherseg.nodes.vertical_terms import VerticalTerms
    from cipherseg.transport.tokens import read_token_file

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        terms = VerticalTerms.from_json(json.loads(terms_file.read_text(encoding="utf-8")))
        columns = terms.features[terms.party_id(node) - 1]
        verify: bool | str = str(ca_file) if ca_file else True
        manager_client = ServiceClient(manager, token=read_token_file(manager_token_file),
                                       what="manager", verify=verify,
                                       insecure_http=insecure_http)
        centre_client = ServiceClient(centre, token=read_token_file(centre_token_file),
                                      what="centre", verify=verify, insecure_http=insecure_http)
    except (CipherSegError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    ids, rows = read_columns(data, id_column, columns)
    matched = ids
    phone_region = phone_region or terms.context.get("phone_region")
    if phone_region is not None:
        from cipherseg.pii.masking import normalise_phone

        matched = []
        for line, ident in enumerate(ids, start=2):
            try:
                matched.append(normalise_phone(ident, region=phone_region))
            except CipherSegError as exc:
                raise typer.BadParameter(f"{data}, line {line}: {exc}") from None
        if len(set(matched)) != len(matched):
            raise typer.BadParameter(f"{data}: two rows have the same phone number")
    X = np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))
    if log1p:
        if X.size and X.min() < 0:
            raise typer.BadParameter(f"{data}: --log1p needs values >= 0")
        X = np.log1p(X)
    elif X.size and np.abs(X).max() > 64:
        console.print(f"[yellow]note: your columns reach {np.abs(X).max():,.0f}; the mall's "
                      "log1p features stay below about 15, so yours will dominate the "
                      "segments (see --log1p)[/yellow]")
    console.print(f"node {node}: {len(ids):,} customers, columns {', '.join(columns)}; "
                  f"session {terms.session[:8]}… with {', '.join(terms.nodes)}")
    stages: list[str] = []

    def progress(stage: str, done: int, total: int) -> None:
        if not stages or stages[-1] != stage:
            stages.append(stage)
            console.print(f"  {stage}")

    try:
        outcome = run_holder(terms, node, matched, X, manager=manager_client,
                             centre=centre_client, contact_timeout=contact_seconds,
                             progress=progress)
    except CipherSegError as exc:
        console.print(f"[red]the vertical session ended without a result: {exc}[/red]")
        console.print("nothing was released; no segments were written")
        raise typer.Exit(1) from None
    finally:
        manager_client.close()
        centre_client.close()
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([id_column, "segment"])
        for ident, label in zip(ids, outcome.labels, strict=True):
            if label >= 0:
                writer.writerow([ident, int(label)])
    partial.replace(out)
    console.print(f"{outcome.n_shared:,} shared customers in {terms.n_clusters} segments "
                  f"after {outcome.n_iter} iterations ({outcome.seconds:.1f} s, "
                  f"{outcome.bytes_sent / 1e6:.1f} MB sent, "
                  f"{outcome.bytes_received / 1e6:.1f} MB received); wrote {out}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this module's commands."""
    app.add_typer(vertical_app, name="vertical")
