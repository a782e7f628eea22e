"""`cipherseg bench scale`: encrypted k-means against customers and workers (JSON + PNG)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cipherseg.commands.progress import StageProgress, console

_STAGES = {
    "runs": "benchmark runs",
    "centre:load": "centre: loading ciphertext blocks onto workers",
    "centre:masked": "centre: masked record (k-means++)",
    "centre:d2": "centre: scaled D² blocks (k-means++)",
    "centre:scores": "centre: encrypted score blocks",
    "centre:sums": "centre: encrypted per-cluster sum blocks",
    "encrypt": "owner: encrypting customer blocks",
    "init": "k-means++ with secure selection",
    "iterate": "encrypted Lloyd iterations",
}


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{name} must list positive integers, got {text!r}")
    return values


class _Bars:
    """Adapts the benchmark's progress calls to the CLI's progress bars, with readable names."""

    def __init__(self, progress: StageProgress) -> None:
        self._p = progress

    def stage(self, key: str, description: str, total: int | None = 1) -> None:
        self._p.stage(key, description, total)

    def done(self, key: str) -> None:
        self._p.done(key)

    def callback(self, stage: str, done: int, total: int) -> None:
        self._p.stage(stage, _STAGES.get(stage, stage), total)
        self._p.callback(stage, done, total)


def bench_scale(
    customers: Annotated[str, typer.Option(help="Comma-separated customer counts.")]
    = "100000,300000,1000000",
    workers: Annotated[str, typer.Option(help="Comma-separated centre worker counts.")] = "1,2",
    engine: Annotated[str, typer.Option(help="Centre executor: dask or local.")] = "dask",
    scheduler: Annotated[str | None, typer.Option(
        help="Dask scheduler address (tcp://host:8786); default: a LocalCluster per count.")]
    = None,
    k: Annotated[int, typer.Option(min=1)] = 4,
    iterations: Annotated[int, typer.Option(min=1)] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    repeats: Annotated[int, typer.Option(min=1, help="Runs per (size, workers); medians.")]
    = 1,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Keep generated transactions and features here between runs.")] = None,
    json_path: Annotated[Path, typer.Option("--json")] = Path("bench/results/scale.json"),
) -> None:
    """Encrypted k-means vs customers and workers: seconds per stage, speed-up, growth, RSS."""
    from cipherseg.bench.scale import ScaleConfig, plot_scale_bench, run_scale_bench
    from cipherseg.engine import ENGINES

    if engine not in ENGINES:
        raise typer.BadParameter(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if scheduler is not None and engine != "dask":
        raise typer.BadParameter("--scheduler needs --engine dask")
    cfg = ScaleConfig(sizes=_ints(customers, "--customers"), workers=_ints(workers, "--workers"),
                      engine=engine, scheduler=scheduler, k=k, iterations=iterations, seed=seed,
                      repeats=repeats, cache_dir=cache_dir)
    if scheduler is not None and len(cfg.workers) > 1:
        raise typer.BadParameter("with --scheduler the cluster's size is fixed: give one "
                                 "--workers value (the owner's local processes)")
    with StageProgress() as progress:
        result = run_scale_bench(cfg, _Bars(progress))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, default=_jsonable))
    png = plot_scale_bench(result, json_path.with_suffix(".png"))
    console.print(f"wrote {json_path} and {png}")
    _print_summary(result)


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _print_summary(result: dict[str, Any]) -> None:
    from rich.table import Table

    summ = result["summary"]
    table = Table(title="Encrypted k-means scale-out (medians)")
    for col in ("customers", "workers", "total s", "centre s", "owner s", "peak RSS MB", "ARI"):
        table.add_column(col, justify="right")
    for r in summ["by_size_and_workers"]:
        table.add_row(f"{r['customers']:,}", str(r["workers"]),
                      f"{r['seconds_total_median']:.1f}", f"{r['seconds_centre_median']:.1f}",
                      f"{r['seconds_owner_median']:.1f}", f"{r['peak_rss_mb_max']:.0f}",
                      f"{r['ari_vs_sklearn_min']:.4f}")
    console.print(table)
    for s in summ["speedup"]:
        console.print(f"{s['customers']:>9,} customers: speed-up {s['to_workers']} vs "
                      f"{s['from_workers']} worker(s): centre stages "
                      f"{s['centre_stages_median']:.2f}×, end to end {s['total_median']:.2f}×")
    for g in summ["growth"]:
        console.print(f"{g['workers']} worker(s): {g['from_customers']:,} → "
                      f"{g['to_customers']:,} customers took {g['time_ratio']:.2f}× the time "
                      f"({g['relative_to_linear']:.2f}× linear)")
    for p in result["data_preparation"]:
        console.print(f"RFM {p['customers']:,} customers ({p['transaction_lines']:,} lines): "
                      f"pandas {p['seconds_rfm_pandas_in_memory']:.1f} s in memory (peak RSS "
                      f"{p['peak_rss_mb_generator_and_pandas_rfm']:.0f} MB with the generator), "
                      f"Dask {p['seconds_rfm_dask_from_parquet']:.1f} s from Parquet (peak RSS "
                      f"{p['peak_rss_mb_rfm_dask']:.0f} MB)")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``bench scale``."""
    bench_app.command("scale")(bench_scale)
