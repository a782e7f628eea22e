"""`cipherseg bench send`: messages per second through the outbox and through Kannel."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from cipherseg.commands.progress import console


def bench_send(
    messages: Annotated[int, typer.Option("--messages", "-n", min=10,
                                          help="Messages per run.")] = 2000,
    concurrency: Annotated[list[int] | None, typer.Option(
        "--concurrency", "-c", min=1, help="Requests in flight to Kannel (repeatable).")] = None,
    kannel: Annotated[bool, typer.Option("--kannel/--no-kannel",
                                         help="Also send through a real Kannel.")] = True,
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the results.")] =
        Path("bench/results/send.json"),
    plot_path: Annotated[Path | None, typer.Option("--plot", help="PNG plot (default: next "
                                                    "to the JSON).")] = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", file_okay=False,
                                                 help="Scratch directory (default: a "
                                                      "temporary one).")] = None,
) -> None:
    """Send a synthetic campaign through the outbox and a loopback Kannel; report msgs/s."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from cipherseg.bench.sending import plot_send_benchmark, run_send_benchmark

    levels = tuple(concurrency or [8, 32])
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console) as bar:

        def progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done)

        with tempfile.TemporaryDirectory(prefix="cipherseg-send-") as tmp:
            try:
                result = run_send_benchmark(workdir or Path(tmp), messages=messages,
                                            concurrency=levels, kannel=kannel,
                                            progress=progress)
            except RuntimeError as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(code=2) from exc
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot = plot_path or json_path.with_suffix(".png")
    plot_send_benchmark(result, plot)
    for r in result["runs"]:
        console.print(f"{r['gateway']:>7} ×{r['concurrency']:<3} queue {r['queue_per_s']:>8.0f}/s"
                      f"  accepted {r['send_per_s']:>7.0f}/s  delivered "
                      f"{r['delivered_per_s']:>7.0f}/s  ({r['delivered']}/{r['messages']})")
    console.print(f"wrote {json_path} and {plot}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach ``bench send``."""
    bench_app.command("send")(bench_send)
