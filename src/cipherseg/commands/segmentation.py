"""`cipherseg demo`, `cipherseg segment`, `cipherseg bench kmeans`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from cipherseg.commands.centre import (
    CentreCaOption,
    CentreOption,
    CentreTokenOption,
    remote_centre,
)
from cipherseg.commands.engine_options import (
    EngineOption,
    SchedulerOption,
    attach_block_progress,
    party_executors,
)
from cipherseg.commands.progress import StageProgress, console
from cipherseg.errors import CipherSegError
from cipherseg.transport.base import Transport


def _segment_table(result: Any, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in ("segment", "name", "customers", "mean recency (days)", "mean frequency",
                "mean spend / invoice"):
        table.add_column(col, justify="right" if col not in ("name",) else "left")
    for seg, row in result.segments.iterrows():
        table.add_row(str(seg), row["name"], f"{int(row['size']):,}",
                      f"{row['mean_recency_days']:.1f}", f"{row['mean_frequency']:.2f}",
                      f"{row['mean_monetary']:.2f}")
    return table


def _summary(result: Any) -> str:
    rep = result.report
    mb = (rep["bytes_to_centre"] + rep["bytes_to_owner"]) / 1e6
    per_iter = rep["mb_per_iteration"]
    mean_iter = sum(per_iter) / len(per_iter) if per_iter else 0.0
    secs = ", ".join(f"{k} {v:.2f} s" for k, v in result.seconds.items())
    return (f"ARI vs scikit-learn KMeans from the same initial centres: "
            f"[bold]{result.ari_vs_sklearn:.4f}[/bold] (max centroid error "
            f"{result.max_centroid_error:.2e}, standardised units)\n"
            f"Iterations: {result.model.n_iter_}; exchanged {mb:.1f} MB in all, "
            f"{mean_iter:.1f} MB per iteration\nTime: {secs}")


@contextmanager
def errors_end_the_command(centre: Transport | None) -> Iterator[None]:
    """A CipherSegError ends the command with its message (exit code 2); the link to a remote
    centre is closed either way."""
    try:
        yield
    except CipherSegError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    finally:
        if centre is not None:
            centre.close()


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    console.print(f"wrote {path}")


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def demo(
    customers: Annotated[int, typer.Option(min=10, help="Synthetic customers to generate.")]
    = 100_000,
    k: Annotated[int, typer.Option(min=1, help="Number of segments.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed for data and protocol randomness.")] = 0,
    workers: Annotated[int, typer.Option(min=-1, help="Worker processes (-1: all cores).")]
    = -1,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")]
    = None,
    engine: EngineOption = "local",
    scheduler: SchedulerOption = None,
    centre_url: CentreOption = None,
    centre_token_file: CentreTokenOption = None,
    centre_ca_file: CentreCaOption = None,
) -> None:
    """End-to-end encrypted segmentation of a synthetic mall's customers."""
    from cipherseg.analytics.rfm import compute_rfm
    from cipherseg.analytics.segmentation import segment_customers
    from cipherseg.analytics.synthetic import generate_mall_transactions

    timings: dict[str, float] = {}
    centre = remote_centre(centre_url, centre_token_file, engine, centre_ca_file)
    with closing(party_executors(engine, workers, scheduler)) as executors, \
            StageProgress() as progress:
        attach_block_progress(executors, progress)
        t = time.perf_counter()
        progress.stage("generate", f"generating {customers:,} customers' transactions")
        tx = generate_mall_transactions(customers, seed=seed)
        progress.done("generate")
        timings["generate_transactions"] = time.perf_counter() - t
        t = time.perf_counter()
        progress.stage("rfm", f"RFM features from {len(tx):,} transaction lines")
        rfm = compute_rfm(tx)
        progress.done("rfm")
        timings["rfm"] = time.perf_counter() - t
        with errors_end_the_command(centre):
            result = segment_customers(rfm.features, n_clusters=k, random_state=seed,
                                       n_jobs=workers, executor=executors,
                                       progress=progress.callback, centre=centre)
    result.seconds = {**timings, **result.seconds}
    console.print(f"RFM: {len(rfm.features):,} customers, snapshot {rfm.snapshot.date()}, "
                  f"dropped {rfm.dropped_missing_customer:,} lines without customer and "
                  f"{rfm.dropped_cancelled:,} cancelled/negative lines")
    console.print(_segment_table(result, "Customer segments (computed on encrypted data)"))
    console.print(_summary(result))
    _write_json(json_path, {"customers": customers, "k": k, "seed": seed,
                            "transactions": len(tx), **result.to_dict()})


