"""The ``cipherseg`` command line.

>>> from typer.testing import CliRunner
>>> CliRunner().invoke(app, ["--help"]).exit_code
0
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="cipherseg",
    help="Customer segmentation and precision marketing on encrypted data.",
    no_args_is_help=True,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks: JSON results and PNG plots.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# One line per command module (each defines `register(app, bench_app)`).
_COMMAND_MODULES: tuple[str, ...] = (
    "cipherseg.commands.scoring",
    "cipherseg.commands.segmentation",
    "cipherseg.commands.centre",
    "cipherseg.commands.platform",
    "cipherseg.commands.joint",
    "cipherseg.commands.vhe",
    "cipherseg.commands.scale",
    "cipherseg.commands.messaging",
    "cipherseg.commands.vertical",
    "cipherseg.commands.nodes",
    "cipherseg.commands.vertical_node",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app, bench_app)


def main() -> None:
    app()
