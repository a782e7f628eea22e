"""The guard rails cover everything: every package of src/cipherseg is in the layers
contract, the contracts hold, and mypy checks all of src (docs/architecture.md)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cipherseg"


def _config() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _contract(kind: str) -> dict:  # type: ignore[type-arg]
    contracts = _config()["tool"]["importlinter"]["contracts"]
    (found,) = [c for c in contracts if c["type"] == kind]
    return found


def _top_level() -> set[str]:
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in PACKAGE.iterdir()
              if p.is_dir() and (p / "__init__.py").exists()}
    return {f"cipherseg.{n}" for n in names}


def test_the_layers_contract_names_every_package_and_module() -> None:
    layers = _contract("layers")["layers"]
    named = {m.strip() for layer in layers for m in re.split(r"[|:]", layer)}
    assert named == _top_level()


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def test_the_custody_contract_covers_every_centre_and_forbids_every_key_holder() -> None:
    contracts = _config()["tool"]["importlinter"]["contracts"]
    (custody,) = [c for c in contracts if "secret-key" in c["name"]]
    protocols = PACKAGE / "protocols"
    centres = {_module(p) for p in protocols.rglob("centre*.py")}
    assert len(centres) >= 7 and centres <= set(custody["source_modules"])
    holders = {_module(p) for p in protocols.rglob("*.py")
               if p.stem in ("owner", "manager", "owner_ops")}
    assert len(holders) >= 8 and holders <= set(custody["forbidden_modules"])


def test_make_lint_runs_mypy_over_all_of_src_strictly_on_schemes_and_protocols() -> None:
    assert "$(BIN)/mypy src\n" in (ROOT / "Makefile").read_text()
    overrides = _config()["tool"]["mypy"]["overrides"]
    strict = {m for o in overrides if o.get("strict") for m in o["module"]}
    assert {"cipherseg.schemes.*", "cipherseg.protocols.*"} <= strict


@pytest.mark.parametrize("tool", ["lint-imports"])
def test_the_contracts_hold(tool: str) -> None:
    exe = Path(sys.executable).parent / tool
    result = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")