def segment(
    transactions: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                                 help="Transactions CSV (optionally .gz).")],
    out: Annotated[Path, typer.Option(help="Where to write one row per customer.")],
    k: Annotated[int, typer.Option(min=1)] = 4,
    customer_col: Annotated[str, typer.Option()] = "customer_id",
    invoice_col: Annotated[str, typer.Option()] = "invoice_id",
    date_col: Annotated[str, typer.Option()] = "timestamp",
    amount_col: Annotated[str | None, typer.Option()] = None,
    quantity_col: Annotated[str | None, typer.Option()] = None,
    price_col: Annotated[str | None, typer.Option()] = None,
    seed: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option(min=-1)] = -1,
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
    engine: EngineOption = "local",
    scheduler: SchedulerOption = None,
    centre_url: CentreOption = None,
    centre_token_file: CentreTokenOption = None,
    centre_ca_file: CentreCaOption = None,
) -> None:
    """Segment the customers of a transactions file on encrypted data."""
    from cipherseg.analytics.rfm import RFMColumns, compute_rfm, read_transactions
    from cipherseg.analytics.segmentation import segment_customers

    if amount_col is None and quantity_col is None and price_col is None:
        amount_col = "amount"
    centre = remote_centre(centre_url, centre_token_file, engine, centre_ca_file)
    with errors_end_the_command(centre):
        columns = RFMColumns(customer=customer_col, invoice=invoice_col, date=date_col,
                             amount=amount_col, quantity=quantity_col, price=price_col)
        with closing(party_executors(engine, workers, scheduler)) as executors, \
                StageProgress() as progress:
            attach_block_progress(executors, progress)
            progress.stage("read", f"reading {transactions.name}")
            tx = read_transactions(transactions, columns)
            progress.done("read")
            progress.stage("rfm", "RFM features")
            rfm = compute_rfm(tx, columns)
            progress.done("rfm")
            result = segment_customers(rfm.features, n_clusters=k, random_state=seed,
                                       n_jobs=workers, executor=executors,
                                       progress=progress.callback, centre=centre)
    table = rfm.features.loc[:, ["recency", "frequency", "monetary"]].copy()
    table["segment"] = result.labels
    table["segment_name"] = result.segments["name"].reindex(result.labels.to_numpy()).to_numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    table.reset_index().to_csv(out, index=False)
    console.print(_segment_table(result, f"Segments of {transactions.name}"))
    console.print(_summary(result))
    console.print(f"wrote {len(table):,} customers to {out}")
    _write_json(json_path, result.to_dict())


def bench_kmeans(
    customers: Annotated[str, typer.Option(help="Comma-separated customer counts.")]
    = "10000,100000",
    k: Annotated[int, typer.Option(min=1)] = 4,
    iterations: Annotated[int, typer.Option(min=1)] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option(min=-1)] = -1,
    json_path: Annotated[Path, typer.Option("--json")] = Path("bench/results/kmeans.json"),
    engine: EngineOption = "local",
    scheduler: SchedulerOption = None,
) -> None:
    """Encrypted k-means vs scikit-learn, measured in the same run: JSON + PNG plot."""
    from cipherseg.bench.kmeans import plot_kmeans_bench, run_kmeans_bench

    sizes = [int(s) for s in customers.split(",") if s.strip()]
    with closing(party_executors(engine, workers, scheduler)) as executors, \
            StageProgress() as progress:
        attach_block_progress(executors, progress)
        results = run_kmeans_bench(sizes, k=k, iterations=iterations, seed=seed,
                                   n_jobs=workers, progress=progress, executor=executors)
    payload = {"k": k, "iterations": iterations, "seed": seed, "workers": workers,
               "engine": engine, "scheduler": scheduler,
               "results": results}
    _write_json(json_path, payload)
    png = plot_kmeans_bench(results, json_path.with_suffix(".png"))
    console.print(f"wrote {png}")
    for r in results:
        console.print(
            f"{r['customers']:>9,} customers: encrypted {r['seconds_encrypted_total']:.2f} s "
            f"({r['n_iter']} iterations, {r['mb_per_iteration_mean']:.1f} MB/iteration), "
            f"scikit-learn {r['seconds_sklearn']:.3f} s, "
            f"ratio {r['ratio_encrypted_vs_plain']:.0f}×, "
            f"ARI {r['ari_vs_sklearn']:.4f}"
        )


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this module's commands."""
    app.command()(demo)
    app.command()(segment)
    bench_app.command("kmeans")(bench_kmeans)
