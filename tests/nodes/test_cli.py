"""``cipherseg manager add-node``/``remove-node`` and the services' refusals to start."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cipherseg.cli import app
from cipherseg.transport.tokens import OwnersFile


def test_add_and_remove_a_node(tmp_path: Path) -> None:
    nodes, token = tmp_path / "nodes.txt", tmp_path / "north.token"
    r = CliRunner().invoke(app, ["manager", "add-node", "north", "--nodes-file", str(nodes),
                                 "--token-out", str(token)])
    assert r.exit_code == 0, r.output
    assert OwnersFile(nodes).owner_of(token.read_text().strip()) == "north"
    assert token.stat().st_mode & 0o777 == 0o600
    assert token.read_text().strip() not in nodes.read_text()
    again = CliRunner().invoke(app, ["manager", "add-node", "south", "--nodes-file",
                                     str(nodes), "--token-out", str(token)])
    assert again.exit_code != 0 and "exists" in again.output
    r = CliRunner().invoke(app, ["manager", "remove-node", "north", "--nodes-file", str(nodes)])
    assert r.exit_code == 0 and OwnersFile(nodes).names() == []


def test_services_refuse_to_start_without_what_they_need(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.txt"
    CliRunner().invoke(app, ["manager", "add-node", "north", "--nodes-file", str(nodes),
                             "--token-out", str(tmp_path / "t")])
    r = CliRunner().invoke(app, ["centre", "serve", "--protocol", "joint", "--owners-file",
                                 str(nodes)])
    assert r.exit_code != 0 and "no entry 'manager'" in r.output
    r = CliRunner().invoke(app, ["centre", "serve", "--protocol", "joint"])
    assert r.exit_code != 0 and "tokens file" in r.output
    r = CliRunner().invoke(app, ["centre", "serve", "--protocol", "joint", "--owners-file",
                                 str(nodes), "--token-file", str(tmp_path / "shared")])
    assert r.exit_code != 0 and "not --token-file" in r.output
    r = CliRunner().invoke(app, ["centre", "serve", "--protocol", "4.2"])
    assert r.exit_code != 0 and "'outsourced' (4.1) or 'joint' (4.2)" in r.output
    token = tmp_path / "m.token"
    token.write_text("x" * 40)
    r = CliRunner().invoke(app, ["manager", "serve", "--nodes-file", str(nodes), "--centre",
                                 "http://127.0.0.1:9", "--centre-token-file", str(token),
                                 "--host", "0.0.0.0"])
    assert r.exit_code != 0 and "--ssl-certfile" in r.output
