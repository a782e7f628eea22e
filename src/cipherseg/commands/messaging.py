"""`cipherseg bench send`: the engine through Kannel against bare Kannel, same run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from cipherseg.commands.progress import console

DEFAULT_POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/postgres"


def bench_send(
    messages: Annotated[int, typer.Option("--messages", "-n", min=10,
                                          help="Messages per run.")] = 2000,
    concurrency: Annotated[list[int] | None, typer.Option(
        "--concurrency", "-c", min=1, help="Requests in flight to Kannel (repeatable).")] = None,
    repeats: Annotated[int, typer.Option("--repeats", "-r", min=1,
                                         help="Repeat every kind of run.")] = 1,
    kannel: Annotated[bool, typer.Option("--kannel/--no-kannel",
                                         help="Send through a real Kannel.")] = True,
    postgresql: Annotated[str, typer.Option(
        "--postgresql", help="A PostgreSQL server (any database on it) for the engine's "
                             "PostgreSQL runs; a scratch database is created and dropped.")] =
        DEFAULT_POSTGRESQL,
    no_postgresql: Annotated[bool, typer.Option("--no-postgresql",
                                                help="Skip the PostgreSQL runs.")] = False,
    outbox: Annotated[bool, typer.Option("--outbox/--no-outbox",
                                         help="Also send to the outbox (no Kannel).")] = False,
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the results.")] =
        Path("bench/results/send.json"),
    plot_path: Annotated[Path | None, typer.Option("--plot", help="PNG plot (default: next "
                                                    "to the JSON).")] = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", file_okay=False,
                                                 help="Scratch directory (default: a "
                                                      "temporary one).")] = None,
) -> None:
    """Bare Kannel, then the sending engine through Kannel on SQLite and PostgreSQL, in one
    run; reports msgs/s and the engine's share of bare Kannel."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from cipherseg.bench.sending import plot_send_benchmark, run_send_benchmark

    levels = tuple(concurrency or [32])
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console) as bar:

        def progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done)

        with tempfile.TemporaryDirectory(prefix="cipherseg-send-") as tmp:
            try:
                result = run_send_benchmark(
                    workdir or Path(tmp), messages=messages, concurrency=levels,
                    kannel=kannel, repeats=repeats, outbox=outbox, progress=progress,
                    postgresql=None if no_postgresql else postgresql)
            except RuntimeError as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(code=2) from exc
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot = plot_path or json_path.with_suffix(".png")
    plot_send_benchmark(result, plot)
    for r in result["runs"]:
        what = "outbox" if r["mode"] == "outbox" else \
            "bare Kannel" if r["mode"] == "bare" else f"engine/{r['database']}"
        console.print(f"{what:>17} ×{r['concurrency']:<3} accepted {r['send_per_s']:>7.0f}/s"
                      f"  delivered {r['delivered_per_s']:>7.0f}/s "
                      f"({r['delivered']}/{r['messages']})")
    for s in result["summary"]:
        console.print(f"engine on {s['database']} ×{s['concurrency']}: "
                      f"{s['accepted_ratio_median']:.0%} of bare Kannel accepted, "
                      f"{s['delivered_ratio_median']:.0%} delivered (median of "
                      f"{s['repeats']}; lowest {s['accepted_ratio_min']:.0%})")
    console.print(f"load average (1 min) {result['load_average_1min_before']} before, "
                  f"{result['load_average_1min']} after, on {result['cpus']} CPUs")
    console.print(f"wrote {json_path} and {plot}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``bench send``."""
    bench_app.command("send")(bench_send)
