"""`cipherseg demo`, `cipherseg segment`, `cipherseg bench kmeans` (filled in by the foundation)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this module's commands."""
